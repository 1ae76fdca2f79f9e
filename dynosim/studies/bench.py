"""``dynosim bench``: how fast this machine runs the simulator and the environments.

Two tables, measured in one process with interleaved repeats (median, min, max):

* replay: the bundled demo (Mooncake conversation trace, 12,031 requests on 8 workers,
  ``envs_configs/demo.yaml``): wall seconds, simulated seconds per wall second, µs per
  request;
* environments (when gymnasium is installed): steps per second of ``DynoSim-v0`` and
  ``DynoSimRouting-v0`` (``dynosim_gym.speed``).

The side-by-side with Dynamo's own replay needs the checkout's ``bench/`` and the peer
(``make bench``); this command needs neither.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from sim.config import build_simulation, load_config
from sim.errors import InputError


def _demo_config() -> Path:
    spec = importlib.util.find_spec("envs_configs")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the bundled scenarios (envs_configs) are not installed", field="bench")
    return Path(list(spec.submodule_search_locations)[0]) / "demo.yaml"


def replay_once(path: Path) -> dict[str, float]:
    sim = build_simulation(load_config(path))
    t0 = time.perf_counter()
    sim.run()
    wall = time.perf_counter() - t0
    n = sim.num_arrived
    return {"wall_s": wall, "sim_s_per_wall_s": sim.now / 1000.0 / wall,
            "us_per_request": wall / n * 1e6 if n else float("nan"), "requests": n}


def add_parser(sub: Any) -> None:
    b = sub.add_parser("bench", help="measure simulator and environment speed on this machine",
                       description=__doc__.split("\n\n")[0].split(": ", 1)[1])
    from ..options import positive_int          # one parser for positive integers
    b.add_argument("--repeats", type=positive_int, default=3,
                   help="interleaved repeats (median reported)")
    b.add_argument("--episodes", type=positive_int, default=3,
                   help="episodes per environment case")
    b.add_argument("--quick", action="store_true",
                   help="one repeat, one episode, the two default environments only")
    b.add_argument("--no-env", action="store_true", help="replay only (no gymnasium needed)")
    b.add_argument("--json", action="store_true", help="print the results as JSON")
    b.add_argument("--out", metavar="FILE", help="also write the Markdown tables to FILE (default: none)")
    b.add_argument("--quiet", action="store_true", help="no progress lines on stderr")


def run(args: argparse.Namespace) -> int:
    repeats, episodes = (1, 1) if args.quick else (args.repeats, args.episodes)

    def log(msg: str) -> None:
        if not args.quiet:
            print(msg, file=sys.stderr)

    path = _demo_config()
    env_cases: list[tuple] = []
    speed = None
    if not args.no_env:
        try:
            from dynosim_gym import speed
        except ImportError:
            log("dynosim bench: gymnasium not installed; environments skipped")
        else:
            env_cases = [c for c in speed.CASES if c[4] != "hold-vec2"]
            if args.quick:
                env_cases = [c for c in env_cases if c[2] is None and c[4] in ("hold", "rr")]
    runs = []
    env_runs: dict[str, list[dict]] = {c[0]: [] for c in env_cases}
    for r in range(repeats):
        runs.append(replay_once(path))
        log(f"[{r + 1}/{repeats}] replay demo: {runs[-1]['wall_s']:.2f} s")
        if env_cases:
            for label, runs_ in speed.measure(env_cases, 1, episodes, 0, log=log).items():
                env_runs[label] += runs_
    replay = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
    replay.update(wall_s_min=min(x["wall_s"] for x in runs),
                  wall_s_max=max(x["wall_s"] for x in runs), repeats=repeats,
                  workload="mooncake conversation trace (bundled), 8 workers, demo.yaml")
    env_rows = speed.summary(env_runs) if env_cases else []
    md = ("| replay | requests | wall s (median) | min–max | sim-s per wall-s | µs / request |\n"
          "|---|---:|---:|---:|---:|---:|\n"
          f"| demo (bundled Mooncake trace, 8 workers) | {replay['requests']:,.0f} | "
          f"{replay['wall_s']:.2f} | {replay['wall_s_min']:.2f}–{replay['wall_s_max']:.2f} | "
          f"{replay['sim_s_per_wall_s']:,.0f} | {replay['us_per_request']:.1f} |\n")
    if env_rows:
        md += "\n" + speed.markdown(env_rows, repeats, episodes)
    if args.out:
        Path(args.out).write_text("# dynosim bench\n\n" + md)
    if args.json:
        json.dump({"replay": replay, "environments": env_rows,
                   "python": sys.version.split()[0]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(md, end="")
    return 0
