"""Two builds side by side: CPU time of the same workloads under two interpreters (e.g. main's
worktree venv and this one), run concurrently so that both see the same machine load.

Each round starts one child process per build at the same time for each workload and waits
for both; the ratio old/new of their CPU seconds is that round's speed-up. On a shared
2-core machine (load average 6-10) alternating old and new one after the other gave
per-round ratios spread by +-20 %; started together, main against itself (A/A) spread by
+-2 % (``bench/README.md``, lesson 17). Every child also hashes what it produced (an env's
observations, rewards and infos; a replay's report values), so the table says whether the
two builds agree byte for byte.

Workloads (each child: one warm-up, so the one-time trace parse is excluded, then the
minimum CPU time over ``repeats`` runs):

* ``env:CONFIG:EPISODES`` - ``DynoSim-v0`` with ``config=CONFIG`` (``default`` for the
  package default), the ``hold`` policy, seeds 0..EPISODES-1, steps per CPU-second;
* ``cand:TRIAL`` - trial TRIAL of ``docs/search/bound_tpe/trials.csv`` replayed in full
  (trial 4: 3 x TP4, block 16, KV router, no planner: the search's dominant shape).

    python bench/build_side_by_side.py --old-python ../wt-main/.venv/bin/python \\
        --rounds 3 env:autoscale_mooncake:3 env:autoscale_legacy:2 cand:4
"""
from __future__ import annotations

import argparse
import csv
import gc
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env_child(config: str, episodes: int, repeats: int) -> dict:
    import gymnasium as gym

    import dynosim_gym  # noqa: F401  (registers the ids)
    env = gym.make("DynoSim-v0", config=None if config == "default" else config).unwrapped
    env.reset(seed=10_000)                      # warm-up episode (parses a trace once)
    done = False
    while not done:
        _, _, term, trunc, _ = env.step(env.hold_action())
        done = term or trunc
    cpus, digest, steps = [], None, 0
    for _ in range(repeats):
        h = hashlib.sha256()
        steps = 0
        gc.collect()
        c0 = time.process_time()
        for ep in range(episodes):
            obs, info = env.reset(seed=ep)
            h.update(obs.tobytes() + json.dumps(info, sort_keys=True, default=str).encode())
            done = False
            while not done:
                obs, r, term, trunc, info = env.step(env.hold_action())
                steps += 1
                h.update(obs.tobytes() + repr(r).encode()
                         + json.dumps(info, sort_keys=True, default=str).encode())
                done = term or trunc
        cpus.append(time.process_time() - c0)
        digest = h.hexdigest()[:16]
    return {"cpu_s": min(cpus), "steps": steps, "steps_per_cpu_s": steps / min(cpus),
            "digest": digest}


def _cand_child(trial: int, repeats: int) -> dict:
    from dynosim.studies import search as S
    space = S.load_space(str(REPO / "envs_configs/search/deployment_space.yaml"))
    objective = S.parse_objective("minimise totals.gpu_hours subject to latency_ms.ttft.p90 "
                                  "<= 3000", S._known_fields(S.DEFAULT_TRACE, None))
    setup = S.Setup(S.DEFAULT_TRACE, space, objective, S.DEFAULT_RUNGS_S, early_stop="bound")
    with open(REPO / "docs/search/bound_tpe/trials.csv", newline="") as fh:
        row = next(r for r in csv.DictReader(fh) if r["trial"] == str(trial))
    sys.path.insert(0, str(REPO / "bench"))
    from scale_out import trial_params
    params = trial_params(space, row)
    S._workload(S.candidate_config(setup, params)[0])      # warm-up: the trace parse
    cpus, res = [], None
    for _ in range(repeats):
        gc.collect()
        c0 = time.process_time()
        res = S.run_candidate(setup, params, None)
        cpus.append(time.process_time() - c0)
    return {"cpu_s": min(cpus), "params": params, "status": res["status"],
            "digest": hashlib.sha256(json.dumps(res["values"], sort_keys=True)
                                     .encode()).hexdigest()[:16]}


def child(what: str, repeats: int) -> dict:
    kind, _, rest = what.partition(":")
    if kind == "env":
        config, _, episodes = rest.partition(":")
        return _env_child(config, int(episodes or 2), repeats)
    if kind == "cand":
        return _cand_child(int(rest), repeats)
    raise SystemExit(f"unknown workload {what!r} (env:CONFIG:EPISODES or cand:TRIAL)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workloads", nargs="+")
    ap.add_argument("--old-python", required=True, help="interpreter of the baseline build")
    ap.add_argument("--new-python", default=sys.executable)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2, help="runs per child (min CPU taken)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.workloads[0], args.repeats)))
        return 0
    runs = {w: {"old": [], "new": []} for w in args.workloads}
    loads = [round(os.getloadavg()[0], 1)]
    for r in range(args.rounds):
        for w in args.workloads:
            procs = {name: subprocess.Popen([py, __file__, "--child", "--repeats",
                                             str(args.repeats), w, "--old-python", py],
                                            stdout=subprocess.PIPE, text=True)
                     for name, py in (("old", args.old_python), ("new", args.new_python))}
            for name, p in procs.items():
                out, _ = p.communicate()
                if p.returncode:
                    raise SystemExit(f"{name} child failed on {w}")
                runs[w][name].append(json.loads(out.strip().splitlines()[-1]))
            o, n = runs[w]["old"][-1], runs[w]["new"][-1]
            print(f"[{r + 1}/{args.rounds}] {w}: old {o['cpu_s']:.3f} CPU-s, new "
                  f"{n['cpu_s']:.3f}, old/new {o['cpu_s'] / n['cpu_s']:.3f}, "
                  f"identical={o['digest'] == n['digest']}", file=sys.stderr, flush=True)
        loads.append(round(os.getloadavg()[0], 1))
    print("| workload | old CPU-s | new CPU-s | speed-up old/new: median of rounds (range) "
          "| identical outputs |")
    print("|---|---:|---:|---:|---|")
    for w, rr in runs.items():
        ratios = [o["cpu_s"] / n["cpu_s"] for o, n in zip(rr["old"], rr["new"])]
        same = all(o["digest"] == n["digest"] for o, n in zip(rr["old"], rr["new"]))
        span = lambda xs: f"{min(xs):.2f}-{max(xs):.2f}"  # noqa: E731
        print(f"| {w} | {span([x['cpu_s'] for x in rr['old']])} | "
              f"{span([x['cpu_s'] for x in rr['new']])} | {statistics.median(ratios):.3f} "
              f"({min(ratios):.3f}-{max(ratios):.3f}) | {'yes' if same else 'NO'} |")
    print(f"\n{args.rounds} rounds, old and new started together per workload; "
          f"1-minute load average {loads}.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
