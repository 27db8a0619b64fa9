"""System sampler: the run's GPUs through NVML (matched by UUID: hrm.run.nvml_devices), host CPU and
memory and this process's own CPU and RSS through psutil, every 1–2 s in a thread.

NVML being absent (no driver, no GPU, CPU CI) is a normal state: `gpus` is [] and `nvml` says why.
Any single NVML query that fails gives null for that field, never an exception or an invented value.
Torch-free: the trainer passes a callback for torch's allocator numbers; the app uses this too.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping
from types import ModuleType
from typing import Any

import psutil

from hrm.run.nvml_devices import NvmlDevice, enumerate_devices, norm_uuid, parse_visible, select

log = logging.getLogger(__name__)

Sample = dict[str, Any]


def _load_pynvml() -> ModuleType | None:
    try:
        import pynvml  # from nvidia-ml-py
    except ImportError:
        return None
    return pynvml


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class _Nvml:
    """NVML session: init once, resolve the run's devices once (hrm.run.nvml_devices), query them
    per sample, every call guarded."""

    def __init__(
        self,
        module: ModuleType | Any | None,
        uuids: list[str] | None = None,
        visible: list[str] | None = None,
        include_others: bool = False,
    ) -> None:
        self.module = module
        self.error: str | None = None
        self.devices: list[tuple[int | None, NvmlDevice | None, bool]] = []  # (CUDA index, device, ours)
        self.initialized = False
        if module is None:
            self.error = "NVML not available: the nvidia-ml-py package is not installed"
            return
        try:
            module.nvmlInit()
            self.initialized = True
            every = enumerate_devices(module)
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: all mean "no NVML"
            self.error = f"NVML not available: {_text(exc) or type(exc).__name__}"
            return
        picked, notes = select(every, uuids, visible)
        for note in notes:
            log.warning("%s", note)
        self.devices = [(i, d, True) for i, d in picked]
        if include_others:
            mine = {id(d) for _, d in picked if d is not None}
            taken = {d.nvml_index for _, d in picked if d is not None}  # a card whose instance we use is ours
            rest = [d for _, d in select([d for d in every if id(d) not in mine and d.nvml_index not in taken])[0]]
            self.devices += [(None, d, False) for d in rest if d is not None]

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.module, name)(*args)
        except Exception as exc:  # NotSupported, NoPermission, GPU lost...: the field is unreadable
            log.debug("NVML %s failed: %s", name, exc)
            return None

    def gpus(self) -> list[dict[str, Any]]:
        out = []
        for index, dev, ours in self.devices:
            out.append(self._sample(index, dev, ours))
        return out

    def _sample(self, index: int | None, dev: NvmlDevice | None, ours: bool) -> dict[str, Any]:
        """One device's fields; a MIG instance's own memory and name, its card's temperature and power."""
        g: dict[str, Any] = dict.fromkeys(_GPU_FIELDS)
        g.update(index=index, ours=ours, uuid=None, nvml_index=None, mig=False)
        if dev is None:
            return g  # CUDA has it, NVML does not: every field unknown
        h, card = dev.handle, dev.parent if dev.mig else dev.handle
        util = self._call("nvmlDeviceGetUtilizationRates", h)  # NotSupported on MIG instances: null
        mem = self._call("nvmlDeviceGetMemoryInfo", h)
        power = self._call("nvmlDeviceGetPowerUsage", card)  # milliwatts
        limit = self._call("nvmlDeviceGetEnforcedPowerLimit", card)
        name = self._call("nvmlDeviceGetName", h)
        g.update(
            uuid=dev.uuid,
            nvml_index=dev.nvml_index,
            mig=dev.mig,
            name=None if name is None else _text(name),
            gpu_util=getattr(util, "gpu", None),
            mem_used=getattr(mem, "used", None),
            mem_total=getattr(mem, "total", None),
            temp_c=self._call("nvmlDeviceGetTemperature", card, getattr(self.module, "NVML_TEMPERATURE_GPU", 0)),
            power_w=None if power is None else power / 1000.0,
            power_limit_w=None if limit is None else limit / 1000.0,
        )
        return g

    def shutdown(self) -> None:
        if self.initialized:
            self._call("nvmlShutdown")
            self.initialized = False
            self.devices = []


