"""The dashboard's views (issue 14): the segment stepper walks a sample's ACT segments, the 80×24
layout's panel keys work without focus and fit the puzzle, a 30×30 maze is readable at 200×50 and
scrolls at 80×24. Events are written as real events.jsonl files (tests/support/tui.py)."""

from __future__ import annotations

import json
from pathlib import Path

from support.train import wait_ui
from support.tui import maze_sample, run_events, write_run
from test_tui_dashboard import make_app, text

from hrm_tui.widgets import PuzzleView, RunHeader


def laid_out(view: PuzzleView) -> bool:
    """The layout has caught up with what the view shows: its height is its rendered line count (the
    scroll box's max_scroll_y is only meaningful after that)."""
    return view.size.height == len(text(view).splitlines()) > 0


async def test_segment_stepper_walks_act_segments(tmp_path: Path) -> None:
    run = write_run(tmp_path, "r", run_events(100, status="finished"))  # sample 1: 4 segments, halt at 3
    app = make_app(tmp_path, attach=run)
    async with app.run_test(size=(200, 50)) as pilot:
        dash = app.screen
        view = dash.query_one(PuzzleView)
        await wait_ui(pilot, lambda: "Eval sample 1/2" in text(view))
        assert "seg 1 2◆3 4 [ ] ◆ Q halts" in text(view) and "✗ 2 wrong of 27 blanks" in text(view)  # the last one
        await pilot.press("left_square_bracket")
        await wait_ui(pilot, lambda: view.segment == 2)
        shown = view.render()
        # Segment 3 filled 20 of the 27 blanks (2 of them wrong): 7 left blank + 2 wrong.
        assert "✗ 9 wrong of 27 blanks" in shown.plain
        assert "q halt +1.00 / go on +0.50 → halt" in shown.plain
        strip_at = shown.plain.index("seg")
        strip_end = shown.plain.index("\n", strip_at)
        current = [shown.plain[sp.start : sp.end] for sp in shown.spans
                   if strip_at <= sp.start < strip_end and "reverse" in str(sp.style)]  # fmt: skip
        assert current == ["3"]  # the shown segment, reversed in the strip
        underlined = [s for s in shown.spans if "underline" in str(s.style)]
        assert len(underlined) == 20 - 13 + 1  # the 7 cells segment 3 filled, and the legend's sample
        for _ in range(4):
            await pilot.press("left_square_bracket")
        assert view.segment == 0 and "q halt -1.00 / go on +0.50 → go on" in text(view)
        for _ in range(6):
            await pilot.press("right_square_bracket")
        assert view.segment == 3
        await pilot.press("right")  # the next sample has no segments: no stepper
        assert "Eval sample 2/2" in text(view) and "seg " not in text(view)


async def test_a_trm_sample_shows_its_own_halting_rule(tmp_path: Path) -> None:
    """TRM samples carry q_continue null (never trained): the strip shows q_halt against 0, its rule."""
    lines = []
    for line in run_events(100, status="finished"):
        e = json.loads(line)
        for sample in e.get("samples") or []:
            for seg in sample.get("segments") or []:
                seg["q_continue"] = None
        lines.append(json.dumps(e))
    app = make_app(tmp_path, attach=write_run(tmp_path, "r", lines))
    async with app.run_test(size=(200, 50)) as pilot:
        view = app.screen.query_one(PuzzleView)
        await wait_ui(pilot, lambda: "Eval sample 1/2" in text(view))
        assert "q halt +2.00 (halts > 0) → halt" in text(view) and "go on +" not in text(view)  # the last segment
        await pilot.press("left_square_bracket", "left_square_bracket", "left_square_bracket")
        await wait_ui(pilot, lambda: view.segment == 0)
        assert "q halt -1.00 (halts > 0) → go on" in text(view)


