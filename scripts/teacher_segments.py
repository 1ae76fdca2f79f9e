"""Where a hindsight-schedule teacher misses, per 120 s segment, on the TRAINING episodes a
recipe clones (issue 11, round 5's diagnosis).

    python scripts/teacher_segments.py --teacher oracle:schedule [--seeds 10000-10009] \\
        [--hyperparams agents/hyperparams/ppo.yml] [--floor 0.5] [--json OUT]

Each episode is replayed with its cached teacher schedule (``agents.router_train.
_schedule_teacher``, so the schedules the recipe cloned; a missing one is planned and
cached), on the recipe's env without the scale-down window (the schedule as planned).
Per episode: the family, attainment and GPU-hours, the attainment of the segments in the
top quartile of arrivals against the rest, the least segment attainment, the segments
under ``--floor``, and the correlation of arrivals and attainment across segments. Reads
training-split episodes only.
"""
from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _seed_range(text: str) -> tuple[int, int]:
    """``--seeds LO-HI``: an inclusive range of episode seeds."""
    import argparse
    lo, sep, hi = text.partition("-")
    try:
        pair = (int(lo), int(hi if sep else lo))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO-HI (e.g. 10000-10009), got {text!r}") \
            from None
    if pair[0] < 0 or pair[1] < pair[0]:
        raise argparse.ArgumentTypeError(f"expected 0 <= LO <= HI, got {text!r}")
    return pair


def main(argv=None) -> int:
    """Exit code: 0, or 2 with one stderr line on bad input (the ``dynosim`` CLI's path)."""
    from agents.router_train import SCHEDULE_TEACHERS
    from dynosim.options import Parser, ScriptHelpFormatter
    ap = Parser(prog="teacher_segments.py", description=__doc__, formatter_class=ScriptHelpFormatter)
    ap.add_argument("--teacher", required=True, choices=SCHEDULE_TEACHERS,
                    help="hindsight-schedule teacher; required")
    ap.add_argument("--seeds", type=_seed_range, default="10000-10009",
                    help="episode seeds, e.g. 10000-10009")
    ap.add_argument("--hyperparams", default=None, metavar="YAML",
                    help="recipe whose env_kwargs make the env (default: ppo.yml)")
    ap.add_argument("--floor", type=float, default=0.5,
                    help="segments under this attainment are listed")
    ap.add_argument("--json", default=None, metavar="OUT",
                    help="also write the rows as JSON (default: none, print only)")
    from dynosim.cli import run_script
    return run_script(ap, argv, _run)


def _run(args) -> int:
    import gymnasium as gym

    import dynosim_gym  # noqa: F401
    from agents.evaluate import run_episode
    from agents.oracle import missed_by_segment
    from agents.router_train import _schedule_teacher
    from agents.train import load_hyperparams
    from dynosim_gym.config import load_env_config

    lo, hi = args.seeds
    hp = load_hyperparams("ppo", "DynoSim-v0", args.hyperparams)
    cfg = load_env_config(None, defaults="autoscale_default", **(hp.get("env_kwargs") or {}))
    env = gym.make("dynosim_gym:DynoSim-v0", config=cfg.to_dict())
    plain = gym.make("dynosim_gym:DynoSim-v0", config=cfg.to_dict(),
                     **{"env.action.scale_down_window_s": 0.0})
    u = plain.unwrapped
    seg_ms = 120_000.0
    n_seg = math.ceil(cfg.env.episode_steps * cfg.env.interval_s * 1000.0 / seg_ms)
    sla = cfg.sim.sla
    rows = []
    for s in range(lo, hi + 1):
        opts = {"split": "train"}
        pol = _schedule_teacher(env, opts, s, args.teacher)
        pol.env = u
        res = run_episode(plain, pol, opts, s)["summary"]
        arr = np.asarray(u.sim.metrics.cols["arrival_time_ms"], dtype=float)
        arrivals = np.bincount(np.minimum((arr // seg_ms).astype(np.int64), n_seg - 1),
                               minlength=n_seg)[:n_seg]
        missed = np.asarray(missed_by_segment(u.sim, seg_ms, n_seg, sla.ttft_ms, sla.itl_ms))
        att = 1.0 - missed / np.maximum(arrivals, 1)
        top = arrivals >= np.quantile(arrivals, 0.75)
        rows.append({
            "seed": s, "family": res["setup"].get("scenario"),
            "sla_attainment": res["requests_met"] / max(res["requests_decided"], 1),
            "gpu_hours": res["gpu_hours"],
            "top_quartile_sla": float(1 - missed[top].sum() / max(arrivals[top].sum(), 1)),
            "other_sla": float(1 - missed[~top].sum() / max(arrivals[~top].sum(), 1)),
            "least_segment_sla": float(att[arrivals > 0].min()),
            "segments_under_floor": int(((att < args.floor) & (arrivals > 0)).sum()),
            "corr_arrivals_sla": float(np.corrcoef(arrivals, att)[0, 1])})
        r = rows[-1]
        print(f"{s} {r['family']:14s} SLA {r['sla_attainment']:.1%} {r['gpu_hours']:.2f} GPU-h"
              f"  top-quartile {r['top_quartile_sla']:.1%} rest {r['other_sla']:.1%}  least "
              f"{r['least_segment_sla']:.1%}  under {args.floor:.0%}: "
              f"{r['segments_under_floor']}  corr {r['corr_arrivals_sla']:+.2f}", flush=True)
    summary = {k: statistics.fmean(r[k] for r in rows) for k in (
        "sla_attainment", "gpu_hours", "top_quartile_sla", "other_sla")}
    summary["segments_under_floor"] = sum(r["segments_under_floor"] for r in rows)
    print(f"mean: SLA {summary['sla_attainment']:.1%}, {summary['gpu_hours']:.2f} GPU-h, "
          f"top-quartile {summary['top_quartile_sla']:.1%}, rest {summary['other_sla']:.1%}, "
          f"{summary['segments_under_floor']} segments under {args.floor:.0%}")
    if args.json:
        Path(args.json).write_text(json.dumps({"teacher": args.teacher, "floor": args.floor,
                                               "episodes": rows, "mean": summary},
                                              indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
