"""Planner parity with Dynamo 1.6.1's planner-in-the-loop replay (issue 11, "Planner parity").

Both simulators replay the same synthetic Mooncake traces (made with
``../shared/peer/gen_mooncake_trace.py``: ISL 3000, OSL 300, lognormal lengths, 32 prefix
groups) with the same engine (round robin, 64-token blocks, speed-up 0.2, polynomial
timing), starting from one worker, and the same planner config, given in Dynamo's JSON
(default ``{"min_endpoint": 1, "max_gpu_budget": 16, "load_adjustment_interval_seconds":
10, "ttft_ms": 1500, "itl_ms": 50}``: Dynamo's default ``optimization_target``
throughput). Dynamo runs through ``../shared/peer/run_dynosim.sh ... --planner
--planner-config-json``; ours through :class:`sim.planner.LoadPlanner` with
:meth:`PlannerConfig.from_dict` of the same JSON.

Per trace: the provisioned-worker trajectory n(t) = active + starting workers (Dynamo: its
lifecycle operations' ``state_after_batch``; ours: ``Simulation.replicas``), the error
``int |n_ours - n_dynamo| dt / int n_dynamo dt`` over [0, the later run's end] (each
trajectory holds its last value), GPU-hours (starting + active + draining, both), the
scaling events and p90 TTFT. Targets: trajectory error <= 10% and GPU-hours within 10%.

Traces are segments of the generator concatenated in time (steps and flash crowds; unique
hash ids are offset per segment so segments share only the prefix groups), at two load
levels each: ramps, steps, flash crowds, constant load. Deterministic (fixed seeds).

    python bench/planner_parity.py [--traces ramp_hi,...] [--out bench/results]

Only Dynamo's load planner runs in its replay here: with ``optimization_target: sla``
(SLA regression load scaling, and throughput scaling at all) Dynamo 1.6.1 needs the
AISimulate perf model, which is not installable, and its replay fails at start-up.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DYNOSIM_SHARED", ROOT.parent / "shared"))
GEN = SHARED / "peer" / "gen_mooncake_trace.py"
RUN_PEER = SHARED / "peer" / "run_dynosim.sh"

PLANNER_JSON = {"min_endpoint": 1, "max_gpu_budget": 16,
                "load_adjustment_interval_seconds": 10, "ttft_ms": 1500, "itl_ms": 50}
ENGINE = {"block_size": 64, "speedup_ratio": 0.2}
SHAPE = ["--isl", "3000", "--osl", "300", "--len-dist", "lognormal", "--prefix-groups", "32"]

# name -> (label, segments [(duration_s, rate, rate_end or None)], startup_s, seed)
TRACES: dict[str, tuple[str, list[tuple[float, float, float | None]], float, int]] = {
    "ramp_hi": ("ramp 1->12 req/s, 600 s", [(600, 1, 12)], 0.0, 1),
    "ramp_lo": ("ramp 1->6 req/s, 600 s", [(600, 1, 6)], 0.0, 2),
    "step_hi": ("steps 2/10/2/10 req/s, 150 s each", [(150, 2, None), (150, 10, None),
                                                       (150, 2, None), (150, 10, None)], 0.0, 3),
    "step_lo": ("steps 1/5/1/5 req/s, 150 s each", [(150, 1, None), (150, 5, None),
                                                     (150, 1, None), (150, 5, None)], 0.0, 4),
    "flash_hi": ("flash crowd 2 -> 16 req/s for 90 s", [(200, 2, None), (90, 16, None),
                                                         (310, 2, None)], 0.0, 5),
    "flash_lo": ("flash crowd 1 -> 8 req/s for 90 s", [(200, 1, None), (90, 8, None),
                                                        (310, 1, None)], 0.0, 6),
    "const_hi": ("constant 8 req/s, 600 s, start-up 30 s", [(600, 8, None)], 30.0, 7),
    "const_lo": ("constant 4 req/s, 600 s, start-up 30 s", [(600, 4, None)], 30.0, 8),
}
#: the subset the CI test runs (the rest is marked expensive)
QUICK = ("flash_lo", "const_lo")
TARGET = 0.10


def make_trace(name: str, path: Path) -> Path:
    """Write trace ``name`` (see TRACES) as Mooncake JSONL at ``path``."""
    _, segs, _, seed = TRACES[name]
    rows: list[dict] = []
    t0 = 0.0
    for k, (dur, rate, rate_end) in enumerate(segs):
        cmd = [sys.executable, str(GEN), "-o", "-", "--duration-s", str(dur), "--rate", str(rate),
               "--seed", str(seed * 100 + k), *SHAPE]
        if rate_end is not None:
            cmd += ["--rate-end", str(rate_end)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            r = json.loads(line)
            r["timestamp"] = round(r["timestamp"] + t0 * 1000.0, 3)
            r["hash_ids"] = [h + k * 100_000_000 if h >= 1_000_000 else h for h in r["hash_ids"]]
            rows.append(r)
        t0 += dur
    with open(path, "w") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    return path


def peer_available() -> bool:
    venv = os.environ.get("PEER_VENV") or os.environ.get("DYNOSIM_PEER_VENV")
    if not venv or not RUN_PEER.exists() or not GEN.exists():
        return False
    py = Path(venv) / "bin" / "python"
    return py.exists() and subprocess.run(
        [str(py), "-c", "import dynamo.replay, msgspec, pandas, pmdarima, filterpy, prophet"],
        capture_output=True).returncode == 0


def _run_peer_planner(cmd: list[str], pools: bool) -> dict:
    """Run Dynamo's planner replay ``cmd``; its worker-count trajectory [(t_s, n)] from 1 worker
    (per pool when ``pools``: one per ``lifecycle_operations[].pool``), GPU-hours, end time,
    scaling events and p90 TTFT."""
    venv = os.environ.get("PEER_VENV") or os.environ.get("DYNOSIM_PEER_VENV")
    env = dict(os.environ, PEER_VENV=venv, PEER_SKIP_INSTALL="1", DYN_LOG="error")
    d = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True,
                                  env=env).stdout)
    traj = {"prefill": [(0.0, 1)], "decode": [(0.0, 1)]} if pools else {None: [(0.0, 1)]}
    for op in d["planner"]["lifecycle_operations"] or []:
        st = op["state_after_batch"]
        traj[op["pool"] if pools else None].append(
            (op["at_ms"] / 1000.0, len(st["active"]) + len(st["starting"])))
    tot = d["metrics"]["totals"]
    return {"traj": traj if pools else traj[None], "gpu_hours": tot["gpu_hours"],
            "end_s": tot["duration_ms"] / 1000.0,
            "events": len(d["planner"]["scaling_events"] or []),
            "p90_ttft_ms": d["metrics"]["latency_ms"]["ttft"]["p90"]}


def run_dynamo(trace: Path, startup_s: float, planner_json: dict) -> dict:
    """Dynamo's replay with its planner: trajectory [(t_s, n)], GPU-hours, end time."""
    cmd = [str(RUN_PEER), str(trace), "1", "round_robin", "--block-size",
           str(ENGINE["block_size"]), "--speedup-ratio", str(ENGINE["speedup_ratio"]),
           "--indent", "0", "--planner", "--planner-config-json", json.dumps(planner_json)]
    if startup_s:
        cmd += ["--engine-args-json", json.dumps({"startup_time": startup_s})]
    return _run_peer_planner(cmd, pools=False)