_GPU_FIELDS = ("name", "gpu_util", "mem_used", "mem_total", "temp_c", "power_w", "power_limit_w")
_TORCH_FIELDS = ("torch_alloc", "torch_peak")


class SystemSampler:
    """Samples the system every `interval` seconds on a daemon thread and hands each sample (a dict
    of the `system` event's fields) to `callback`.

    nvml: the NVML module to use (default: pynvml; tests pass a fake, the one fake we allow, for
    hardware we lack). devices: the UUIDs of the CUDA devices the run uses, in CUDA order (the
    trainer's); without them CUDA_VISIBLE_DEVICES (from `environ`, default os.environ) decides.
    include_others: also list the node's other devices, with `ours` false. torch_stats: returns
    {"torch_alloc": bytes, "torch_peak": bytes} of this process and optionally "devices":
    {uuid: {"torch_alloc", "torch_peak", "ranks"}} for each rank's device; or {}.
    """

    def __init__(
        self,
        callback: Callable[[Sample], None] | None = None,
        interval: float = 1.5,
        nvml: ModuleType | Any | None = None,
        torch_stats: Callable[[], dict[str, Any]] | None = None,
        stop_event: threading.Event | None = None,
        devices: list[str] | None = None,
        environ: Mapping[str, str] | None = None,
        include_others: bool = False,
    ) -> None:
        if not 0 < interval:
            raise ValueError(f"interval must be positive, got {interval}")
        self.callback = callback
        self.interval = interval
        self.torch_stats = torch_stats
        self.stop_event = stop_event or threading.Event()
        visible = parse_visible((os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES"))
        module = nvml if nvml is not None else _load_pynvml()
        self._nvml = _Nvml(module, devices, visible, include_others)
        self._process = psutil.Process()
        # Both counters primed: the first real sample is then meaningful, not 0.
        psutil.cpu_percent(interval=None)
        self._process.cpu_percent(interval=None)
        self._thread: threading.Thread | None = None

    def sample_once(self) -> Sample:
        vm = psutil.virtual_memory()
        sample: Sample = {
            "gpus": self._nvml.gpus(),
            "nvml": self._nvml.error,
            "torch_alloc": None,
            "torch_peak": None,
            "cpu_percent": psutil.cpu_percent(interval=None),
            "rss": self._rss(),  # kept for older readers: the same number as proc_rss
            "proc_cpu_percent": self._proc_cpu(),  # this process (the trainer): 100 = one core busy
            "proc_rss": self._rss(),
            "host_mem_used": vm.total - vm.available,
            "host_mem_total": vm.total,
        }
        if self.torch_stats is not None:
            try:
                stats = self.torch_stats() or {}
            except Exception as exc:
                log.debug("torch_stats callback failed: %s", exc)
                stats = {}
            sample["torch_alloc"] = stats.get("torch_alloc")
            sample["torch_peak"] = stats.get("torch_peak")
            per_device = {norm_uuid(u): v for u, v in (stats.get("devices") or {}).items()}
            for g in sample["gpus"]:
                mine = per_device.get(norm_uuid(g["uuid"])) if g.get("uuid") else None
                if mine:
                    g.update({k: mine.get(k) for k in (*_TORCH_FIELDS, "ranks")})
        return sample

    def _proc_cpu(self) -> float | None:
        try:
            return self._process.cpu_percent(interval=None)
        except psutil.Error:
            return None

    def _rss(self) -> int | None:
        try:
            return self._process.memory_info().rss
        except psutil.Error:
            return None

    def start(self) -> SystemSampler:
        self._thread = threading.Thread(target=self._run, name="hrm-sysmon", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self.stop_event.is_set():
            try:
                sample = self.sample_once()
                if self.callback is not None:
                    self.callback(sample)
            except Exception:  # a sampler must never take the trainer down
                log.exception("system sampler failed; it keeps going")
            self.stop_event.wait(self.interval)

    def stop(self, timeout: float = 5.0) -> None:
        self.stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self._nvml.shutdown()

    def __enter__(self) -> SystemSampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
