from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import psutil

from hrm.run.sysmon import SystemSampler


class FakeNVMLError(Exception):
    pass


class FakeNVML:
    """A small stand-in for pynvml with the same call names and units (memory in bytes, power in mW).
    Per-GPU `broken` lists the queries that fail on that device, as NotSupported does on real boards.
    A GPU with `mig` (a list of instance dicts) is in MIG mode; an instance's handle is (card, j) and,
    as on real boards, its utilisation is not supported."""

    NVML_TEMPERATURE_GPU = 0
    NVMLError = FakeNVMLError

    def __init__(self, gpus: list[dict], init_error: str | None = None) -> None:
        self._gpus = gpus
        self._init_error = init_error
        self.calls: list[str] = []

    def _gpu(self, handle, query: str) -> dict:
        self.calls.append(query)
        if isinstance(handle, tuple):  # a MIG instance
            gpu = self._gpus[handle[0]]["mig"][handle[1]]
            if query in ("util", "temp", "power", "limit"):
                raise FakeNVMLError("Not Supported")
            return gpu
        gpu = self._gpus[handle]
        if query in gpu.get("broken", ()):
            raise FakeNVMLError("Not Supported")
        return gpu

    def nvmlDeviceGetUUID(self, h) -> str:
        return self._gpu(h, "uuid")["uuid"]

    def nvmlDeviceGetMigMode(self, h) -> tuple[int, int]:
        on = int(bool(self._gpu(h, "mig_mode").get("mig")))
        return on, on

    def nvmlDeviceGetMaxMigDeviceCount(self, h) -> int:
        return 7

    def nvmlDeviceGetMigDeviceHandleByIndex(self, h, j):
        if j >= len(self._gpus[h]["mig"]):
            raise FakeNVMLError("Not Found")
        return (h, j)

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
    name="NVIDIA H100 80GB HBM3",
    uuid="GPU-a0000000-1111-2222-3333-444444444444",
    util=97,
    used=14 << 30,
    total=80 << 30,
    temp=71,
    power_mw=412_000,
    limit_mw=700_000,
)


def _check_host_fields(sample: dict) -> None:
    assert 0.0 <= sample["cpu_percent"] <= 100.0 * 64
    assert sample["rss"] > 10 << 20
    assert 0 < sample["host_mem_used"] <= sample["host_mem_total"]