def run_ours(trace: Path, startup_s: float, planner_json: dict) -> dict:
    """Our replay with sim.planner.LoadPlanner under the same settings."""
    sys.path.insert(0, str(ROOT))
    from sim.config import build_simulation, parse_config
    from sim.planner import LoadPlanner, PlannerConfig

    cfg = parse_config({"workload": {"kind": "mooncake", "path": str(trace)},
                        "cluster": {"num_workers": 1, "startup_time_s": startup_s},
                        "engine": {"block_size": ENGINE["block_size"]},
                        "timing": {"speedup_ratio": ENGINE["speedup_ratio"]}})
    sim = build_simulation(cfg)
    planner = LoadPlanner(PlannerConfig.from_dict(planner_json)).attach(sim)
    res = sim.run()
    traj = [(t / 1000.0, a + s) for t, a, s, _d in sim.replicas]
    return {"traj": traj, "gpu_hours": res.summary["totals"]["gpu_hours"],
            "end_s": sim.now / 1000.0, "events": len(planner.events),
            "p90_ttft_ms": res.summary["latency_ms"]["ttft"]["p90"]}


def trajectory_error(ours: list[tuple[float, int]], ref: list[tuple[float, int]],
                     end_s: float) -> float:
    """int |ours - ref| dt / int ref dt over [0, end_s]; step functions, last value held."""
    times = sorted({t for t, _ in ours} | {t for t, _ in ref} | {0.0, end_s})
    times = [t for t in times if t <= end_s]

    def at(traj, t):
        v = traj[0][1]
        for tt, n in traj:
            if tt <= t:
                v = n
            else:
                break
        return v

    num = den = 0.0
    for a, b in zip(times, times[1:]):
        num += abs(at(ours, a) - at(ref, a)) * (b - a)
        den += at(ref, a) * (b - a)
    return num / den if den else float("nan")


