"""Label layouts do not depend on the machine (s9 polish): adjustText ran under its default
1 s time limit, and the shipped leaderboard and Pareto figures never reach zero overlap
error, so how far their labels moved depended on the machine's speed and load. They now
stop after a fixed number of iterations (``dynosim.plots.ADJUST_TEXT_ITERATIONS``)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _leaderboard_png(path: Path) -> bytes:
    """A small leaderboard figure (six of docs/leaderboard's rows, labels that crowd)."""
    from agents.evaluate import Evaluation
    from agents.leaderboard import plot_front
    rows = json.loads((ROOT / "docs" / "leaderboard" / "leaderboard.json").read_text())
    plot_front([Evaluation.from_record(r) for r in rows[:6]], path, ROOT)
    return path.read_bytes()


def test_a_label_layout_is_byte_identical_however_slow_the_machine(tmp_path: Path,
                                                                    monkeypatch) -> None:
    """The same figure twice, the second on a "machine" whose clock runs 1,000 s per
    adjustText reading (any time limit would stop its layout after one iteration): the
    same PNG bytes."""
    import adjustText
    fast = _leaderboard_png(tmp_path / "a.png")
    clock = iter(range(0, 10**9, 1000))
    monkeypatch.setattr(adjustText, "timer", lambda: float(next(clock)))
    slow = _leaderboard_png(tmp_path / "b.png")
    assert next(clock) > 1000                  # the slow clock was read
    assert fast == slow


def test_every_label_layout_has_an_iteration_budget_not_a_time_limit() -> None:
    """Every adjustText call in the project goes through ``dynosim.plots.adjust_labels``
    or passes its own ``iter_lim`` (scripts/plot_heldout_front.py's trials)."""
    calls = []
    for path in [p for d in ("agents", "bench", "dynosim", "dynosim_gym", "scripts", "sim")
                 for p in sorted((ROOT / d).rglob("*.py"))]:
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text()
        for m in re.finditer(r"\badjust_text\(", text):
            calls.append(rel)
            window = text[m.start():m.start() + 400]
            body = window[:window.find("\n\n")] if "\n\n" in window else window
            assert "iter_lim" in body or rel == "dynosim/plots.py" or (
                rel == "scripts/plot_heldout_front.py" and "**trial" in body), \
                f"{rel}: adjust_text without an iteration budget"
    assert "dynosim/plots.py" in calls
    from conftest import load_script
    trials = load_script("plot_heldout_front").ADJUST_TRIALS
    assert all(t["iter_lim"] and "time_lim" not in t for t in trials)


@pytest.mark.parametrize("budget", [1, 7])
def test_adjust_labels_stops_at_its_budget(budget: int, monkeypatch) -> None:
    import logging

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import dynosim.plots as plots
    monkeypatch.setattr(plots, "ADJUST_TEXT_ITERATIONS", budget)
    seen = []

    class Grab(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())
    log = logging.getLogger("adjustText")
    handler = Grab()
    level = log.level
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        fig, ax = plt.subplots()
        texts = [ax.text(0.5, 0.5, f"label {k}") for k in range(4)]   # all on one spot
        plots.adjust_labels(texts, ax=ax)
        plt.close(fig)
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert f"Adjustment took {budget} iterations" in seen
