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

* ``pareto``     static deployments (replicas x TP within the budget) -> GPU-hours vs p90
                 TTFT, Pareto frontier marked, load and throughput planners overlaid; second
                 panel output tok/s per GPU vs output tok/s per user.
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
import sys
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

from sim.errors import InputError
from sim.schema import MAX_TIME_MS

from ..options import CMDLINE

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

COLUMNS = ("study", "point", "label", "kind", "tp", "replicas", "interval_s", "startup_s",
           "num_requests", "completed_requests", "p50_ttft_ms", "p90_ttft_ms", "p90_itl_ms",
           "mean_itl_ms", "gpu_hours", "avg_gpus", "scaling_events", "max_replicas",
           "output_tok_s", "output_tok_s_per_gpu", "output_tok_s_per_user", "duration_s",
           "command")


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
                   help=f"mooncake trace (default {DEFAULT_TRACE})")
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
    kw = {}
    if getattr(subparsers, "_parser_class", None) is not None:
        kw["parser_class"] = subparsers._parser_class
    s = subparsers.add_parser("sweep", help="the planner studies: pareto, interval, cold-start",
                              description="Run one of the DynoSim planner studies (Qwen3-32B "
                              "on H200, vLLM timing, KV router, SLA TTFT 1500 ms / ITL 50 ms, "
                              "16-GPU budget, 2 initial workers).")
    sub = s.add_subparsers(dest="study", metavar="STUDY", required=True, **kw)
    sub.add_parser("pareto", parents=[common],
                   help="static deployments vs planners: GPU-hours vs p90 TTFT")
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


