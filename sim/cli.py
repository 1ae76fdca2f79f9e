"""The ``dynosim`` command line.

``dynosim simulate`` replays a trace (or a synthetic workload) through a simulated cluster
and prints a summary; flags are named after Dynamo's replay options and override a
``--config`` YAML. Bad input of any kind (config, trace line, flag) ends with one line,
``dynosim: error: <where>: <what>``, and exit code 2 -- never a traceback -- because the
user needs the file, line and field, not our stack.

Outputs are deterministic for a given seed: ``--report-jsonl`` and the JSON summary hold no
wall-clock values; those live under the JSON's separate ``run_info`` key.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any, Callable, NoReturn, Sequence

import yaml

from . import __version__
from .config import (BUNDLED_TRACES, TRACE_KINDS, RunConfig, build_simulation, load_config,
                     parse_config)
from .errors import InputError

CMDLINE = "command line"     # the "file" of values given as flags
PLOT_SUFFIXES = (".png", ".svg", ".pdf")

AGENT_COMMANDS = ("train", "evaluate")     # in agents.cli (imports gymnasium / torch lazily)

# flag -> (config field, argparse type, metavar, help). Only flags given on the command
# line override the config (argparse defaults are None).
FLAGS: dict[str, tuple[str, Callable[[str], Any], str | None, str]] = {
    "--num-workers": ("cluster.num_workers", int, "N", "workers at t=0 (default 1)"),
    "--gpus-per-worker": ("cluster.gpus_per_worker", int, "N", "GPUs per worker, for GPU-hours"),
    "--router-mode": ("router.mode", str, "{round_robin,random,least_loaded,kv}",
                      "routing policy (kv_router = kv); default round_robin"),
    "--router-temperature": ("router.temperature", float, "T",
                             "kv router softmax temperature (0 = argmin)"),
    "--block-size": ("engine.block_size", int, "N", "tokens per KV block (default 64)"),
    "--num-gpu-blocks": ("engine.num_gpu_blocks", int, "N",
                         "KV blocks per worker (default 16384)"),
    "--max-num-seqs": ("engine.max_num_seqs", int, "N", "running sequences per worker (256)"),
    "--max-num-batched-tokens": ("engine.max_num_batched_tokens", int, "N",
                                 "token budget per forward pass (8192)"),
    "--max-model-len": ("engine.max_model_len", int, "N", "reject prompts this long"),
    "--preemption-mode": ("engine.preemption_mode", str, "{lifo,fifo}", "preemption victim"),
    "--timing": ("timing.model", str, "SPEC", "polynomial | fixed:P,D | table:PATH"),
    "--speedup-ratio": ("timing.speedup_ratio", float, "X", "divide every pass time by X"),
    "--decode-speedup-ratio": ("timing.decode_speedup_ratio", float, "X",
                               "further divide decode time by X"),
    "--seed": ("run.seed", int, "N", "seed of the run (router ties, synthetic workloads)"),
    "--max-sim-time-s": ("run.max_sim_time_s", float, "S",
                         "stop at this simulated time; later requests never arrive"),
    "--sla-ttft-ms": ("sla.ttft_ms", float, "MS", "goodput: TTFT limit"),
    "--sla-itl-ms": ("sla.itl_ms", float, "MS", "goodput: per-request TPOT limit"),
    "--sla-e2e-ms": ("sla.e2e_ms", float, "MS", "goodput: end-to-end latency limit"),
}
SWITCHES = {"--exact-steps": ("run.exact_steps", True, "step pass by pass (slow reference)"),
            "--no-prefix-caching": ("engine.enable_prefix_caching", False, "disable prefix cache"),
            "--no-chunked-prefill": ("engine.enable_chunked_prefill", False,
                                     "disable chunked prefill")}
WORKLOAD_FLAGS = {"workload.path": "--trace", "workload.kind": "--trace-format",
                  "workload.trace_block_size": "--trace-block-size",
                  "workload.arrival_speedup_ratio": "--arrival-speedup-ratio"}
FLAG_OF = {**{v[0]: k for k, v in FLAGS.items()}, **{v[0]: k for k, v in SWITCHES.items()},
           **WORKLOAD_FLAGS}


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other error (still exit 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"dynosim: error: {message} (see '{self.prog} --help')\n")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="dynosim", description="Discrete-event simulator of an LLM serving "
                "cluster (NVIDIA Dynamo DynoSim semantics).")
    p.add_argument("--version", action="version", version=f"dynosim {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    s = sub.add_parser("simulate", help="replay a trace or synthetic workload",
                       description="Replay a workload through a simulated cluster. Flags "
                       "override --config; defaults are Dynamo's.")
    w = s.add_argument_group("workload")
    w.add_argument("--config", metavar="YAML", help="run config (see envs_configs/)")
    w.add_argument("--trace", metavar="PATH",
                   help="trace file, or bundled:mooncake_conversation / bundled:azure_conversation")
    w.add_argument("--trace-format", metavar="{mooncake,azure}",
                   help="default: from the config, else .csv = azure, otherwise mooncake")
    w.add_argument("--trace-block-size", type=int, metavar="N",
                   help="tokens per hash_id (default 512)")
    w.add_argument("--arrival-speedup-ratio", type=float, metavar="X",
                   help="divide trace inter-arrival times by X")
    c = s.add_argument_group("cluster, engine, router, timing, run")
    for flag, (_, typ, metavar, help_) in FLAGS.items():
        c.add_argument(flag, type=typ, metavar=metavar, help=help_)
    for flag, (_, const, help_) in SWITCHES.items():
        c.add_argument(flag, action="store_const", const=const, default=None, help=help_)
    g = s.add_argument_group("GPU timing from measured data (see `dynosim models`)")
    g.add_argument("--model", metavar="MODEL", help="e.g. Qwen/Qwen3-32B")
    g.add_argument("--gpu", metavar="GPU", help="e.g. h200_sxm")
    g.add_argument("--backend", metavar="BACKEND", help="vllm | sglang")
    g.add_argument("--tp", type=_positive_int, metavar="N", help="tensor parallel size")
    pl = s.add_argument_group("autoscaling planner (Dynamo-style, aggregated pool)")
    pl.add_argument("--planner", choices=("load", "throughput"),
                    help="load: reactive on forward-pass metrics; throughput: predictive")
    pl.add_argument("--planner-interval", type=float, metavar="S",
                    help="seconds between decisions (default 5 load / 180 throughput)")
    pl.add_argument("--planner-predictor", metavar="NAME",
                    help="throughput forecasts: constant | moving_average | kalman | arima")
    pl.add_argument("--max-gpu-budget", type=_positive_int, metavar="N", help="default 8")
    pl.add_argument("--min-endpoint", type=_positive_int, metavar="N", help="default 1")
    pl.add_argument("--ttft-sla-ms", type=float, metavar="X", help="planner TTFT target (500)")
    pl.add_argument("--itl-sla-ms", type=float, metavar="Y", help="planner ITL target (50)")
    pl.add_argument("--startup-time", type=float, metavar="S",
                    help="seconds a new worker spends starting (cluster.startup_time_s)")
    pl.add_argument("--initial-workers", type=_positive_int, metavar="N",
                    help="workers at t=0 (same as --num-workers)")
    o = s.add_argument_group("output")
    o.add_argument("--json", action="store_true",
                   help="print the summary as JSON on stdout (wall-clock data under run_info)")
    o.add_argument("--report-jsonl", metavar="PATH", help="write one record per request")
    o.add_argument("--plot", metavar="PATH.png", help="write TTFT/ITL/E2E CDFs as one figure")
    o.add_argument("--quiet", action="store_true",
                   help="no progress bar and no notes on stderr")

    m = sub.add_parser("models", help="list the shipped GPU timing tables",
                       description="GPU timing tables derived from aiconfigurator-core data; "
                       "use one with simulate --model M --gpu G --backend B --tp N.")
    m.add_argument("--json", action="store_true", help="print the list as JSON")
    from . import bench, search, silicon, sweeps
    silicon.add_parser(sub)
    sweeps.add_parser(sub)
    search.add_parser(sub)
    bench.add_parser(sub)
    try:
        from agents import cli as agents_cli
    except ImportError:           # sim installed without the agents package
        agents_cli = None
    if agents_cli is not None:
        agents_cli.add_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dynosim`` console script; returns the exit code."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:        # --help, --version, usage errors: return, don't exit
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        if args.command == "models":
            return list_models(args)
        if args.command == "validate":
            from . import silicon
            return silicon.run(args)
        if args.command == "sweep":
            from . import sweeps
            return sweeps.run(args)
        if args.command == "search":
            from . import search
            return search.run(args)
        if args.command == "bench":
            from . import bench
            return bench.run(args)
        if args.command in AGENT_COMMANDS:
            from agents import cli as agents_cli
            return agents_cli.run(args)
        return simulate(args)
    except InputError as exc:
        return _fail(_from_cmdline(exc))
    except yaml.YAMLError as exc:     # load_config converts these; kept as a safety net
        return _fail(f"invalid YAML: {' '.join(str(exc).split())}")
    except OSError as exc:
        name = exc.filename if exc.filename is not None else ""
        return _fail(f"{name}: {exc.strerror or exc}" if name else str(exc))
    except KeyboardInterrupt:
        print("dynosim: interrupted", file=sys.stderr)
        return 130


def _fail(message: str) -> int:
    print(f"dynosim: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


def _from_cmdline(exc: InputError) -> str:
    """Name the flag, not the config field, when a flag supplied the bad value."""
    if exc.file == CMDLINE:
        field = exc.field or ""
        flag = field if field.startswith("--") else FLAG_OF.get(field)
        return f"argument {flag}: {exc.detail}" if flag else \
            f"{CMDLINE}, field '{exc.field}': {exc.detail}"
    return str(exc)


# -- simulate ----------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {n}")
    return n


def list_models(args: argparse.Namespace) -> int:
    """``dynosim models``: the shipped (model, GPU, backend, TP) timing tables."""
    from .gpu_timing import list_tables
    rows = list_tables()
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    print(f"{'model':<32} {'gpu':<10} {'backend':<8} {'tp':>3} {'version':<10} "
          f"{'KV blocks':>10} {'KV B/token':>11}")
    for r in rows:
        print(f"{r['model']:<32} {r['gpu']:<10} {r['backend']:<8} {r['tp']:>3} "
              f"{r['backend_version']:<10} {r['num_gpu_blocks']:>10,} "
              f"{r['kv_bytes_per_token']:>11,}")
    print("(derived from aiconfigurator-core 0.12.0 perf data, Apache-2.0, NVIDIA; "
          "use: dynosim simulate --model M --gpu G --backend B --tp N)")
    return 0


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The YAML (if any) with every given flag applied on top."""
    cfg = load_config(args.config) if args.config else parse_config({})
    over: dict[str, Any] = {}
    for flag, dotted in [(f, v[0]) for f, v in FLAGS.items()] + \
            [(f, v[0]) for f, v in SWITCHES.items()]:
        value = getattr(args, _dest(flag))
        if value is not None:
            over[dotted] = value
    base = cfg.workload if isinstance(cfg.workload, dict) else {}
    base_kind = base.get("kind")
    if args.trace is not None or args.trace_format is not None:
        path = args.trace if args.trace is not None else base.get("path")
        if args.trace is None and base_kind not in TRACE_KINDS:
            raise InputError("needs --trace (or a trace workload in --config)",
                             file=CMDLINE, field="workload.kind")
        kind = args.trace_format or _infer_format(args.trace) or (
            base_kind if base_kind in TRACE_KINDS else "mooncake")
        if kind not in TRACE_KINDS:
            raise InputError(f"unknown trace format {kind!r}; expected one of "
                             f"{', '.join(TRACE_KINDS)}", file=CMDLINE, field="workload.kind")
        over["workload.kind"] = kind
        over["workload.path"] = path
    kind = over.get("workload.kind", base_kind)
    if args.trace_block_size is not None:
        if kind == "azure":
            raise InputError("azure traces have no hash_ids (mooncake and synthetic only)",
                             file=CMDLINE, field="workload.trace_block_size")
        over["workload.trace_block_size"] = args.trace_block_size
    if args.arrival_speedup_ratio is not None:
        if kind not in TRACE_KINDS:
            raise InputError("applies to trace workloads only", file=CMDLINE,
                             field="workload.arrival_speedup_ratio")
        over["workload.arrival_speedup_ratio"] = args.arrival_speedup_ratio
    gpu_flags = {"--model": args.model, "--gpu": args.gpu, "--backend": args.backend,
                 "--tp": args.tp}
    if any(v is not None for v in gpu_flags.values()):
        missing = [f for f, v in gpu_flags.items() if v is None]
        if missing:
            raise InputError(f"--model, --gpu, --backend and --tp go together; missing "
                             f"{', '.join(missing)}", file=CMDLINE, field="timing.model")
        from .gpu_timing import load_gpu_timing
        table = load_gpu_timing(args.model, args.gpu, args.backend, args.tp)
        over["timing.model"] = f"gpu:{args.model}:{args.gpu}:{args.backend}:{args.tp}"
        # The table knows the worker's KV capacity and GPU count; explicit flags still win.
        over.setdefault("engine.num_gpu_blocks", table.num_gpu_blocks)
        over.setdefault("engine.block_size", table.block_size)
        over.setdefault("cluster.gpus_per_worker", table.gpus_per_worker)
    if args.startup_time is not None:
        over["cluster.startup_time_s"] = args.startup_time
    if args.initial_workers is not None:
        over["cluster.num_workers"] = args.initial_workers
    if over:
        cfg = cfg.with_overrides(over, source=CMDLINE)
    if cfg.workload is None:
        raise InputError("no workload: give --trace PATH or --config YAML with a workload")
    return cfg