def compare(name: str, workdir: Path, planner_json: dict | None = None) -> dict:
    """Run both simulators on trace ``name``; the comparison row."""
    pj = planner_json or PLANNER_JSON
    label, _, startup_s, _ = TRACES[name]
    trace = make_trace(name, workdir / f"{name}.jsonl")
    t0 = time.perf_counter()
    dyn = run_dynamo(trace, startup_s, pj)
    t1 = time.perf_counter()
    ours = run_ours(trace, startup_s, pj)
    t2 = time.perf_counter()
    end = max(dyn["end_s"], ours["end_s"])
    return {"name": name, "label": label,
            "traj_err": trajectory_error(ours["traj"], dyn["traj"], end),
            "gpu_h_dyn": dyn["gpu_hours"], "gpu_h_ours": ours["gpu_hours"],
            "gpu_h_err": abs(ours["gpu_hours"] - dyn["gpu_hours"]) / dyn["gpu_hours"],
            "peak_dyn": max(n for _, n in dyn["traj"]), "peak_ours": max(n for _, n in ours["traj"]),
            "events_dyn": dyn["events"], "events_ours": ours["events"],
            "p90_ttft_dyn_s": dyn["p90_ttft_ms"] / 1000.0,
            "p90_ttft_ours_s": ours["p90_ttft_ms"] / 1000.0,
            "wall_dyn_s": t1 - t0, "wall_ours_s": t2 - t1,
            "traj_dyn": dyn["traj"], "traj_ours": ours["traj"]}


# -- disaggregated pools (issue 15 item 4) --------------------------------------------------
#: Dynamo's disagg planner with the load target's thresholds: decode KV utilisation 50% / 20%,
#: prefill queue 8,192 / 1,024 tokens per engine (the default target's thresholds, decode KV
#: over 100%, act only on an overloaded decode pool)
DISAGG_JSON = {"mode": "disagg", "min_endpoint": 1, "max_gpu_budget": 16,
               "load_adjustment_interval_seconds": 10, "prefill_engine_num_gpu": 1,
               "decode_engine_num_gpu": 1, "optimization_target": "load",
               "decode_scale_up_kv_rate": 50, "decode_scale_down_kv_rate": 20,
               "prefill_scale_up_queue_tokens": 8192, "prefill_scale_down_queue_tokens": 1024}
#: per-role engines: 64 GB/s handoff of 262,144 B/token (Qwen3-32B bf16), 4,096 decode blocks
DISAGG_ENGINES = {"prefill": {"max_model_len": 32768}, "decode": {"num_gpu_blocks": 4096}}
DISAGG_QUICK = ("step_lo",)


def run_dynamo_disagg(trace: Path, startup_s: float, planner_json: dict) -> dict:
    """Dynamo's replay of 1 prefill + 1 decode worker with its disagg planner: per pool the
    trajectory [(t_s, n)], GPU-hours, end time."""
    cmd = [str(RUN_PEER), str(trace), "1", "round_robin", "--num-prefill-workers", "1",
           "--num-decode-workers", "1", "--block-size", str(ENGINE["block_size"]),
           "--speedup-ratio", str(ENGINE["speedup_ratio"]), "--kv-transfer-bandwidth", "64",
           "--kv-bytes-per-token", "262144",
           "--prefill-engine-args-json", json.dumps(DISAGG_ENGINES["prefill"]),
           "--decode-engine-args-json", json.dumps(DISAGG_ENGINES["decode"]),
           "--indent", "0", "--planner", "--planner-config-json", json.dumps(planner_json)]
    if startup_s:
        cmd += ["--engine-args-json", json.dumps({"startup_time": startup_s})]
    return _run_peer_planner(cmd, pools=True)


