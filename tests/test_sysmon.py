from __future__ import annotations

import subprocess
import sys
import threading
from types import SimpleNamespace

from hrm.run.sysmon import SystemSampler


class FakeNVMLError(Exception):
    pass


class FakeNVML:
    """A small stand-in for pynvml with the same call names and units (memory in bytes, power in mW).
    Per-GPU `broken` lists the queries that fail on that device, as NotSupported does on real boards."""

    NVML_TEMPERATURE_GPU = 0
    NVMLError = FakeNVMLError

    def __init__(self, gpus: list[dict], init_error: str | None = None) -> None:
        self._gpus = gpus
        self._init_error = init_error
        self.calls: list[str] = []

    def _gpu(self, handle, query: str) -> dict:
        self.calls.append(query)
        gpu = self._gpus[handle]
        if query in gpu.get("broken", ()):
            raise FakeNVMLError("Not Supported")
        return gpu

    def nvmlInit(self) -> None:
        self.calls.append("init")
        if self._init_error:
            raise FakeNVMLError(self._init_error)

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetCount(self) -> int:
        return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetName(self, h):
        return self._gpu(h, "name")["name"].encode()  # older pynvml returns bytes

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=self._gpu(h, "util")["util"], memory=0)

    def nvmlDeviceGetMemoryInfo(self, h):
        g = self._gpu(h, "mem")
        return SimpleNamespace(used=g["used"], total=g["total"], free=g["total"] - g["used"])

    def nvmlDeviceGetTemperature(self, h, sensor):
        assert sensor == self.NVML_TEMPERATURE_GPU
        return self._gpu(h, "temp")["temp"]

    def nvmlDeviceGetPowerUsage(self, h):
        return self._gpu(h, "power")["power_mw"]

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        return self._gpu(h, "limit")["limit_mw"]


H100 = dict(
    name="NVIDIA H100 80GB HBM3", util=97, used=14 << 30, total=80 << 30, temp=71, power_mw=412_000, limit_mw=700_000
)


def _check_host_fields(sample: dict) -> None:
    assert 0.0 <= sample["cpu_percent"] <= 100.0 * 64
    assert sample["rss"] > 10 << 20
    assert 0 < sample["host_mem_used"] <= sample["host_mem_total"]


def test_two_gpus_with_unreadable_fields_are_null() -> None:
    nvml = FakeNVML([H100, dict(H100, name="NVIDIA A100", broken=("power", "temp", "util"))])
    sampler = SystemSampler(nvml=nvml)
    sample = sampler.sample_once()
    assert sample["nvml"] is None and len(sample["gpus"]) == 2
    g0, g1 = sample["gpus"]
    assert g0 == {
        "index": 0,
        "name": "NVIDIA H100 80GB HBM3",
        "gpu_util": 97,
        "mem_used": 14 << 30,
        "mem_total": 80 << 30,
        "temp_c": 71,
        "power_w": 412.0,
        "power_limit_w": 700.0,
    }
    assert g1["name"] == "NVIDIA A100" and g1["mem_used"] == 14 << 30
    assert g1["gpu_util"] is None and g1["temp_c"] is None and g1["power_w"] is None
    assert g1["power_limit_w"] == 700.0
    _check_host_fields(sample)
    sampler.stop()
    assert nvml.calls[-1] == "shutdown"


def test_nvml_missing_is_a_normal_state() -> None:
    nvml = FakeNVML([], init_error="NVML Shared Library Not Found")
    sample = SystemSampler(nvml=nvml).sample_once()
    assert sample["gpus"] == [] and sample["nvml"] == "NVML not available: NVML Shared Library Not Found"
    assert sample["torch_alloc"] is None and sample["torch_peak"] is None
    _check_host_fields(sample)


def test_real_pynvml_on_this_machine_never_raises() -> None:
    sample = SystemSampler().sample_once()  # real nvidia-ml-py: no driver here, a GPU elsewhere
    if sample["gpus"]:
        assert sample["nvml"] is None and all("mem_total" in g for g in sample["gpus"])
    else:
        assert sample["nvml"].startswith("NVML not available")
    _check_host_fields(sample)


def test_torch_stats_callback_and_its_failure() -> None:
    nvml = FakeNVML([H100])
    sample = SystemSampler(nvml=nvml, torch_stats=lambda: {"torch_alloc": 123, "torch_peak": 456}).sample_once()
    assert (sample["torch_alloc"], sample["torch_peak"]) == (123, 456)

    def broken() -> dict:
        raise RuntimeError("CUDA lost")

    sample = SystemSampler(nvml=nvml, torch_stats=broken).sample_once()
    assert sample["torch_alloc"] is None and sample["gpus"][0]["gpu_util"] == 97


def test_thread_emits_samples_and_stops_promptly() -> None:
    got: list[dict] = []
    enough = threading.Event()

    def on_sample(sample: dict) -> None:
        got.append(sample)
        if len(got) >= 3:
            enough.set()

    sampler = SystemSampler(on_sample, interval=0.02, nvml=FakeNVML([H100])).start()
    assert enough.wait(10)
    sampler.stop()
    n = len(got)
    assert all(s["gpus"][0]["temp_c"] == 71 for s in got)
    enough.clear()
    assert not enough.wait(0.1) and len(got) == n  # nothing after stop


def test_a_failing_callback_does_not_kill_the_thread() -> None:
    calls: list[int] = []
    twice = threading.Event()

    def flaky(sample: dict) -> None:
        calls.append(1)
        if len(calls) >= 2:
            twice.set()
        raise ValueError("viewer bug")

    sampler = SystemSampler(flaky, interval=0.02, nvml=FakeNVML([])).start()
    assert twice.wait(10)
    sampler.stop()


def test_sysmon_does_not_import_torch() -> None:
    code = "import sys, hrm.run.sysmon; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0