def _infer_format(trace: str | None) -> str | None:
    """azure for .csv files, mooncake for .jsonl/.json, else unknown (bundled: by file)."""
    if trace is None:
        return None
    name = trace.lower()
    if name.startswith("bundled:"):
        name = BUNDLED_TRACES.get(trace[len("bundled:"):], "").lower()
    return "azure" if name.endswith(".csv") else \
        "mooncake" if name.endswith((".jsonl", ".json")) else None


def _check_output(path: str | None, flag: str, suffixes: tuple[str, ...] = ()) -> None:
    """Fail before a long run, not after it, when an output cannot be written."""
    if path is None:
        return
    p = Path(path)
    if suffixes and p.suffix.lower() not in suffixes:
        raise InputError(f"expected a {'/'.join(suffixes)} file name, got {path!r}", file=CMDLINE,
                         field=flag)
    if p.is_dir():
        raise InputError(f"{path!r} is a directory", file=CMDLINE, field=flag)
    if not p.parent.is_dir():
        raise InputError(f"directory {str(p.parent)!r} does not exist", file=CMDLINE, field=flag)


def expected_span_s(describe: dict[str, Any], cfg: RunConfig) -> float | None:
    """Simulated time of the last arrival, when the workload tells (progress-bar total)."""
    span = describe.get("span_ms")
    if span is not None:
        span = span / 1000.0
    elif describe.get("duration_s") is not None:
        span = float(describe["duration_s"])
    else:       # synthetic renewal process: expected span = sessions / rate
        arrival = describe.get("arrival")
        rate = arrival.get("rate") if isinstance(arrival, dict) else None
        n = describe.get("num_sessions")
        span = n / rate if rate and n else None
    limit = cfg.run.max_sim_time_s
    if limit is not None:
        span = limit if span is None else min(span, limit)
    return span if span else None


