"""Can this machine train on CUDA? Answered without importing torch (the app never does).

Two things must hold: an NVIDIA GPU the driver sees (/proc/driver/nvidia/gpus, else NVML), and a
torch build with CUDA (its torch/version.py records `cuda = None` in a CPU-only wheel). The picker
asks once per app start and refuses a `cuda` preset with the answer instead of leaving a dead run.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from pathlib import Path
from typing import Any

_CUDA_LINE = re.compile(r"^cuda\s*(?::[^=]*)?=\s*(.+?)\s*$", re.MULTILINE)


def torch_version_file() -> Path | None:
    """torch/version.py of the torch this Python would import (find_spec locates, never imports)."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "version.py"


def torch_cuda(version_file: Path | None) -> str | None:
    """The CUDA version torch was built with ('12.4'), or None (CPU-only build, or no torch)."""
    try:
        text = version_file.read_text() if version_file is not None else ""
    except OSError:
        return None
    m = _CUDA_LINE.search(text)
    if m is None or m.group(1) == "None":
        return None
    return m.group(1).strip("'\"")


def nvidia_gpus(proc: Path, nvml: Any | None) -> tuple[int, str]:
    """(how many NVIDIA GPUs the driver sees, how we know or why none)."""
    gpus_dir = proc / "driver" / "nvidia" / "gpus"
    try:
        found = len(list(gpus_dir.iterdir()))
    except OSError:
        found = 0
    if found:
        return found, str(gpus_dir)
    lib: Any = nvml
    if lib is None:
        try:
            lib = importlib.import_module("pynvml")  # nvidia-ml-py: a dependency of hrm (hrm.run.sysmon)
        except ImportError:
            return 0, f"no {gpus_dir}, no nvidia-ml-py"
    try:
        lib.nvmlInit()
        try:
            count = int(lib.nvmlDeviceGetCount())
        finally:
            lib.nvmlShutdown()
    except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded: no usable driver
        return 0, f"NVML: {exc or type(exc).__name__}"
    return count, "NVML" if count else "NVML sees no device"


def cuda_missing(
    *,
    proc: Path = Path("/proc"),
    nvml: Any | None = None,
    version_file: Path | None = None,
    environ: dict[str, str] | None = None,
) -> str | None:
    """Why CUDA training cannot start here (one line), or None when it can."""
    env = os.environ if environ is None else environ
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU"
    count, how = nvidia_gpus(proc, nvml)
    if not count:
        return f"no NVIDIA GPU on this machine ({how})"
    vf = version_file if version_file is not None else torch_version_file()
    if torch_cuda(vf) is None:
        return f"{count} GPU(s) found, but this Python's torch is a CPU-only build ({vf})"
    return None
