"""How long `hrm.run.status.read_status` takes on a long run: a 200,000-line events.jsonl with the
run's only status event near its start (the worst case for the backwards scan: a run killed while
running, without state.json), and the same run with state.json.

    python bench/status.py [--lines 200000] [--repeat 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hrm.run.events import EventWriter  # noqa: E402
from hrm.run.layout import events_path  # noqa: E402
from hrm.run.status import StateFile, read_status  # noqa: E402


def _timed(fn, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=200_000)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        train = {"loss": 1.2345, "lm_loss": 1.2, "accuracy": 0.5, "exact_accuracy": 0.0, "lr": 1e-4, "grad_norm": 0.5}
        with EventWriter(events_path(run)) as w:
            w.write("run", 0, total_steps=a.lines, config={"model": {"hidden_size": 128}})
            w.write("status", 0, state="running")
            for s in range(1, a.lines):
                w.write("train", s, **train)
        size = events_path(run).stat().st_size
        scan = _timed(lambda: read_status(run), a.repeat)
        st = read_status(run)
        assert st.state == "died" and st.step == a.lines - 1, st
        StateFile(run, total_steps=a.lines).set("running", step=a.lines - 1)
        state = _timed(lambda: read_status(run), a.repeat)
    print(f"{a.lines} lines ({size / 1e6:.1f} MB), status event at the start, no state.json (backwards scan):")
    print(f"  read_status median {statistics.median(scan) * 1e3:.1f} ms, max {max(scan) * 1e3:.1f} ms")
    print("with state.json:")
    print(f"  read_status median {statistics.median(state) * 1e3:.2f} ms, max {max(state) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