def _progress(total_s: float | None, enabled: bool
              ) -> tuple[Callable[[float], None] | None, Callable[[], None]]:
    """(update(sim_time_ms), close) of a tqdm bar over simulated seconds on stderr."""
    if not enabled:
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=None if total_s is None else math.ceil(total_s), unit="sim-s",
               file=sys.stderr, dynamic_ncols=True, leave=False,
               bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} sim-s [{elapsed}<{remaining}]")
    cap = math.inf if total_s is None else total_s

    def update(t_ms: float) -> None:
        bar.update(min(t_ms / 1000.0, cap) - bar.n)

    return update, bar.close


def simulate(args: argparse.Namespace) -> int:
    """Run one simulation and write the requested outputs; errors propagate to main()."""
    cfg = config_from_args(args)
    _check_output(args.report_jsonl, "--report-jsonl")
    _check_output(args.plot, "--plot", PLOT_SUFFIXES)
    t0 = time.perf_counter()
    show_bar = not args.quiet and sys.stderr.isatty()
    planner = _make_planner(args)
    sim = build_simulation(cfg)
    if planner is not None:
        try:
            planner.attach(sim)
        except InputError as exc:
            raise InputError(exc.detail, file=CMDLINE, field=f"planner.{exc.field}") from None
    describe = sim.workload.describe()
    update, close = _progress(expected_span_s(describe, cfg), show_bar)
    sim.progress = update
    t1 = time.perf_counter()
    try:
        result = sim.run()
    finally:
        close()
    t2 = time.perf_counter()
    wall = t2 - t1
    sim_s = sim.now / 1000.0
    run_info = {"dynosim_version": __version__, "python": sys.version.split()[0],
                "load_wall_s": round(t1 - t0, 4), "run_wall_s": round(wall, 4),
                "sim_s_per_wall_s": round(sim_s / wall, 1) if wall > 0 else None}
    summary = {**result.summary, "simulated_s": sim_s, "workload": describe,
               "config": cfg.to_dict()}
    if planner is not None:
        summary["planner"] = {"kind": args.planner, **planner.report(result)}

    if args.report_jsonl:
        with open(args.report_jsonl, "w", encoding="utf-8", newline="\n") as fh:
            result.metrics.write_jsonl(fh)
        _note(args, f"wrote {len(result.metrics.cols['status']):,} request records to "
                    f"{args.report_jsonl}")
    if args.plot:
        from .plots import plot_latency_cdfs

        plot_latency_cdfs(result, args.plot, title=_title(describe, cfg))
        _note(args, f"wrote latency CDFs to {args.plot}")
    if args.json:
        json.dump(_jsonable({**summary, "run_info": run_info}), sys.stdout, indent=2,
                  allow_nan=False)
        sys.stdout.write("\n")
    else:
        print_summary(summary, run_info, cfg, sys.stdout)
        if planner is not None:
            rep = summary["planner"]
            print(f"  planner       {args.planner}: {rep['scaling_events']} scaling events, "
                  f"max {rep['max_replicas']} replicas (incl. starting/draining)")
    return 0


