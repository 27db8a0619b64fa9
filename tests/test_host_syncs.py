"""Fewer host syncs (issue 16 §6), checked on the CPU along the paths a GPU run takes: SignSGD's dense
update (no `unique`, bitwise equal to the reference's), control flags built on the step's device,
batches made ahead by the prefetch loader (identical batches, exact resume), and a whole trainer step
that reads the device once (`HOST_SYNCS_PER_STEP`), counted by a dispatch hook on every operator."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from test_loader import _dataset
from torch.utils._python_dispatch import TorchDispatchMode

from hrm.data.loader import TrainLoader
from hrm.data.prefetch import PrefetchLoader
from hrm.optim import sign_sgd
from hrm.train import distributed as D
from hrm.train.steering import FLAGS, Steering

# Operators whose output waits for the device: a scalar read or a data-dependent size.
_SYNCING = ("_local_scalar_dense", "nonzero", "masked_select", "bincount", "unique", "is_nonzero", "equal", "item")


class _Syncs(TorchDispatchMode):
    """Every syncing operator, by the storage of the tensor it reads (`host`: storages that live on the
    host by design, e.g. the optimizer's step counters and the reduced vector once copied)."""

    def __init__(self, host: set[int] | None = None) -> None:
        super().__init__()
        self.host = host if host is not None else set()
        self.other: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        if any(s in func.__name__ for s in _SYNCING):
            src = next((a for a in args if isinstance(a, torch.Tensor)), None)
            if src is None or src.untyped_storage().data_ptr() not in self.host:
                self.other.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _sign_sgd_case(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 7, (24,), generator=g, dtype=torch.int32)  # repeats: sums of several rows
    grad = torch.randn(24, 16, generator=g)
    grad[3] = 0.0
    return grad, ids, torch.randn(9, 16, generator=g)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dense_sign_sgd_equals_the_reference_bitwise(seed: int) -> None:
    grad, ids, table = _sign_sgd_case(seed)
    ref, dense = table.clone(), table.clone()
    sign_sgd.sparse_sign_sgd_update(grad, ids, ref, lr=3e-3, weight_decay=0.1)  # CPU: the reference's unique
    sign_sgd._dense_update(grad, ids, dense, 3e-3, 0.1)
    assert torch.equal(ref, dense)
    untouched = sorted(set(range(9)) - set(ids.tolist()))
    assert untouched and torch.equal(dense[untouched], table[untouched])


def test_the_gpu_path_of_sign_sgd_has_no_syncing_operator(monkeypatch: pytest.MonkeyPatch) -> None:
    grad, ids, table = _sign_sgd_case(0)
    with _Syncs() as ref_mode:
        sign_sgd.sparse_sign_sgd_update(grad, ids, table.clone(), lr=1e-3, weight_decay=0.1)
    assert any("unique" in name for name in ref_mode.other)  # the hook does see the reference's unique
    monkeypatch.setattr(sign_sgd, "_dense", lambda w: True)  # what a CUDA table of this size takes
    with _Syncs() as mode:
        sign_sgd.sparse_sign_sgd_update(grad, ids, table.clone(), lr=1e-3, weight_decay=0.1)
    assert mode.other == []


def test_cpu_keeps_the_reference_unique() -> None:
    assert not sign_sgd._dense(torch.zeros(2, 2))


def test_control_flags_are_built_on_the_steps_device() -> None:
    st = Steering(0, device=torch.device("meta"))  # meta: any device but the host's memory
    st._on_checkpoint(signal.SIGUSR1, None)
    v = st.local_flags()
    assert v.device.type == "meta" and v.shape == (len(FLAGS),) and v.dtype == torch.float64
    host = Steering(0)
    host._on_checkpoint(signal.SIGUSR1, None)
    assert host.local_flags().tolist() == [float(f == "checkpoint") for f in FLAGS]


def _loader(root: Path) -> TrainLoader:
    return TrainLoader(root, 4, seed=3)


def test_prefetch_loader_gives_the_same_batches_and_resumes_exactly(tmp_path: Path) -> None:
    _dataset(tmp_path, [1] * 10)
    plain, ahead = _loader(tmp_path), PrefetchLoader(_loader(tmp_path), depth=3, pin=False)
    saved: dict[str, Any] = {}
    for i in range(7):  # crosses an iterator start (10 groups, batch 4: 2 batches per start)
        a, b = plain.next_batch(), ahead.next_batch()
        assert a[0] == b[0] and a[2] == b[2]
        assert all(torch.equal(a[1][k], b[1][k]) for k in a[1])
        # the state is the one after the batch the trainer took, not after what is queued ahead
        assert ahead.state_dict() == plain.state_dict() and ahead.epoch == plain.epoch
        if i == 3:
            saved = ahead.state_dict()
    later = [ahead.next_batch()[1]["inputs"] for _ in range(3)]
    again = PrefetchLoader(_loader(tmp_path), pin=False)
    again.load_state_dict(saved)
    replay = [again.next_batch()[1]["inputs"] for _ in range(6)]
    assert all(torch.equal(x, y) for x, y in zip(replay[3:], later))
    ahead.load_state_dict(saved)  # rewinding a running one drops what it had made ahead
    assert torch.equal(ahead.next_batch()[1]["inputs"], replay[0])
    ahead.close(), again.close()


def test_prefetch_loader_raises_the_loaders_error_in_the_trainers_thread(tmp_path: Path) -> None:
    _dataset(tmp_path, [1] * 3)
    ahead = PrefetchLoader(TrainLoader(tmp_path, 8, seed=0), pin=False)  # 3 groups cannot fill a batch of 8
    with pytest.raises(ValueError, match="cannot fill one global batch"):
        ahead.next_batch()


def test_a_train_step_on_the_gpu_paths_reads_the_device_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real trainer steps with SignSGD's dense update and the prefetch loader swapped in (what CUDA runs):
    no syncing operator on any tensor but the optimizers' CPU step counters and the reduced vector,
    which is copied to the host HOST_SYNCS_PER_STEP times per step."""
    from hrm.run.config import load_preset
    from hrm.train.session import Session
    from hrm.train.step import HOST_SYNCS_PER_STEP
    from hrm.train.trainer import Trainer

    monkeypatch.setattr(sign_sgd, "_dense", lambda w: True)
    cfg = load_preset("tiny", ["train.total_steps=100", "train.eval_interval=100", "train.checkpoint_interval=100"])
    s = Session.open(cfg, tmp_path / "run", D.init_distributed("cpu"))
    try:
        s.parts.loader = PrefetchLoader(s.parts.loader, pin=False)
        t = Trainer(s)
        s.status("running")
        for _ in range(2):  # first-call paths; creates the optimizer state
            t._train_one()
        host = {
            v.untyped_storage().data_ptr()
            for opt in s.optim.optimizers
            for st in opt.state.values()
            for k, v in st.items()
            if k == "step" and isinstance(v, torch.Tensor)
        }
        copies: list[int] = []
        real_cpu = torch.Tensor.cpu

        def cpu(self: torch.Tensor, *a: Any, **kw: Any) -> torch.Tensor:
            out = real_cpu(self, *a, **kw)
            copies.append(self.numel())
            host.add(out.untyped_storage().data_ptr())
            return out

        monkeypatch.setattr(torch.Tensor, "cpu", cpu)
        with _Syncs(host) as mode:
            for _ in range(4):
                t._train_one()
        monkeypatch.setattr(torch.Tensor, "cpu", real_cpu)
        assert mode.other == []
        assert len(copies) == 4 * HOST_SYNCS_PER_STEP and len(set(copies)) == 1  # the reduced vector, every step
        assert t.step == 6 and np.isfinite(t.last_train["loss"])
    finally:
        s.close()
    assert s.loader._thread is None  # the session closed the prefetch thread
