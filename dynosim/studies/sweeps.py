"""``dynosim sweep``: the three DynoSim planner studies (issue 4, "Autoscaling").

Each study is a grid of ``dynosim simulate`` runs (every point is built from the same flags
``simulate`` takes, through :func:`dynosim.options.config_from_args` and ``build_planner``, so a row
can be reproduced with the command in its ``command`` column). Points run in parallel
(``--jobs`` processes, or ``--executor ray``: one Ray task per point, locally or on the
cluster at ``--ray-address``; :mod:`dynosim.executors`); each point is deterministic, rows are
sorted by point and the CSV holds no wall-clock value, so it is byte-identical whatever
``--jobs`` and ``--executor`` are. Wall times go to ``OUT/<study>.run.json``.

Published setup (reference §1.6, "Planner experiments"): Qwen3-32B, H200-SXM, vLLM timing,
KV router, planner SLA TTFT 1,500 ms / ITL 50 ms, ``max_gpu_budget`` 16, 2 initial workers.

* ``pareto``     static deployments within the budget, aggregated (replicas x TP) and
                 disaggregated (xPyD: x prefill workers of one TP, y decode workers of
                 another, each role on its TP's GPU table, KV handed off at
                 ``--kv-transfer-bandwidth`` and ``--kv-bytes-per-token``) -> GPU-hours vs
                 p90 TTFT, each kind's Pareto frontier marked, load and throughput planners
                 overlaid; second panel output tok/s per GPU vs output tok/s per user.
* ``interval``   load planner, startup 0, ``load_adjustment_interval`` sweep -> p90 TTFT,
                 p90 ITL, scaling events, GPU-hours; reports the *optimum*
                 (:func:`optimum_interval`).
* ``cold-start`` load planner every 10 s, ``startup_time`` 0..300 s -> the same metrics;
                 reports the *cliff* (:func:`cold_start_cliff`).

Outputs: ``OUT/<study>.csv``, ``OUT/<study>.png``, ``OUT/<study>.run.json`` (executor, CPUs,
wall time per point and in all, points/s) and a Markdown table on stdout.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from sim.errors import InputError
from sim.schema import MAX_TIME_MS
from sim.wording import plural

from ..options import CMDLINE, float_or_nan, make_out_dir

STUDIES = ("pareto", "interval", "cold-start")
MODEL, GPU, BACKEND = "Qwen/Qwen3-32B", "h200_sxm", "vllm"
PLANNER_TP = 2
TTFT_SLA_MS, ITL_SLA_MS = 1500.0, 50.0
MAX_GPU_BUDGET = 16
INITIAL_WORKERS = 2
LOAD_INTERVAL_S = 10.0          # published load-scaling interval
THROUGHPUT_INTERVAL_S = 300.0   # published throughput-scaling interval
DEFAULT_TRACE = "bundled:mooncake_conversation"

INTERVALS_S = (1, 2, 5, 10, 20, 30, 60, 120, 300)
STARTUP_TIMES_S = tuple(range(0, 301, 30))
STATIC_REPLICAS = tuple(range(1, 9))
STATIC_TPS = (1, 2, 4)
QUICK_INTERVALS_S = (1, 10, 60)
QUICK_STARTUP_TIMES_S = (0, 150, 300)
QUICK_STATIC = ((1, 2), (2, 2), (4, 2), (2, 4))     # (replicas, tp)
QUICK_WINDOW_S = 300.0
# Disaggregated xPyD grid: (prefill workers, prefill TP, decode workers, decode TP). The full
# grid: every TP pair of the tables, x and y from 1, at 4, 8, 12 or 16 GPUs in all, with at
# least as many prefill GPUs as decode GPUs (the conversation trace's prompts are ~35x its
# outputs: mean ISL 12.0 k, OSL 343 tokens).
DISAGG_TOTAL_GPUS = (4, 8, 12, 16)
QUICK_DISAGG = ((1, 2, 1, 2), (2, 2, 1, 4))
#: KV bytes per token of Qwen3-32B in bf16 (64 layers x 8 KV heads x 128 x K,V x 2 B), the
#: whole model's (the TP1 table's); with Dynamo's default 64 GB/s a 12 k-token prompt's
#: handoff takes 49 ms
KV_BYTES_PER_TOKEN = 262_144
KV_TRANSFER_GBPS = 64.0

COLUMNS = ("study", "point", "label", "kind", "tp", "replicas", "interval_s", "startup_s",
           "num_requests", "completed_requests", "p50_ttft_ms", "p90_ttft_ms", "p90_itl_ms",
           "mean_itl_ms", "gpu_hours", "avg_gpus", "scaling_events", "max_replicas",
           "output_tok_s", "output_tok_s_per_gpu", "output_tok_s_per_user", "duration_s",
           # disaggregated points (kind disagg): pool sizes, TP per role, GPU-hours per role
           "num_prefill_workers", "prefill_tp", "num_decode_workers", "decode_tp",
           "prefill_gpu_hours", "decode_gpu_hours",
           "command")
DISAGG_KEYS = ("num_prefill_workers", "prefill_tp", "num_decode_workers", "decode_tp")


# -- CLI -------------------------------------------------------------------------------------

def _jobs(text: str) -> int:
    from ..options import positive_int          # one parser for positive integers
    return positive_int(text)


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (x > 0 and math.isfinite(x)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text}")
    if x > MAX_TIME_MS:          # ratios, seconds and ms alike: beyond ms-exact floats
        raise argparse.ArgumentTypeError(f"must be <= 2^52, got {text}")
    return x


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``sweep {pareto,interval,cold-start}`` to ``dynosim``'s subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("sweep options")
    g.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (created); writes DIR/<study>.csv and .png")
    g.add_argument("--trace", default=DEFAULT_TRACE, metavar="PATH",
                   help=f"trace: Mooncake .jsonl, Azure .csv or bundled:NAME (default {DEFAULT_TRACE})")
    g.add_argument("--arrival-speedup-ratio", type=_positive_float, default=None, metavar="X",
                   help="divide trace inter-arrival times by X (default 1: real time)")
    g.add_argument("--jobs", type=_jobs, default=None, metavar="N",
                   help="points run in parallel (default: os.cpu_count()); with --executor "
                   "ray and no --ray-address, the CPUs of the local Ray")
    from .. import executors
    executors.add_args(g)
    g.add_argument("--quick", action="store_true",
                   help=f"fewer points and the first {QUICK_WINDOW_S:g} s of the trace (CI)")
    g.add_argument("--max-sim-time-s", type=_positive_float, default=None, metavar="S",
                   help="stop every run at this simulated time (default: drain the trace; "
                   f"{QUICK_WINDOW_S:g} with --quick)")
    g.add_argument("--ttft-limit-ms", type=_positive_float, default=TTFT_SLA_MS, metavar="MS",
                   help="p90 TTFT limit of the optimum/cliff criteria (default: the SLA, "
                   f"{TTFT_SLA_MS:g})")
    # pareto only (its disaggregated points): interval and cold-start refuse them, rather
    # than taking and ignoring them
    pareto_only = argparse.ArgumentParser(add_help=False)
    gp = pareto_only.add_argument_group("pareto options (disaggregated points)")
    gp.add_argument("--kv-transfer-bandwidth", type=_positive_float, default=KV_TRANSFER_GBPS,
                    metavar="GBPS", help="prefill->decode KV bandwidth, GB/s (default "
                    f"{KV_TRANSFER_GBPS:g}, Dynamo's)")
    gp.add_argument("--kv-bytes-per-token", type=_jobs, default=KV_BYTES_PER_TOKEN,
                    metavar="B", help="KV bytes of one token (default "
                    f"{KV_BYTES_PER_TOKEN:,}, Qwen3-32B bf16)")
    kw = {}
    if getattr(subparsers, "_parser_class", None) is not None:
        kw["parser_class"] = subparsers._parser_class
    s = subparsers.add_parser("sweep", help="the planner studies: pareto, interval, cold-start",
                              description="Run one of the DynoSim planner studies (Qwen3-32B "
                              "on H200, vLLM timing, KV router, SLA TTFT 1500 ms / ITL 50 ms, "
                              "16-GPU budget, 2 initial workers).")
    sub = s.add_subparsers(dest="study", metavar="STUDY", required=True, **kw)
    sub.add_parser("pareto", parents=[common, pareto_only],
                   help="static aggregated and disaggregated (xPyD) deployments vs planners: "
                   "GPU-hours vs p90 TTFT")
    sub.add_parser("interval", parents=[common],
                   help="load planner adjustment interval sweep (1..300 s)")
    sub.add_parser("cold-start", parents=[common],
                   help="load planner worker startup time sweep (0..300 s)")
    return s


# -- points ----------------------------------------------------------------------------------

def _base_flags(args: argparse.Namespace, tp: int) -> list[str]:
    flags = ["--trace", args.trace, "--router-mode", "kv", "--model", MODEL, "--gpu", GPU,
             "--backend", BACKEND, "--tp", str(tp), "--quiet"]
    if args.arrival_speedup_ratio is not None:
        flags += ["--arrival-speedup-ratio", f"{args.arrival_speedup_ratio:g}"]
    window = _window(args)
    if window is not None:
        flags += ["--max-sim-time-s", f"{window:g}"]
    return flags


def _window(args: argparse.Namespace) -> float | None:
    if args.max_sim_time_s is not None:
        return args.max_sim_time_s
    return QUICK_WINDOW_S if args.quick else None


def _planner_flags(kind: str, interval_s: float, startup_s: float) -> list[str]:
    return ["--initial-workers", str(INITIAL_WORKERS), "--startup-time", f"{startup_s:g}",
            "--planner", kind, "--planner-interval", f"{interval_s:g}",
            "--max-gpu-budget", str(MAX_GPU_BUDGET), "--sla-ttft-ms", f"{TTFT_SLA_MS:g}",
            "--sla-itl-ms", f"{ITL_SLA_MS:g}",
            # the studies target the SLA: Dynamo's optimization_target sla (its default,
            # throughput, ignores the SLA targets)
            "--planner-config-json", '{"optimization_target": "sla"}']


def _has_table(tp: int) -> bool:
    from sim.gpu_timing import list_tables
    from sim.gpu_timing import _norm_gpu, _norm_model
    for r in list_tables():
        if (_norm_model(r["model"]) == _norm_model(MODEL) and _norm_gpu(r["gpu"]) == _norm_gpu(GPU)
                and r["backend"] == BACKEND and int(r["tp"]) == tp):
            return True
    return False


def disagg_grid(quick: bool) -> list[tuple[int, int, int, int]]:
    """The xPyD points ``(x, prefill TP, y, decode TP)`` with a GPU table for both TPs:
    :data:`QUICK_DISAGG`, or every pair of :data:`STATIC_TPS` and counts with
    ``x*TPp + y*TPd`` in :data:`DISAGG_TOTAL_GPUS` and ``x*TPp >= y*TPd`` (ordered by total
    GPUs, then prefill TP, decode TP, x)."""
    if quick:
        return [g for g in QUICK_DISAGG if _has_table(g[1]) and _has_table(g[3])]
    tps = [tp for tp in STATIC_TPS if _has_table(tp)]
    out = []
    for total in DISAGG_TOTAL_GPUS:
        for tp_p in tps:
            for tp_d in tps:
                for x in range(1, total // tp_p + 1):
                    rest = total - x * tp_p
                    if rest > 0 and rest % tp_d == 0 and x * tp_p >= rest:
                        out.append((x, tp_p, rest // tp_d, tp_d))
    return out


def disagg_label(x: int, tp_p: int, y: int, tp_d: int) -> str:
    """``3P1D TP4/2``: x prefill workers, y decode workers, prefill TP / decode TP."""
    return f"{x}P{y}D TP{tp_p}/{tp_d}"


def make_points(study: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The study's points, in order: dicts with ``label``, ``kind``, ``tp``, ``replicas``,
    ``interval_s``, ``startup_s`` (disaggregated points: also :data:`DISAGG_KEYS`) and the
    ``simulate`` flags (``argv``)."""
    pts: list[dict[str, Any]] = []

    def add(label, kind, tp, replicas, interval_s, startup_s, extra, **more):
        pts.append({"study": study, "point": len(pts), "label": label, "kind": kind, "tp": tp,
                    "replicas": replicas, "interval_s": interval_s, "startup_s": startup_s,
                    **dict.fromkeys(DISAGG_KEYS), **more,
                    # disaggregated: --tp is the tables' base; each role runs on its TP
                    "argv": _base_flags(args, tp if tp is not None else more["decode_tp"])
                    + extra})

    if study == "pareto":
        if args.quick:
            grid = [(r, tp) for r, tp in QUICK_STATIC if _has_table(tp)]
        else:
            grid = [(r, tp) for tp in STATIC_TPS if _has_table(tp) for r in STATIC_REPLICAS
                    if r * tp <= MAX_GPU_BUDGET]
        for r, tp in grid:
            add(f"static {r}xTP{tp}", "static", tp, r, None, None,
                ["--num-workers", str(r)])
        for x, tp_p, y, tp_d in disagg_grid(args.quick):
            add(disagg_label(x, tp_p, y, tp_d), "disagg", None, None, None, None,
                ["--num-prefill-workers", str(x), "--num-decode-workers", str(y),
                 "--prefill-tp", str(tp_p), "--decode-tp", str(tp_d),
                 "--kv-transfer-bandwidth", f"{args.kv_transfer_bandwidth:g}",
                 "--kv-bytes-per-token", str(args.kv_bytes_per_token)],
                num_prefill_workers=x, prefill_tp=tp_p, num_decode_workers=y,
                decode_tp=tp_d)
        add("load planner", "load", PLANNER_TP, None, LOAD_INTERVAL_S, 0.0,
            _planner_flags("load", LOAD_INTERVAL_S, 0.0))
        add("throughput planner", "throughput", PLANNER_TP, None, THROUGHPUT_INTERVAL_S, 0.0,
            _planner_flags("throughput", THROUGHPUT_INTERVAL_S, 0.0))
    elif study == "interval":
        for iv in (QUICK_INTERVALS_S if args.quick else INTERVALS_S):
            add(f"interval {iv} s", "load", PLANNER_TP, None, float(iv), 0.0,
                _planner_flags("load", float(iv), 0.0))
    elif study == "cold-start":
        for st in (QUICK_STARTUP_TIMES_S if args.quick else STARTUP_TIMES_S):
            add(f"startup {st} s", "load", PLANNER_TP, None, LOAD_INTERVAL_S, float(st),
                _planner_flags("load", LOAD_INTERVAL_S, float(st)))
    else:
        raise InputError(f"sweep: unknown study {study!r}; expected one of "
                         f"{', '.join(STUDIES)}")
    return pts


