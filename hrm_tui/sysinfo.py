"""The app's own system sample (NVML + host), shaped like a `system` event.

Used only while no live run is attached (a live trainer reports its own). Delegates to
hrm.train.sysmon when it offers a sampler; otherwise reads psutil and NVML directly. Every NVML
call that fails becomes None (shown as N/A), and a missing NVML is a reason string, not an error.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import psutil

log = logging.getLogger(__name__)


def host_sample() -> dict[str, Any]:
    vm = psutil.virtual_memory()
    return {
        "cpu_percent": psutil.cpu_percent(interval=None),
        "host_mem_used": vm.total - vm.available,
        "host_mem_total": vm.total,
        "rss": psutil.Process().memory_info().rss,
        "torch_alloc": None,
        "torch_peak": None,
    }


def _nvml_gpus() -> tuple[list[dict[str, Any]], str | None]:
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception as exc:  # no driver, no library, no GPU: all normal
        return [], f"NVML not available: {exc}"
    gpus = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(i)
        gpus.append({
            "index": i,
            "name": _try(lambda: _s(pynvml.nvmlDeviceGetName(h))),
            "gpu_util": _try(lambda: pynvml.nvmlDeviceGetUtilizationRates(h).gpu),
            "mem_used": _try(lambda: pynvml.nvmlDeviceGetMemoryInfo(h).used),
            "mem_total": _try(lambda: pynvml.nvmlDeviceGetMemoryInfo(h).total),
            "temp_c": _try(lambda: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU)),
            "power_w": _try(lambda: pynvml.nvmlDeviceGetPowerUsage(h) / 1000.0),
            "power_limit_w": _try(lambda: pynvml.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0),
        })
    return gpus, None


def _s(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def _try(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:
        return None


def fallback_sample() -> dict[str, Any]:
    gpus, reason = _nvml_gpus()
    return {"gpus": gpus, "nvml": reason, **host_sample()}


def default_sampler() -> Callable[[], dict[str, Any]]:
    """The sampler the app uses: hrm.train.sysmon's when available (same fields as the trainer)."""
    try:
        from hrm.train import sysmon
    except ImportError:
        return fallback_sample
    for name in ("sample_system", "sample"):
        fn = getattr(sysmon, name, None)
        if callable(fn):
            return fn
    return fallback_sample
