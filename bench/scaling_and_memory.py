"""Scaling and memory of the simulator core (issue "Performance").

* scaling: the Mooncake conversation trace at 1x, 4x and 16x load on 8, 32 and 128
  workers (see ``scaled_trace`` for the ways of making k-fold load). Wall time should
  grow no faster than linearly with requests. Each configuration runs ``--repeats`` times,
  interleaved, in fresh processes; the table reports the minimum and the median wall time
  and the minimum CPU time of the process (on shared, noisy machines the wall time of one
  run can be 40% off; its CPU time much less).
* memory: a synthetic Poisson workload of N requests (default 1,000,000), streamed;
  peak RSS per simulated request, in a fresh process per run.

    python bench/scaling_and_memory.py [--scaling-mode superpose,rate,speedup] [--repeats 3]
        [--skip-scaling] [--skip-memory] [--memory-requests 1000000]
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.wording import plural  # noqa: E402


def scaled_trace(k: int, mode: str = "superpose"):
    """The bundled conversation trace at k-fold load, as a lazy workload.

    ``superpose`` (default): k copies over the same hour at the same timestamps, with
    distinct prefix ids per copy: k times the users, same per-user behaviour (and, with k
    times the workers, the same per-worker arrival pattern: at a shared timestamp the k
    copies of each request arrive together, so round robin over k*W workers sends copy c of
    the request that worker w got at 1x to worker k*w + c; every worker replays a 1x
    worker's requests, so the engine work is exactly k times the 1x work).
    ``staggered``: like superpose, copy c shifted by c/k seconds; bursts de-synchronise, so
    batches get smaller and there is more engine work per request.
    ``rate``: the trace itself with arrivals k times faster (``arrival_speedup_ratio=k``):
    the same requests in 1/k of the time, so k times the load but not k times the requests.
    ``speedup``: k copies each compressed k-fold (arrival speed-up) and laid end to end,
    so k times the requests over the hour. ``rate`` and ``speedup`` also shrink the think
    time between the turns of a conversation and spread a conversation over more workers,
    so they change the workload's character (less prefix reuse, more engine events per
    request), not only its volume: compare the engine-events column.
    """
    from sim.config import BUNDLED_TRACES, DATA_DIR
    from sim.workloads import load_mooncake

    path = DATA_DIR / BUNDLED_TRACES["mooncake_conversation"]
    fast = mode in ("speedup", "rate")
    base = list(load_mooncake(path, arrival_speedup_ratio=float(k) if fast else 1.0))
    n = len(base)
    span = max(r.arrival_ms for r in base) + 1.0
    reqs = []
    for c in range(1 if mode == "rate" else k):
        off = {"speedup": c * span, "staggered": c * 1000.0 / k}.get(mode, 0.0)
        reqs += [replace(r, index=c * n + r.index, arrival_ms=r.arrival_ms + off,
                         hash_ids=tuple(h * k + c for h in r.hash_ids)) for r in base]
    # (time, request of the 1x trace, copy): copies of one request are adjacent. The trace
    # has ~10 requests per timestamp; ordering by (time, index) instead (copy-major within a
    # timestamp) gave workers a different mix than at 1x: at 16x, 3.8% more engine events
    # (passes and decode stretches started) per request, which read as super-linear wall time.
    reqs.sort(key=lambda r: (r.arrival_ms, r.index % n, r.index // n))

    class Scaled:
        name = f"conversation x{k} ({mode})"

        def __iter__(self):
            return iter(reqs)

        def on_complete(self, req, now):
            return []

        def describe(self):
            return {"name": self.name, "num_requests": len(reqs)}

    return Scaled(), len(reqs)


def run_scaling(k: int, workers: int, mode: str = "superpose") -> dict:
    from sim.engine import EngineConfig
    from sim.simulator import ClusterConfig, Simulation
    from sim.timing import PolynomialTiming

    wl, n = scaled_trace(k, mode)
    t0, c0 = time.perf_counter(), time.process_time()
    res = Simulation(wl, engine=EngineConfig(block_size=512), timing=PolynomialTiming(),
                     cluster=ClusterConfig(num_workers=workers), router="round_robin").run()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    tot = res.summary["totals"]
    engines = [w.engine for w in res.workers]
    # What the simulator pays for: each single pass and each bulk decode stretch.
    events = sum(e.num_passes - e.num_stretch_passes + e.num_stretches for e in engines)
    return {"load": k, "workers": workers, "requests": n, "completed": tot["completed_requests"],
            "wall_s": wall, "cpu_s": cpu, "us_per_request": wall / n * 1e6,
            "sim_s": tot["duration_ms"] / 1000.0, "passes": res.summary["engine"]["passes"],
            "events": events, "reused_tokens": int(res.metrics.columns()["reused_input_tokens"].sum()),
            "input_tokens": int(res.metrics.columns()["input_length"].sum())}


def run_memory(n: int, workers: int) -> dict:
    import numpy as np

    from sim.engine import EngineConfig
    from sim.simulator import ClusterConfig, Simulation
    from sim.timing import PolynomialTiming
    from sim.workloads import fixed, poisson, synthetic

    rate = 40.0 * workers                           # ~ what the workers sustain at this size
    wl = synthetic(np.random.default_rng(0), arrival=poisson(rate), isl=fixed(512),
                   osl=fixed(32), num_requests=n)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    res = Simulation(wl, engine=EngineConfig(block_size=64), timing=PolynomialTiming(),
                     cluster=ClusterConfig(num_workers=workers), router="round_robin").run()
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tot = res.summary["totals"]
    return {"requests": n, "workers": workers, "completed": tot["completed_requests"],
            "wall_s": wall, "peak_rss_mb": peak / 1024, "baseline_rss_mb": base / 1024,
            "peak_rss_bytes_per_request": peak * 1024 / n,
            "growth_bytes_per_request": (peak - base) * 1024 / n}


def child(argv: list[str]) -> dict:
    out = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scaling_table(mode: str, runs: list[list[dict]], repeats: int) -> list[str]:
    """Markdown table of one scaling mode; runs[i] are the repeats of the i-th load."""
    walls = [sorted(r["wall_s"] for r in rs) for rs in runs]
    med = [statistics.median(w) for w in walls]
    cpu = [min(r["cpu_s"] for r in rs) for rs in runs]
    base = runs[0][0]
    lines = [f"### Scaling with load (Mooncake conversation trace, {mode}, block 512, round robin; "
             f"{plural(repeats, 'interleaved run')} each)", "",
             "| load | workers | requests | completed | requests / requests(1x) | "
             "engine passes / passes(1x) | engine events / events(1x) | prefix reuse | "
             "wall (s), median | wall / wall(1x), median | CPU µs / request, min | "
             "CPU / CPU(1x), min | CPU µs / engine event, min |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, rs in enumerate(runs):
        r = rs[0]
        n = r["requests"]
        lines.append(f"| {r['load']}x | {r['workers']} | {n:,} | {r['completed']:,} | "
                     f"{n / base['requests']:.0f} | {r['passes'] / base['passes']:.2f} | "
                     f"{r['events'] / base['events']:.2f} | "
                     f"{100 * r['reused_tokens'] / r['input_tokens']:.1f} % | {med[i]:.2f} | "
                     f"{med[i] / med[0]:.2f} | {cpu[i] / n * 1e6:.1f} | {cpu[i] / cpu[0]:.2f} | "
                     f"{cpu[i] / r['events'] * 1e6:.1f} |")
    return lines + [""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-scaling", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--repeats", type=int, default=3, help="runs per scaling configuration")
    ap.add_argument("--memory-requests", type=int, default=1_000_000)
    ap.add_argument("--scaling-mode", default="superpose",
                    help="comma-separated: superpose, staggered, rate, speedup (see scaled_trace)")
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    ap.add_argument("--_child", nargs="*", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a._child is not None:
        kind, x, y, *rest = a._child
        res = (run_scaling(int(x), int(y), *rest) if kind == "scaling"
               else run_memory(int(x), int(y)))
        print(json.dumps(res))
        return 0
    lines = []
    if not a.skip_scaling:
        modes = a.scaling_mode.split(",")
        for mode in modes:
            if mode not in ("superpose", "staggered", "rate", "speedup"):
                ap.error(f"--scaling-mode: unknown mode {mode!r}")
        configs = ((1, 8), (4, 32), (16, 128))
        runs: dict[tuple, list[dict]] = {(m, *c): [] for m in modes for c in configs}
        for rep in range(a.repeats):
            for mode in modes:
                for k, w in configs:
                    print(f"scaling ({mode}): {k}x load on {w} workers (run {rep + 1}/{a.repeats})",
                          file=sys.stderr)
                    runs[mode, k, w].append(child(["--_child", "scaling", str(k), str(w), mode]))
        for mode in modes:
            lines += scaling_table(mode, [runs[mode, k, w] for k, w in configs], a.repeats)
    if not a.skip_memory:
        print(f"memory: {a.memory_requests:,} synthetic requests", file=sys.stderr)
        m = child(["--_child", "memory", str(a.memory_requests), "64"])
        lines += ["### Memory at scale (synthetic Poisson, ISL 512 / OSL 32, 64 workers)", "",
                  "| requests | completed | wall (s) | peak RSS (MB) | peak RSS per request | "
                  "growth over start-up per request |", "|---|---|---|---|---|---|",
                  f"| {m['requests']:,} | {m['completed']:,} | {m['wall_s']:.1f} | "
                  f"{m['peak_rss_mb']:.0f} | {m['peak_rss_bytes_per_request']:.0f} B | "
                  f"{m['growth_bytes_per_request']:.0f} B |", ""]
    report = "\n".join(lines)
    print(report)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scaling_and_memory.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
