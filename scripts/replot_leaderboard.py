"""Redraw a leaderboard's ``sla_vs_gpu_hours.png`` from its ``leaderboard.json`` (no
re-evaluation): ``python scripts/replot_leaderboard.py docs/leaderboard``."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from agents.evaluate import Evaluation
from agents.leaderboard import plot_front


def main(directory: str) -> None:
    d = Path(directory)
    rows = json.loads((d / "leaderboard.json").read_text())
    results = [Evaluation.from_record(r) for r in rows]
    models = [r.policy for r in results if not r.policy.startswith("heuristic:")]
    base = Path(os.path.commonpath(models)) if len(models) > 1 else \
        Path(models[0]).parent if models else d
    plot_front(results, d / "sla_vs_gpu_hours.png", base)


if __name__ == "__main__":
    main(sys.argv[1])
