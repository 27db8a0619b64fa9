"""`hrm-train`: start, resume and steer runs.

hrm-train PRESET [section.key=value ...] [--run-dir DIR | --runs-root DIR] [--run-name NAME]
          [--resume CKPT|latest] [--stop-at-step N]
hrm-train --run-dir DIR [--resume latest] [section.key=value ...]   (continue a run from its config.yaml)
hrm-train --find-batch PRESET [section.key=value ...]   (largest per-GPU batch that fits, by real steps)
hrm-train ctl RUN pause|resume|checkpoint|stop|eval|status
torchrun --nproc_per_node=N -m hrm.train PRESET ...
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hrm.run.layout import CKPT_DIR, COMMANDS, CONFIG_FILE, EVENTS_FILE, QUERIES, STATE_FILE, run_id
from hrm.run.status import STATE_LABELS

if TYPE_CHECKING:
    from hrm.run.config import Config

log = logging.getLogger("hrm.train")

CTL_COMMANDS = COMMANDS + QUERIES
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _train_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hrm-train",
        description="Train HRM-ACT-v1; the run is a directory "
        "(config.yaml, events.jsonl, checkpoints/, control.sock). "
        "Steer a live run with: hrm-train ctl RUN CMD.",
    )
    p.add_argument(
        "args",
        nargs="*",
        metavar="PRESET|key=value",
        help="a preset name or YAML path, then section.key=value overrides (e.g. optim.lr=3e-4)",
    )
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--run-dir", type=Path, help="the run directory (an existing one continues from its config.yaml)"
    )
    where.add_argument(
        "--runs-root", type=Path, default=None, help="parent of new run directories (default: $HRM_RUNS_ROOT or ./runs)"
    )
    p.add_argument("--run-name", help="run id (default <preset>-<UTC timestamp>)")
    p.add_argument("--resume", metavar="CKPT|latest", help="continue from a checkpoint file, or the newest of the run")
    p.add_argument(
        "--stop-at-step",
        type=int,
        default=None,
        help="stop (with a checkpoint) once this step is reached, as the stop command does",
    )
    p.add_argument(
        "--find-batch",
        action="store_true",
        help="try real training steps on this machine's GPU and print the largest per-GPU batch that fits "
        "(with a 10%% margin); starts no run",
    )
    p.add_argument(
        "--take-over",
        action="store_true",
        help="claim a run directory whose lock names another host or a process that is gone "
        "(never a live trainer on this host)",
    )
    p.add_argument("--debug", action="store_true", help="print tracebacks on stderr too (trainer.log always has them)")
    return p


def _ctl_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hrm-train ctl", description="Send a command to a live trainer.")
    p.add_argument("run", help="run directory, or a run name under --runs-root")
    p.add_argument("cmd", choices=CTL_COMMANDS)
    p.add_argument("--runs-root", type=Path, default=None)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the reply")
    p.add_argument("--debug", action="store_true", help="print tracebacks of unexpected errors")
    return p


def _runs_root(arg: Path | None) -> Path:
    return arg or Path(os.environ.get("HRM_RUNS_ROOT", "runs"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["ctl"]:
        return ctl_main(argv[1:])
    args = _train_parser().parse_intermixed_args(argv)
    from hrm.run.config import ConfigError

    try:
        cfg, run_dir = resolve_run(args)
    except (ConfigError, ValueError, FileExistsError, FileNotFoundError) as e:
        print(f"hrm-train: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.find_batch:
        from hrm.train.fit import find_batch_main

        logging.basicConfig(level=logging.INFO, format="%(message)s")
        return find_batch_main(cfg)
    from hrm.train.launch import launch

    try:
        return launch(
            cfg,
            run_dir,
            resume=args.resume,
            stop_at_step=args.stop_at_step,
            take_over=args.take_over,
            debug=args.debug or os.environ.get("HRM_DEBUG", "") not in ("", "0"),
        )
    except KeyboardInterrupt:  # Ctrl-C before the trainer's own handlers are installed (dataset build)
        print("hrm-train: interrupted during start-up", file=sys.stderr)
        return 130


def resolve_run(args: argparse.Namespace) -> tuple[Config, Path]:
    """(config, run directory) from the arguments; errors name the fix."""
    from hrm.run.config import apply_overrides, load_config, load_preset, validate_run_name

    preset, overrides = None, []
    for a in args.args:
        if "=" in a:
            overrides.append(a)
        elif preset is None:
            preset = a
        else:
            raise ValueError(f"unexpected argument {a!r}: give one preset, then section.key=value overrides")
    if preset is None:
        if args.run_dir is None:
            raise ValueError("give a preset (e.g. hrm-train sudoku-cpu) or an existing --run-dir to continue")
        cfg_path = args.run_dir / CONFIG_FILE
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{cfg_path} does not exist: give a preset to start a new run in {args.run_dir}")
        cfg = apply_overrides(load_config(cfg_path), overrides)
        if _has_history(args.run_dir) and not args.resume:
            raise FileExistsError(
                f"{args.run_dir} already holds a run; continue it with --resume latest "
                "(from its newest checkpoint, or from step 0 if it has none)"
            )
        return cfg, args.run_dir
    cfg = load_preset(preset, overrides)
    if args.run_name:
        cfg = apply_overrides(cfg, [f"run.name={args.run_name}"])
    if args.run_dir is not None:
        run_dir = args.run_dir
    else:
        name = cfg.run.name or run_id(cfg.run.preset or Path(preset).stem)
        run_dir = _runs_root(args.runs_root) / validate_run_name(name)
    if _has_history(run_dir) and not args.resume:
        raise FileExistsError(
            f"{run_dir} already holds a run; continue it with --resume latest (from its newest checkpoint, "
            "or from step 0 if it has none), or choose another --run-name / --run-dir"
        )
    return cfg, run_dir


def _has_history(run_dir: Path) -> bool:
    return (run_dir / EVENTS_FILE).is_file() or any((run_dir / CKPT_DIR).glob("*.pt"))


def ctl_main(argv: list[str]) -> int:
    args = _ctl_parser().parse_args(argv)
    run = Path(args.run)
    if not run.is_dir() and os.sep not in args.run:
        run = _runs_root(args.runs_root) / args.run
    if not run.is_dir():
        print(f"hrm-train ctl: no run directory {args.run!r} (looked at {run})", file=sys.stderr)
        return EXIT_USAGE
    from hrm.run.control import send_command

    if args.cmd == "status":
        reply = status_reply(run, args.timeout)
    else:
        reply = send_command(run, args.cmd, timeout=args.timeout)
    print(json.dumps(reply))
    if not reply.get("ok"):  # stdout stays one JSON object for scripts; people read stderr
        print(f"hrm-train ctl: {reply.get('error') or reply}", file=sys.stderr)
    return EXIT_OK if reply.get("ok") else EXIT_FAILED


def status_reply(run: Path, timeout: float) -> dict[str, Any]:
    """The run's state as hrm.run.status reads it (state.json, liveness); a live trainer's own
    answer over the socket when it gives one (its step is the freshest)."""
    from hrm.run.control import send_command
    from hrm.run.status import read_status

    st = read_status(run)
    if st.source == "none" and not st.live:  # nothing recorded and nobody running: not a run directory
        return {
            "ok": False,
            "cmd": "status",
            "error": f"{run}: no run recorded here (no {STATE_FILE}, no status in {EVENTS_FILE}); give a run directory",
        }
    out: dict[str, Any] = {"ok": True, "cmd": "status", **st.to_dict()}
    out["running_s"], out["paused_s"] = round(st.running_time(), 3), round(st.paused_time(), 3)
    if st.live:
        live = send_command(run, "status", timeout=timeout)
        if live.get("ok"):
            out.update(state=live.get("state", st.state), step=live.get("step", st.step))
    out["message"] = st.reason or STATE_LABELS.get(str(out["state"]), str(out["state"]))
    return out
