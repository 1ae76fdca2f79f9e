"""The options of ``dynosim simulate``, shared by the command line and the studies.

Flags are named after Dynamo's replay options and override a ``--config`` YAML; only flags
given on the command line override (argparse defaults are None). :func:`config_from_args`
turns parsed options into a validated :class:`sim.config.RunConfig`. The studies
(``dynosim.studies``) parse each point's flags with :func:`simulate_parser`, so a sweep row
means what ``dynosim simulate`` with the same flags means.

Errors: bad values raise :class:`sim.errors.InputError` located at ``file=CMDLINE`` and the
config field; :func:`from_cmdline` names the flag instead.
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Callable, NoReturn

from sim.config import BUNDLED_TRACES, TRACE_KINDS, RunConfig, load_config, parse_config
from sim.errors import InputError
from sim.schema import int_arg
from sim.wording import plural  # noqa: F401  (the commands' wording, imported from here)

CMDLINE = "command line"     # the "file" of values given as flags


PLOT_SUFFIXES = (".png", ".svg", ".pdf")


# flag -> (config field, argparse type, metavar, help). Only flags given on the command
# line override the config (argparse defaults are None).
FLAGS: dict[str, tuple[str, Callable[[str], Any], str | None, str]] = {
    "--num-workers": ("cluster.num_workers", int, "N", "workers at t=0 (default 1)"),
    "--gpus-per-worker": ("cluster.gpus_per_worker", int, "N",
                          "GPUs per worker (per DP rank with --dp-size), for GPU-hours; "
                          "the report's totals.gpus_per_dp_rank (totals.gpus_per_worker "
                          "is a whole worker's: dp_size x this) (default 1)"),
    "--dp-size": ("cluster.dp_size", int, "N",
                  "data-parallel ranks per worker, each with its own scheduler and KV pool; "
                  "the router picks (worker, rank) pairs; not with --planner or disaggregated pools "
                  "(default 1)"),
    "--router-mode": ("router.mode", str, "{round_robin,random,least_loaded,kv}",
                      "routing policy (kv_router = kv); default round_robin"),
    "--router-temperature": ("router.temperature", float, "T",
                             "kv router softmax temperature (default 0 = argmin)"),
    "--block-size": ("engine.block_size", int, "N",
                     "tokens per KV block; SGLang: page (default 64 / 1 / 32 for "
                     "vllm / sglang / trtllm)"),
    "--num-gpu-blocks": ("engine.num_gpu_blocks", int, "N",
                         "KV blocks per worker (default 16384; SGLang: pages = tokens)"),
    "--max-num-seqs": ("engine.max_num_seqs", int, "N", "running sequences per worker (default 256)"),
    "--max-num-batched-tokens": ("engine.max_num_batched_tokens", int, "N",
                                 "token budget per forward pass (default 8192)"),
    "--max-model-len": ("engine.max_model_len", int, "N",
                        "reject prompts this long (default: no limit)"),
    "--preemption-mode": ("engine.preemption_mode", str, "{lifo,fifo}", "preemption victim (default lifo)"),
    "--timing": ("timing.model", str, "SPEC", "polynomial | fixed:P,D | table:PATH (default polynomial)"),
    "--speedup-ratio": ("timing.speedup_ratio", float, "X", "divide every pass time by X (default 1)"),
    "--decode-speedup-ratio": ("timing.decode_speedup_ratio", float, "X",
                               "further divide decode time by X (default 1)"),
    "--seed": ("run.seed", int, "N", "seed of the run: router ties, synthetic workloads (default 0)"),
    "--max-sim-time-s": ("run.max_sim_time_s", float, "S",
                         "stop at this simulated time; later requests never arrive "
                       "(default: run until every request ends)"),
    "--sla-ttft-ms": ("sla.ttft_ms", float, "MS",
                      "SLA: TTFT limit, for goodput and the planner's target (planner "
                      "default 500)"),
    "--sla-itl-ms": ("sla.itl_ms", float, "MS",
                     "SLA: per-request TPOT (ITL) limit, for goodput and the planner's target "
                     "(planner default 50)"),
    "--sla-e2e-ms": ("sla.e2e_ms", float, "MS",
                     "SLA: end-to-end latency limit, for goodput (default: none)"),
    # Engine flavour (scheduler core; with --model/--gpu/--tp also the GPU table) and the
    # SGLang core's knobs, by Dynamo's names (sim/engines/sglang.py).
    "--backend": ("engine.backend", str, "{vllm,sglang,trtllm}",
                  "scheduler core; with --model/--gpu/--tp also the GPU table (default vllm)"),
    "--schedule-policy": ("engine.schedule_policy", str, "{fifo,lpm}",
                          "SGLang only: schedule policy (default fifo; fcfs, Dynamo's "
                          "deprecated alias, is accepted as fifo)"),
    "--max-prefill-tokens": ("engine.max_prefill_tokens", int, "N",
                             "SGLang only: prefill token budget per pass (default 16384)"),
    "--chunked-prefill-size": ("engine.chunked_prefill_size", int, "N",
                               "SGLang only: chunk size of a long prompt (default 8192)"),
    "--clip-max-new-tokens": ("engine.clip_max_new_tokens", int, "N",
                              "SGLang only: output tokens counted per request in admission "
                              "(default 4096)"),
    "--schedule-conservativeness": ("engine.schedule_conservativeness", float, "X",
                                    "SGLang only: scales the new-token ratio (default 1.0)"),
    # G2 host KV offload tier (vLLM; Dynamo's native_host_offload, sim/host_tier.py)
    "--num-host-blocks": ("engine.num_host_blocks", int, "N",
                          "G2 host KV tier: host blocks per DP rank (vLLM core, aggregated pools only; "
                          "default: no host tier; needs --kv-bytes-per-token)"),
    "--host-d2h-gbps": ("engine.host_d2h_gbps", float, "GBPS",
                        "host tier: device-to-host bandwidth, decimal GB/s, 0 = instant "
                        "(default 32)"),
    "--host-h2d-gbps": ("engine.host_h2d_gbps", float, "GBPS",
                        "host tier: host-to-device bandwidth, decimal GB/s, 0 = instant "
                        "(default 32)"),
    "--kv-bytes-per-token": ("engine.kv_cache_bytes_per_token", int, "B",
                             "KV cache bytes of one token: sizes host-tier copies and the "
                             "prefill->decode KV transfer (default unset = no transfer delay)"),
}


# Disaggregated prefill/decode pools (sim.disagg; Dynamo's flag names). Any of them turns
# the run disaggregated, which needs both pool sizes (from flags or the YAML's disagg).
DISAGG_FLAGS: dict[str, tuple[str, Callable[[str], Any], str | None, str]] = {
    "--num-prefill-workers": ("disagg.num_prefill_workers", int, "N",
                              "disaggregated: prefill workers, with --num-decode-workers (default: aggregated)"),
    "--num-decode-workers": ("disagg.num_decode_workers", int, "N",
                             "disaggregated: decode workers, with --num-prefill-workers (default: aggregated)"),
    "--kv-transfer-bandwidth": ("disagg.kv_transfer_bandwidth", float, "GBPS",
                                "disaggregated: prefill->decode KV bandwidth, GB/s; 0 = no "
                                "delay (default unset = no delay, as Dynamo)"),
    "--kv-transfer-timing-mode": ("disagg.kv_transfer_timing_mode", str,
                                  "{full_prompt,destination_missing}",
                                  "disaggregated: tokens charged per handoff (default "
                                  "full_prompt)"),
    "--prefill-router-mode": ("disagg.prefill_router_mode", str,
                              "{round_robin,random,least_loaded,kv}",
                              "disaggregated: prefill pool's router (default --router-mode)"),
    "--decode-router-mode": ("disagg.decode_router_mode", str,
                             "{round_robin,random,least_loaded,kv}",
                             "disaggregated: decode pool's router (default --router-mode)"),
    "--prefill-engine-args-json": ("disagg.prefill_engine", str, "JSON",
                                   "disaggregated: engine fields for prefill workers only, e.g. '{\"max_num_batched_tokens\": 16384}' (default: the --block-size ... engine flags)"),
    "--decode-engine-args-json": ("disagg.decode_engine", str, "JSON",
                                  "disaggregated: engine fields for decode workers only (default: the engine flags)"),
}


FLAGS.update(DISAGG_FLAGS)


#: Old spellings kept for one release (0.1.x), with a note on stderr; remove in 0.2.
DEPRECATED_FLAGS = {"--ttft-sla-ms": "--sla-ttft-ms", "--itl-sla-ms": "--sla-itl-ms"}


#: Planner flags -> planner section keys (``--planner`` itself sets ``planner.kind``).
PLANNER_FLAGS = {"--planner-predictor": "load_predictor",
                 "--max-gpu-budget": "max_gpu_budget", "--min-endpoint": "min_endpoint"}


SWITCHES = {"--exact-steps": ("run.exact_steps", True,
                               "step pass by pass, the slow reference (default: bulk decode)"),
            "--no-prefix-caching": ("engine.enable_prefix_caching", False,
                                    "disable prefix caching (default: on)"),
            "--no-chunked-prefill": ("engine.enable_chunked_prefill", False,
                                     "disable chunked prefill (default: on)")}


WORKLOAD_FLAGS = {"workload.path": "--trace", "workload.kind": "--trace-format",
                  "workload.trace_block_size": "--trace-block-size",
                  "workload.arrival_speedup_ratio": "--arrival-speedup-ratio"}


FLAG_OF = {**{v[0]: k for k, v in FLAGS.items()}, **{v[0]: k for k, v in SWITCHES.items()},
           **WORKLOAD_FLAGS, **{f"planner.{v}": k for k, v in PLANNER_FLAGS.items()},
           "planner.kind": "--planner",
           "planner.load_adjustment_interval_seconds": "--planner-interval",
           "planner.throughput_adjustment_interval_seconds": "--planner-interval"}


class _HelpFormatter(argparse.HelpFormatter):
    """Every option shows its default: ``(default: X)`` is appended when the help text does
    not already say it (options whose default is "not given" say what that means)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text.lower() or action.default in (None, argparse.SUPPRESS) \
                or not action.option_strings:
            return text
        shown = "off" if action.default is False else "%(default)s"
        return f"{text} (default: {shown})"


