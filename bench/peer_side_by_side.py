"""Side-by-side with Dynamo's offline replay: parity of results and speed, in one run.

For each configuration both simulators replay the same trace as separate processes,
interleaved (ours, peer, ours, peer, ...) so machine noise hits both alike; the report
gives medians and the ratio ours/Dynamo (these machines are noisy: ratios, not seconds,
are the figure of merit). Peak RSS is each process's own maximum resident set.

    python bench/peer_side_by_side.py [--repeats 3] [--configs a,b,c] [--out bench/results]
    python bench/peer_side_by_side.py --configs sa,tc,sb --name flavours_side_by_side
    python bench/peer_side_by_side.py --configs da,db --name disagg_side_by_side
    python bench/peer_side_by_side.py --configs g2,dp --name tiers_side_by_side
    python bench/peer_side_by_side.py --trace MY.jsonl --configs a --repeats 1 --name mine

``--trace`` replays your own Mooncake-format ``.jsonl`` instead of the conversation trace
(default ``$DYNOSIM_SHARED/data/traces/mooncake_fast25/conversation_trace.jsonl``; the
configurations are the same).

Needs Dynamo's replay (``make peer`` installs ai-dynamo 1.6.1 into .peer-venv).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.wording import plural  # noqa: E402

SHARED = Path(os.environ.get("DYNOSIM_SHARED", ROOT.parent / "shared"))
TRACE = SHARED / "data/traces/mooncake_fast25/conversation_trace.jsonl"

# The parity configurations of the core issue (polynomial timing, Dynamo defaults otherwise).
CONFIGS = {
    "a": {"label": "(a) 8 round_robin, block 512", "workers": 8, "router": "round_robin",
          "block": 512, "blocks": None, "tol": 0.02},
    "b": {"label": "(b) 4 round_robin, block 64, 4096 blocks", "workers": 4,
          "router": "round_robin", "block": 64, "blocks": 4096, "tol": 0.02},
    "c": {"label": "(c) 4 kv, block 64, 4096 blocks", "workers": 4, "router": "kv",
          "block": 64, "blocks": 4096, "tol": 0.05},
    # Engine flavours (issue 14): --configs sa,sb,tc
    "sa": {"label": "SGLang (a) 4 round_robin, 262144 tokens", "backend": "sglang",
           "workers": 4, "router": "round_robin", "block": None, "blocks": 262144, "tol": 0.02},
    "sb": {"label": "SGLang (b) 4 kv, 262144 tokens", "backend": "sglang", "workers": 4,
           "router": "kv", "block": None, "blocks": 262144, "tol": 0.03},
    "tc": {"label": "TRT-LLM (c) 4 round_robin, block 32, 8192 blocks", "backend": "trtllm",
           "workers": 4, "router": "round_robin", "block": 32, "blocks": 8192, "tol": 0.02},
    # Disaggregated prefill/decode (issue 15): block 64, 64 GB/s, 262,144 B/token
    "da": {"label": "disagg (a) 2P+2D round_robin", "workers": 1, "router": "round_robin",
           "block": 64, "blocks": None, "tol": 0.02, "disagg": (2, 2, 64.0, 262144)},
    "db": {"label": "disagg (b) 4P+4D kv", "workers": 1, "router": "kv",
           "block": 64, "blocks": None, "tol": 0.03, "disagg": (4, 4, 64.0, 262144)},
    # G2 host tier and DP ranks (issue 15): --configs g2,dp --name tiers_side_by_side
    "g2": {"label": "G2 host tier, 4 round_robin, block 64, 4096 + 16384 host blocks",
           "workers": 4, "router": "round_robin", "block": 64, "blocks": 4096, "tol": 0.02,
           "extra": ["--num-host-blocks", "16384", "--kv-bytes-per-token", "262144"]},
    "dp": {"label": "DP 2 workers x 2 ranks, round_robin, block 64, 4096 blocks/rank",
           "workers": 2, "router": "round_robin", "block": 64, "blocks": 4096, "tol": 0.02,
           "extra": ["--dp-size", "2"]},
}
METRICS = [("ttft", "TTFT"), ("itl", "ITL"), ("e2e_latency", "E2E")]
STATS = [("mean", "mean"), ("median", "p50"), ("p90", "p90"), ("p99", "p99")]


def peer_python() -> Path | None:
    for venv in (os.environ.get("DYNOSIM_PEER_VENV"), ROOT / ".peer-venv"):
        if venv and (Path(venv) / "bin/python").exists():
            py = Path(venv) / "bin/python"
            ok = subprocess.run([str(py), "-c", "import dynamo.replay"],
                                capture_output=True).returncode == 0
            if ok:
                return py
    return None


def _disagg_flags(cfg: dict) -> list[str]:
    if "disagg" not in cfg:
        return []
    n_p, n_d, bw, bpt = cfg["disagg"]
    return ["--num-prefill-workers", str(n_p), "--num-decode-workers", str(n_d),
            "--kv-transfer-bandwidth", str(bw), "--kv-bytes-per-token", str(bpt)]


def _engine_flags(cfg: dict) -> list[str]:
    """The flags both sides take alike: block size, GPU blocks, the disaggregated pools and
    the case's ``extra``."""
    flags = ["--block-size", str(cfg["block"])] if cfg["block"] else []
    if cfg["blocks"]:
        flags += ["--num-gpu-blocks", str(cfg["blocks"])]
    return flags + _disagg_flags(cfg) + cfg.get("extra", [])