_num = float_or_nan


def run_point(point: dict[str, Any]) -> dict[str, Any]:
    """Run one point (in a worker process) and return its CSV row."""
    from ..options import config_from_args, simulate_parser
    from sim.config import build_planner, build_simulation

    ns = simulate_parser().parse_args(point["argv"])
    cfg = config_from_args(ns)
    planner = build_planner(cfg)
    sim = build_simulation(cfg)
    if planner is not None:
        planner.attach(sim)
    t0 = time.perf_counter()
    result = sim.run()
    wall = time.perf_counter() - t0
    s = result.summary
    t, lat = s["totals"], s["latency_ms"]
    rep = planner.report(result) if planner is not None else None
    duration_s = t["duration_ms"] / 1000.0
    gpu_hours = t["gpu_hours"]
    avg_gpus = gpu_hours * 3600.0 / duration_s if duration_s > 0 else math.nan
    out_tok_s = t["output_throughput_tok_s"]
    per_user = s.get("output_token_throughput_per_user", {}).get("mean", math.nan)
    row = {k: point.get(k) for k in ("study", "point", "label", "kind", "tp", "replicas",
                                     "interval_s", "startup_s", *DISAGG_KEYS)}
    if "prefill_gpu_hours" in t:          # disaggregated pools
        row.update(prefill_gpu_hours=t["prefill_gpu_hours"],
                   decode_gpu_hours=t["decode_gpu_hours"])
    row.update({
        "num_requests": t["num_requests"], "completed_requests": t["completed_requests"],
        "p50_ttft_ms": _num(lat["ttft"]["median"]), "p90_ttft_ms": _num(lat["ttft"]["p90"]),
        "p90_itl_ms": _num(lat["itl"]["p90"]), "mean_itl_ms": _num(lat["itl"]["mean"]),
        "gpu_hours": gpu_hours, "avg_gpus": avg_gpus,
        "scaling_events": rep["scaling_events"] if rep else 0,
        "max_replicas": rep["max_replicas"] if rep else point["replicas"],
        "output_tok_s": out_tok_s,
        "output_tok_s_per_gpu": out_tok_s / avg_gpus if avg_gpus and avg_gpus > 0 else math.nan,
        "output_tok_s_per_user": _num(per_user), "duration_s": duration_s,
        "wall_s": round(wall, 3),
        "command": command_line(point["argv"]),
    })
    return row


