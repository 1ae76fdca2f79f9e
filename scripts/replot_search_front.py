"""Redraw ``front.png`` of finished ``dynosim search`` runs from their ``trials.csv`` and
``search.json``, without replaying anything (plots drawn before a change to
:func:`dynosim.studies.search.plot_front`, e.g. the clip arrows, catch up):

    python scripts/replot_search_front.py docs/search/*/ [--compare docs/sweeps/pareto.csv]

Each run's records are rebuilt from its ``trials.csv`` (status, the objective's fields,
parameters) and scored with its objective as the search did; the title is the search's.
"""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynosim.options import json_field, plural, read_json  # noqa: E402
from sim.errors import InputError  # noqa: E402
from dynosim.studies.search import (SPACE_KEYS, STATUSES, front_axes, parse_objective,  # noqa: E402
                                    plot_front, read_compare)


def _num(text: str, path: Path, line: int, column: str) -> float:
    try:
        return float(text) if text not in ("", None) else math.nan
    except ValueError:
        raise InputError(f"expected a number, got {text!r}", file=str(path), line=line,
                         field=column) from None


def read_trials(path: Path) -> tuple[list[str], list[dict]]:
    """``trials.csv``'s columns and rows; InputError naming the file (and line) when it is
    empty, or a row has fewer or more fields than the header (a truncated file)."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise InputError("empty file (no header row)", file=str(path))
    columns = rows[0]
    for n, row in enumerate(rows[1:], 2):
        if len(row) != len(columns):
            raise InputError(f"{len(row)} fields, the header has {len(columns)} (a truncated "
                             "or corrupt row)", file=str(path), line=n)
    return columns, [dict(zip(columns, row)) for row in rows[1:]]


def records_of(run: Path, obj) -> list[dict]:
    x, y, _ = front_axes(obj)
    path = run / "trials.csv"
    _, rows = read_trials(path)
    out = []
    for n, row in enumerate(rows, 2):
        for key in ("trial", "status"):
            if key not in row:
                raise InputError(f"no {key!r} column", file=str(path))
        values = {f: _num(row.get(f, ""), path, n, f) for f in obj.fields()}
        if not row["trial"].strip().isdigit():
            raise InputError(f"expected a trial number, got {row['trial']!r}", file=str(path),
                             line=n, field="trial")
        score, violation = obj.score(values)
        params = {k: row[k] for k in SPACE_KEYS if k in row}    # as written: distinct rows
        out.append({"trial": int(row["trial"]), "status": row["status"], "values": values,
                    "score": score, "violation": violation, "params": params})
    return out


def replot(run: Path, compare) -> Path:
    info = read_json(run / "search.json", dict)
    columns, _ = read_trials(run / "trials.csv")    # the report fields the search recorded
    for key in ("space.model", "space.gpu"):
        json_field(info, key, str, run / "search.json")
    obj = parse_objective(json_field(info, "objective", str, run / "search.json"), columns)
    records = records_of(run, obj)
    trials = json_field(info, "trials", int, run / "search.json")
    if len(records) < trials:
        raise InputError(f"{plural(len(records), 'row')}, search.json records {trials} "
                         "trials: a truncated file (not replotted)",
                         file=str(run / "trials.csv"))
    by = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    space = info["space"]
    title = (f"dynosim search: {plural(len(records), 'candidate')} ({by['complete']} complete, "
             f"{by['pruned']} stopped early, {by['failed']} failed), {space['model']} on "
             f"{space['gpu']}\n{obj.text}")
    plot_front(records, obj, run / "front.png", title, compare)
    return run / "front.png"


def main(argv=None) -> int:
    from dynosim.options import Parser, ScriptHelpFormatter
    ap = Parser(prog="replot_search_front.py", description=__doc__, formatter_class=ScriptHelpFormatter)
    ap.add_argument("runs", nargs="+", help="search output directories")
    ap.add_argument("--compare", default=str(ROOT / "docs" / "sweeps" / "pareto.csv"),
                    help="the sweep pareto CSV overlaid ('' for none; default: "
                         "docs/sweeps/pareto.csv)")
    from dynosim.cli import run_script
    return run_script(ap, argv, _run)


def _run(args) -> int:
    compare = read_compare(args.compare) if args.compare else None
    missing = [r for r in args.runs if not (Path(r) / "trials.csv").is_file()]
    for run in args.runs:
        if run not in missing:
            print(replot(Path(run), compare))
    for run in missing:
        print(f"replot_search_front: {run}: no trials.csv (not kept), front.png left as it "
              "is", file=sys.stderr)
    return 1 if missing else 0


if __name__ == "__main__":
    raise SystemExit(main())