def run_ours(cfg: dict) -> dict:
    cmd = [sys.executable, str(ROOT / "bench/run_ours.py"), str(TRACE),
           "--num-workers", str(cfg["workers"]), "--router-mode", cfg["router"],
           "--backend", cfg.get("backend", "vllm")]
    cmd += _engine_flags(cfg)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=ROOT)
    res = json.loads(out.stdout)
    res["process_wall_s"] = time.perf_counter() - t0
    return res


def run_peer(py: Path, cfg: dict) -> dict:
    router = "kv_router" if cfg["router"] == "kv" else cfg["router"]
    cmd = ["/usr/bin/time", "-f", "%M", str(py), str(SHARED / "peer/dynosim_peer.py"), "trace",
           str(TRACE), "--num-workers", str(cfg["workers"]), "--router-mode", router,
           "--backend", cfg.get("backend", "vllm"), "--indent", "0"]
    cmd += _engine_flags(cfg)
    env = dict(os.environ, DYN_LOG="warn")
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    wall = time.perf_counter() - t0
    res = json.loads(out.stdout)
    rss_kb = int(out.stderr.strip().splitlines()[-1])
    return {"metrics": res["metrics"], "replay_wall_s": res["timing"]["replay_wall_s"],
            "process_wall_s": wall, "peak_rss_mb": rss_kb / 1024.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--configs", default="a,b,c")
    ap.add_argument("--out", default=str(ROOT / "bench/results"))
    ap.add_argument("--name", default="peer_side_by_side",
                    help="report file stem (e.g. flavours_side_by_side for sa,sb,tc)")
    ap.add_argument("--trace", default=None, metavar="PATH",
                    help="a Mooncake .jsonl to replay in both simulators (default: the "
                         "Mooncake FAST'25 conversation trace under $DYNOSIM_SHARED)")
    a = ap.parse_args()
    global TRACE
    if a.trace is not None:
        TRACE = Path(a.trace).resolve()
    if not TRACE.is_file():
        print(f"peer_side_by_side: {TRACE}: trace not found (--trace)", file=sys.stderr)
        return 2
    unknown = [k for k in a.configs.split(",") if k not in CONFIGS]
    if unknown:
        print(f"peer_side_by_side: --configs: unknown {', '.join(unknown)}; expected some of "
              f"{', '.join(CONFIGS)}", file=sys.stderr)
        return 2
    py = peer_python()
    if py is None:
        print("Dynamo's replay is not installed (run `make peer`).", file=sys.stderr)
        return 2
    results = {}
    for key in a.configs.split(","):
        cfg = CONFIGS[key]
        ours, peer = [], []
        for i in range(a.repeats):
            print(f"[{cfg['label']}] repeat {i + 1}/{a.repeats}", file=sys.stderr)
            ours.append(run_ours(cfg))
            ours[-1]["load_avg_1min"] = os.getloadavg()[0]
            peer.append(run_peer(py, cfg))
            peer[-1]["load_avg_1min"] = os.getloadavg()[0]
        results[key] = {"ours": ours, "peer": peer}
    report = render(results, None if a.trace is None else TRACE.name)
    print(report)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{a.name}.md").write_text(report + "\n")
    (out / f"{a.name}.json").write_text(json.dumps(results, indent=1, default=str))
    return 0


def _med(xs: list[float]) -> float:
    return statistics.median(xs)


def render(results: dict, trace: str | None = None) -> str:
    """The report; ``trace`` names a ``--trace`` (default: the Mooncake conversation trace)."""
    which = "Mooncake conversation trace" if trace is None else trace
    lines = [f"### Parity with Dynamo 1.6.1 offline replay ({which}, "
             "polynomial timing)", "",
             "| config | metric | " + " | ".join(f"{s} ours / Dynamo (Δ%)" for _, s in STATS)
             + " | completed ours / Dynamo |",
             "|---|---|" + "---|" * len(STATS) + "---|"]
    for key, r in results.items():
        cfg = CONFIGS[key]
        o = r["ours"][0]["summary"]
        p = r["peer"][0]["metrics"]
        for m, mname in METRICS:
            cells = []
            for s, _ in STATS:
                ov, pv = o["latency_ms"][m][s], p["latency_ms"][m][s]
                cells.append(f"{ov:.2f} / {pv:.2f} ({(ov - pv) / pv * 100:+.3f})")
            done = (f"{o['totals']['completed_requests']} / {p['totals']['completed_requests']}"
                    if m == "ttft" else "")
            lines.append(f"| {cfg['label']} | {mname} | " + " | ".join(cells) + f" | {done} |")
    lines += ["", "### Speed and memory, side by side (median of repeats; ratio = ours / Dynamo)",
              "", "| config | replay wall ours (s) | replay wall Dynamo (s) | ratio | "
              "process wall ratio | peak RSS ours (MB) | peak RSS Dynamo (MB) |",
              "|---|---|---|---|---|---|---|"]
    for key, r in results.items():
        ow = _med([x["replay_wall_s"] for x in r["ours"]])
        pw = _med([x["replay_wall_s"] for x in r["peer"]])
        opw = _med([x["process_wall_s"] for x in r["ours"]])
        ppw = _med([x["process_wall_s"] for x in r["peer"]])
        orss = _med([x["peak_rss_mb"] for x in r["ours"]])
        prss = _med([x["peak_rss_mb"] for x in r["peer"]])
        lines.append(f"| {CONFIGS[key]['label']} | {ow:.2f} | {pw:.2f} | **{ow / pw:.2f}** | "
                     f"{opw / ppw:.2f} | {orss:.0f} | {prss:.0f} |")
    n = len(next(iter(results.values()))["ours"])
    loads = [x["load_avg_1min"] for r in results.values() for x in r["ours"] + r["peer"]
             if "load_avg_1min" in x]
    load = f"; 1-minute load average {min(loads):.1f}-{max(loads):.1f} after the runs" if loads else ""
    lines += ["", f"{plural(n, 'interleaved repeat')} per configuration on this machine "
              f"({os.cpu_count()} cores{load}). Replay wall = trace load + simulation, without "
              "interpreter start-up; process wall includes it."]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