def command_line(argv: list[str]) -> str:
    """The ``dynosim simulate`` command of a point's flags, shell-quoted (``shlex.join``), so
    the CSV's ``command`` pastes into a shell as is (``--planner-config-json`` JSON)."""
    return shlex.join(["dynosim", "simulate", *argv])


# -- analysis (pure functions on rows) -------------------------------------------------------

def _bad(x: Any) -> bool:
    v = _num(x)
    return not math.isfinite(v)


def pareto_front(rows: Sequence[dict[str, Any]], x: str = "gpu_hours",
                 y: str = "p90_ttft_ms", maximise: bool = False) -> list[bool]:
    """For each row: is it on the Pareto frontier minimising both ``x`` and ``y`` (or
    maximising both, with ``maximise``)? (Rows with a missing/non-finite value are never on
    it; duplicates are all kept.)"""
    sign = -1.0 if maximise else 1.0
    pts = [None if _bad(r[x]) or _bad(r[y]) else (sign * float(r[x]), sign * float(r[y]))
           for r in rows]
    out = []
    for i, p in enumerate(pts):
        out.append(p is not None and not any(
            j != i and o is not None and o[0] <= p[0] and o[1] <= p[1]
            and (o[0] < p[0] or o[1] < p[1]) for j, o in enumerate(pts)))
    return out


