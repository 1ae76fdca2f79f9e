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
import os
import sys
import time
from typing import IO, Any, Callable, Sequence

import yaml

from sim import __version__
from sim.config import RunConfig, build_planner, build_simulation
from sim.errors import InputError

from .options import (PLOT_SUFFIXES, SIMULATE_HELP, Parser, add_simulate_arguments,
                      check_output_path, config_from_args, forget_created_dirs,
                      from_cmdline, note, plural, remove_empty_created_dirs)

AGENT_COMMANDS = ("train", "evaluate", "tune")   # in agents.cli (imports gymnasium / torch lazily)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="dynosim", description="Discrete-event simulator of an LLM serving "
                "cluster (NVIDIA Dynamo DynoSim semantics).")
    p.add_argument("--version", action="version", version=f"dynosim {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    s = sub.add_parser("simulate", **SIMULATE_HELP)
    add_simulate_arguments(s)

    m = sub.add_parser("models", help="list the shipped GPU timing tables",
                       description="GPU timing tables derived from aiconfigurator-core data; "
                       "use one with simulate --model M --gpu G --backend B --tp N.")
    m.add_argument("--json", action="store_true", help="print the list as JSON")
    from .studies import bench
    from . import config_schema as schema
    from .studies import search
    from .studies import silicon
    from .studies import sweeps
    schema.add_parser(sub)
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
        if extra:                     # named by the (sub)command's parser: its --help
            _command_parser(parser, args).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:        # --help, --version, usage errors: return, don't exit
        return exc.code if isinstance(exc.code, int) else 2
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    forget_created_dirs()
    code = 1
    try:
        code = _run(args)
    finally:
        if code != 0:                 # failed (or raised): no empty --out directory left
            remove_empty_created_dirs()
    return code


def _command_parser(parser: argparse.ArgumentParser,
                    args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` ran (``dynosim sweep interval``'s, ...)."""
    while True:
        sub = next((a for a in parser._actions                  # argparse keeps them there
                    if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, sub.dest, None) if sub is not None else None
        if name not in (sub.choices if sub is not None else {}):
            return parser
        parser = sub.choices[name]


def _run(args: argparse.Namespace) -> int:
    """Run the parsed command; every error a user can cause ends here as one line."""
    spelled = dict(getattr(args, "flag_spelled", None) or {})
    spelled.update(set_flags(getattr(args, "set", None) or []))   # agents' --set KEY=VALUE
    return guarded(lambda: _dispatch(args), spelled)


def set_flags(sets: list[tuple[str, object]]) -> dict[str, str]:
    """``--set KEY=VALUE`` pairs as ``guarded``'s ``spelled``: the dotted config key ->
    ``--set KEY`` as typed, so an error on a value they supplied names the flag (scripts
    with ``--set`` pass it too)."""
    if not sets:
        return {}
    from dynosim_gym.config import override_key
    spelled = {}
    for key, _ in sets:
        try:
            spelled[override_key(key)] = f"--set {key}"
        except InputError:            # an unknown key: the command's own load says so
            pass
    return spelled


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "models":
        return list_models(args)
    if args.command == "config":
        from . import config_schema as schema
        return schema.run(args)
    if args.command == "validate":
        from .studies import silicon
        return silicon.run(args)
    if args.command == "sweep":
        from .studies import sweeps
        return sweeps.run(args)
    if args.command == "search":
        from .studies import search
        return search.run(args)
    if args.command == "bench":
        from .studies import bench
        return bench.run(args)
    if args.command in AGENT_COMMANDS:
        from agents import cli as agents_cli
        return agents_cli.run(args)
    return simulate(args)


def guarded(body: Callable[[], int], spelled: dict[str, str] | None = None) -> int:
    """``body()``'s exit code, or 2 with one stderr line for an error the user caused
    (:class:`~sim.errors.InputError`, bad YAML, a missing file), 141 on a closed pipe and
    130 on Ctrl-C. The CLI's one error path; ``scripts/`` use it too. ``spelled``: see
    :func:`~dynosim.options.from_cmdline`."""
    try:
        return body()
    except InputError as exc:
        return _fail(from_cmdline(exc, spelled))
    except yaml.YAMLError as exc:     # load_config converts these; kept as a safety net
        return _fail(f"invalid YAML: {' '.join(str(exc).split())}")
    except BrokenPipeError:           # stdout closed early (`... | head`): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())     # (Python's recipe: no error at exit)
        return 141                    # 128 + SIGPIPE, as a shell reports it
    except OSError as exc:
        name = exc.filename if exc.filename is not None else ""
        return _fail(f"{name}: {exc.strerror or exc}" if name else str(exc))
    except KeyboardInterrupt:
        print("dynosim: interrupted", file=sys.stderr)
        return 130


def run_script(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
               run: Callable[[argparse.Namespace], int]) -> int:
    """A script's ``main``: ``argv`` parsed by ``parser`` (a usage error exits 2 there), then
    ``run(args)``'s exit code under :func:`guarded`, an error on a ``--set`` value naming the
    flag as typed (:func:`set_flags`, for a script with ``--set``)."""
    args = parser.parse_args(argv)
    return guarded(lambda: run(args), set_flags(getattr(args, "set", None) or []))


def _fail(message: str) -> int:
    print(f"dynosim: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


# -- simulate ----------------------------------------------------------------------------------


def list_models(args: argparse.Namespace) -> int:
    """``dynosim models``: the shipped (model, GPU, backend, TP) timing tables."""
    from sim.gpu_timing import list_tables
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
    if args.print_config:
        sys.stdout.write(config_yaml(cfg))
        return 0
    check_output_path(args.report_jsonl, "--report-jsonl")
    check_output_path(args.plot, "--plot", PLOT_SUFFIXES)
    t0 = time.perf_counter()
    show_bar = not args.quiet and sys.stderr.isatty()
    planner = build_planner(cfg)
    sim = build_simulation(cfg)
    if planner is not None:
        try:
            planner.attach(sim)
        except InputError as exc:
            file, line = cfg.locate(f"planner.{exc.field}")
            raise InputError(exc.detail, file=file, line=line,
                             field=f"planner.{exc.field}") from None
    for text in getattr(args, "deprecation_notes", None) or []:
        print(text, file=sys.stderr)
    describe = sim.workload.describe()
    if describe.get("notes"):      # what a trace loader did beyond a plain read
        note(args, f"note: {describe['path']}: {'; '.join(describe['notes'])}")
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
        summary["planner"] = {"kind": cfg.planner["kind"], **planner.report(result)}
    summary["warnings"] = warnings = overload_warnings(summary, cfg)
    for text in warnings:
        if not args.quiet:
            print(f"dynosim: warning: {text}", file=sys.stderr)

    if args.report_jsonl:
        with open(args.report_jsonl, "w", encoding="utf-8", newline="\n") as fh:
            result.metrics.write_jsonl(fh)
        note(args, f"wrote {len(result.metrics.cols['status']):,} request records to "
                    f"{args.report_jsonl}")
    if args.plot:
        from .plots import plot_latency_cdfs

        plot_latency_cdfs(result, args.plot, title=_title(describe, cfg))
        note(args, f"wrote latency CDFs to {args.plot}")
    if args.json:
        json.dump(_jsonable({**summary, "run_info": run_info}), sys.stdout, indent=2,
                  allow_nan=False)
        sys.stdout.write("\n")
    else:
        print_summary(summary, run_info, cfg, sys.stdout)
        if planner is not None:
            rep = summary["planner"]
            pools = rep.get("pools")          # disaggregated: the maxima per pool
            per_pool = "" if not pools else " (" + ", ".join(
                f"{role} {p['max_replicas']}" for role, p in pools.items()) + ")"
            events = plural(rep['scaling_events'], 'scaling event')
            print(f"  planner       {rep['kind']}: {events}, "
                  f"max {plural(rep['max_replicas'], 'replica')}{per_pool} (incl. "
                  "starting/draining)")
    return 0


#: A run is overloaded when its p90 TTFT exceeds this many times the TTFT target.
OVERLOAD_FACTOR = 10.0
#: TTFT target without an SLA: the Dynamo planner's default (``ttft`` 500 ms).
DEFAULT_TTFT_TARGET_MS = 500.0


def overload_warnings(summary: dict[str, Any], cfg: RunConfig) -> list[str]:
    """One line per sign that the cluster could not keep up (empty for a healthy run).

    Overloaded: p90 TTFT above ``OVERLOAD_FACTOR`` x the TTFT target (``sla.ttft_ms``, else
    500 ms), i.e. requests mostly wait in queues that never drain; or, at a cut-off, more
    requests still in flight than completed. Such a run measures the backlog, not the
    serving system, so its latencies should not be compared with anything."""
    t = summary["totals"]
    target = cfg.sla.ttft_ms or DEFAULT_TTFT_TARGET_MS
    p90 = summary["latency_ms"]["ttft"]["p90"]
    out = []
    if t["num_ttft_samples"] and p90 > OVERLOAD_FACTOR * target:
        add = ("--num-prefill-workers/--num-decode-workers" if cfg.disagg is not None
               else "--num-workers")
        planner = "" if cfg.planner is not None or cfg.cluster.dp_size > 1 else \
            "use --planner, "          # a planner is refused with DP ranks
        out.append(f"overloaded: p90 TTFT {p90 / 1000:,.1f} s is {p90 / target:,.0f}x the "
                   f"{target:g} ms TTFT target ({'sla.ttft_ms' if cfg.sla.ttft_ms else 'default'}"
                   f"); queues never drain on {_workers(cfg)}: add workers ({add}), "
                   f"{planner}or slow arrivals (--arrival-speedup-ratio below 1)")
    elif t.get("cut_off_ms") is not None and t["in_flight_requests"] > t["completed_requests"]:
        out.append(f"overloaded: {plural(t['in_flight_requests'], 'request', fmt=',')} still "
                   "in flight at the "
                   f"cut-off, more than the {t['completed_requests']:,} completed")
    if t["completed_requests"] and t["rejected_requests"] > t["completed_requests"]:
        why = ", ".join(f"{n:,} {r}" for r, n in t.get("rejected_by_reason", {}).items())
        out.append(f"{t['rejected_requests']:,} of {t['num_requests']:,} requests rejected "
                   f"({why}), more than the {t['completed_requests']:,} completed: the "
                   "latencies describe the few that fit")
    if t["num_requests"] and not t["completed_requests"]:
        why = ", ".join(f"{n:,} {r}" for r, n in t.get("rejected_by_reason", {}).items())
        out.append(f"no request completed ({t['rejected_requests']:,} rejected"
                   f"{': ' + why if why else ''}; {t['in_flight_requests']:,} in flight): "
                   "latencies have no samples (--json reports them as 0)")
    return out


def _pools(cfg: RunConfig) -> str:
    """``1 prefill worker + 2 decode workers``."""
    return (f"{plural(cfg.disagg['num_prefill_workers'], 'prefill worker')} + "
            f"{plural(cfg.disagg['num_decode_workers'], 'decode worker')}")


def _workers(cfg: RunConfig) -> str:
    if cfg.disagg is not None:
        return _pools(cfg)
    n = cfg.cluster.num_workers
    ranks = f" x {cfg.cluster.dp_size} DP ranks" if cfg.cluster.dp_size > 1 else ""
    return f"{plural(n, 'worker')} at start" if cfg.planner else f"{plural(n, 'worker')}{ranks}"


def config_yaml(cfg: RunConfig) -> str:
    """The resolved config as YAML: ``dynosim simulate --config`` of it reruns the run."""
    return yaml.safe_dump(_jsonable(cfg.to_dict()), sort_keys=False, default_flow_style=False)


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
    count = plural(n, "request", fmt=",") if isinstance(n, int) else None
    n = cfg.cluster.num_workers
    workers = plural(n, "worker")
    if cfg.disagg is not None:
        workers = _pools(cfg)
    elif cfg.cluster.dp_size > 1:
        workers += f" x {cfg.cluster.dp_size} DP ranks"
    if cfg.planner is not None:      # the count changes during the run
        workers += (f" at start, {cfg.planner['kind']} planner (budget "
                    f"{plural(cfg.planner['max_gpu_budget'], 'GPU')})")
    blocks, timing = cfg.engine.num_gpu_blocks, cfg.timing.model
    if cfg.disagg is not None:      # per pool, when they differ (e.g. --prefill-tp/--decode-tp)
        d = cfg.disagg
        pb, db = (d[f"_{r}_resolved"]["num_gpu_blocks"] for r in ("prefill", "decode"))
        pt, dt = (d[f"{r}_timing_model"] or timing for r in ("prefill", "decode"))
        blocks = pb if pb == db else f"{pb:,} prefill / {db:,} decode"
        timing = pt if pt == dt else f"{pt} prefill / {dt} decode"
    name, kind = describe.get("name", "workload"), describe.get("kind", "?")
    what = [] if name == kind else [kind]     # not "synthetic (synthetic)"
    arrival = describe.get("arrival")
    if kind == "synthetic" and isinstance(arrival, dict) and arrival.get("type"):
        what.append(f"{arrival['type']} arrivals")
    head = f"{name} workload" if name == kind else name
    what += [count] if count else []
    return (f"{head} ({', '.join(what)}) on "
            f"{workers}, {cfg.router.mode} router, KV "
            f"{blocks} x {cfg.engine.block_size}-token blocks, timing {timing}")


def print_summary(summary: dict[str, Any], run_info: dict[str, Any], cfg: RunConfig,
                  out: IO[str]) -> None:
    t, lat = summary["totals"], summary["latency_ms"]
    w = out.write
    w(f"dynosim {_title(summary['workload'], cfg)}\n")
    w(f"  requests      arrived {t['num_requests']:,}   completed {t['completed_requests']:,}"
      f"   rejected {t['rejected_requests']:,}   in flight {t['in_flight_requests']:,}")
    if t.get("cut_off_ms") is not None:
        na = t.get("not_arrived_requests")   # None: the workload's size is not known
        w(f"   (cut off at {t['cut_off_ms'] / 1000:g} s; "
          + (f"{na:,} never arrived)" if na is not None else
             "requests still to arrive not counted: the workload has no fixed size)"))
    w("\n")
    if t.get("rejected_by_reason"):       # why, as --json's totals.rejected_by_reason
        w("  rejected      " + ", ".join(f"{n:,} {r}" for r, n in
                                         t["rejected_by_reason"].items()) + "\n")
    w(f"  {'latency (ms)':<12} {'mean':>9} {'p50':>9} {'p90':>9} {'p99':>9}\n")
    for label, key in (("TTFT", "ttft"), ("TPOT", "tpot"), ("ITL", "itl"),
                       ("E2E", "e2e_latency")):
        d = lat[key]
        # no sample (e.g. nothing completed, or only one-token outputs for TPOT/ITL): "-", not 0
        empty = not t["num_ttft_samples"] or (key in ("tpot", "itl")
                                              and not t["num_tpot_samples"])
        w(f"  {label:<12} " + " ".join("        -" if empty else f"{d[k]:>9.1f}"
                                       for k in ("mean", "median", "p90", "p99")) + "\n")
    w(f"  throughput    {t['request_throughput_rps']:.2f} req/s   "
      f"{t['output_throughput_tok_s']:,.0f} output tok/s   "
      f"{t['total_throughput_tok_s']:,.0f} total tok/s over {t['duration_ms'] / 1000:,.1f} s\n")
    w(f"  tokens        input {t['total_input_tokens']:,}   generated "
      f"{t['total_output_tokens']:,}   (completed requests)\n")
    w(f"  prefix reuse  {t['prefix_cache_reused_ratio']:.1%}   preemptions "
      f"{t['num_preemptions']:,}   GPU-hours {t['gpu_hours']:.2f}\n")
    if "prefill_worker_seconds" in t:     # disaggregated pools
        w(f"  pools         prefill {t['prefill_worker_seconds']:,.0f} worker-s "
          f"({t['prefill_gpu_hours']:.2f} GPU-h)   decode {t['decode_worker_seconds']:,.0f} "
          f"worker-s ({t['decode_gpu_hours']:.2f} GPU-h)\n")
    if "kv_host_tier" in summary:         # G2 host tier (--json: kv_host_tier)
        h = summary["kv_host_tier"]
        w(f"  host tier     host_hit_requests {h['host_hit_requests']:,}   host_reused_tokens "
          f"{h['host_reused_tokens']:,}\n"
          f"                host_stored_blocks {h['host_stored_blocks']:,} (offloads)   "
          f"host_loaded_blocks {h['host_loaded_blocks']:,}   host_evicted_blocks "
          f"{h['host_evicted_blocks']:,}\n")
    if "goodput" in summary:
        g = summary["goodput"]
        w(f"  goodput       {plural(g['good_requests'], 'request', fmt=',')} within SLA "
          f"({g['sla_attainment']:.1%})   {g['goodput_rps']:.2f} req/s\n")
    rate = run_info["sim_s_per_wall_s"]
    w(f"  wall time     {run_info['run_wall_s']:.2f} s (+{run_info['load_wall_s']:.2f} s load)"
      f"   {summary['simulated_s']:,.1f} sim-s   "
      f"{'-' if rate is None else f'{rate:,.0f}'} sim-s per wall-s\n")