def make_points(study: str, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The study's points, in order: dicts with ``label``, ``kind``, ``tp``, ``replicas``,
    ``interval_s``, ``startup_s`` and the ``simulate`` flags (``argv``)."""
    pts: list[dict[str, Any]] = []

    def add(label, kind, tp, replicas, interval_s, startup_s, extra):
        pts.append({"study": study, "point": len(pts), "label": label, "kind": kind, "tp": tp,
                    "replicas": replicas, "interval_s": interval_s, "startup_s": startup_s,
                    "argv": _base_flags(args, tp) + extra})

    if study == "pareto":
        if args.quick:
            grid = [(r, tp) for r, tp in QUICK_STATIC if _has_table(tp)]
        else:
            grid = [(r, tp) for tp in STATIC_TPS if _has_table(tp) for r in STATIC_REPLICAS
                    if r * tp <= MAX_GPU_BUDGET]
        for r, tp in grid:
            add(f"static {r}xTP{tp}", "static", tp, r, None, None,
                ["--num-workers", str(r)])
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


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


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
    row = {k: point[k] for k in ("study", "point", "label", "kind", "tp", "replicas",
                                 "interval_s", "startup_s")}
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
        "command": "dynosim simulate " + " ".join(point["argv"]),
    })
    return row


# -- analysis (pure functions on rows) -------------------------------------------------------

def _bad(x: Any) -> bool:
    v = _num(x)
    return not math.isfinite(v)


def pareto_front(rows: Sequence[dict[str, Any]], x: str = "gpu_hours",
                 y: str = "p90_ttft_ms") -> list[bool]:
    """For each row: is it on the Pareto frontier minimising both ``x`` and ``y``? (Rows
    with a missing/non-finite value are never on it; duplicates are all kept.)"""
    out = []
    for i, r in enumerate(rows):
        if _bad(r[x]) or _bad(r[y]):
            out.append(False)
            continue
        rx, ry = float(r[x]), float(r[y])
        dominated = any(
            j != i and not _bad(o[x]) and not _bad(o[y])
            and float(o[x]) <= rx and float(o[y]) <= ry and (float(o[x]) < rx or float(o[y]) < ry)
            for j, o in enumerate(rows))
        out.append(not dominated)
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


def plot_pareto(rows: Sequence[dict[str, Any]], path: Path, title: str) -> None:
    fig, (a1, a2) = _figure(2)
    static = [r for r in rows if r["kind"] == "static"]
    front = pareto_front(static)
    markers = {1: "o", 2: "s", 4: "D", 8: "^"}
    labels, points = [], []
    for tp in sorted({int(r["tp"]) for r in static}):
        sel = [r for r in static if int(r["tp"]) == tp]
        a1.scatter([r["gpu_hours"] for r in sel], [_positive(r["p90_ttft_ms"]) for r in sel],
                   marker=markers.get(tp, "o"), facecolors="none", edgecolors=f"C{tp}",
                   label=f"static TP{tp}")
        a2.scatter([r["output_tok_s_per_user"] for r in sel],
                   [r["output_tok_s_per_gpu"] for r in sel], marker=markers.get(tp, "o"),
                   facecolors="none", edgecolors=f"C{tp}", label=f"static TP{tp}")
        for r in sel:          # replica counts, placed by adjustText below
            xy = (r["gpu_hours"], _positive(r["p90_ttft_ms"]))
            if math.isfinite(xy[1]):
                labels.append(a1.text(*xy, f"{int(r['replicas'])}", fontsize=7,
                                      color=f"C{tp}"))
                points.append(xy)
    fr = sorted((r for r, f in zip(static, front) if f), key=lambda r: r["gpu_hours"])
    if fr:
        a1.step([r["gpu_hours"] for r in fr], [_positive(r["p90_ttft_ms"]) for r in fr],
                where="post", color="k", lw=1, alpha=0.6, label="static Pareto frontier")
        a1.scatter([r["gpu_hours"] for r in fr], [_positive(r["p90_ttft_ms"]) for r in fr],
                   marker=".", color="k", s=20, zorder=2)
    for kind, marker, color in (("load", "*", "C3"), ("throughput", "X", "C5")):
        sel = [r for r in rows if r["kind"] == kind]
        if sel:
            a1.scatter([r["gpu_hours"] for r in sel], [_positive(r["p90_ttft_ms"]) for r in sel],
                       marker=marker, s=160, color=color, label=f"{kind} planner", zorder=3)
            a2.scatter([r["output_tok_s_per_user"] for r in sel],
                       [r["output_tok_s_per_gpu"] for r in sel], marker=marker, s=160,
                       color=color, label=f"{kind} planner", zorder=3)
    a1.axhline(TTFT_SLA_MS, color="gray", ls="--", lw=1, label=f"TTFT SLA {TTFT_SLA_MS:g} ms")
    a1.set_yscale("log")
    a1.set_xlabel("GPU-hours")
    a1.set_ylabel("p90 TTFT (ms, log)")
    a1.set_title("cost vs latency")
    a2.set_xlabel("output tok/s per user (mean)")
    a2.set_ylabel("output tok/s per GPU")
    a2.set_title("throughput per GPU vs per user")
    for a in (a1, a2):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    if labels:               # keep the replica counts off each other and off the markers
        from adjustText import adjust_text
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        FigureCanvasAgg(fig).draw()              # lay out first: adjustText works in pixels
        adjust_text(labels, x=[p[0] for p in points], y=[p[1] for p in points], ax=a1,
                    expand=(1.4, 1.6), arrowprops={"arrowstyle": "-", "color": "0.6",
                                                   "lw": 0.5})
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
    a3.legend(h1 + h2, l1 + l2, fontsize=7)
    for a in (a1, a2, a3):
        if logx:
            a.set_xscale("log")
        a.set_xlabel(xlabel)
        a.grid(True, which="both", alpha=0.3)
        if mark is not None:
            a.axvline(mark, color="C3", ls=":", lw=1.5, label=mark_label)
    a1.legend(fontsize=7)
    a2.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=110)


def markdown_table(rows: Sequence[dict[str, Any]], study: str) -> str:
    cols = [("label", "point"), ("p90_ttft_ms", "p90 TTFT ms"), ("p90_itl_ms", "p90 ITL ms"),
            ("gpu_hours", "GPU-h"), ("scaling_events", "events"),
            ("output_tok_s_per_gpu", "tok/s/GPU"), ("output_tok_s_per_user", "tok/s/user")]
    if study == "pareto":
        front = dict(zip((id(r) for r in rows if r["kind"] == "static"),
                         pareto_front([r for r in rows if r["kind"] == "static"])))
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
            cells.append("yes" if front.get(id(r)) else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- entry point -----------------------------------------------------------------------------

def _check_out(out: str) -> Path:
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError(f"{out!r} exists and is not a directory", file=CMDLINE, field="--out")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create directory {out!r}: {exc.strerror or exc}",
                         file=CMDLINE, field="--out") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise InputError(f"directory {out!r} is not writable", file=CMDLINE, field="--out")
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
    limit = args.ttft_limit_ms
    verdict = ""
    if study == "pareto":
        plot_pareto(rows, png_path, f"pareto: {setup}")
    elif study == "interval":
        best = optimum_interval(rows, limit)
        mark = None if best is None else float(best["interval_s"])
        verdict = ("optimum: none (no interval keeps p90 TTFT <= "
                   f"{limit:g} ms)" if best is None else
                   f"optimum: interval {best['interval_s']:g} s (fewest GPU-hours, "
                   f"{best['gpu_hours']:.2f}, with p90 TTFT <= {limit:g} ms)")
        plot_scan(rows, png_path, "interval_s", "load adjustment interval (s, log)",
                  f"interval: {setup}; {verdict}", True, mark, "optimum")
    else:
        cliff = cold_start_cliff(rows, limit)
        verdict = (f"cliff: none (p90 TTFT <= {limit:g} ms at every startup time)"
                   if cliff is None else
                   f"cliff: startup {cliff:g} s (first with p90 TTFT > {limit:g} ms)")
        plot_scan(rows, png_path, "startup_s", "worker startup time (s)",
                  f"cold-start: {setup}; {verdict}", False, cliff, "cliff")
    print(f"## sweep {study}: {setup}\n")
    print(markdown_table(rows, study))
    print()
    if verdict:
        print(verdict)
    print(f"wrote {csv_path} and {png_path} ({len(rows)} points, {wall:.1f} s wall, "
          f"{cpus} {'Ray CPUs' if executor == 'ray' else 'jobs'})")
    sys.stdout.flush()
    return 0