class ScriptHelpFormatter(argparse.RawDescriptionHelpFormatter, _HelpFormatter):
    """For ``scripts/*.py``: ``--help`` shows the whole module docstring as written (its
    usage lines and paragraphs, not re-wrapped or cut at the first line) and every option's
    default (:class:`_HelpFormatter`)."""


#: What argparse must take as a (negative) value, not as an option: argparse's own rule
#: (``-1``, ``-.5``) misses exponents, infinities and comma lists, so ``--num-workers -1e1``
#: or ``--rungs -600,1200`` would fail with "expected one argument" instead of the flag's
#: own error. No flag of ours looks like a number, so every such string is a value.
_NUMBER = r"(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf|infinity|nan)"
NEGATIVE_NUMBER = re.compile(rf"^-{_NUMBER}(?:,\s*[-+]?{_NUMBER})*$", re.IGNORECASE)


class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line like every other error (still exit 2),
    every option's help shows its default, and a negative number in any form (``-1e1``,
    ``-inf``) is a flag's value, so the flag's own range check reports it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = NEGATIVE_NUMBER   # argparse's (private) hook

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"dynosim: error: {message} (see '{self.prog} --help')\n")


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


class _Deprecated(argparse.Action):
    """An old flag spelling: stores into the new flag's destination, with a note printed
    once the input is known to be good (a bad run's stderr stays one line)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        new = DEPRECATED_FLAGS[option_string]
        notes = getattr(namespace, "deprecation_notes", None) or []
        notes.append(f"dynosim: note: {option_string} is deprecated (one SLA for goodput and "
                     f"the planner); use {new}")
        namespace.deprecation_notes = notes
        # the spelling given, so an error about the value names it (from_cmdline)
        namespace.flag_spelled = {**(getattr(namespace, "flag_spelled", None) or {}),
                                  new: option_string}
        setattr(namespace, self.dest, values)


def from_cmdline(exc: InputError, spelled: dict[str, str] | None = None) -> str:
    """Name the flag, not the config field, when a flag supplied the bad value; ``spelled``
    (new flag -> the deprecated spelling the user typed; dotted key -> ``--set KEY`` for
    the ``--set`` overrides, whose values are located in "overrides") names the flag as
    typed."""
    if exc.file == "overrides" and exc.field in (spelled or {}):
        # a --set value refused after the config loaded (an env's request cap): the flag
        return InputError(exc.detail, field=spelled[exc.field]).format()
    child = next((f for k, f in (spelled or {}).items() if exc.file == "overrides"
                  and exc.field and k.startswith(exc.field + ".")), None)
    if child is not None:       # refused as a section (env.planner) set by --set env.planner.X
        return InputError(exc.detail, field=child).format()
    if exc.file == CMDLINE:
        field = exc.field or ""
        flag = field if field.startswith("--") else \
            FLAG_OF.get(field) or FLAG_OF.get(field.rpartition(".")[0])   # (JSON-valued flags)
        flag = (spelled or {}).get(flag, flag)
        return f"argument {flag}: {exc.detail}" if flag else \
            f"{CMDLINE}, field '{exc.field}': {exc.detail}"
    return str(exc)


def _ranged(flag: str) -> Callable[[str], Any]:
    """argparse type of a flag that maps to no config field: parsed and checked against
    its range in sim.schema."""
    from sim.schema import FLAG_RANGES, arg_type
    return arg_type(*FLAG_RANGES[flag])


def float_or_nan(x: Any) -> float:
    """``x`` as a float, NaN when it is none (``None``, a non-numeric string): a figure a
    result may lack (RLlib's metrics before the first episode, a sweep's missing latency)."""
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def positive_int(text: str) -> int:
    """A count flag (steps, episodes, trials, repeats; ``1e6`` allowed: ``2.5`` and ``inf``
    not), in ``sim.schema.COUNT``; ``argparse.ArgumentTypeError`` otherwise."""
    n = int_arg(text)
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    from sim.schema import COUNT
    msg = COUNT.violation(n)
    if msg:
        raise argparse.ArgumentTypeError(msg)
    return n


def _load_run_config(args: argparse.Namespace) -> tuple[RunConfig, Any]:
    """``--config``: a run YAML, or an environment scenario (a run YAML plus ``env:``, see
    ``dynosim_gym.config``). Returns the run config and, for a scenario, its
    :class:`~dynosim_gym.config.EnvConfig` (else None): the episode's load is drawn by
    :func:`_scenario_episode` once the flags are applied (``--seed`` picks the episode)."""
    if not args.config:
        return parse_config({}), None
    args.config = _config_path(args.config)
    from sim.config import read_yaml
    data, where = read_yaml(args.config)
    if not (isinstance(data, dict) and "env" in data):
        kv = getattr(args, "kv_bytes_per_token", None)
        d, e = (data.get("disagg"), data.get("engine")) if isinstance(data, dict) else (0, 0)
        if kv is not None and isinstance(d, dict) and isinstance(e, dict) \
                and "kv_bytes_per_token" in d and "kv_cache_bytes_per_token" in e:
            # --kv-bytes-per-token is the run's one KV size per token (README): it replaces
            # both YAML sizes before their conflict check, so the flag settles a conflict
            e["kv_cache_bytes_per_token"] = d["kv_bytes_per_token"] = kv
            return parse_config(data, source=str(args.config), where=where,
                                base_dir=Path(args.config).resolve().parent), None
        return load_config(args.config), None
    try:
        from dynosim_gym.config import load_env_config
    except ImportError:
        raise InputError("has an 'env' section, which needs the dynosim_gym package",
                         file=args.config, field="env") from None
    ecfg = load_env_config(args.config)
    return ecfg.sim, ecfg


def _config_path(name: str) -> str:
    """``--config``: a YAML path, or the name of a bundled config (``envs_configs/NAME.yaml``,
    as ``dynosim evaluate --config`` takes; an unknown name lists them with a did-you-mean)."""
    if Path(name).exists():           # a file, or a directory read_yaml names as one
        return name
    try:
        from dynosim_gym.config import resolve_config_path
    except ImportError:               # sim installed without dynosim_gym: paths only
        return name
    return str(resolve_config_path(name))


def _scenario_episode(args: argparse.Namespace, ecfg: Any, cfg: RunConfig) -> RunConfig:
    """An environment scenario's run: ``cfg`` (the scenario's run config with the flags
    applied) with the ``env:`` section ignored (a note says so). A synthetic scenario runs
    the load of the episode ``env.reset(seed=run.seed)`` draws (its scenario, rate curve and
    workload family, over one episode); arrival times and prompts are sampled from
    ``run.seed``, so the requests are not the environment's own. A trace family
    (``mooncake_mod``, ``azure_mod``) keeps the rate curve with the config's synthetic
    prompts (the note says so); a trace-window episode has no run config (an InputError).
    A trace config runs its whole trace; the note says the environment's windows are not
    expressed, so ``run.seed`` picks none."""
    stem = Path(args.config).stem
    extra = ""
    if cfg.workload.get("kind") == "synthetic":     # the env draws each episode's load
        from dynosim_gym.episodes import EpisodeFactory, episode_seed
        from dynosim_gym.scenarios import ROUTING_FAMILIES
        seed = cfg.run.seed
        factory = EpisodeFactory(dataclasses.replace(ecfg, sim=cfg))
        _, desc = factory.build(episode_seed(seed))
        scenario, reset = desc["scenario"], f"env.reset(seed={seed})"
        if "arrival" not in desc:                   # mooncake_window, azure_window
            raise InputError(f"the episode of {reset} is a {scenario} episode (a window of "
                             f"the {desc['trace']} trace from {desc['window_start_s']:g} s), "
                             "which a run config cannot express; pick another --seed",
                             **({"file": CMDLINE, "field": "--seed"} if args.seed is not None
                                else {"file": args.config, "field": "run.seed"}))
        block = {**cfg.workload, **ROUTING_FAMILIES.get(scenario, {}).get("workload", {})}
        block.pop("num_requests", None)
        # named after the scenario and reset seed (the summary's headline, the JSON's workload)
        label = f"{stem}: {scenario} load of {reset}"
        if "first_row" in desc:      # a trace family: the env replays trace rows
            label = f"{stem}: {scenario} rate curve of {reset}, synthetic prompts"
            cap = desc.get("isl_cap_tokens")
            extra = (f"; the environment replays trace rows from row {desc['first_row']:,}"
                     + (f" (prompts capped at {cap:,} tokens)" if cap else "")
                     + " at this rate, simulate draws the config's synthetic prompts")
        data = cfg.to_dict()
        data["workload"] = {**block, "arrival": desc["arrival"],
                            "duration_s": factory.duration_s, "name": label}
        cfg = parse_config(data, source=cfg.source, where=cfg.where)
        what = (f"the load of {reset} ({scenario}, {desc['split']} split, "
                f"{factory.duration_s:g} s) on its cluster with arrivals sampled from "
                "run.seed")
    else:                                           # a trace config: the env pins windows
        span = ecfg.env.interval_s * ecfg.env.episode_steps
        what = (f"its whole trace on its cluster (the environment replays one {span:g} s "
                "window of it per episode, placed by env.reset's seed, which a run config "
                "cannot express: run.seed does not pick a window here)")
    note(args, f"note: {args.config}: an environment scenario; running {what}, "
                f"ignoring its 'env:' section{extra}")
    return cfg


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The YAML (if any) with every given flag applied on top, resolved (every default a
    run uses written out, see :meth:`RunConfig.resolved`)."""
    cfg, scenario = _load_run_config(args)
    over: dict[str, Any] = {}
    for flag, dotted in [(f, v[0]) for f, v in FLAGS.items()] + \
            [(f, v[0]) for f, v in SWITCHES.items()]:
        value = getattr(args, _dest(flag))
        if value is not None:
            over[dotted] = value
    _disagg_overrides(args, cfg, over)
    if args.kv_bytes_per_token is not None and (
            cfg.disagg is not None or "disagg.num_prefill_workers" in over):
        # s7-disagg: the flag is the run's one KV size per token; it overrides a YAML
        # disagg.kv_bytes_per_token too (the transfer's own field) instead of losing to it.
        over["disagg.kv_bytes_per_token"] = args.kv_bytes_per_token
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
    # --backend alone selects the scheduler core; with --model/--gpu/--tp also the table.
    gpu_flags = {"--model": args.model, "--gpu": args.gpu, "--backend": args.backend,
                 "--tp": args.tp}
    if any(gpu_flags[f] is not None for f in ("--model", "--gpu", "--tp")):
        missing = [f for f, v in gpu_flags.items() if v is None]
        if missing:
            raise InputError(f"--model, --gpu, --backend and --tp go together; missing "
                             f"{', '.join(missing)}", file=CMDLINE, field="timing.model")
        from sim.gpu_timing import load_gpu_timing
        table = load_gpu_timing(args.model, args.gpu, args.backend, args.tp)
        over["timing.model"] = f"gpu:{args.model}:{args.gpu}:{args.backend}:{args.tp}"
        # The table knows the worker's KV capacity and GPU count; explicit flags still win.
        over.setdefault("engine.num_gpu_blocks", table.num_gpu_blocks)
        over.setdefault("engine.block_size", table.block_size)
        over.setdefault("cluster.gpus_per_worker", table.gpus_per_worker)
    _role_tp_overrides(args, cfg, over)
    if args.startup_time is not None:
        over["cluster.startup_time_s"] = args.startup_time
    if args.initial_workers is not None:
        over["cluster.num_workers"] = args.initial_workers
    if args.planner is not None:
        over["planner.kind"] = args.planner
    has_planner = args.planner is not None or cfg.planner is not None
    json_keys: dict[str, tuple] = {}    # planner.<knob> / sla.* -> (JSON key, file, line)
    if args.planner_config_json is not None:
        if not has_planner:
            raise InputError("--planner-config-json needs --planner load|throughput",
                             file=CMDLINE, field="planner")
        json_over, json_keys = _planner_json(args.planner_config_json)
        over.update(json_over)
    for flag, key in [*PLANNER_FLAGS.items(), ("--planner-interval", None)]:
        value = getattr(args, _dest(flag))
        if value is not None:
            if not has_planner:
                raise InputError(f"{flag} needs --planner load|throughput", file=CMDLINE,
                                 field="planner")
            if key is None:      # the interval of the planner that runs
                kind = args.planner or cfg.planner["kind"]
                key = ("load_adjustment_interval_seconds" if kind == "load"
                       else "throughput_adjustment_interval_seconds")
            over[f"planner.{key}"] = value
    from_json = {k: key for k, key in json_keys.items()
                 if over.get(k) is json_over[k]}          # not replaced by a flag
    try:
        if over:
            cfg = cfg.with_overrides(over, source=CMDLINE)
        if scenario is not None:       # flags first: --seed picks the episode
            cfg = _scenario_episode(args, scenario, cfg)
        if cfg.workload is None:
            raise InputError("no workload: give --trace PATH or --config YAML with a workload")
        return cfg.resolved()
    except InputError as exc:
        # a value from --planner-config-json is named by its JSON key, not by the flag or
        # config field that shares its name (planner.min_endpoint is also --min-endpoint)
        if exc.file == CMDLINE and exc.field in from_json:
            key, file, line = from_json[exc.field]
            raise InputError(f"key '{key}': {exc.detail}", file=file, line=line,
                             field="--planner-config-json") from None
        raise