def test_two_gpus_with_unreadable_fields_are_null() -> None:
    nvml = FakeNVML([H100, dict(H100, name="NVIDIA A100", broken=("power", "temp", "util"))])
    sampler = SystemSampler(nvml=nvml, environ={})  # no CUDA_VISIBLE_DEVICES: every card
    sample = sampler.sample_once()
    assert sample["nvml"] is None and len(sample["gpus"]) == 2
    g0, g1 = sample["gpus"]
    assert g0 == {
        "index": 0,
        "ours": True,
        "uuid": H100["uuid"],
        "nvml_index": 0,
        "mig": False,
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
    assert enough.wait(30)
    thread = sampler._thread
    sampler.stop()
    n = len(got)
    assert all(s["gpus"][0]["temp_c"] == 71 for s in got)
    # Nothing after stop: stop() has joined the sampling thread (no fixed pause to watch for a late sample).
    assert thread is not None and not thread.is_alive() and len(got) == n


def test_a_failing_callback_does_not_kill_the_thread() -> None:
    calls: list[int] = []
    twice = threading.Event()

    def flaky(sample: dict) -> None:
        calls.append(1)
        if len(calls) >= 2:
            twice.set()
        raise ValueError("viewer bug")

    sampler = SystemSampler(flaky, interval=0.02, nvml=FakeNVML([])).start()
    assert twice.wait(30)
    sampler.stop()


# --- the run's devices, matched by UUID ------------------------------------------------------------
def _card(i: int, **kw) -> dict:
    return dict(
        H100, uuid=f"GPU-{i}{i}{i}{i}0000-aaaa-bbbb-cccc-00000000000{i}", used=(10 + i) << 30, temp=60 + i, **kw
    )


MIG_CARD = dict(
    _card(3),
    name="NVIDIA A100-SXM4-80GB",
    mig=[
        dict(
            name="NVIDIA A100-SXM4-80GB MIG 3g.40gb",
            uuid="MIG-5f1e0000-0000-0000-0000-000000000001",
            used=7 << 30,
            total=40 << 30,
        ),
        dict(
            name="NVIDIA A100-SXM4-80GB MIG 3g.40gb",
            uuid="MIG-5f2e0000-0000-0000-0000-000000000002",
            used=1 << 30,
            total=40 << 30,
        ),
    ],
)
NODE = [_card(0), _card(1), _card(2), MIG_CARD]


def _picked(sample: dict) -> list[tuple]:
    return [(g["index"], g["nvml_index"], g["ours"], g["mem_used"]) for g in sample["gpus"]]


def test_the_trainers_uuids_pick_its_devices_in_cuda_order() -> None:
    # torch writes UUIDs without the GPU- prefix; CUDA device 0 of this run is NVML's card 2.
    bare = [NODE[2]["uuid"][4:].upper(), NODE[0]["uuid"]]
    s = SystemSampler(nvml=FakeNVML(NODE), devices=bare, environ={"CUDA_VISIBLE_DEVICES": "2,0"}).sample_once()
    assert _picked(s) == [(0, 2, True, 12 << 30), (1, 0, True, 10 << 30)]
    s = SystemSampler(nvml=FakeNVML(NODE), devices=bare, include_others=True, environ={}).sample_once()
    others = [g for g in s["gpus"] if not g["ours"]]
    # The other cards of the node, marked not ours; the MIG card appears as its instances.
    assert [(g["index"], g["nvml_index"], g["mig"]) for g in others] == [
        (None, 1, False),
        (None, 3, True),
        (None, 3, True),
    ]


def test_a_uuid_nvml_does_not_know_gives_a_device_of_nulls() -> None:
    s = SystemSampler(nvml=FakeNVML(NODE), devices=["GPU-deadbeef"], environ={}).sample_once()
    assert len(s["gpus"]) == 1 and s["gpus"][0]["index"] == 0 and s["gpus"][0]["mem_used"] is None


def test_cuda_visible_devices_by_index_uuid_prefix_and_mig() -> None:
    def pick(cvd: str) -> list[tuple]:
        return _picked(SystemSampler(nvml=FakeNVML(NODE), environ={"CUDA_VISIBLE_DEVICES": cvd}).sample_once())

    assert pick("3,1") == [(0, 3, True, 13 << 30), (1, 1, True, 11 << 30)]  # indices count cards
    assert pick("GPU-2222,GPU-0000") == [(0, 2, True, 12 << 30), (1, 0, True, 10 << 30)]  # unique prefixes
    assert pick("1,-1,2") == [(0, 1, True, 11 << 30)]  # CUDA stops at an invalid entry
    assert pick("") == []  # set but empty: CUDA sees no device
    assert pick("GPU-") == []  # ambiguous: CUDA refuses it, so do we
    s = SystemSampler(nvml=FakeNVML(NODE), environ={"CUDA_VISIBLE_DEVICES": "MIG-5f2e"}).sample_once()
    (g,) = s["gpus"]
    # The instance's own memory and name; utilisation is not reported for MIG; temperature is the card's.
    assert g["mig"] and g["nvml_index"] == 3 and g["name"].endswith("MIG 3g.40gb")
    assert (g["mem_used"], g["mem_total"], g["gpu_util"], g["temp_c"]) == (1 << 30, 40 << 30, None, 63)


def test_no_cuda_visible_devices_lists_cards_and_mig_instances_not_their_card() -> None:
    s = SystemSampler(nvml=FakeNVML(NODE), environ={}).sample_once()
    assert [(g["nvml_index"], g["mig"]) for g in s["gpus"]] == [
        (0, False),
        (1, False),
        (2, False),
        (3, True),
        (3, True),
    ]


def test_torch_numbers_land_on_each_ranks_device() -> None:
    uuids = [NODE[1]["uuid"], NODE[2]["uuid"]]

    def stats() -> dict:
        return {
            "torch_alloc": 5,
            "torch_peak": 6,
            "devices": {
                uuids[0][4:]: {"torch_alloc": 5, "torch_peak": 6, "ranks": [0]},
                uuids[1]: {"torch_alloc": 7, "torch_peak": 8, "ranks": [1]},
            },
        }

    s = SystemSampler(nvml=FakeNVML(NODE), devices=uuids, torch_stats=stats, environ={}).sample_once()
    assert [(g["torch_alloc"], g["torch_peak"], g["ranks"]) for g in s["gpus"]] == [(5, 6, [0]), (7, 8, [1])]
    assert (s["torch_alloc"], s["torch_peak"]) == (5, 6)


def test_the_process_own_cpu_and_rss() -> None:
    sampler = SystemSampler(nvml=FakeNVML([]))
    w0, c0 = time.monotonic(), time.process_time()
    while time.process_time() - c0 < 0.3:  # this process busy: its own CPU share must show it
        sum(range(1000))
    s = sampler.sample_once()
    # What this process used over the same window (a shared machine may give it less than a core).
    expected = 100 * (time.process_time() - c0) / (time.monotonic() - w0)
    assert s["proc_cpu_percent"] > 5.0 and abs(s["proc_cpu_percent"] - expected) < 0.25 * expected + 5, (
        s["proc_cpu_percent"],
        expected,
    )
    assert s["proc_rss"] > 10 << 20 and abs(s["proc_rss"] - psutil.Process().memory_info().rss) < 64 << 20


def test_fake_nvml_through_sysmon_reports_only_what_it_is_told() -> None:
    from support.tui import FakeNvml, NoNvml, fixed_sampler

    s = fixed_sampler(FakeNvml(gpus=2, missing=("temp_c", "power_w")))()
    assert s["nvml"] is None and [g["index"] for g in s["gpus"]] == [0, 1]
    assert s["gpus"][0]["temp_c"] is None and s["gpus"][0]["power_w"] is None
    assert s["gpus"][1]["mem_used"] == 16_140_000_000 and s["gpus"][0]["gpu_util"] == 97
    none = fixed_sampler(NoNvml())()
    assert none["gpus"] == [] and "NVML not available" in none["nvml"]