def run_ours_disagg(trace: Path, startup_s: float, planner_json: dict) -> dict:
    """Ours under the same settings: sim.planner.DisaggLoadPlanner."""
    sys.path.insert(0, str(ROOT))
    from sim.config import build_simulation, parse_config
    from sim.planner import DisaggLoadPlanner, PlannerConfig

    cfg = parse_config({"workload": {"kind": "mooncake", "path": str(trace)},
                        "cluster": {"startup_time_s": startup_s},
                        "engine": {"block_size": ENGINE["block_size"]},
                        "timing": {"speedup_ratio": ENGINE["speedup_ratio"]},
                        "disagg": {"num_prefill_workers": 1, "num_decode_workers": 1,
                                   "kv_transfer_bandwidth": 64, "kv_bytes_per_token": 262144,
                                   "prefill_engine": DISAGG_ENGINES["prefill"],
                                   "decode_engine": DISAGG_ENGINES["decode"]}})
    sim = build_simulation(cfg)
    planner = DisaggLoadPlanner(PlannerConfig.from_dict(planner_json)).attach(sim)
    res = sim.run()
    traj = {pool: [(t / 1000.0, a + s) for t, a, s, _d in rec]
            for pool, rec in sim.pool_replicas.items()}
    return {"traj": traj, "gpu_hours": res.summary["totals"]["gpu_hours"],
            "end_s": sim.now / 1000.0, "events": len(planner.events),
            "p90_ttft_ms": res.summary["latency_ms"]["ttft"]["p90"]}


def compare_disagg(name: str, workdir: Path, planner_json: dict | None = None) -> dict:
    """Both simulators with the disagg planner on trace ``name``: per-pool trajectory
    errors, GPU-hours (both pools), scaling events (one per pool that moved)."""
    pj = planner_json or DISAGG_JSON
    label, _, startup_s, _ = TRACES[name]
    trace = make_trace(name, workdir / f"{name}.jsonl")
    dyn = run_dynamo_disagg(trace, startup_s, pj)
    ours = run_ours_disagg(trace, startup_s, pj)
    end = max(dyn["end_s"], ours["end_s"])
    row = {"name": name, "label": label, "gpu_h_dyn": dyn["gpu_hours"],
           "gpu_h_ours": ours["gpu_hours"],
           "gpu_h_err": abs(ours["gpu_hours"] - dyn["gpu_hours"]) / dyn["gpu_hours"],
           "events_dyn": dyn["events"], "events_ours": ours["events"],
           "p90_ttft_dyn_s": dyn["p90_ttft_ms"] / 1000.0,
           "p90_ttft_ours_s": ours["p90_ttft_ms"] / 1000.0}
    for pool in ("prefill", "decode"):
        row[f"{pool}_err"] = trajectory_error(ours["traj"][pool], dyn["traj"][pool], end)
        row[f"{pool}_peak"] = (max(n for _, n in dyn["traj"][pool]),
                               max(n for _, n in ours["traj"][pool]))
        row[f"{pool}_traj"] = (dyn["traj"][pool], ours["traj"][pool])
    return row