def _disagg_overrides(args: argparse.Namespace, cfg: RunConfig, over: dict[str, Any]) -> None:
    """Disaggregated flags: engine JSON parsed; pool sizes required; not with --num-workers."""
    given = [f for f in DISAGG_FLAGS if getattr(args, _dest(f)) is not None]
    if not given:
        return
    if args.num_workers is not None or args.initial_workers is not None:
        flag = "--num-workers" if args.num_workers is not None else "--initial-workers"
        pools = [f for f in ("--num-prefill-workers", "--num-decode-workers") if f in given]
        if not pools and cfg.disagg is None:      # a pool-only option on an aggregated run
            raise InputError(f"applies to disaggregated pools only (--num-prefill-workers, "
                             f"--num-decode-workers); {flag} makes the run aggregated",
                             file=CMDLINE, field=given[0])
        raise InputError(f"aggregated workers do not mix with disaggregated pools ({given[0]});"
                         " size them with --num-prefill-workers and --num-decode-workers",
                         file=CMDLINE, field=flag)
    if cfg.disagg is None:
        for flag in ("--num-prefill-workers", "--num-decode-workers"):
            if getattr(args, _dest(flag)) is None:
                raise InputError(f"{given[0]} makes the run disaggregated, which needs "
                                 "--num-prefill-workers and --num-decode-workers",
                                 file=CMDLINE, field=flag)
    for flag in ("--prefill-engine-args-json", "--decode-engine-args-json"):
        text = getattr(args, _dest(flag))
        if text is None:
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not a JSON object: {exc.msg} (char {exc.pos})", file=CMDLINE,
                             field=flag) from None
        if not isinstance(data, dict):
            raise InputError(f"expected a JSON object of engine fields, got "
                             f"{type(data).__name__}", file=CMDLINE, field=flag)
        over[DISAGG_FLAGS[flag][0]] = data