def optimum_interval(rows: Iterable[dict[str, Any]],
                     ttft_limit_ms: float = TTFT_SLA_MS) -> dict[str, Any] | None:
    """The row with the fewest GPU-hours among those with p90 TTFT <= the limit (ties: the
    shorter interval, then fewer scaling events); None if no row meets the limit."""
    ok = [r for r in rows if not _bad(r["p90_ttft_ms"]) and not _bad(r["gpu_hours"])
          and float(r["p90_ttft_ms"]) <= ttft_limit_ms]
    if not ok:
        return None
    return min(ok, key=lambda r: (float(r["gpu_hours"]), float(r["interval_s"]),
                                  _num(r.get("scaling_events", 0))))


def cold_start_cliff(rows: Iterable[dict[str, Any]],
                     ttft_limit_ms: float = TTFT_SLA_MS) -> float | None:
    """The first (smallest) startup time whose p90 TTFT exceeds the limit (a missing p90,
    i.e. nothing completed, counts as exceeding); None if every point holds the limit."""
    for r in sorted(rows, key=lambda r: float(r["startup_s"])):
        if _bad(r["p90_ttft_ms"]) or float(r["p90_ttft_ms"]) > ttft_limit_ms:
            return float(r["startup_s"])
    return None


def cold_start_verdict(rows: Sequence[dict[str, Any]],
                       ttft_limit_ms: float = TTFT_SLA_MS) -> tuple[str, float | None]:
    """The cold-start study's verdict line and the startup time to mark (the cliff, or
    None): a p90 over the limit already at the shortest startup time swept is no cliff."""
    cliff = cold_start_cliff(rows, ttft_limit_ms)
    if cliff is None:
        return f"cliff: none (p90 TTFT <= {ttft_limit_ms:g} ms at every startup time)", None
    if cliff == min(float(r["startup_s"]) for r in rows):
        return (f"cliff: none (p90 TTFT > {ttft_limit_ms:g} ms already at the shortest "
                f"startup time, {cliff:g} s)"), None
    return f"cliff: startup {cliff:g} s (first with p90 TTFT > {ttft_limit_ms:g} ms)", cliff


