"""GPU panel: per device utilisation and VRAM with history sparklines, temperature, power; then
the trainer's torch memory and the host CPU/RAM. No NVML is a normal state; unreadable fields are N/A."""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

from hrm_tui.plotting import bar, sparkline
from hrm_tui.runstate import RunState, human_gib


def _num(v: object, fmt: str, unit: str) -> str:
    return f"{v:{fmt}}{unit}" if isinstance(v, (int, float)) else "N/A"


class GpuPanel(Widget):
    DEFAULT_CSS = """
    GpuPanel { height: auto; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._state: RunState | None = None
        self._sample: dict = {}
        self._source = ""

    def show(self, state: RunState | None, source: str) -> None:
        # Keep the sample dict shown with its source: the state gets a new dict per sample.
        self._state, self._source = state, source
        self._sample = state.system if state is not None else {}
        self.refresh(layout=True)

    def render(self) -> Text:
        s = self._state
        t = Text()
        sample = self._sample
        if not sample:
            return Text("waiting for the first system sample…", style="dim")
        width = max(10, self.size.width)
        spark_w = max(4, min(24, width - 24))
        gpus = sample.get("gpus") or []
        if not gpus:
            reason = sample.get("nvml") or "no GPU visible"
            t.append("no GPU", style="bold")
            t.append(f": {reason}\n", style="dim")
        for gpu in gpus:
            idx = int(gpu.get("index", 0))
            hist = s.gpu_history.get(idx) if s is not None else None
            t.append(f"GPU {idx} · {gpu.get('name') or 'N/A'}\n", style="bold")
            t.append("util  ")
            t.append(sparkline(hist.util if hist else [], spark_w, 0.0, 100.0), style="green")
            t.append(f" {_num(gpu.get('gpu_util'), '.0f', ' %')}\n")
            used, total = gpu.get("mem_used"), gpu.get("mem_total")
            frac = (
                used / total if isinstance(used, (int, float)) and isinstance(total, (int, float)) and total else None
            )
            t.append("VRAM  ")
            t.append(bar(frac, spark_w), style="cyan")
            t.append(f" {human_gib(used)} / {human_gib(total)} GiB\n")
            t.append(
                f"temp {_num(gpu.get('temp_c'), '.0f', ' °C')}   power {_num(gpu.get('power_w'), '.0f', '')}"
                f" / {_num(gpu.get('power_limit_w'), '.0f', ' W')}\n"
            )
        if sample.get("torch_alloc") is not None or sample.get("torch_peak") is not None:
            t.append(
                f"torch alloc {human_gib(sample.get('torch_alloc'))} GiB  "
                f"peak {human_gib(sample.get('torch_peak'))} GiB\n"
            )
        t.append("host CPU ")
        t.append(sparkline(s.cpu_history if s is not None else [], min(12, spark_w), 0.0, 100.0), style="green")
        t.append(
            f" {_num(sample.get('cpu_percent'), '.0f', ' %')}   RAM {human_gib(sample.get('host_mem_used'))}"
            f" / {human_gib(sample.get('host_mem_total'))} GiB"
        )
        if self._source:
            t.append(f"\n({self._source})", style="dim")
        return t
