"""The preset picker: the CUDA refusal and its CPU offer (with a fake probe: this machine has no GPU),
the torch-free CUDA probe against fake drivers and torch builds, the data column refreshed on return,
a placeholder that validates, a step estimate that holds still on a busy machine, 80 columns."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.train import wait_ui
from support.tui import T0, FakeNvml, NoNvml, fixed_sampler

from hrm_tui import costs, runs
from hrm_tui.app import HrmApp
from hrm_tui.cuda import cuda_missing
from hrm_tui.screens import PickerScreen, RunsScreen

NO_CUDA = "no NVIDIA GPU on this machine (test)"


def make_app(root: Path, **kw) -> HrmApp:
    kw.setdefault("sampler", fixed_sampler(FakeNvml()))
    kw.setdefault("clock", lambda: T0 + 500)
    kw.setdefault("cuda_probe", lambda: NO_CUDA)
    return HrmApp(root, **kw)


def notes(app: HrmApp) -> list[str]:
    return [n.message for n in app._notifications]


async def test_picker_refuses_cuda_without_cuda_and_offers_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[list[str]] = []

    def record_launch(preset, runs_root, *, name=None, overrides=None, gpus=1, env=None):
        launched.append(list(overrides or []))  # a CPU run of the paper recipe is hours: do not start it
        raise runs.LaunchError("recorded")

    monkeypatch.setattr(runs, "launch", record_launch)
    app = make_app(tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.rows)
        picker = app.screen
        row = next(i for i, r in enumerate(picker.rows) if r["preset"] == "sudoku-extreme-1k")
        picker.query_one("#presets").move_cursor(row=row)
        await wait_ui(pilot, lambda: NO_CUDA in picker.query_one("#preset-about").render().plain)
        assert picker.query_one("#presets").get_row_at(row)[3] == "cuda ✗"
        await pilot.press("enter")
        await wait_ui(pilot, lambda: any("trains on CUDA" in m for m in notes(app)))
        refusal = next(m for m in notes(app) if "trains on CUDA" in m)
        assert NO_CUDA in refusal and "train.device=cpu" in refusal
        assert launched == [] and not (tmp_path / "runs").exists()
        assert picker.query_one("#extra").value == "train.device=cpu"  # the offer, in the field
        await pilot.press("enter")  # accepted: it launches, on the CPU
        await wait_ui(pilot, lambda: launched == [["train.device=cpu"]])
        # A preset for 8 GPUs: on the CPU, one process (not 8 on these cores).
        picker.query_one("#extra").value = ""
        eight = next(i for i, r in enumerate(picker.rows) if r["preset"] == "maze-hard-1k")
        assert picker.rows[eight]["gpus"] == 8
        picker.query_one("#presets").move_cursor(row=eight)
        await pilot.press("enter")
        await wait_ui(pilot, lambda: picker.query_one("#extra").value == "train.device=cpu train.gpus=1")
        await pilot.press("enter")
        await wait_ui(pilot, lambda: launched[-1] == ["train.device=cpu", "train.gpus=1"])


def test_overrides_placeholder_validates() -> None:
    from hrm.run.config import load_preset
    from hrm_tui.screens.picker import OVERRIDES_EXAMPLE

    cfg = load_preset("tiny", OVERRIDES_EXAMPLE.split())
    assert cfg.optim.lr == 3e-4 and cfg.train.eval_interval == 500


async def test_picker_data_column_refreshes_on_return(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hrm.run.config import describe, load_preset
    from hrm.run.recipes import dataset_dir

    # A cache of its own: the session's may hold a real tiny build (any earlier training test), and the
    # fake build below must never be found by a later test.
    monkeypatch.setenv("HRM_DATA_CACHE", str(tmp_path / "cache"))
    app = make_app(tmp_path / "runs")
    async with app.run_test(size=(120, 40)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.rows)
        tiny = lambda: next(r for r in app.screen.rows if r["preset"] == "tiny")  # noqa: E731
        assert tiny()["built"] == "not built"
        built = dataset_dir(describe(load_preset("tiny"))["dataset"])  # what a finished build leaves
        for split in ("train", "test"):
            (built / split).mkdir(parents=True)
            (built / split / "dataset.json").write_text("{}")
        await pilot.press("r")
        await wait_ui(pilot, lambda: isinstance(app.screen, RunsScreen))
        await pilot.press("n")
        await wait_ui(pilot, lambda: isinstance(app.screen, PickerScreen) and tiny()["built"] == "built")


def test_cuda_probe_without_torch(tmp_path: Path) -> None:
    class Nvml(FakeNvml):
        def __init__(self, n: int) -> None:
            super().__init__(gpus=n)

    with_cuda, cpu_build = tmp_path / "cuda_version.py", tmp_path / "cpu_version.py"
    with_cuda.write_text("__version__ = '2.5.0+cu124'\ncuda: Optional[str] = '12.4'\n")
    cpu_build.write_text("__version__ = '2.13.0+cpu'\ncuda: Optional[str] = None\n")
    nowhere = tmp_path / "no-proc"
    assert cuda_missing(proc=nowhere, nvml=Nvml(1), version_file=with_cuda, environ={}) is None
    reason = cuda_missing(proc=nowhere, nvml=NoNvml(), version_file=with_cuda, environ={})
    assert reason is not None and "no NVIDIA GPU" in reason and "NVML Shared Library Not Found" in reason
    assert "no NVIDIA GPU" in (cuda_missing(proc=nowhere, nvml=Nvml(0), version_file=with_cuda, environ={}) or "")
    assert "CPU-only build" in (cuda_missing(proc=nowhere, nvml=Nvml(2), version_file=cpu_build, environ={}) or "")
    hidden = cuda_missing(proc=nowhere, nvml=Nvml(1), version_file=with_cuda, environ={"CUDA_VISIBLE_DEVICES": ""})
    assert hidden is not None and "hides every GPU" in hidden


def test_cuda_probe_reads_the_driver_directory(tmp_path: Path) -> None:
    (tmp_path / "driver" / "nvidia" / "gpus" / "0000:01:00.0").mkdir(parents=True)
    version = tmp_path / "version.py"
    version.write_text("cuda = '12.4'\n")
    assert cuda_missing(proc=tmp_path, nvml=NoNvml(), version_file=version, environ={}) is None


def test_cpu_step_estimate_is_stable() -> None:
    """Measured in the thread's own CPU time: three fresh measurements agree although the machine
    is shared (the wall-clock probe read 2.47, 5.18 and 0.88 s for one preset)."""
    figures = []
    for _ in range(3):
        costs.cpu_core_flops.cache_clear()
        figures.append(costs.cpu_core_flops())
    assert max(figures) / min(figures) < 1.5, figures
    assert costs.cpu_core_flops() == costs.cpu_core_flops()  # once per app start


async def test_picker_fits_80_columns_and_shows_every_column_when_wide(tmp_path: Path) -> None:
    app = make_app(tmp_path / "runs")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_ui(pilot, lambda: isinstance(app.screen, PickerScreen) and app.screen.rows)
        from textual.widgets import DataTable

        table = app.screen.query_one("#presets", DataTable)
        await wait_ui(pilot, lambda: table.row_count == len(app.screen.rows))
        labels = [str(c.label) for c in table.columns.values()]
        assert labels == ["preset", "task", "device", "step est.", "data"]  # model, memory: under the table
        # nothing scrolled off, once the table is laid out
        await wait_ui(pilot, lambda: 0 < table.virtual_size.width <= table.scrollable_content_region.width)
        about = app.screen.query_one("#preset-about").render().plain
        first = app.screen.rows[0]
        assert first["model"] in about and first["mem"] in about
        await pilot.resize_terminal(200, 50)
        await wait_ui(pilot, lambda: len(table.columns) == 7)