def plot_study(study: str, rows: Sequence[dict[str, Any]], png_path: Path, setup: str,
               limit: float = TTFT_SLA_MS) -> str:
    """Draw a study's PNG from its rows (those of its CSV: :func:`read_csv`); returns the
    verdict line (interval: the optimum; cold-start: the cliff; pareto: empty). ``setup``
    describes the run in the title."""
    if study == "pareto":
        plot_pareto(rows, png_path, f"pareto: {setup}")
        return ""
    if study == "interval":
        best = optimum_interval(rows, limit)
        mark = None if best is None else float(best["interval_s"])
        verdict = ("optimum: none (no interval keeps p90 TTFT <= "
                   f"{limit:g} ms)" if best is None else
                   f"optimum: interval {best['interval_s']:g} s (fewest GPU-hours, "
                   f"{best['gpu_hours']:.2f}, with p90 TTFT <= {limit:g} ms)")
        plot_scan(rows, png_path, "interval_s", "load adjustment interval (s, log)",
                  f"interval: {setup}; {verdict}", True, mark, "optimum")
        return verdict
    verdict, cliff = cold_start_verdict(rows, limit)
    plot_scan(rows, png_path, "startup_s", "worker startup time (s)",
              f"cold-start: {setup}; {verdict}", False, cliff, "cliff")
    return verdict


# -- outputs ---------------------------------------------------------------------------------

def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        if not math.isfinite(v):
            return "nan"
        return f"{v:.6g}"
    return str(v)


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r.get(k)) for k in COLUMNS})


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a sweep CSV with numbers parsed (empty -> None)."""
    out = []
    with open(path, encoding="utf-8", newline="") as fh:
        for r in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in r.items():
                if k in ("study", "label", "kind", "command"):
                    row[k] = v
                elif v == "":
                    row[k] = None
                else:
                    row[k] = float(v)
            out.append(row)
    return out


def _figure(ncols: int, width: float = 5.0):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * ncols, 4.2), layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _positive(v: Any) -> float:
    x = _num(v)
    return x if math.isfinite(x) and x > 0 else math.nan


def short_label(r: dict[str, Any]) -> str:
    """A point's tag on the plot: ``4xTP4`` (aggregated) or ``3P1D TP4/2``."""
    if r["kind"] == "disagg":
        return disagg_label(*(int(r[k]) for k in DISAGG_KEYS))
    return f"{int(r['replicas'])}xTP{int(r['tp'])}"


