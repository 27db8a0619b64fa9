"""The trainer's side of GPU sampling (hrm.train.devices), without a GPU: each rank's allocator
numbers travel through the collective watch's store to rank 0's sampler and land on that rank's
device, found in NVML by UUID. torch.cuda's allocator queries are the only thing stood in for."""

from __future__ import annotations

import pytest
import torch
from test_sysmon import NODE, FakeNVML

from hrm.run.sysmon import SystemSampler
from hrm.train.devices import sampler_options
from hrm.train.dist_watch import CollectiveWatch
from hrm.train.distributed import DistEnv


def test_each_rank_numbers_reach_rank0_and_its_device(monkeypatch: pytest.MonkeyPatch) -> None:
    alloc = {0: 3 << 30, 1: 5 << 30}
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda dev: alloc[dev.index])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda dev: alloc[dev.index] + (1 << 30))
    store = torch.distributed.HashStore()
    uuids = [NODE[2]["uuid"][4:], NODE[0]["uuid"][4:]]  # torch's form: no GPU- prefix
    envs = []
    for rank in range(2):
        env = DistEnv(rank=rank, world_size=2, device=torch.device("cuda", rank), device_uuids=uuids)
        env.watch = CollectiveWatch(rank, 2, 60.0, store=store)
        env.watch.info = (lambda d: lambda: f"{torch.cuda.memory_allocated(d)} {torch.cuda.max_memory_allocated(d)}")(
            env.device
        )
        envs.append(env)
    opts = sampler_options(envs[0])
    assert opts["devices"] == uuids
    assert opts["torch_stats"]()["devices"][uuids[1]]["torch_alloc"] is None  # rank 1 has published nothing yet
    envs[1].watch.check()  # rank 1's watch thread publishes its numbers
    s = SystemSampler(nvml=FakeNVML(NODE), environ={}, **opts).sample_once()
    got = [(g["nvml_index"], g["ranks"], g["torch_alloc"], g["torch_peak"]) for g in s["gpus"]]
    assert got == [(2, [0], 3 << 30, 4 << 30), (0, [1], 5 << 30, 6 << 30)]
    assert (s["torch_alloc"], s["torch_peak"]) == (3 << 30, 4 << 30)  # this process's, as before


def test_cpu_runs_report_no_allocator_numbers() -> None:
    opts = sampler_options(DistEnv())
    s = SystemSampler(nvml=FakeNVML([]), environ={}, **opts).sample_once()
    assert s["torch_alloc"] is None and s["torch_peak"] is None and s["gpus"] == []
