"""Scale-out benchmarks (issue 17): Ray sweeps 1 vs 2 CPUs, the deployment search, what
early stopping loses, and RLlib vs SB3 steps/s. Results: ``bench/results/scale_out.md``.

    .venv/bin/python bench/scale_out.py sweep            # points/s, 1 vs 2 Ray CPUs
    .venv/bin/python bench/scale_out.py exactness DIR    # DIR: a --no-early-stop search
    .venv/bin/python bench/scale_out.py rl --timesteps 20000
    .venv/bin/python bench/scale_out.py bound --trials 40   # the bound rule is exact: same front
    .venv/bin/python bench/scale_out.py candidates --baseline REV   # CPU-s per candidate, REV vs now
    .venv/bin/python bench/scale_out.py executors --trials 60   # Ray Tune vs --jobs: CPU per trial
    .venv/bin/python bench/scale_out.py attribute OUT   # where a Ray search's core-seconds went
    .venv/bin/python bench/scale_out.py analyse DIR     # where a search's CPU went; duplicates
    .venv/bin/python bench/scale_out.py askahead DIR    # a --jobs run's trials through N processes
    .venv/bin/python bench/scale_out.py floors DIR      # stopped candidates: stop earlier with floors?

The search itself is a plain ``dynosim search`` run (README has the command); its
``search.json`` records wall time and simulated requests/s.

Timings are wall-clock on this machine and noisy when other work shares the 2 cores: each
record carries the 1-minute load average before and after it.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from dynosim.options import read_json
from sim.errors import InputError

REPO = Path(__file__).resolve().parents[1]
DYNOSIM = str(Path(sys.executable).with_name("dynosim"))


def _load() -> float:
    return round(os.getloadavg()[0], 2)


# -- sweeps: 1 vs 2 CPUs -------------------------------------------------------------------------

def bench_sweep(args) -> dict:
    """``dynosim sweep interval`` on a local Ray with 1 and 2 CPUs (and the process pool),
    interleaved, ``--repeats`` times; points/s and scaling efficiency = (pps2 / pps1) / 2."""
    runs = []
    for rep in range(args.repeats):
        for executor, jobs in (("ray", 1), ("ray", 2), ("local", 1), ("local", 2)):
            out = Path(args.out) / f"sweep_{executor}_{jobs}_{rep}"
            load0 = _load()
            subprocess.run([DYNOSIM, "sweep", "interval", "--max-sim-time-s",
                            str(args.window_s), "--executor", executor, "--jobs", str(jobs),
                            "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
            info = json.loads((out / "interval.run.json").read_text())
            runs.append({"executor": executor, "cpus": jobs, "repeat": rep,
                         "points": info["points"], "wall_s": info["wall_s"],
                         "points_per_s": info["points_per_s"], "load_before": load0,
                         "load_after": _load()})
            print(json.dumps(runs[-1]), file=sys.stderr)
    csvs = {p.read_bytes() for p in Path(args.out).glob("sweep_*/interval.csv")}
    summary = {}
    for executor in ("ray", "local"):
        pps = {c: sorted(r["points_per_s"] for r in runs
                         if r["executor"] == executor and r["cpus"] == c) for c in (1, 2)}
        med = {c: v[len(v) // 2] for c, v in pps.items()}
        summary[executor] = {"points_per_s_1cpu": med[1], "points_per_s_2cpu": med[2],
                             "speedup": round(med[2] / med[1], 3),
                             "efficiency": round(med[2] / med[1] / 2, 3)}
    return {"bench": "sweep", "study": "interval", "window_s": args.window_s,
            "csv_identical_across_runs": len(csvs) == 1, "runs": runs, "summary": summary}


# -- early stopping: what would it have stopped? ----------------------------------------------

def _promotable(value: float, competing: list[float], rf: int) -> bool:
    """Optuna's SuccessiveHalvingPruner rule (also ASHA's): top 1/rf of those at the rung."""
    idx = len(competing) // rf - 1
    idx = max(idx, 0)
    return value <= sorted(competing)[idx]


def bench_exactness(args) -> dict:
    """Replay successive halving offline on a ``--no-early-stop`` search that recorded every
    trial's score at rungs ``R`` (``--rungs``) and its full-replay score: for each schedule
    (subset of rungs, reduction factor), which full-replay winners would have been stopped,
    and the replay work (simulated seconds) it spends."""
    d = Path(args.dir)
    info = read_json(d / "search.json", dict)
    rungs = info["rungs_s"]
    with open(d / "trials.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "complete"]
    obj = info["objective"]
    full = [(int(r["trial"]), float(r["score"]), [float(x) for x in r["rung_scores"].split(";")],
             float(r["sim_s"])) for r in rows]
    fields = [k for k in rows[0] if k.startswith(("totals.", "latency_ms."))]
    x, y = fields[0], fields[1] if len(fields) > 1 else fields[0]
    from dynosim.studies.search import pareto_mask
    mask = pareto_mask([float(r[x]) for r in rows], [float(r[y]) for r in rows])
    front = {int(r["trial"]) for r, m in zip(rows, mask) if m}
    ranked = sorted(full, key=lambda t: t[1])
    top5 = {t[0] for t in ranked[:5]}
    best = ranked[0][0]
    feasible = {t[0] for t in full if t[1] < 1e6}
    out = []
    schedules = [(s, rf) for s in ([300, 600, 1200], [600, 1200, 2400], [900, 1800, 2700],
                                   [600, 1800], [300, 900, 2700])
                 for rf in (2, 3) if all(t in rungs for t in s)]
    for sched, rf in schedules:
        idx = [rungs.index(t) for t in sched]
        seen: list[list[float]] = [[] for _ in sched]
        stopped, work = set(), 0.0
        for trial, score, rs, sim_s in full:           # in trial order, as sampled
            reached = sim_s
            for k, i in enumerate(idx):
                seen[k].append(rs[i])
                if not _promotable(rs[i], seen[k], rf):
                    stopped.add(trial)
                    reached = sched[k]
                    break
            work += reached
        out.append({"rungs_s": sched, "reduction_factor": rf,
                    "work_fraction": round(work / sum(t[3] for t in full), 3),
                    "best_stopped": best in stopped,
                    "top5_stopped": len(top5 & stopped),
                    "front_stopped": len(front & stopped), "front_size": len(front),
                    "feasible_stopped": len(feasible & stopped), "feasible": len(feasible)})
        print(json.dumps(out[-1]), file=sys.stderr)
    # rank agreement of each rung's score with the full-replay score (Spearman)
    corr = {}
    from statistics import correlation
    finals = [t[1] for t in full]
    rank = {v: i for i, v in enumerate(sorted(set(finals)))}
    for i, t_s in enumerate(rungs):
        at = [t[2][i] for t in full]
        r_at = {v: j for j, v in enumerate(sorted(set(at)))}
        corr[str(t_s)] = round(correlation([r_at[v] for v in at], [rank[v] for v in finals]), 3)
    return {"bench": "exactness", "dir": str(d), "objective": obj, "trials": len(full),
            "rungs_recorded_s": rungs, "spearman_rung_vs_full": corr, "schedules": out}


# -- the bound rule: same candidates, with and without early stopping -------------------------

def _search_cmd(args, out: Path, early: str, sampler: str) -> list[str]:
    return [DYNOSIM, "search", "--space", args.space, "--objective", args.objective,
            "--trials", str(args.trials), "--sampler", sampler, "--early-stop", early,
            "--seed", str(args.seed), "--out", str(out), "--quiet"]


def bench_bound(args) -> dict:
    """``dynosim search --sampler random`` (the candidates do not depend on the results)
    with ``--early-stop none`` and ``--early-stop bound``, run at the same time so that both
    see the same machine load: the same front and best (trial ids and values), the work
    each spent (child CPU seconds, simulated seconds) and the wall time."""
    runs = {}
    procs = {}
    load0 = _load()
    for early in ("none", "bound"):
        out = Path(args.out) / f"bound_{early}"
        procs[early] = (subprocess.Popen(_search_cmd(args, out, early, "random"),
                                         stdout=subprocess.DEVNULL), out)
    for early, (proc, out) in procs.items():
        _, status, ru = os.wait4(proc.pid, 0)
        info = json.loads((out / "search.json").read_text())
        with open(out / "trials.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        front = [(r["trial"], r[list(r)[1]], r[list(r)[2]])
                 for r in csv.DictReader(open(out / "front.csv", newline=""))]
        runs[early] = {"wall_s": info["run_info"]["wall_s"],     # the search's own
                       "cpu_s": round(ru.ru_utime + ru.ru_stime, 1),
                       "exit": os.waitstatus_to_exitcode(status),
                       "simulated_s": round(sum(float(r["sim_s"]) for r in rows)),
                       "statuses": {k: sum(r["status"] == k for r in rows)
                                    for k in ("complete", "pruned", "failed")},
                       "requests_per_s": info["run_info"]["simulated_requests_per_s"],
                       "best": info["best"] and {"trial": info["best"]["trial"],
                                                 "values": info["best"]["values"]},
                       "front": front}
        print(json.dumps({k: v for k, v in runs[early].items() if k != "front"}),
              file=sys.stderr)
    n, b = runs["none"], runs["bound"]
    return {"bench": "bound", "trials": args.trials, "objective": args.objective,
            "space": args.space, "seed": args.seed, "load_before": load0,
            "load_after": _load(), "same_front": n["front"] == b["front"],
            "same_best": n["best"] == b["best"], "front_size": len(n["front"]),
            "cpu_ratio_bound_over_none": round(b["cpu_s"] / n["cpu_s"], 3),
            "simulated_ratio_bound_over_none": round(b["simulated_s"] / n["simulated_s"], 3),
            "runs": runs}


# -- executors: Ray Tune vs the local process pool on the same candidates --------------------

def _tree_cpu(proc: subprocess.Popen, every_s: float = 0.25) -> float:
    """Wait for ``proc``; CPU seconds of it and every process descended from it, polled
    from /proc every ``every_s`` (Ray's workers are not reaped through the tree, so
    ``wait4`` misses them; a process's last ``every_s`` before it exits is missed here)."""
    tick = os.sysconf("SC_CLK_TCK")
    seen: dict[tuple[int, str], float] = {}

    def poll() -> None:
        parent, cpu = {}, {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parent[int(d)] = int(f[1])
            cpu[(int(d), f[19])] = (int(f[11]) + int(f[12])) / tick   # utime, stime; start
        tree = {proc.pid}
        grew = True
        while grew:
            new = {p for p, pp in parent.items() if pp in tree} - tree
            grew = bool(new)
            tree |= new
        for (pid, start), c in cpu.items():
            if pid in tree:
                seen[(pid, start)] = c
    while proc.poll() is None:
        poll()
        time.sleep(every_s)
    return sum(seen.values())


def bench_executors(args) -> dict:
    """``dynosim search --sampler random`` (the same candidates on every executor) on a local
    Ray (Tune) and on the local process pool (``--jobs``), alternating, ``--repeats`` times.
    CPU seconds of each search's whole process tree (:func:`_tree_cpu`: the search, its
    Ray GCS, raylet and workers, or its pool workers) against the CPU of the replays themselves
    (``trials_cpu_s``): what the executor costs per trial, and wall time."""
    runs = []
    env = {**os.environ, "RAY_worker_niceness": str(os.nice(0))}   # Ray un-nices its workers
    for rep in range(args.repeats):
        for executor in (("ray", "local") if rep % 2 == 0 else ("local", "ray")):
            out = Path(args.out) / f"exec_{executor}_{rep}"
            cmd = [*_search_cmd(args, out, "bound", "random"), "--executor", executor,
                   "--jobs", str(args.jobs)]
            load0 = _load()
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env)
            cpu = _tree_cpu(proc)
            info = json.loads((out / "search.json").read_text())
            run = info["run_info"]
            with open(out / "trials.csv", newline="") as fh:
                rows = list(csv.DictReader(fh))
            runs.append({"executor": executor, "repeat": rep, "jobs": args.jobs,
                         "exit": proc.returncode, "wall_s": run["wall_s"],
                         "tree_cpu_s": round(cpu, 1), "trials_cpu_s": run["trials_cpu_s"],
                         "overhead_cpu_s_per_trial": round((cpu - run["trials_cpu_s"])
                                                           / len(rows), 3),
                         "candidates": [tuple(r[k] for k in list(r)[3:9]) for r in rows],
                         "load_before": load0, "load_after": _load()})
            print(json.dumps({k: v for k, v in runs[-1].items() if k != "candidates"}),
                  file=sys.stderr)
    same = len({json.dumps(r["candidates"]) for r in runs}) == 1
    summary = {}
    for executor in ("ray", "local"):
        sel = [r for r in runs if r["executor"] == executor]
        summary[executor] = {k: round(sum(r[k] for r in sel) / len(sel), 3) for k in
                             ("wall_s", "tree_cpu_s", "trials_cpu_s",
                              "overhead_cpu_s_per_trial")}
    for r in runs:
        del r["candidates"]
    return {"bench": "executors", "trials": args.trials, "jobs": args.jobs,
            "objective": args.objective, "same_candidates": same, "runs": runs,
            "summary": summary,
            "tree_cpu_ratio_local_over_ray": round(summary["local"]["tree_cpu_s"]
                                                   / summary["ray"]["tree_cpu_s"], 3)}


# -- where a Ray search's time went ----------------------------------------------------------------

def bench_attribute(args) -> dict:
    """Attribute a ``dynosim search --executor ray`` run's core-seconds (``DIR``: its
    ``--out``; reads ``search.json`` and Tune's experiment state, which holds each trial's
    start, last result time, CPU seconds and worker pid): replay CPU of complete vs stopped
    candidates and by deployment shape, the driver's CPU, how many trials ran at once over
    the wall time, and the gaps between trials on one Ray worker."""
    import collections
    import glob
    d = Path(args.dir)
    info = read_json(d / "search.json", dict)
    states = sorted(glob.glob(str(d / "tune/search/experiment_state-*.json")))
    if not states:
        raise InputError("no tune/search/experiment_state-*.json here (give the --out of a "
                         "dynosim search --executor ray run)", file=str(d))
    state = read_json(states[-1], dict)
    rows = []
    for _, raw in state["trial_data"]:
        t = json.loads(raw)
        r = t["last_result"]
        rows.append({"start": float(t["start_time"]), "end": float(t["last_result_time"]),
                     "cpu": r["cpu_s"], "pid": r["pid"], "sim_s": r["sim_s"],
                     "status": "complete" if r["status"] == "complete" else "stopped",
                     "shape": "x".join(str(r["config"].get(k)) for k in
                                       ("cluster.num_workers", "tp", "planner")),
                     "block": r["config"].get("engine.block_size")})
    wall = max(r["end"] for r in rows) - min(r["start"] for r in rows)
    cpus = info["run_info"]["cpus"]

    def group(key, sel=lambda r: True, top=8):
        acc = collections.defaultdict(lambda: [0, 0.0])
        for r in rows:
            if sel(r):
                acc[key(r)][0] += 1
                acc[key(r)][1] += r["cpu"]
        return {str(k): {"n": n, "cpu_s": round(c, 1), "per_trial": round(c / n, 2)}
                for k, (n, c) in sorted(acc.items(), key=lambda kv: -kv[1][1])[:top]}
    events = sorted([(r["start"], 1) for r in rows] + [(r["end"], -1) for r in rows])
    at = collections.Counter()
    level, last = 0, events[0][0]
    for t, step in events:
        at[level] += t - last
        level, last = level + step, t
    gaps = []
    for pid in {r["pid"] for r in rows}:
        mine = sorted((r for r in rows if r["pid"] == pid), key=lambda r: r["start"])
        gaps += [b["start"] - a["end"] for a, b in zip(mine, mine[1:])]
    replay = sum(r["cpu"] for r in rows)
    return {"bench": "attribute", "dir": str(d), "trials": len(rows), "cpus": cpus,
            "wall_s": round(wall, 1), "core_s": round(wall * cpus, 1),
            "replay_cpu_s": round(replay, 1),
            "driver_cpu_s": info["run_info"]["process_cpu_s"],
            "rest_core_s": round(wall * cpus - replay - info["run_info"]["process_cpu_s"], 1),
            "by_status": group(lambda r: r["status"]),
            "complete_by_shape": group(lambda r: r["shape"], lambda r: r["status"] == "complete"),
            "complete_by_block": group(lambda r: r["block"], lambda r: r["status"] == "complete"),
            "stopped_by_stop_time": group(lambda r: "<=1200 s" if r["sim_s"] <= 1200 else
                                          "<=2400 s" if r["sim_s"] <= 2400 else ">2400 s",
                                          lambda r: r["status"] == "stopped"),
            "wall_s_at_concurrency": {k: round(v, 1) for k, v in sorted(at.items())},
            "gap_s_between_trials_on_a_worker": {"n": len(gaps), "sum": round(sum(gaps), 1),
                                                 "median": round(sorted(gaps)[len(gaps) // 2],
                                                                 3) if gaps else None},
            "trial_wall_over_cpu": round(sum(r["end"] - r["start"] for r in rows) / replay, 3)}


# -- CPU per candidate: a fixed candidate list, the code at REV against the working tree ------

def _search_module(rev: str | None):
    """``dynosim.studies.search`` as in the working tree (None) or at git revision ``rev``
    (loaded from ``git show``; the rest of the package is the working tree's)."""
    import importlib.util
    from dynosim.studies import search
    if rev is None:
        return search
    src = subprocess.check_output(["git", "-C", str(REPO), "show",
                                   f"{rev}:dynosim/studies/search.py"], text=True)
    spec = importlib.util.spec_from_loader(f"dynosim.studies._search_{rev}", loader=None)
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "dynosim.studies"
    sys.modules[spec.name] = mod
    exec(compile(src, f"search.py@{rev}", "exec"), mod.__dict__)
    return mod


def trial_params(space, row: dict) -> dict:
    """One ``trials.csv`` row's parameters, typed by the space (empty cells: not drawn)."""
    p = {}
    for key, dim in space.dims.items():
        text = row.get(key, "")
        if text == "":
            continue
        if dim.choices is not None:
            p[key] = next(c for c in dim.choices if str(c) == text)
        else:
            p[key] = int(float(text)) if dim.integer else float(text)
    return p


def _candidates(path: str, space) -> list[dict]:
    """The parameters of every trial in a search's ``trials.csv``, typed by the space."""
    with open(path, newline="") as fh:
        return [trial_params(space, row) for row in csv.DictReader(fh)]


def bench_candidates(args) -> dict:
    """Replay the candidates of ``--trials-csv`` (by default the 100 of the TPE search in
    ``docs/search/bound_tpe``) with the bound rule as ``dynosim search`` does (the front
    of the complete feasible ones grows in trial order; a repeat is not replayed), once
    with ``search.py`` at ``--baseline`` and once with the working tree's, alternating
    candidate by candidate in one process so both see the same machine load. Reports the
    CPU seconds of each (per candidate, by outcome), simulated seconds, and whether both
    give the same front, best and complete values."""
    import math
    variants = {"baseline": _search_module(args.baseline), "new": _search_module(None)}
    objective = None
    setups, fronts, records = {}, {}, {}
    for name, mod in variants.items():
        space = mod.load_space(args.space)
        objective = mod.parse_objective(args.objective, mod._known_fields(
            mod.DEFAULT_TRACE, None))
        setups[name] = mod.Setup(mod.DEFAULT_TRACE, space, objective, mod.DEFAULT_RUNGS_S,
                                 early_stop="bound", **({"check_s": args.check_s}
                                                        if args.check_s else {}))
        fronts[name], records[name] = [], []
    cands = _candidates(args.trials_csv, setups["new"].space)[:args.limit]
    fx, fy, _ = variants["new"].front_axes(objective)
    rows = list(csv.DictReader(open(args.trials_csv, newline="")))[:len(cands)]
    picked = range(len(cands))
    if args.stopped_after is not None:
        # Only the candidates the search stopped after S simulated seconds, each checked
        # against the front of the complete feasible candidates before it in the CSV (their
        # values are full replays): the borderline ones, without replaying the rest.
        picked = [i for i, r in enumerate(rows) if r["status"] == "pruned"
                  and not r["stopped_because"].startswith("same candidate")
                  and float(r["sim_s"]) > args.stopped_after
                  and (not args.static_only or r.get("planner") in ("", "none"))]
        cands = [cands[i] for i in picked]
    seen: dict[str, int] = {}
    load0 = _load()
    for i, params in enumerate(cands):
        key = json.dumps(params, sort_keys=True)
        first = seen.setdefault(key, i)
        order = ("baseline", "new") if i % 2 == 0 else ("new", "baseline")
        for name in order:
            mod, setup = variants[name], setups[name]
            if first != i:
                records[name].append({**records[name][first], "cpu_s": 0.0, "repeat": True})
                continue
            front = fronts[name]
            if args.stopped_after is not None:
                front = [(float(r[fx]), float(r[fy])) for r in rows[:picked[i]]
                         if r["status"] == "complete" and float(r["score"]) < 1e6]
            t0 = time.process_time()
            res = mod.run_candidate(setup, params,
                                    lambda step, v, s: mod.bound_stop(objective, v, front))
            cpu = time.process_time() - t0
            # CPU measured here, the same way for both (the new run_candidate also counts it)
            rec = {"trial": i, "params": params, **res, "cpu_s": cpu}
            records[name].append(rec)
            if args.stopped_after is None and res["status"] == "complete" \
                    and res["violation"] == 0:
                front.append((res["values"][fx], res["values"][fy]))
        print(json.dumps({"trial": i, **{n: [records[n][-1]["status"],
                                              round(records[n][-1]["cpu_s"], 2),
                                              round(records[n][-1]["sim_s"])]
                                          for n in variants}}), file=sys.stderr)
    summary = {}
    for name in variants:
        recs = records[name]
        by = {}
        for st in ("complete", "pruned"):
            sel = [r for r in recs if r["status"] == st and not r.get("repeat")]
            by[st] = {"n": len(sel), "cpu_s": round(sum(r["cpu_s"] for r in sel), 1),
                      "sim_s": round(sum(r["sim_s"] for r in sel))}
        done = [r for r in recs if r["status"] == "complete" and r["violation"] == 0]
        best = min(done, key=lambda r: (r["score"], r["trial"])) if done else None
        xs = [r["values"][fx] for r in done]
        ys = [r["values"][fy] for r in done]
        mask = variants["new"].pareto_mask(xs, ys)
        summary[name] = {"cpu_s": round(sum(r["cpu_s"] for r in recs), 1),
                         "cpu_s_per_candidate": round(sum(r["cpu_s"] for r in recs)
                                                      / len(recs), 3),
                         "by_status": by,
                         "best": best and {"trial": best["trial"], "values": {
                             f: best["values"][f] for f in objective.fields()}},
                         "front": [(r["trial"], r["values"][fx], r["values"][fy])
                                   for r, m in zip(done, mask) if m]}
    complete_both = [(a, b) for a, b in zip(records["baseline"], records["new"])
                     if a["status"] == b["status"] == "complete"]
    same_values = all(all(a["values"][f] == b["values"][f] or (math.isnan(a["values"][f])
                                                                 and math.isnan(b["values"][f]))
                          for f in objective.fields()) for a, b in complete_both)
    b, n = summary["baseline"], summary["new"]
    return {"bench": "candidates", "trials_csv": args.trials_csv, "candidates": len(cands),
            "baseline": args.baseline, "objective": args.objective, "check_s": args.check_s,
            "stopped_after": args.stopped_after, "static_only": args.static_only,
            "load_before": load0, "load_after": _load(),
            "same_front": b["front"] == n["front"], "same_best": b["best"] == n["best"],
            "same_complete_values": same_values,
            "cpu_ratio_new_over_baseline": round(n["cpu_s"] / b["cpu_s"], 3),
            "summary": summary}


# -- where a search's CPU goes, and what exact caching could save -----------------------------------

def bench_analyse(args) -> dict:
    """Where a ``dynosim search`` run's replay CPU went (``DIR/trials.csv`` + ``search.json``;
    per-trial CPU is estimated as in ``askahead``: simulated seconds x the block size's
    full-replay rate, scaled to ``trials_cpu_s``), by outcome, deployment shape and block
    size; whether the space was drawn conditionally (KV-router weights only for the KV
    router, planner knobs only with a planner); and what exact result caching could save:
    repeats (the search already reuses them) and candidates equal after dropping parameters
    that cannot change the replay (the router of a static one-worker deployment)."""
    import collections
    d = Path(args.dir)
    info = read_json(d / "search.json", dict)
    rows = list(csv.DictReader(open(d / "trials.csv", newline="")))
    rep = [r["stopped_because"].startswith("same candidate") for r in rows]
    raw = [0.0 if rp else float(r["sim_s"]) * _FULL_REPLAY_CPU_BY_BLOCK[
        int(float(r["engine.block_size"]))] for r, rp in zip(rows, rep)]
    scale = info["run_info"]["trials_cpu_s"] / sum(raw)
    cpu = [x * scale for x in raw]
    total = sum(cpu)

    def group(key, sel=lambda r: True, top=8):
        acc = collections.defaultdict(lambda: [0, 0.0, 0.0])
        for r, c, rp in zip(rows, cpu, rep):
            if not rp and sel(r):
                a = acc[key(r)]
                a[0] += 1
                a[1] += c
                a[2] += float(r["sim_s"])
        return {str(k): {"n": n, "cpu_s": round(c, 1), "share": round(c / total, 3),
                         "sim_s": round(s)}
                for k, (n, c, s) in sorted(acc.items(), key=lambda kv: -kv[1][1])[:top]}

    def shape(r):
        return f"{r['cluster.num_workers']}xTP{r['tp']} {r['planner']}"
    kv_keys = ("router.overlap_score_credit", "router.prefill_load_scale")
    uncond = sum(1 for r in rows if (r["router.mode"] != "kv" and any(r[k] for k in kv_keys))
                 or (r["planner"] == "none" and r["planner.interval_s"]))
    # Canonical candidates: a static one-worker deployment routes every request to its one
    # worker, whatever the router and its weights.
    drop = ("router.mode", *kv_keys)
    params = [k for k in rows[0] if k in ("tp", "cluster.num_workers", "engine.block_size",
                                         "engine.max_num_batched_tokens", "router.mode",
                                         *kv_keys, "planner", "planner.interval_s")]

    def canon(r):
        one = r["cluster.num_workers"] == "1" and r["planner"] == "none"
        return tuple((k, "" if one and k in drop else r[k]) for k in params)
    first: dict[tuple, int] = {}
    dup_cpu, dup_n = 0.0, 0
    for i, (r, c, rp) in enumerate(zip(rows, cpu, rep)):
        key = canon(r)
        if key in first and not rp:
            dup_n += 1
            dup_cpu += c
        first.setdefault(key, i)
    stopped_late = [c for r, c, rp in zip(rows, cpu, rep)
                    if not rp and r["status"] == "pruned" and float(r["sim_s"]) > 2400]
    return {"bench": "analyse", "dir": str(d), "trials": len(rows),
            "trials_cpu_s": info["run_info"]["trials_cpu_s"],
            "repeats_reused": sum(rep),
            "by_status": group(lambda r: r["status"]),
            "complete_by_shape": group(shape, lambda r: r["status"] == "complete"),
            "complete_by_block": group(lambda r: r["engine.block_size"],
                                       lambda r: r["status"] == "complete"),
            "complete_by_router": group(lambda r: r["router.mode"],
                                        lambda r: r["status"] == "complete"),
            "stopped_by_stop_time": group(lambda r: "<=1200 s" if float(r["sim_s"]) <= 1200
                                          else "<=2400 s" if float(r["sim_s"]) <= 2400
                                          else ">2400 s", lambda r: r["status"] == "pruned"),
            "stopped_by_reason": group(lambda r: r["stopped_because"].split(":")[0],
                                       lambda r: r["status"] == "pruned"),
            "stopped_after_2400_s": {"n": len(stopped_late),
                                     "cpu_s": round(sum(stopped_late), 1)},
            "drawn_unconditionally": uncond,
            "static_one_worker": sum(1 for r in rows if r["cluster.num_workers"] == "1"
                                     and r["planner"] == "none"),
            "canonical_duplicates": {"n": dup_n, "cpu_s": round(dup_cpu, 1),
                                     "share": round(dup_cpu / total, 4)}}


# -- the TTFT floors of requests still to arrive: which stopped candidates stop earlier ------------

def bench_floors(args) -> dict:
    """For every candidate a search stopped (``DIR/trials.csv``; static deployments, the
    only ones the floors cover; repeats left out), replay it once and apply the bound rule at
    every check twice: with the TTFT floors of the requests still to arrive
    (``search.future_ttft_floors``) and without (the rule before them). The replay does not
    depend on the rule, so one replay gives both stop times exactly; the CPU between them
    (``process_time`` at each check) is what the floors save. Each candidate is checked
    against the front of the complete feasible candidates before it in the CSV (full-replay
    values); whether the rule without floors stops where the search stopped it is reported
    (the search's own front was that of the trials told before each was asked)."""
    import math

    from dynosim.studies import search
    d = Path(args.dir)
    rows = list(csv.DictReader(open(d / "trials.csv", newline="")))
    space = search.load_space(args.space)
    objective = search.parse_objective(args.objective, search._known_fields(
        search.DEFAULT_TRACE, None))
    setup = search.Setup(search.DEFAULT_TRACE, space, objective, search.DEFAULT_RUNGS_S,
                         early_stop="bound")
    fx, fy, _ = search.front_axes(objective)
    cands = _candidates(str(d / "trials.csv"), space)
    picked = [i for i, r in enumerate(rows) if r["status"] == "pruned"
              and not r["stopped_because"].startswith("same candidate")
              and r.get("planner") in ("", "none")][:args.limit]
    fields = objective.fields()
    out = []
    load0 = _load()
    orig = search.lower_bounds
    for n, i in enumerate(picked):
        front = [(float(r[fx]), float(r[fy])) for r in rows[:i]
                 if r["status"] == "complete" and float(r["score"]) < 1e6]
        state = {"new": None, "old": None, "cpu": {}}
        t0 = time.process_time()
        seen = {}

        def lower_bounds(sim, flds, n_total, future=None):
            seen["old"] = orig(sim, flds, n_total)
            seen["new"] = orig(sim, flds, n_total, future) if future is not None \
                else seen["old"]
            return seen["new"]

        def report(step, values, score):
            state["cpu"][step] = time.process_time() - t0
            for rule in ("new", "old"):
                if state[rule] is None and search.bound_stop(
                        objective, {**seen[rule], "totals.num_requests":
                                    values["totals.num_requests"]}, front):
                    state[rule] = step
            return state["old"] is not None          # run on until the old rule stops
        search.lower_bounds = lower_bounds
        try:
            res = search.run_candidate(setup, cands[i], report)
        finally:
            search.lower_bounds = orig
        old, new = state["old"], state["new"]
        rec = {"trial": i, "block": cands[i].get("engine.block_size"), "tp": cands[i].get("tp"),
               "search_stop_s": float(rows[i]["sim_s"]),
               "old_stop_s": old and old * setup.check_s, "new_stop_s": new and new * setup.check_s,
               "old_cpu_s": state["cpu"].get(old), "new_cpu_s": state["cpu"].get(new),
               "status": res["status"]}
        out.append(rec)
        print(json.dumps({"n": n, **rec}), file=sys.stderr, flush=True)
    stopped = [r for r in out if r["old_stop_s"] is not None and r["new_stop_s"] is not None]
    earlier = [r for r in stopped if r["new_stop_s"] < r["old_stop_s"]]
    later = [r for r in stopped if r["new_stop_s"] > r["old_stop_s"]]
    old_cpu = sum(r["old_cpu_s"] for r in stopped)
    saved = sum(r["old_cpu_s"] - r["new_cpu_s"] for r in earlier)
    return {"bench": "floors", "dir": str(d), "objective": args.objective,
            "candidates": len(out), "stopped_by_both": len(stopped),
            "old_rule_matches_search": sum(r["old_stop_s"] == r["search_stop_s"] for r in out),
            "stop_earlier": len(earlier), "stop_later": len(later),
            "sim_s_saved": sum(r["old_stop_s"] - r["new_stop_s"] for r in earlier),
            "sim_s_old": sum(r["old_stop_s"] for r in stopped),
            "cpu_s_old": round(old_cpu, 1), "cpu_s_saved": round(saved, 1),
            "cpu_saved_share": round(saved / old_cpu, 4) if old_cpu else math.nan,
            "earlier_by_tp": {str(tp): sum(r["tp"] == tp for r in earlier) for tp in (1, 2, 4)},
            "load_before": load0, "load_after": _load(), "records": out}


# -- how the --jobs pool scales: trial durations through the ask-ahead rule ------------------------

#: CPU seconds of a full replay of the conversation hour by KV block size (README, "Where the
#: 26 minutes went"): only their ratios are used, scaled to the run's measured replay CPU.
_FULL_REPLAY_CPU_BY_BLOCK = {16: 5.4, 32: 3.4, 64: 2.1}


def bench_askahead(args) -> dict:
    """Replay a ``dynosim search --jobs`` run's trials (``DIR/trials.csv``, in trial order)
    through the pool's ask-ahead rule (``search_pool``: trial n is asked once trials
    0..n-L are told, L = POOL_LAG_PER_JOB x N; N processes take asked trials first come,
    first served; repeats cost nothing) for several N. Trial CPU is not in ``trials.csv``:
    each trial's is its simulated seconds x its block size's full-replay CPU rate, scaled so
    the trials add up to the run's ``trials_cpu_s`` (``search.json``). Reports, per N, the
    busy fraction of the N processes and the wall time (driver time left out)."""
    from dynosim.studies.search import POOL_LAG_PER_JOB
    d = Path(args.dir)
    info = read_json(d / "search.json", dict)
    rows = list(csv.DictReader(open(d / "trials.csv", newline="")))
    raw = [0.0 if r["stopped_because"].startswith("same candidate") else
           float(r["sim_s"]) * _FULL_REPLAY_CPU_BY_BLOCK[int(float(r["engine.block_size"]))]
           for r in rows]
    scale = info["run_info"]["trials_cpu_s"] / sum(raw)
    dur = [x * scale for x in raw]
    out = {}
    for n in args.jobs_list:
        lag = POOL_LAG_PER_JOB * n
        free = [0.0] * n                  # when each process is next free
        told: list[float] = []
        start_prev = 0.0
        for i, x in enumerate(dur):
            asked = told[i - lag] if i >= lag else 0.0
            if x == 0.0:                  # a repeat: recorded when asked
                done = asked
            else:
                k = min(range(n), key=free.__getitem__)
                start = max(asked, free[k], start_prev)        # FIFO
                start_prev = start
                done = free[k] = start + x
            told.append(max(done, told[-1] if told else 0.0))
        wall = told[-1]
        out[n] = {"wall_s": round(wall, 1), "busy": round(sum(dur) / (n * wall), 3),
                  "trials_per_cpu_s": round(len(dur) / (n * wall), 4)}
    return {"bench": "askahead", "dir": str(d), "trials": len(rows),
            "trials_cpu_s": info["run_info"]["trials_cpu_s"], "lag_per_job": POOL_LAG_PER_JOB,
            "by_jobs": out}


# -- RL: RLlib vs SB3 steps/s ---------------------------------------------------------------------

def bench_rl(args) -> dict:
    """PPO on DynoSim-v0 for ``--timesteps`` steps: SB3 with SubprocVecEnv (2 processes) and
    DummyVecEnv, RLlib with 2 env runners (local Ray, 2 CPUs); env steps per wall second of
    ``learn``/``train`` (RLlib's includes its per-iteration synchronisation)."""
    res = {}
    code_sb3 = """
import sys, time, json, torch
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv, DummyVecEnv
from dynosim_gym.config import load_env_config
torch.set_num_threads(1)
cls = SubprocVecEnv if sys.argv[1] == "subproc" else DummyVecEnv
cfg = load_env_config(None, defaults="autoscale_default").to_dict()
venv = make_vec_env("dynosim_gym:DynoSim-v0", n_envs=2, seed=0, vec_env_cls=cls,
                    env_kwargs={"config": cfg, "render_mode": None})
m = PPO("MlpPolicy", venv, n_steps=480, batch_size=240, n_epochs=10, gamma=0.98, seed=0,
        policy_kwargs={"net_arch": [64, 64]}, device="cpu")
t = time.perf_counter(); m.learn(int(sys.argv[2])); w = time.perf_counter() - t
print(json.dumps({"steps": m.num_timesteps, "wall_s": w}))
"""
    for kind in ("subproc", "dummy"):
        load0 = _load()
        p = subprocess.run([sys.executable, "-c", code_sb3, kind, str(args.timesteps)],
                           check=True, capture_output=True, text=True, cwd=REPO)
        r = json.loads(p.stdout.strip().splitlines()[-1])
        res[f"sb3_{kind}"] = {**r, "steps_per_s": round(r["steps"] / r["wall_s"], 1),
                              "load_before": load0, "load_after": _load()}
        print(json.dumps(res[f"sb3_{kind}"]), file=sys.stderr)
    out = Path(args.out) / "rllib_bench"
    load0 = _load()
    subprocess.run([DYNOSIM, "train", "--framework", "rllib", "--algo", "ppo",
                    "--num-env-runners", "2", "--timesteps", str(args.timesteps), "--out",
                    str(out), "--quiet"], check=True)
    run = json.loads((out / "run.json").read_text())
    res["rllib_2_runners"] = {"steps": run["steps"], "wall_s": run["train_wall_s"],
                              "steps_per_s": run["steps_per_s"], "load_before": load0,
                              "load_after": _load()}
    print(json.dumps(res["rllib_2_runners"]), file=sys.stderr)
    return {"bench": "rl", "timesteps": args.timesteps, "results": res}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    s = sub.add_parser("sweep")
    s.add_argument("--repeats", type=int, default=2)
    s.add_argument("--window-s", type=float, default=900.0,
                   help="simulated seconds of the trace per point")
    e = sub.add_parser("exactness")
    e.add_argument("dir")
    r = sub.add_parser("rl")
    r.add_argument("--timesteps", type=int, default=20_000)
    b = sub.add_parser("bound")
    b.add_argument("--trials", type=int, default=40)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--space", default=str(REPO / "envs_configs/search/deployment_space.yaml"))
    b.add_argument("--objective", default="minimise totals.gpu_hours subject to "
                   "latency_ms.ttft.p90 <= 3000")
    a = sub.add_parser("attribute")
    a.add_argument("dir", help="the --out of a dynosim search --executor ray run")
    x = sub.add_parser("executors")
    x.add_argument("--trials", type=int, default=60)
    x.add_argument("--jobs", type=int, default=2)
    x.add_argument("--repeats", type=int, default=2)
    x.add_argument("--seed", type=int, default=0)
    x.add_argument("--space", default=str(REPO / "envs_configs/search/deployment_space.yaml"))
    x.add_argument("--objective", default="minimise totals.gpu_hours subject to "
                   "latency_ms.ttft.p90 <= 3000")
    c = sub.add_parser("candidates")
    c.add_argument("--baseline", default="HEAD", help="git revision of search.py to compare")
    c.add_argument("--trials-csv", default=str(REPO / "docs/search/bound_tpe/trials.csv"))
    c.add_argument("--limit", type=int, default=None, help="only the first N candidates")
    c.add_argument("--check-s", type=float, default=None)
    c.add_argument("--stopped-after", type=float, default=None, metavar="S",
                   help="only the candidates the CSV shows stopped after S simulated seconds")
    c.add_argument("--static-only", action="store_true",
                   help="with --stopped-after: only candidates without a planner")
    c.add_argument("--space", default=str(REPO / "envs_configs/search/deployment_space.yaml"))
    c.add_argument("--objective", default="minimise totals.gpu_hours subject to "
                   "latency_ms.ttft.p90 <= 3000")
    n_ = sub.add_parser("analyse")
    n_.add_argument("dir", help="the --out of a dynosim search")
    f = sub.add_parser("floors")
    f.add_argument("dir", help="the --out of a dynosim search (bound rule)")
    f.add_argument("--limit", type=int, default=None)
    f.add_argument("--space", default=str(REPO / "envs_configs/search/deployment_space.yaml"))
    f.add_argument("--objective", default="minimise totals.gpu_hours subject to "
                   "latency_ms.ttft.p90 <= 3000")
    k = sub.add_parser("askahead")
    k.add_argument("dir", help="the --out of a dynosim search --jobs run")
    k.add_argument("--jobs-list", type=lambda t: [int(v) for v in t.split(",")],
                   default=[1, 2, 3, 4, 8, 16])
    for y in (s, e, r, b, c, x, a, k, f, n_):
        y.add_argument("--out", default="out/bench_scale_out")
        y.add_argument("--json", default=None, help="append the result to this JSON-lines file")
    args = p.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    bench = {"sweep": bench_sweep, "exactness": bench_exactness, "rl": bench_rl,
             "bound": bench_bound, "candidates": bench_candidates,
             "executors": bench_executors, "attribute": bench_attribute,
             "askahead": bench_askahead, "floors": bench_floors,
             "analyse": bench_analyse}[args.what]
    res: dict = {}
    from dynosim.cli import guarded     # bad input (a corrupt search.json): one line, exit 2
    rc = guarded(lambda: res.update(bench(args)) or 0)
    if rc:
        return rc
    res.update(nproc=os.cpu_count(), started_utc=time.strftime("%Y-%m-%d %H:%M",
                                                               time.gmtime(t0)))
    text = json.dumps(res, indent=1)
    print(text)
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
