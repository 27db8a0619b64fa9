"""Which NVML devices a run uses: CUDA devices matched to NVML by UUID, MIG instances included.

NVML numbers every GPU of the node in PCI order; CUDA numbers only what CUDA_VISIBLE_DEVICES lets
through (indices, `GPU-…` UUIDs, `MIG-…` UUIDs, or unique prefixes of them), in its own order. So
NVML index i is another job's GPU on a shared box, and under MIG the card's handle reports the whole
card (no utilisation, the memory of every instance). The trainer knows its devices' UUIDs (torch
reports them); without them CUDA_VISIBLE_DEVICES is parsed as CUDA would. Torch-free."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

NVML_DEVICE_MIG_ENABLE = 1


@dataclass
class NvmlDevice:
    handle: Any
    uuid: str | None  # as NVML writes it: "GPU-…" or "MIG-…"
    nvml_index: int  # the card's NVML index (a MIG instance: its parent's)
    mig_index: int | None = None  # the instance's index on its card
    parent: Any | None = None  # a MIG instance's card: temperature and power are the card's

    @property
    def mig(self) -> bool:
        return self.mig_index is not None


def norm_uuid(uuid: Any) -> str:
    """'GPU-AbC…' / 'MIG-…' / torch's bare form → lower case without the prefix, for comparing."""
    text = uuid.decode(errors="replace") if isinstance(uuid, bytes) else str(uuid)
    text = text.strip().lower()
    for prefix in ("gpu-", "mig-"):
        if text.startswith(prefix):
            return text[len(prefix) :]
    return text


def _safe(module: Any, name: str, *args: Any) -> Any:
    try:
        return getattr(module, name)(*args)
    except Exception as exc:  # NotSupported on older cards, NotFound for an empty MIG slot, ...
        log.debug("NVML %s failed: %s", name, exc)
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def enumerate_devices(module: Any) -> list[NvmlDevice]:
    """Every card of the node in NVML order; a card in MIG mode is followed by its instances."""
    out: list[NvmlDevice] = []
    for i in range(module.nvmlDeviceGetCount()):
        h = module.nvmlDeviceGetHandleByIndex(i)
        out.append(NvmlDevice(h, _text(_safe(module, "nvmlDeviceGetUUID", h)), i))
        mode = _safe(module, "nvmlDeviceGetMigMode", h)  # (current, pending)
        if not mode or mode[0] != NVML_DEVICE_MIG_ENABLE:
            continue
        for j in range(_safe(module, "nvmlDeviceGetMaxMigDeviceCount", h) or 0):
            mh = _safe(module, "nvmlDeviceGetMigDeviceHandleByIndex", h, j)
            if mh is not None:
                out.append(NvmlDevice(mh, _text(_safe(module, "nvmlDeviceGetUUID", mh)), i, j, h))
    return out


def parse_visible(value: str | None) -> list[str] | None:
    """CUDA_VISIBLE_DEVICES as CUDA reads it: None when unset; entries up to the first invalid one."""
    if value is None:
        return None
    out = []
    for entry in value.split(","):
        entry = entry.strip()
        if not entry or entry.startswith("-"):
            break  # CUDA ignores everything from an invalid or negative entry on
        out.append(entry)
    return out


def _match_entry(entry: str, devices: list[NvmlDevice]) -> NvmlDevice | None:
    if entry.isdigit():
        # An index counts cards (not MIG instances) in NVML's PCI order; CUDA uses the same order
        # only with CUDA_DEVICE_ORDER=PCI_BUS_ID: the trainer passes UUIDs instead.
        cards = [d for d in devices if not d.mig]
        i = int(entry)
        return cards[i] if i < len(cards) else None
    want = norm_uuid(entry)
    hits = [d for d in devices if d.uuid and norm_uuid(d.uuid).startswith(want)]
    return hits[0] if len(hits) == 1 else None  # CUDA refuses an ambiguous prefix too


def select(
    devices: list[NvmlDevice], uuids: list[str] | None = None, visible: list[str] | None = None
) -> tuple[list[tuple[int, NvmlDevice | None]], list[str]]:
    """(CUDA index, NVML device or None when NVML lacks it) of the devices the run uses, and notes.

    uuids (the trainer's devices, CUDA order) win; else CUDA_VISIBLE_DEVICES entries; else every
    card (MIG instances instead of their card)."""
    notes: list[str] = []
    if uuids:
        by_uuid = {norm_uuid(d.uuid): d for d in devices if d.uuid}
        picked = [(i, by_uuid.get(norm_uuid(u))) for i, u in enumerate(uuids)]
        notes += [f"CUDA device {i} (UUID {uuids[i]}) not found by NVML" for i, d in picked if d is None]
        return picked, notes
    if visible is not None:
        picked = [(i, _match_entry(e, devices)) for i, e in enumerate(visible)]
        notes += [f"CUDA_VISIBLE_DEVICES entry {visible[i]!r} matches no NVML device" for i, d in picked if d is None]
        return [(i, d) for i, d in picked if d is not None], notes
    return list(enumerate(_cards_or_instances(devices))), notes


def _cards_or_instances(devices: list[NvmlDevice]) -> list[NvmlDevice]:
    """Every device as CUDA would list it: a card in MIG mode is its instances, not itself."""
    with_mig = {d.nvml_index for d in devices if d.mig}
    return [d for d in devices if d.mig or d.nvml_index not in with_mig]