async def test_80x24_panel_keys_without_focus_and_arrows_change_sample(tmp_path: Path) -> None:
    from textual.widgets import ContentSwitcher

    run = write_run(tmp_path, "r", run_events(100, status="finished"))
    app = make_app(tmp_path, attach=run)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.state is not None and dash.state.step == 100 and dash.compact)
        switcher = dash.query_one("#panel", ContentSwitcher)
        for key, pid in (("2", "act-box"), ("3", "gpu-box"), ("4", "puzzle-box"), ("5", "log"), ("1", "readout-box")):
            await pilot.press(key)
            assert switcher.current == pid
            assert switcher.border_title.count("[reverse]") == 1 and f"[reverse]{key} " in switcher.border_title
        await pilot.press("4")
        await pilot.press("tab", "tab")  # whatever has focus now, ← / → still mean the sample
        view = dash.query_one(PuzzleView)
        await pilot.press("right")
        await wait_ui(pilot, lambda: "Eval sample 2/2" in text(view))
        await pilot.press("left")
        await wait_ui(pilot, lambda: "Eval sample 1/2" in text(view))
        box = dash.query_one("#puzzle-box")
        await wait_ui(pilot, lambda: laid_out(view), what="the layout to take the sample's lines")
        assert box.max_scroll_y == 0  # the whole Sudoku fits at 80×24: nothing cut off
        lines = view.render().plain.splitlines()
        grid = [ln for ln in lines if "│" in ln or "┼" in ln]
        assert len(grid) == 11 and box.size.width >= max(len(ln) for ln in grid)
        header = text(dash.query_one(RunHeader))
        assert "finished" in header and "step 100/1,000" in header and "ETA" in header
        assert len(header) <= 80
        plot = dash.query_one("#loss")
        assert plot.size.height >= 9  # each of the two stacked plots gets half of the rows
        # The footer lists the panel keys and still shows `? Help` within the 80 columns.
        shown = {k.description: k.region for k in app.screen.query("FooterKey") if k.region.width}
        assert "Help" in shown and shown["Help"].right <= 80
        groups = [lbl.render().plain for lbl in app.screen.query("FooterLabel")]
        assert "Panel" in groups


def _maze_run(root: Path, side: int = 30) -> Path:
    """A finished maze run of `side`×`side` whose eval sample is a real-sized maze."""
    lines = run_events(100, task="maze", status="finished")
    out = []
    base = maze_sample(7)
    inp = [1 if r in (0, side - 1) or c in (0, side - 1) else 2 for r in range(side) for c in range(side)]
    inp[side + 1], inp[side * side - side - 2] = 3, 4
    lab = list(inp)
    for c in range(2, side - 1):
        lab[side + c] = 5
    sample = {"input": inp, "prediction": lab, "label": lab}
    for line in lines:
        ev = json.loads(line)
        if ev["kind"] == "run":
            ev["grid"] = [side, side]
        if ev["kind"] == "eval":
            ev["samples"] = [sample, base]
        out.append(json.dumps(ev))
    return write_run(root, "maze", out)


async def test_30x30_maze_readable_at_200x50_and_scrollable_at_80x24(tmp_path: Path) -> None:
    run = _maze_run(tmp_path)
    app = make_app(tmp_path, attach=run)
    async with app.run_test(size=(200, 50)) as pilot:
        dash = app.screen
        view = dash.query_one(PuzzleView)
        await wait_ui(pilot, lambda: "✓ path found (27 cells)" in text(view))
        await wait_ui(pilot, lambda: laid_out(view), what="the layout to take the maze's lines")
        rows = [ln for ln in view.render().plain.splitlines() if ln.startswith("██")]
        assert len(rows) == 30 and {len(ln) for ln in rows} == {60}  # two columns a cell
        assert dash.query_one("#puzzle-box").max_scroll_y == 0  # all of it on screen
    app = make_app(tmp_path, attach=run)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.state is not None and dash.state.step == 100)
        await pilot.press("4")
        box = dash.query_one("#puzzle-box")
        await wait_ui(pilot, lambda: box.max_scroll_y > 0)
        await pilot.press("pagedown")
        await wait_ui(pilot, lambda: box.scroll_y > 0)


async def test_80x24_failed_run_shows_reason_and_the_whole_sudoku(tmp_path: Path) -> None:
    run = write_run(tmp_path, "r", run_events(100, status="failed"), log="step 100\nRuntimeError: boom\n")
    app = make_app(tmp_path, attach=run)
    async with app.run_test(size=(80, 24)) as pilot:
        dash = app.screen
        await wait_ui(pilot, lambda: dash.status == "failed" and bool(dash._log_tail))
        await pilot.press("4")
        view = dash.query_one(PuzzleView)
        await wait_ui(pilot, lambda: "Eval sample 1/2" in text(view))
        death = dash.query_one("#death")
        await wait_ui(
            pilot,
            lambda: "CUDA out of memory" in text(death) and "trainer.log: RuntimeError: boom" in text(death),
            what="the failure's reason and the log's tail",
        )
        await wait_ui(pilot, lambda: laid_out(view), what="the layout to take the sample's lines")
        assert dash.query_one("#puzzle-box").max_scroll_y == 0  # grid, segments and legend all on screen
