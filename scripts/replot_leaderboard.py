"""Redraw a leaderboard's ``sla_vs_gpu_hours.png`` from its ``leaderboard.json`` (no
re-evaluation), in place:

    python scripts/replot_leaderboard.py docs/leaderboard
"""
from __future__ import annotations

import os
from pathlib import Path

from agents.evaluate import Evaluation
from agents.leaderboard import plot_front
from dynosim.options import json_field, read_json
from sim.errors import InputError


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
    path = d / "leaderboard.json"
    rows = read_json(path, list)
    if not rows:
        raise InputError("no leaderboard records (an empty array)", file=str(path))
    results = []
    for i, r in enumerate(rows):
        row = {f"[{i}]": r}             # the key names the record: [3].sla_attainment
        json_field(row, f"[{i}].policy", str, path)
        new = "gpu_hours_per_episode" in r                  # else v0.1's names
        for key in ("episodes", "mean_reward", "std_reward", "sla_attainment",
                    *(("gpu_hours_per_episode", "p90_ttft_ms", "p90_itl_ms") if new else
                      ("gpu_hours", "ttft_p90_ms", "itl_p90_ms"))):
            json_field(row, f"[{i}].{key}", float, path)
        try:
            results.append(Evaluation.from_record(r))
        except (KeyError, TypeError) as exc:
            raise InputError(f"not a leaderboard record ({exc})", file=str(path),
                             field=f"[{i}]") from None
    models = [r.policy for r in results if not r.policy.startswith("heuristic:")]
    base = Path(os.path.commonpath(models)) if len(models) > 1 else \
        Path(models[0]).parent if models else d
    plot_front(results, d / "sla_vs_gpu_hours.png", base)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
