"""Checks that need an NVIDIA GPU (marker `cuda`; skipped without one; bench/gpu_check.py runs them):
bf16 forward/backward against fp32, `system` events with real NVML fields for the run's own device,
a compiled step without graph breaks on CUDA, and one host sync per training step counted by CUDA's
own sync debug mode. Written without a GPU to try them on: ready, not yet run on one."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from hrm.model.config import HRMConfig
from hrm.model.hrm_act import HierarchicalReasoningModel_ACTV1
from hrm.model.losses import ACTLossHead

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (run by bench/gpu_check.py)"),
]
REPO = Path(__file__).resolve().parents[1]
B, S, V = 16, 81, 11


def _head(dtype: str) -> tuple[ACTLossHead, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    cfg = HRMConfig(
        batch_size=B, seq_len=S, vocab_size=V, puzzle_emb_ndim=128, hidden_size=128, num_heads=2,
        H_layers=2, L_layers=2, H_cycles=2, L_cycles=2, halt_max_steps=4, halt_exploration_prob=0.0,
        forward_dtype=dtype,
    )  # fmt: skip
    with torch.device("cuda"):
        head = ACTLossHead(HierarchicalReasoningModel_ACTV1(cfg)).train()
    g = torch.Generator().manual_seed(0)
    data = dict(
        inputs=torch.randint(1, V, (B, S), generator=g, dtype=torch.int32),
        labels=torch.randint(2, V, (B, S), generator=g, dtype=torch.int32),
        puzzle_identifiers=torch.zeros(B, dtype=torch.int32),
    )
    return head, {k: v.cuda() for k, v in data.items()}


def test_bf16_forward_and_backward_agree_with_fp32() -> None:
    h32, data = _head("float32")
    h16, _ = _head("bfloat16")
    h16.load_state_dict(h32.state_dict())
    out = {}
    for name, h in (("fp32", h32), ("bf16", h16)):
        carry, loss, _m, _o, _h = h(h.initial_carry(data), data)
        loss.backward()
        grads = torch.cat([p.grad.float().flatten() for p in h.parameters() if p.grad is not None])
        out[name] = (float(loss), grads)
    (l32, g32), (l16, g16) = out["fp32"], out["bf16"]
    assert abs(l16 - l32) / abs(l32) < 2e-2, (l16, l32)
    cos = torch.nn.functional.cosine_similarity(g32, g16, dim=0)
    assert cos > 0.99, float(cos)


def test_system_events_carry_real_nvml_fields_for_the_runs_device(tmp_path: Path) -> None:
    from hrm.run.events import read_events

    d = tmp_path / "run"
    cmd = [sys.executable, "-m", "hrm.train", "tiny", "train.device=cuda", "train.total_steps=40", "--run-dir", str(d)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    system = [e for e in read_events(d / "events.jsonl") if e["kind"] == "system"]
    assert system, "no system event"
    e = system[-1]
    assert e["nvml"] is None and len(e["gpus"]) == 1, e
    g = e["gpus"][0]
    uuid = str(torch.cuda.get_device_properties(0).uuid)
    assert g["ours"] and g["index"] == 0 and g["uuid"].lower().endswith(uuid.lower()[-12:])
    assert g["name"] and g["mem_total"] > g["mem_used"] > 0 and g["power_limit_w"]
    assert g["torch_alloc"] > 0 and g["torch_peak"] >= g["torch_alloc"] and g["ranks"] == [0]
    assert e["proc_rss"] > 0 and e["proc_cpu_percent"] is not None


def test_a_compiled_step_has_no_graph_breaks_on_cuda() -> None:
    head, data = _head("bfloat16")
    carry, *_ = head(head.initial_carry(data), data)
    torch._dynamo.reset()
    try:
        explained = torch._dynamo.explain(head)(carry, data)
    finally:
        torch._dynamo.reset()
    assert explained.graph_break_count == 0, [r.reason.splitlines()[0] for r in explained.break_reasons]


def test_a_training_step_syncs_with_the_device_once(tmp_path: Path) -> None:
    from hrm.run.config import load_preset
    from hrm.train import distributed as D
    from hrm.train.session import Session
    from hrm.train.step import HOST_SYNCS_PER_STEP
    from hrm.train.trainer import Trainer

    cfg = load_preset("tiny", ["train.device=cuda", "train.total_steps=100", "train.eval_interval=100"])
    s = Session.open(cfg, tmp_path / "run", D.init_distributed("cuda"))
    try:
        t = Trainer(s)
        s.status("running")
        for _ in range(2):
            t._train_one()
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                for _ in range(4):
                    t._train_one()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        syncs = [w for w in caught if "synchroniz" in str(w.message)]
        assert len(syncs) == 4 * HOST_SYNCS_PER_STEP, [str(w.message)[:120] for w in syncs]
    finally:
        s.close()