def _role_tp_overrides(args: argparse.Namespace, cfg: RunConfig, over: dict[str, Any]) -> None:
    """``--prefill-tp``/``--decode-tp``: a disaggregated pool on another TP's GPU table
    (the --model/--gpu/--backend table at that TP): the pool's timing, KV blocks per worker
    (unless --num-gpu-blocks or the role's engine JSON sets them) and GPUs per worker."""
    for role in ("prefill", "decode"):
        flag = f"--{role}-tp"
        tp = getattr(args, f"{role}_tp")
        if tp is None:
            continue
        if args.model is None:
            raise InputError("needs --model, --gpu, --backend and --tp (the GPU table)",
                             file=CMDLINE, field=flag)
        if cfg.disagg is None and "disagg.num_prefill_workers" not in over:
            raise InputError("applies to disaggregated pools only (--num-prefill-workers, "
                             "--num-decode-workers)", file=CMDLINE, field=flag)
        from sim.gpu_timing import load_gpu_timing
        table = load_gpu_timing(args.model, args.gpu, args.backend, tp)
        over[f"disagg.{role}_timing_model"] = f"gpu:{args.model}:{args.gpu}:{args.backend}:{tp}"
        over[f"disagg.{role}_gpus_per_worker"] = table.gpus_per_worker
        key = f"disagg.{role}_engine"
        engine = dict(over.get(key) or (cfg.disagg or {}).get(f"{role}_engine") or {})
        if "num_gpu_blocks" not in engine and args.num_gpu_blocks is None:
            over[key] = {**engine, "num_gpu_blocks": table.num_gpu_blocks}


