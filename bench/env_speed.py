"""Environment speed: steps per second of the dynosim_gym environments (issue 5).

Each row runs whole episodes (reset included) with a fixed policy (``dynosim_gym.speed``)
and reports steps per wall-second and the simulated requests per step. Repeats are
interleaved and the median is reported, because these machines are noisy.

    python bench/env_speed.py [--repeats 3] [--episodes 3] [--out bench/results/env_speed.md]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dynosim_gym.speed import CASES, markdown, measure, summary  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--episodes", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "env_speed.md"))
    ap.add_argument("--only", default=None, help="substring of the case labels to run")
    args = ap.parse_args(argv)
    cases = [c for c in CASES if args.only is None or args.only in c[0]]
    results = measure(cases, args.repeats, args.episodes, args.seed,
                      log=lambda m: print(m, file=sys.stderr))
    table = markdown(summary(results), args.repeats, args.episodes)
    print(table)
    Path(args.out).write_text("# Environment speed\n\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