_PLANNER_FLAGS = {"planner_interval": "interval_s", "planner_predictor": "load_predictor",
                  "max_gpu_budget": "max_gpu_budget", "min_endpoint": "min_endpoint",
                  "ttft_sla_ms": "ttft_sla_ms", "itl_sla_ms": "itl_sla_ms"}


def _make_planner(args: argparse.Namespace):
    """The planner the flags ask for (None without --planner); its own flags need it."""
    given = {cfg_key: getattr(args, dest) for dest, cfg_key in _PLANNER_FLAGS.items()
             if getattr(args, dest) is not None}
    if args.planner is None:
        if given:
            flag = "--" + next(d for d, k in _PLANNER_FLAGS.items() if k in given).replace("_", "-")
            raise InputError(f"{flag} needs --planner load|throughput", file=CMDLINE,
                             field="planner")
        return None
    from .planner import LoadPlanner, PlannerConfig, ThroughputPlanner
    try:
        pcfg = PlannerConfig(**given)
    except InputError as exc:
        raise InputError(exc.detail, file=CMDLINE, field=f"planner.{exc.field}") from None
    return (LoadPlanner if args.planner == "load" else ThroughputPlanner)(pcfg)


def _note(args: argparse.Namespace, text: str) -> None:
    if not args.quiet:
        print(f"dynosim: {text}", file=sys.stderr)