def _planner_json(text: str) -> tuple[dict[str, Any], dict[str, tuple]]:
    """``--planner-config-json`` (inline JSON, or a JSON file as Dynamo takes) as config
    overrides: ``planner.<knob>``, and ``sla.ttft_ms``/``sla.itl_ms`` for the SLA targets
    (one SLA for goodput and planner), with each override's JSON key, file and line (for
    errors: a JSON file's errors name the file and the key's line, inline JSON's the
    command line). Dynamo's aliases are accepted; an unknown key or one Dynamo has but
    dynosim does not simulate is an error naming the key."""
    from sim.planner import ALIASES, NOT_SIMULATED, PlannerConfig
    src = text
    if not text.lstrip().startswith("{") and Path(text).is_dir():
        raise InputError(f"{text} is a directory, not a JSON file", file=CMDLINE,
                         field="--planner-config-json")
    if not text.lstrip().startswith("{") and Path(text).is_file():
        src = Path(text).read_text(encoding="utf-8")
    file = CMDLINE if src is text else text

    def line_of(key: str) -> int | None:    # the line of "key": in a JSON file (first one)
        at = src.find(json.dumps(key, ensure_ascii=False)) if src is not text else -1
        return src.count("\n", 0, at) + 1 if at >= 0 else None
    try:
        data = json.loads(src)
    except json.JSONDecodeError as exc:
        if src is not text:          # a JSON file: its path, line and column
            raise InputError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=text,
                             line=exc.lineno, field="--planner-config-json") from None
        looks_like_path = src is text and not text.lstrip().startswith(("{", "[", '"')) \
            and (text.endswith(".json") or "/" in text)
        detail = (f"no such JSON file: {text}" if looks_like_path else
                  f"not a JSON object or JSON file: {exc.msg} (char {exc.pos})")
        raise InputError(detail, file=CMDLINE, field="--planner-config-json") from None
    if not isinstance(data, dict):
        raise InputError(f"expected a JSON object of planner knobs, got {type(data).__name__}",
                         file=file, field="--planner-config-json")
    names = [f.name for f in dataclasses.fields(PlannerConfig)]
    over: dict[str, Any] = {}
    keys: dict[str, str] = {}
    for key, value in data.items():
        name = ALIASES.get(key, key)
        if name in ("ttft_ms", "itl_ms") or name in names:
            dotted = f"sla.{name}" if name in ("ttft_ms", "itl_ms") else f"planner.{name}"
            over[dotted] = value
            keys[dotted] = (key, file, line_of(key))
        else:
            hint = difflib.get_close_matches(str(key), names, n=1)
            detail = (f"Dynamo planner key '{key}' has no simulated counterpart in dynosim"
                      if key in NOT_SIMULATED else f"unknown planner key '{key}'" +
                      (f" (did you mean '{hint[0]}'?)" if hint else ""))
            raise InputError(detail, file=file, line=line_of(key),
                             field="--planner-config-json")
    return over, keys


