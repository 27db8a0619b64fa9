"""The layering the design rests on, checked once for the whole tree.

Statically (import-linter, contracts in pyproject.toml): `hrm.run` imports no torch, numba, model,
trainer or app; the app reaches runs only through `hrm.run`; the library never imports the app.
Function-local imports count too. At run time: importing every `hrm.run` module, and driving the
real app over each of its screens, leaves torch out of the process.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import textwrap
from pathlib import Path

from support.tui import run_events, write_run

REPO = Path(__file__).resolve().parents[1]


def test_import_contracts_hold() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(REPO / 'pyproject.toml')!r}, no_cache=True))",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]


def test_every_run_module_imports_without_torch_or_numba() -> None:
    import hrm.run

    names = [f"hrm.run.{m.name}" for m in pkgutil.iter_modules(hrm.run.__path__)]
    assert "hrm.run.events" in names and "hrm.run.layout" in names
    code = (
        f"import sys, importlib\nfor n in {names!r}: importlib.import_module(n)\n"
        "print(sorted(m for m in ('torch', 'numba') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


def test_app_process_never_loads_torch(tmp_path: Path) -> None:
    """Start the real app (headless), visit every screen it has, then look at sys.modules."""
    run = write_run(tmp_path / "runs", "r1", run_events(50, status="finished"))
    code = textwrap.dedent(f"""
        import asyncio, sys, time
        from pathlib import Path
        from hrm_tui.app import HrmApp

        async def until(pred, what):
            deadline = time.monotonic() + 30
            while not pred():
                if time.monotonic() > deadline:
                    raise SystemExit(f"timed out waiting for {{what}}")
                await asyncio.sleep(0.02)

        async def main():
            app = HrmApp(Path({str(tmp_path / 'runs')!r}), attach=Path({str(run)!r}))
            async with app.run_test(size=(120, 40)) as pilot:
                seen = []
                for key in ("r", "n", "question_mark"):
                    before = app.screen
                    await pilot.press(key)
                    await until(lambda: app.screen is not before, f"a new screen after {{key}}")
                    seen.append(type(app.screen).__name__)
                print("SCREENS", seen)
        asyncio.run(main())
        print("TORCH_LOADED" if "torch" in sys.modules else "TORCH_ABSENT")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert "TORCH_ABSENT" in out.stdout, out.stdout + out.stderr
    assert "SCREENS" in out.stdout and "Help" in out.stdout, out.stdout