def plot_pareto(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    """Two panels: GPU-hours vs p90 TTFT (lower left is better) and output tok/s per GPU vs
    output tok/s per user (upper right is better). Aggregated static deployments are hollow
    markers by TP, disaggregated ones filled blue triangles; each kind's frontier is a
    step line and its points are named (adjustText keeps the names apart); the planners
    are stars/crosses."""
    fig, (a1, a2) = _figure(2, 6.4)
    fig.set_figheight(5.6)
    static = [r for r in rows if r["kind"] == "static"]
    disagg = [r for r in rows if r["kind"] == "disagg"]
    markers = {1: "o", 2: "s", 4: "D", 8: "^"}
    tags: dict[Any, tuple[list, list]] = {a1: ([], []), a2: ([], [])}   # texts, their points
    plotted: dict[Any, list] = {a1: [], a2: []}     # every marker: the names keep off them

    def tag(ax, r, x, y, color):
        if math.isfinite(x) and math.isfinite(y):
            # over the lines and markers, on a white ground: a frontier crossing a name
            # does not hide its letters
            tags[ax][0].append(ax.text(x, y, short_label(r), fontsize=6.5, color=color,
                                       zorder=6, bbox={"boxstyle": "square,pad=0.1",
                                                       "fc": "white", "ec": "none",
                                                       "alpha": 0.8}))
            tags[ax][1].append((x, y))

    def ttft(r):
        return _positive(r["p90_ttft_ms"])

    for r in rows:
        for ax, xy in ((a1, (_num(r["gpu_hours"]), ttft(r))),
                       (a2, (_num(r["output_tok_s_per_user"]), _num(r["output_tok_s_per_gpu"])))):
            if all(math.isfinite(v) for v in xy):
                plotted[ax].append(xy)

    for tp in sorted({int(r["tp"]) for r in static}):
        sel = [r for r in static if int(r["tp"]) == tp]
        style = dict(marker=markers.get(tp, "o"), facecolors="none", edgecolors=f"C{tp}",
                     label=f"aggregated TP{tp}")
        a1.scatter([r["gpu_hours"] for r in sel], [ttft(r) for r in sel], **style)
        a2.scatter([r["output_tok_s_per_user"] for r in sel],
                   [r["output_tok_s_per_gpu"] for r in sel], **style)
    if disagg:
        style = dict(marker="^", s=22, color="C0", alpha=0.75,
                     label="disaggregated xPyD (TP per role)")
        a1.scatter([r["gpu_hours"] for r in disagg], [ttft(r) for r in disagg], **style)
        a2.scatter([r["output_tok_s_per_user"] for r in disagg],
                   [r["output_tok_s_per_gpu"] for r in disagg], **style)
    for sel, name, color, ls in ((static, "aggregated", "k", "-"),
                                 (disagg, "disaggregated", "C0", "--")):
        fr = sorted((r for r, f in zip(sel, pareto_front(sel)) if f),
                    key=lambda r: r["gpu_hours"])
        if fr:
            a1.step([r["gpu_hours"] for r in fr], [ttft(r) for r in fr], where="post",
                    color=color, ls=ls, lw=1.2, alpha=0.8, label=f"{name} frontier")
            for r in fr:
                tag(a1, r, float(r["gpu_hours"]), ttft(r), color)
        fr = sorted((r for r, f in zip(sel, pareto_front(sel, "output_tok_s_per_user",
                                                          "output_tok_s_per_gpu", True)) if f),
                    key=lambda r: r["output_tok_s_per_user"])
        if fr:
            a2.step([r["output_tok_s_per_user"] for r in fr],
                    [r["output_tok_s_per_gpu"] for r in fr], where="pre", color=color, ls=ls,
                    lw=1.2, alpha=0.8, label=f"{name} frontier")
            for r in fr:
                tag(a2, r, float(r["output_tok_s_per_user"]), float(r["output_tok_s_per_gpu"]),
                    color)
    for kind, marker, color in (("load", "*", "C3"), ("throughput", "X", "C5")):
        sel = [r for r in rows if r["kind"] == kind]
        if sel:       # hollow: a static point under a planner's marker stays visible
            style = dict(marker=marker, s=160, facecolors="none", edgecolors=color,
                         linewidths=1.5, label=f"{kind} planner", zorder=3)
            a1.scatter([r["gpu_hours"] for r in sel], [ttft(r) for r in sel], **style)
            a2.scatter([r["output_tok_s_per_user"] for r in sel],
                       [r["output_tok_s_per_gpu"] for r in sel], **style)
    a1.axhline(TTFT_SLA_MS, color="gray", ls=":", lw=1, label=f"TTFT SLA {TTFT_SLA_MS:g} ms")
    # Overloaded deployments drain their backlog for hours (GPU-hours far beyond the
    # budget's hour): keep the axis on the frontiers and say what is off it.
    near = [x for x, _ in tags[a1][1]] + [_num(r["gpu_hours"]) for r in rows
                                          if r["kind"] not in ("static", "disagg")]
    xmax = 1.08 * max((x for x in near if math.isfinite(x)), default=math.nan)
    off = [x for x, _ in plotted[a1] if x > xmax]
    if off:
        a1.set_xlim(right=xmax)
        a1.text(0.99, 0.99, f"{plural(len(off), 'overloaded point')} off the right edge\n(up to "
                f"{max(off):.0f} GPU-h: hours of backlog)", transform=a1.transAxes,
                ha="right", va="top", fontsize=7, color="0.3")
        plotted[a1] = [xy for xy in plotted[a1] if xy[0] <= xmax]
    a1.set_yscale("log")
    a1.set_xlabel("GPU-hours")
    a1.set_ylabel("p90 TTFT (ms, log)")
    a1.set_title("cost vs latency (lower left is better)", fontsize=10)
    a2.set_xlabel("output tok/s per user (mean)")
    a2.set_ylabel("output tok/s per GPU")
    a2.set_title("throughput per GPU vs per user (upper right is better)", fontsize=10)
    for a in (a1, a2):
        a.grid(True, which="both", alpha=0.3)
    # one legend for both panels, below them: never over a point or a name
    fig.legend(*a1.get_legend_handles_labels(), loc="outside lower center", ncol=5, fontsize=7)
    fig.suptitle(title, fontsize=9)
    if any(t for t, _ in tags.values()):   # keep the names off each other and the markers
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        from ..plots import adjust_labels
        FigureCanvasAgg(fig).draw()              # lay out first: adjustText works in pixels
        for ax, (texts, xy) in tags.items():
            if texts:
                pts = plotted[ax]
                adjust_labels(texts, x=[p[0] for p in pts], y=[p[1] for p in pts],
                              target_x=[p[0] for p in xy], target_y=[p[1] for p in xy],
                              ax=ax, expand=(1.3, 1.5),
                              arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5})
    fig.savefig(path, dpi=110)