def _jsonable(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf -> null, numpy scalars -> Python, tuples -> lists."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):      # numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


# -- human-readable summary ---------------------------------------------------------------

def _title(describe: dict[str, Any], cfg: RunConfig) -> str:
    n = describe.get("num_requests")
    count = f", {n:,} requests" if isinstance(n, int) else ""
    return (f"{describe.get('name', 'workload')} ({describe.get('kind', '?')}{count}) on "
            f"{cfg.cluster.num_workers} worker{'s' if cfg.cluster.num_workers != 1 else ''}, "
            f"{cfg.router.mode} router, KV "
            f"{cfg.engine.num_gpu_blocks} x {cfg.engine.block_size}-token blocks, "
            f"timing {cfg.timing.model}")


def print_summary(summary: dict[str, Any], run_info: dict[str, Any], cfg: RunConfig,
                  out: IO[str]) -> None:
    t, lat = summary["totals"], summary["latency_ms"]
    w = out.write
    w(f"dynosim {_title(summary['workload'], cfg)}\n")
    w(f"  requests      arrived {t['num_requests']:,}   completed {t['completed_requests']:,}"
      f"   rejected {t['rejected_requests']:,}   in flight {t['in_flight_requests']:,}")
    if t.get("cut_off_ms") is not None:
        w(f"   (cut off at {t['cut_off_ms'] / 1000:g} s; {t['not_arrived_requests']:,} "
          "never arrived)")
    w("\n")
    w(f"  {'latency (ms)':<12} {'mean':>9} {'p50':>9} {'p90':>9} {'p99':>9}\n")
    for label, key in (("TTFT", "ttft"), ("ITL", "itl"), ("E2E", "e2e_latency")):
        d = lat[key]
        w(f"  {label:<12} " + " ".join(f"{d[k]:>9.1f}" for k in ("mean", "median", "p90", "p99"))
          + "\n")
    w(f"  throughput    {t['request_throughput_rps']:.2f} req/s   "
      f"{t['output_throughput_tok_s']:,.0f} output tok/s   "
      f"{t['total_throughput_tok_s']:,.0f} total tok/s over {t['duration_ms'] / 1000:,.1f} s\n")
    w(f"  prefix reuse  {t['prefix_cache_reused_ratio']:.1%}   preemptions "
      f"{t['num_preemptions']:,}   GPU-hours {t['gpu_hours']:.2f}\n")
    if "goodput" in summary:
        g = summary["goodput"]
        w(f"  goodput       {g['good_requests']:,} requests within SLA "
          f"({g['sla_attainment']:.1%})   {g['goodput_rps']:.2f} req/s\n")
    rate = run_info["sim_s_per_wall_s"]
    w(f"  wall time     {run_info['run_wall_s']:.2f} s (+{run_info['load_wall_s']:.2f} s load)"
      f"   {summary['simulated_s']:,.1f} sim-s   "
      f"{'-' if rate is None else f'{rate:,.0f}'} sim-s per wall-s\n")
