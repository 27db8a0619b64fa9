"""System sampler: GPUs through NVML, host CPU and memory through psutil, every 1–2 s in a thread.

NVML being absent (no driver, no GPU, CPU CI) is a normal state: `gpus` is [] and `nvml` says why.
Any single NVML query that fails gives null for that field, never an exception or an invented value.
Torch-free: the trainer passes a callback for torch's allocator numbers; the app uses this too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

import psutil

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
    """NVML session: init once, query per device, every call guarded."""

    def __init__(self, module: ModuleType | Any | None) -> None:
        self.module = module
        self.error: str | None = None
        self.handles: list[Any] = []
        self.initialized = False
        if module is None:
            self.error = "NVML not available: the nvidia-ml-py package is not installed"
            return
        try:
            module.nvmlInit()
            self.initialized = True
            count = module.nvmlDeviceGetCount()
            self.handles = [module.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:  # NVMLError_LibraryNotFound, DriverNotLoaded, ...: all mean "no NVML"
            self.error = f"NVML not available: {_text(exc) or type(exc).__name__}"
            self.handles = []

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self.module, name)(*args)
        except Exception as exc:  # NotSupported, NoPermission, GPU lost...: the field is unreadable
            log.debug("NVML %s failed: %s", name, exc)
            return None

    def gpus(self) -> list[dict[str, Any]]:
        m = self.module
        out = []
        for index, h in enumerate(self.handles):
            util = self._call("nvmlDeviceGetUtilizationRates", h)
            mem = self._call("nvmlDeviceGetMemoryInfo", h)
            temp_sensor = getattr(m, "NVML_TEMPERATURE_GPU", 0)
            power = self._call("nvmlDeviceGetPowerUsage", h)  # milliwatts
            limit = self._call("nvmlDeviceGetEnforcedPowerLimit", h)
            name = self._call("nvmlDeviceGetName", h)
            out.append(
                {
                    "index": index,
                    "name": None if name is None else _text(name),
                    "gpu_util": getattr(util, "gpu", None),
                    "mem_used": getattr(mem, "used", None),
                    "mem_total": getattr(mem, "total", None),
                    "temp_c": self._call("nvmlDeviceGetTemperature", h, temp_sensor),
                    "power_w": None if power is None else power / 1000.0,
                    "power_limit_w": None if limit is None else limit / 1000.0,
                }
            )
        return out

    def shutdown(self) -> None:
        if self.initialized:
            self._call("nvmlShutdown")
            self.initialized = False
            self.handles = []


class SystemSampler:
    """Samples the system every `interval` seconds on a daemon thread and hands each sample (a dict
    of the `system` event's fields) to `callback`.

    nvml: the NVML module to use (default: pynvml; tests pass a fake, the one fake we allow, for
    hardware we lack). torch_stats: returns {"torch_alloc": bytes, "torch_peak": bytes} or {}.
    """

    def __init__(
        self,
        callback: Callable[[Sample], None] | None = None,
        interval: float = 1.5,
        nvml: ModuleType | Any | None = None,
        torch_stats: Callable[[], dict[str, Any]] | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        if not 0 < interval:
            raise ValueError(f"interval must be positive, got {interval}")
        self.callback = callback
        self.interval = interval
        self.torch_stats = torch_stats
        self.stop_event = stop_event or threading.Event()
        self._nvml = _Nvml(nvml if nvml is not None else _load_pynvml())
        self._process = psutil.Process()
        psutil.cpu_percent(interval=None)  # primes the counter: the first real sample is then meaningful
        self._thread: threading.Thread | None = None

    @property
    def nvml_error(self) -> str | None:
        return self._nvml.error

    def sample_once(self) -> Sample:
        vm = psutil.virtual_memory()
        sample: Sample = {
            "gpus": self._nvml.gpus(),
            "nvml": self._nvml.error,
            "torch_alloc": None,
            "torch_peak": None,
            "cpu_percent": psutil.cpu_percent(interval=None),
            "rss": self._rss(),
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
        return sample

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
