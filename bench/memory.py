"""Training memory of the paper presets: measured with the model itself vs the closed form (a report, not a test).

For each paper preset, in bfloat16 (what `auto` gives on a GPU of compute capability 8.0+): the model is built
on meta tensors and one training step runs under saved-tensor hooks and a live-bytes count
(hrm.model.memory); the same numbers from hrm.run.memory's closed form (what the picker and the trainer's
start check use); and the figures of issue 16 beside them. "GB per GPU" adds the same assumed CUDA runtime
(hrm.run.memory.CUDA_RUNTIME_BYTES, 1 GiB: context, workspaces; not measured) to both columns. No GPU
needed; ~30 s on 2 busy cores.

    python bench/memory.py
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hrm.model.config import HRMConfig  # noqa: E402
from hrm.model.memory import estimate as measure  # noqa: E402
from hrm.run.config import load_preset, model_shape  # noqa: E402
from hrm.run.memory import CUDA_RUNTIME_BYTES  # noqa: E402
from hrm.run.memory import estimate as closed_form  # noqa: E402

# issue 16: bytes per token saved / in all, bytes per example, GB at the batches it names
ISSUE: dict[str, tuple[float, float, dict[int, float]]] = {
    "sudoku-extreme-1k": (211e3, 19e6, {768: 16e9}),
    "maze-hard-1k": (211e3, 214e6, {768: 165e9, 256: 55e9, 96: 21e9}),
}


def main() -> None:
    print(f"{'preset':18s} {'what':28s} {'measured':>12s} {'closed form':>12s} {'issue 16':>10s}")
    for preset, (issue_saved_tok, issue_ex, issue_batches) in ISSUE.items():
        t0 = time.perf_counter()
        shape = model_shape(load_preset(preset))
        fields = {**load_preset(preset).model.hrm_fields(), "forward_dtype": "bfloat16"}
        mcfg = HRMConfig.from_dict(fields, batch_size=1, seq_len=shape.seq_len, vocab_size=shape.vocab_size)
        tokens = mcfg.total_seq_len
        m, c = measure(mcfg), closed_form(mcfg, "bfloat16", device="cpu")
        rows = [
            ("saved KB/token", m.saved_per_example / tokens / 1e3, c.saved_per_example / tokens / 1e3,
             issue_saved_tok / 1e3),
            ("MB/example (all)", m.per_example / 1e6, c.per_example / 1e6, issue_ex / 1e6),
            ("fixed MB (no CUDA runtime)", m.fixed / 1e6, c.fixed / 1e6, float("nan")),
        ]  # fmt: skip
        for b, gb in issue_batches.items():
            rt = CUDA_RUNTIME_BYTES
            rows.append((f"GB per GPU at batch {b}", (m.total(b) + rt) / 1e9, (c.total(b) + rt) / 1e9, gb / 1e9))
        for what, a, b_, i in rows:
            print(f"{preset:18s} {what:28s} {a:12.1f} {b_:12.1f} {i:10.1f}")
        print(f"{'':18s} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