def plot_scan(rows: Sequence[dict[str, Any]], path: Path, x: str, xlabel: str, title: str,
              logx: bool, mark: float | None, mark_label: str) -> None:
    fig, (a1, a2, a3) = _figure(3, 4.4)
    xs = [float(r[x]) for r in rows]
    a1.plot(xs, [_positive(r["p90_ttft_ms"]) for r in rows], "o-")
    a1.axhline(TTFT_SLA_MS, color="gray", ls="--", lw=1, label=f"SLA {TTFT_SLA_MS:g} ms")
    a1.set_yscale("log")
    a1.set_ylabel("p90 TTFT (ms, log)")
    a2.plot(xs, [_positive(r["p90_itl_ms"]) for r in rows], "o-", color="C1")
    a2.axhline(ITL_SLA_MS, color="gray", ls="--", lw=1, label=f"SLA {ITL_SLA_MS:g} ms")
    a2.set_ylabel("p90 ITL (ms)")
    a3.plot(xs, [r["scaling_events"] for r in rows], "o-", color="C2", label="scaling events")
    a3.set_ylabel("scaling events")
    b3 = a3.twinx()
    b3.plot(xs, [r["gpu_hours"] for r in rows], "s--", color="C4", label="GPU-hours")
    b3.set_ylabel("GPU-hours")
    h1, l1 = a3.get_legend_handles_labels()
    h2, l2 = b3.get_legend_handles_labels()
    for a in (a1, a2, a3):
        if logx:
            a.set_xscale("log")
        a.set_xlabel(xlabel)
        a.grid(True, which="both", alpha=0.3)
        if mark is not None:
            a.axvline(mark, color="C3", ls=":", lw=1.5, label=mark_label)
    # legends above the panels, never over a point (a3's "best" place could not see the
    # twin axis's GPU-hours points)
    above = dict(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize=7, ncol=3,
                 frameon=False)
    a1.legend(**above)
    a2.legend(**above)
    h3, l3 = a3.get_legend_handles_labels()
    a3.legend(h1 + h2 + h3[len(h1):], l1 + l2 + l3[len(l1):], **above)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=110)