def _infer_format(trace: str | None) -> str | None:
    """azure for .csv files, mooncake for .jsonl/.json, else unknown (bundled: by file)."""
    if trace is None:
        return None
    name = trace.lower()
    if name.startswith("bundled:"):
        name = BUNDLED_TRACES.get(trace[len("bundled:"):], "").lower()
    return "azure" if name.endswith(".csv") else \
        "mooncake" if name.endswith((".jsonl", ".json")) else None


_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "number", float: "number",
               bool: "boolean", type(None): "null"}


def read_json(path: str | Path, expect: type | None = None) -> Any:
    """The value of the JSON file ``path`` (a result file a script reads back). Errors, as
    :class:`~sim.errors.InputError` naming the file: not valid JSON (its line and column),
    not UTF-8 (the byte offset), not of type ``expect`` (e.g. ``dict``) at the top level. A
    missing or unreadable file raises :class:`OSError` (``dynosim.cli.guarded`` prints it as
    one line too)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                         file=str(p)) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg} (column {exc.colno})", file=str(p),
                         line=exc.lineno) from None
    if expect is not None and not isinstance(data, expect):
        raise InputError(f"expected a JSON {_JSON_NAMES.get(expect, expect.__name__)}, got "
                         f"{_JSON_NAMES.get(type(data), type(data).__name__)}", file=str(p))
    return data


def json_field(data: Any, key: str, expect: type, path: str | Path) -> Any:
    """``data``'s value at the dotted ``key`` of the result file ``path`` (read by
    :func:`read_json`), of type ``expect`` (``float``: any JSON number; ``int``: a whole
    one). Errors, as :class:`~sim.errors.InputError` naming the file and the key: a missing
    key, a value (or an enclosing value) of another type."""
    def name(x: Any) -> str:
        return "number" if isinstance(x, (int, float)) and not isinstance(x, bool) else \
            _JSON_NAMES.get(type(x), type(x).__name__)
    x = data
    parts = key.split(".")
    for i, k in enumerate(parts):
        if not isinstance(x, dict):
            raise InputError(f"expected a JSON object, got {name(x)}", file=str(path),
                             field=".".join(parts[:i]) or None)
        if k not in x:
            raise InputError("missing key", file=str(path), field=".".join(parts[:i + 1]))
        x = x[k]
    number = isinstance(x, (int, float)) and not isinstance(x, bool)
    ok = (number if expect is float else number and float(x).is_integer() if expect is int
          else isinstance(x, expect))
    if not ok:
        want = {float: "number", int: "whole number"}.get(expect) or _JSON_NAMES.get(
            expect, expect.__name__)
        raise InputError(f"expected a JSON {want}, got {name(x)} {json.dumps(x)[:40]}",
                         file=str(path), field=key)
    return x


def check_output_path(path: str | None, flag: str, suffixes: tuple[str, ...] = ()) -> None:
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


SIMULATE_HELP = {"help": "replay a trace or synthetic workload",
                 "description": "Replay a workload through a simulated cluster. Flags "
                       "override --config; defaults are Dynamo's."}


def add_simulate_arguments(s: argparse.ArgumentParser) -> None:
    """The options of ``dynosim simulate`` on parser ``s`` (the studies parse each point's
    flags with them too, through :func:`simulate_parser`)."""
    w = s.add_argument_group("workload")
    w.add_argument("--config", metavar="YAML",
                   help="run config, or an env scenario: a path, or a bundled config's "
                   "name as evaluate takes (envs_configs/NAME.yaml, e.g. disagg_2p2d; its "
                   "env: section is ignored: a synthetic scenario replays the rate curve of the episode "
                   "env.reset(seed=SEED) draws, with arrival times and prompts sampled from "
                   "the run seed, not the environment's own requests; a trace scenario runs "
                   "its whole trace) (default: none, so Dynamo's defaults and the flags)")
    w.add_argument("--trace", metavar="PATH",
                   help="trace file (.jsonl, .csv, optionally .gz), or "
                   "bundled:mooncake_conversation / bundled:azure_conversation (default: the "
                   "config's workload)")
    w.add_argument("--trace-format", metavar="{mooncake,azure}",
                   help="default: from the config, else .csv = azure, otherwise mooncake")
    w.add_argument("--trace-block-size", type=int_arg, metavar="N",
                   help="tokens per hash_id (default 512)")
    w.add_argument("--arrival-speedup-ratio", type=float, metavar="X",
                   help="divide trace inter-arrival times by X (default 1)")
    c = s.add_argument_group("cluster, engine, router, timing, run")
    for flag, (_, typ, metavar, help_) in FLAGS.items():
        c.add_argument(flag, type=int_arg if typ is int else typ, metavar=metavar, help=help_)
    for flag, (_, const, help_) in SWITCHES.items():
        c.add_argument(flag, action="store_const", const=const, default=None, help=help_)
    g = s.add_argument_group("GPU timing from measured data (see `dynosim models`)")
    g.add_argument("--model", metavar="MODEL",
                   help="e.g. Qwen/Qwen3-32B (default: none, the --timing model)")
    g.add_argument("--gpu", metavar="GPU", help="e.g. h200_sxm (default: none)")
    g.add_argument("--tp", type=_ranged("--tp"), metavar="N",
                   help="tensor parallel size (default: none)")
    for role in ("prefill", "decode"):
        g.add_argument(f"--{role}-tp", type=_ranged("--tp"), metavar="N",
                       help=f"disaggregated: TP of {role} workers, their GPU table, KV blocks "
                       "and GPUs (default --tp)")
    pl = s.add_argument_group("autoscaling planner (Dynamo-style; aggregated or disaggregated pools)")
    pl.add_argument("--planner", choices=("load", "throughput"),
                    help="load: reactive on forward-pass metrics; throughput: predictive "
                    "(default: none, or the config's planner section); targets: --sla-*")
    pl.add_argument("--planner-interval", type=float, metavar="S",
                    help="seconds between decisions (default 5 load / 180 throughput)")
    pl.add_argument("--planner-config-json", metavar="JSON",
                    help="planner knobs as a JSON object (or a JSON file) with Dynamo's "
                    "PlannerConfig names, e.g. '{\"optimization_target\": \"sla\", "
                    "\"load_scaling_down_sensitivity\": 20}'; its ttft_ms/itl_ms set the "
                    "run's SLA (default: none)")
    pl.add_argument("--planner-predictor", metavar="NAME",
                    help="throughput forecasts: constant | moving_average | kalman | arima "
                    "(default arima)")
    pl.add_argument("--max-gpu-budget", type=positive_int, metavar="N",
                    help="GPUs the planner may use (default 8)")
    pl.add_argument("--min-endpoint", type=positive_int, metavar="N",
                    help="fewest workers the planner keeps (default 1)")
    for old, new in DEPRECATED_FLAGS.items():
        pl.add_argument(old, type=float, metavar="MS", dest=_dest(new), action=_Deprecated,
                        help=f"deprecated spelling of {new} (default: none)")
    pl.add_argument("--startup-time", type=_ranged("--startup-time"), metavar="S",
                    help="seconds a new worker spends starting, cluster.startup_time_s "
                    "(default 0)")
    pl.add_argument("--initial-workers", type=_ranged("--initial-workers"), metavar="N",
                    help="workers at t=0, same as --num-workers (default 1)")
    o = s.add_argument_group("output")
    o.add_argument("--json", action="store_true",
                   help="print the summary as JSON on stdout (wall-clock data under run_info)")
    o.add_argument("--report-jsonl", metavar="PATH",
                   help="write one record per request (default: none)")
    o.add_argument("--plot", metavar="PATH.png",
                   help="write TTFT/ITL/E2E CDFs as one figure (default: none)")
    o.add_argument("--quiet", action="store_true",
                   help="no progress bar and no notes on stderr")
    o.add_argument("--print-config", action="store_true",
                   help="print the resolved run config as YAML (every default written out; "
                   "feed it back with --config to rerun) and exit without running")



def simulate_parser() -> Parser:
    """A stand-alone parser of ``dynosim simulate``'s options (what the studies use)."""
    p = Parser(prog="dynosim simulate", description=SIMULATE_HELP["description"])
    add_simulate_arguments(p)
    return p


