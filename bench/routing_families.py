"""Does routing matter? Round robin against Dynamo's KV router on each routing family.

For every family of ``dynosim_gym.scenarios.ROUTING_FAMILIES`` (and the default scenario),
both routers are scored through ``agents.evaluate.evaluate`` on the same episodes
(``--episodes`` seeds from ``--seed``, ``--split``), pinned to that family. Prints and
writes a Markdown table: pooled SLA attainment, pooled p90 TTFT, prefix-cache reuse and
request throughput of each router, and the gap (KV minus round robin; p90 as a ratio).

    python bench/routing_families.py [--episodes 5] [--split eval] \\
        [--out bench/results/routing_families.md]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.evaluate import evaluate  # noqa: E402
from dynosim_gym.scenarios import ROUTING_FAMILIES  # noqa: E402
from sim.wording import plural  # noqa: E402

ROUTERS = ("heuristic:round_robin", "heuristic:kv")


def gaps(episodes: int, seed: int, split: str, config: str, log=print) -> list[dict]:
    rows = []
    cases = [("routing_default", None)] + [(f, f) for f in ROUTING_FAMILIES]
    for label, family in cases:
        cfg = "routing_default" if family is None else config
        over = {} if family is None else {"env.scenarios": family, "env.eval_scenarios": family}
        res = {}
        for spec in ROUTERS:
            t0 = time.perf_counter()
            res[spec] = evaluate(spec, "DynoSimRouting-v0", config=cfg, episodes=episodes,
                                 seed=seed, split=split, overrides=over)
            log(f"{label}: {spec} SLA {res[spec].sla_attainment:.1%} p90 TTFT "
                f"{res[spec].p90_ttft_ms:.0f} ms ({time.perf_counter() - t0:.0f} s)")
        rr, kv = res[ROUTERS[0]], res[ROUTERS[1]]
        rows.append({"family": label, "requests": kv.requests_decided,
                     "rr_sla": rr.sla_attainment, "kv_sla": kv.sla_attainment,
                     "rr_p90": rr.p90_ttft_ms, "kv_p90": kv.p90_ttft_ms,
                     "rr_reuse": rr.prefix_cache_reused_ratio,
                     "kv_reuse": kv.prefix_cache_reused_ratio,
                     "rr_rps": rr.request_throughput_rps, "kv_rps": kv.request_throughput_rps})
    return rows


def markdown(rows: list[dict], episodes: int, seed: int, split: str) -> str:
    head = ("| family | requests (KV) | SLA: round robin → KV | gap (pp) | p90 TTFT (ms): round "
            "robin → KV | KV ÷ RR | prefix reuse: RR → KV | throughput (req/s): RR → KV |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = [f"| {r['family']} | {r['requests']:,} | {r['rr_sla']:.1%} → {r['kv_sla']:.1%} | "
             f"{100 * (r['kv_sla'] - r['rr_sla']):+.1f} | {r['rr_p90']:,.0f} → "
             f"{r['kv_p90']:,.0f} | {r['kv_p90'] / r['rr_p90'] if r['rr_p90'] else float('nan'):.2f} | "
             f"{r['rr_reuse']:.1%} → {r['kv_reuse']:.1%} | {r['rr_rps']:.2f} → {r['kv_rps']:.2f} |"
             for r in rows]
    return (head + "\n".join(lines) + f"\n\n{plural(episodes, 'episode')} per family and router "
            f"(split={split}, seeds {seed}..{seed + episodes - 1}, the same for both routers); "
            "SLA attainment and p90 TTFT pooled over all requests.\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--split", choices=("train", "eval"), default="eval")
    ap.add_argument("--config", default="routing_families")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "routing_families.md"))
    args = ap.parse_args(argv)
    rows = gaps(args.episodes, args.seed, args.split, args.config,
                log=lambda m: print(m, file=sys.stderr, flush=True))
    table = markdown(rows, args.episodes, args.seed, args.split)
    print(table)
    Path(args.out).write_text("# Round robin vs the KV router per routing family\n\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