def markdown_table(rows: Sequence[dict[str, Any]], study: str) -> str:
    cols = [("label", "point"), ("p90_ttft_ms", "p90 TTFT ms"), ("p90_itl_ms", "p90 ITL ms"),
            ("gpu_hours", "GPU-h"), ("scaling_events", "events"),
            ("output_tok_s_per_gpu", "tok/s/GPU"), ("output_tok_s_per_user", "tok/s/user")]
    if study == "pareto":       # each kind's own frontier, and the joint one of both kinds
        front: dict[int, str] = {}
        static = [r for r in rows if r["kind"] in ("static", "disagg")]
        for kind in ("static", "disagg"):
            sel = [r for r in static if r["kind"] == kind]
            front.update((id(r), "yes") for r, f in zip(sel, pareto_front(sel)) if f)
        for r, f in zip(static, pareto_front(static)):
            if f:
                front[id(r)] = "yes, joint"
    lines = ["| " + " | ".join(h for _, h in cols) + (" | frontier |" if study == "pareto"
                                                       else " |"),
             "|" + "---|" * (len(cols) + (study == "pareto"))]
    for r in rows:
        cells = []
        for k, _ in cols:
            v = r.get(k)
            if isinstance(v, float):
                cells.append("nan" if not math.isfinite(v) else
                             f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}")
            else:
                cells.append(str(v))
        if study == "pareto":
            cells.append(front.get(id(r), ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- entry point -----------------------------------------------------------------------------

def _check_out(out: str) -> Path:
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError(f"{out!r} exists and is not a directory", file=CMDLINE, field="--out")
    try:
        make_out_dir(p)              # removed again if the study fails while it is empty
    except OSError as exc:
        raise InputError(f"cannot create directory {out!r}: {exc.strerror or exc}",
                         file=CMDLINE, field="--out") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"directory {out!r} is not writable", file=CMDLINE, field="--out")
    if any(p.iterdir()):        # sweeps and searches write fixed names: say they replace
        print(f"dynosim: note: --out {out} is not empty; files of the same names are "
              "replaced", file=sys.stderr)
    return p


def run_points(points: list[dict[str, Any]], jobs: int, executor: str = "local",
               ray_address: str | None = None, progress: bool | None = None
               ) -> list[dict[str, Any]]:
    """Run the points (:func:`dynosim.executors.map_ordered`); rows sorted by point. Each row
    carries its ``wall_s`` (not written to the CSV)."""
    from ..executors import map_ordered
    rows = map_ordered(run_point, points, executor=executor, jobs=jobs,
                       ray_address=ray_address, desc="sweep", progress=progress)
    return sorted(rows, key=lambda r: r["point"])


def run(args: argparse.Namespace) -> int:
    """``dynosim sweep STUDY ...``: run the study, write OUT/<study>.csv/.png, print Markdown.
    Bad input raises :class:`~sim.errors.InputError` (one line)."""
    study = getattr(args, "study", None)
    if study not in STUDIES:
        raise InputError(f"sweep: unknown study {study!r}; expected one of "
                         f"{', '.join(STUDIES)}")
    jobs = args.jobs if args.jobs is not None else (os.cpu_count() or 1)
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise InputError(f"must be an integer >= 1, got {jobs!r}", file=CMDLINE, field="--jobs")
    from .. import executors
    executors.check_args(args)
    executor = getattr(args, "executor", "local")
    out = _check_out(args.out)
    points = make_points(study, args)
    # Validate the flags once, here, so bad input fails before the pool starts.
    from sim.config import build_simulation

    from ..options import config_from_args, from_cmdline, simulate_parser
    try:
        build_simulation(config_from_args(simulate_parser().parse_args(points[0]["argv"])))
    except InputError as exc:
        raise InputError(from_cmdline(exc) if exc.file == CMDLINE else str(exc)) from None
    ray_address = getattr(args, "ray_address", None)
    if executor == "ray":         # connect before the clock starts (and fail fast)
        cpus = executors.cluster_cpus(executors.connect(ray_address, num_cpus=jobs))
    else:
        cpus = min(jobs, len(points))
    t0 = time.perf_counter()
    rows = run_points(points, jobs, executor, ray_address)
    wall = time.perf_counter() - t0
    stem = study.replace("-", "_")
    csv_path, png_path = out / f"{stem}.csv", out / f"{stem}.png"
    write_csv(rows, csv_path)
    run_info = {"study": study, "executor": executor, "ray_address": ray_address,
                "cpus": cpus, "points": len(rows), "wall_s": round(wall, 3),
                "points_per_s": round(len(rows) / wall, 4) if wall > 0 else None,
                "point_wall_s": [r["wall_s"] for r in rows]}
    (out / f"{stem}.run.json").write_text(json.dumps(run_info, indent=1) + "\n")
    speed = args.arrival_speedup_ratio or 1.0
    window = _window(args)
    setup = (f"{MODEL} on {GPU} ({BACKEND}), KV router, trace {args.trace} x{speed:g}"
             + (f", first {window:g} s" if window else ""))
    verdict = plot_study(study, rows, png_path, setup, args.ttft_limit_ms)
    print(f"## sweep {study}: {setup}\n")
    print(markdown_table(rows, study))
    print()
    if verdict:
        print(verdict)
    print(f"wrote {csv_path} and {png_path} ({plural(len(rows), 'point')}, {wall:.1f} s wall, "
          f"{plural(cpus, 'Ray CPU' if executor == 'ray' else 'job')})")
    sys.stdout.flush()
    return 0
