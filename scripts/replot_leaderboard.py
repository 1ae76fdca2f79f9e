"""Redraw a leaderboard's ``sla_vs_gpu_hours.png`` from its ``leaderboard.json`` (no
re-evaluation), in place:

    python scripts/replot_leaderboard.py docs/leaderboard
"""
from __future__ import annotations

import os
from pathlib import Path

from agents.evaluate import Evaluation
from agents.leaderboard import plot_front
from dynosim.options import read_json


def main(argv: list[str] | None = None) -> int:
    from dynosim.options import Parser, ScriptHelpFormatter
    ap = Parser(prog="replot_leaderboard.py", description=__doc__,
                formatter_class=ScriptHelpFormatter)
    ap.add_argument("directory", help="a `dynosim evaluate --leaderboard` DIR: reads "
                    "DIR/leaderboard.json, rewrites DIR/sla_vs_gpu_hours.png")
    d = Path(ap.parse_args(argv).directory)
    if not (d / "leaderboard.json").is_file():
        ap.error(f"argument directory: {d / 'leaderboard.json'} not found (give a "
                 "`dynosim evaluate --leaderboard` DIR)")
    from dynosim.cli import guarded
    return guarded(lambda: _run(d))


def _run(d: Path) -> int:
    rows = read_json(d / "leaderboard.json", list)
    results = [Evaluation.from_record(r) for r in rows]
    models = [r.policy for r in results if not r.policy.startswith("heuristic:")]
    base = Path(os.path.commonpath(models)) if len(models) > 1 else \
        Path(models[0]).parent if models else d
    plot_front(results, d / "sla_vs_gpu_hours.png", base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