def disagg_table(rows: list[dict]) -> str:
    out = ["| trace | prefill trajectory error | decode trajectory error | peak prefill "
           "(Dynamo / ours) | peak decode (Dynamo / ours) | GPU-h Dynamo / ours (error) | "
           "scaling events (Dynamo / ours) | p90 TTFT s (Dynamo / ours) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ok = "" if max(r["prefill_err"], r["decode_err"], r["gpu_h_err"]) <= TARGET \
            else " **(miss)**"
        out.append(f"| {r['label']}{ok} | {100 * r['prefill_err']:.1f}% | "
                   f"{100 * r['decode_err']:.1f}% | {r['prefill_peak'][0]} / "
                   f"{r['prefill_peak'][1]} | {r['decode_peak'][0]} / {r['decode_peak'][1]} | "
                   f"{r['gpu_h_dyn']:.3f} / {r['gpu_h_ours']:.3f} ({100 * r['gpu_h_err']:.1f}%)"
                   f" | {r['events_dyn']} / {r['events_ours']} | {r['p90_ttft_dyn_s']:.1f} / "
                   f"{r['p90_ttft_ours_s']:.1f} |")
    return "\n".join(out)


def table(rows: list[dict]) -> str:
    out = ["| trace | trajectory error | GPU-h Dynamo | GPU-h ours | GPU-h error | peak workers "
           "(Dynamo / ours) | scaling events (Dynamo / ours) | p90 TTFT s (Dynamo / ours) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ok = "" if r["traj_err"] <= TARGET and r["gpu_h_err"] <= TARGET else " **(miss)**"
        out.append(f"| {r['label']}{ok} | {100 * r['traj_err']:.1f}% | {r['gpu_h_dyn']:.3f} | "
                   f"{r['gpu_h_ours']:.3f} | {100 * r['gpu_h_err']:.1f}% | {r['peak_dyn']} / "
                   f"{r['peak_ours']} | {r['events_dyn']} / {r['events_ours']} | "
                   f"{r['p90_ttft_dyn_s']:.1f} / {r['p90_ttft_ours_s']:.1f} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--traces", default=",".join(TRACES),
                    help=f"comma list of {', '.join(TRACES)}")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results"))
    ap.add_argument("--disagg", action="store_true",
                    help="disaggregated pools: Dynamo's disagg planner (DISAGG_JSON) on 1 "
                         "prefill + 1 decode worker; writes planner_parity_disagg.{md,json}")
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.traces.split(",") if n.strip()]
    bad = [n for n in names if n not in TRACES]
    if bad:
        print(f"planner_parity: error: unknown trace {bad[0]!r}", file=sys.stderr)
        return 2
    if not peer_available():
        print("planner_parity: error: Dynamo's replay with planner deps not found "
              "(set PEER_VENV)", file=sys.stderr)
        return 2
    rows = []
    with tempfile.TemporaryDirectory(prefix="planner_parity_") as tmp:
        for i, name in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {name} ...", file=sys.stderr, flush=True)
            if a.disagg:
                r = compare_disagg(name, Path(tmp))
                print(f"    trajectory error prefill {100 * r['prefill_err']:.1f}%, decode "
                      f"{100 * r['decode_err']:.1f}%", file=sys.stderr, flush=True)
            else:
                r = compare(name, Path(tmp))
                print(f"    trajectory error {100 * r['traj_err']:.1f}%, GPU-h "
                      f"{r['gpu_h_dyn']:.3f} vs {r['gpu_h_ours']:.3f}", file=sys.stderr,
                      flush=True)
            rows.append(r)
    if a.disagg:
        md = ["# Disaggregated planner parity with Dynamo 1.6.1's planner replay", "",
              "Generated by `python bench/planner_parity.py --disagg`. Planner config (Dynamo "
              f"JSON, both simulators): `{json.dumps(DISAGG_JSON)}`; 1 prefill + 1 decode "
              f"worker at the start, round robin, block 64, speed-up 0.2, engines "
              f"`{json.dumps(DISAGG_ENGINES)}`, 64 GB/s x 262,144 B/token; ISL 3000 / OSL "
              "300 lognormal, 32 prefix groups. Target: each pool's trajectory error and the "
              f"GPU-hours error <= {100 * TARGET:.0f}%.", "", disagg_table(rows), ""]
        _write(Path(a.out), "planner_parity_disagg", md, rows)
        return 0
    md = ["# Planner parity with Dynamo 1.6.1's planner replay", "",
          "Generated by `python bench/planner_parity.py`. Planner config (Dynamo JSON, both "
          f"simulators): `{json.dumps(PLANNER_JSON)}`; round robin, 1 initial worker, "
          "block 64, speed-up 0.2, ISL 3000 / OSL 300 lognormal, 32 prefix groups. "
          f"Target: trajectory error and GPU-hours error <= {100 * TARGET:.0f}%.", "",
          table(rows), ""]
    _write(Path(a.out), "planner_parity", md, rows)
    return 0


def _write(out: Path, stem: str, md: list[str], rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text("\n".join(md))
    (out / f"{stem}.json").write_text(json.dumps(rows, indent=1))
    print("\n".join(md))


if __name__ == "__main__":
    sys.exit(main())