#: Directories this command created for its outputs (``--out`` and the like), outermost
#: first. :func:`dynosim.cli.main` removes those still empty when the command fails, so an
#: error before the first result (a bad flag found late, a closed pipe, Ctrl-C) leaves no
#: empty directory behind.
_CREATED_DIRS: list[Path] = []


def make_out_dir(path: str | Path) -> Path:
    """``mkdir -p path``, remembering the directories it creates (see ``_CREATED_DIRS``).
    OSError as ``Path.mkdir`` raises it."""
    p = Path(path)
    missing, q = [], p
    while not q.exists() and not q.is_symlink() and q != q.parent:
        missing.append(q)
        q = q.parent
    p.mkdir(parents=True, exist_ok=True)
    _CREATED_DIRS.extend(reversed(missing))
    return p


def forget_created_dirs() -> None:
    """Start a command with nothing to remove (a library call may have created some)."""
    _CREATED_DIRS.clear()


def remove_empty_created_dirs() -> None:
    """Remove the directories :func:`make_out_dir` created that are still empty, deepest
    first (one holding anything, e.g. a first result, is kept), and forget them all."""
    for d in reversed(_CREATED_DIRS):
        try:
            d.rmdir()
        except OSError:                 # not empty, or already gone
            pass
    _CREATED_DIRS.clear()


def note(args: argparse.Namespace, text: str) -> None:
    """A note on stderr, unless ``--quiet``."""
    if not args.quiet:
        print(f"dynosim: {text}", file=sys.stderr)


# -- wording of the commands' text output ---------------------------------------------------

def env_script(name: str) -> str | None:
    """The console script ``name`` of this Python's environment as a command that runs as
    written here (``.venv/bin/dynosim`` after the README's ``make install``: relative to the
    working directory when under it), else None."""
    import os
    script = Path(sys.executable).parent / (f"{name}.exe" if os.name == "nt" else name)
    if not script.is_file():
        return None
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)
