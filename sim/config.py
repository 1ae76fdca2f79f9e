"""Run configuration: validated dataclasses with Dynamo's defaults, loaded from YAML.

A run is one YAML document (every section optional except ``workload``)::

    workload: {kind: mooncake, path: bundled:mooncake_conversation, trace_block_size: 512}
    cluster:  {num_workers: 8}
    engine:   {block_size: 512}
    router:   {mode: kv}

Defaults are those of Dynamo's offline replay (ai-dynamo 1.6.1, vLLM mocker flavour), so
an empty section means "what Dynamo would do". Validation happens once, at load time, and
every error is an :class:`~sim.errors.InputError` naming the file, the YAML line and the
dotted field (``engine.block_size``), because a typo should fail before a long run starts.
The ``workload`` block is checked by :func:`sim.workloads.from_config` when the simulation
is built (that is where the trace is parsed); its errors are located the same way.
"""
from __future__ import annotations

import copy
import difflib
import math
import re
import types
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from numbers import Real
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Union, get_args, get_origin, get_type_hints

import numpy as np
import yaml

from .engine import BACKENDS, DEFAULT_BLOCK_SIZE, SGLANG_KNOBS, VLLM_KNOBS, EngineConfig
from .errors import InputError
from .router import ROUTER_MODES, KvRouterConfig
from .disagg import TRANSFER_TIMING_MODES, DisaggConfig
from .schema import (BLOCK_SIZE, DP_RANKS, GBPS, GPUS, KV_BYTES, NUM_GPU_BLOCKS, PLANNER_FIELDS,
                     FRACTION, RATIO, SEED, SEQS, TIME_MS_POS, TIME_S, TIME_S_POS, TOKENS, WEIGHT, WORKERS)
from .simulator import ClusterConfig, Simulation
from .timing_spec import make_timing
from .workloads import from_config

DATA_DIR = Path(__file__).parent / "data"
#: ``path: bundled:NAME`` -> file under ``sim/data`` (so demos run without ../shared).
BUNDLED_TRACES = {
    "mooncake_conversation": "conversation_trace.jsonl",
    "azure_conversation": "AzureLLMInferenceTrace_conv.csv",
}
ROUTER_ALIASES = {"kv_router": "kv"}      # Dynamo's spelling
TRACE_KINDS = ("mooncake", "azure")

Where = tuple[str | None, int | None]     # (file or source label, 1-based line)


def _opt(default: Any, **rules: Any) -> Any:
    """A dataclass field whose metadata carries its validation rules (``range``: a
    :class:`sim.schema.Range`; ``choices``)."""
    return field(default=default, metadata=rules)


# -- sections (defaults = Dynamo's; units in the comments) -----------------------------------

@dataclass
class ClusterSection:
    num_workers: int = _opt(1, range=WORKERS)  # aggregated workers at t = 0 (Dynamo: 1)
    gpus_per_worker: int = _opt(1, range=GPUS)  # GPUs per DP rank (TP), for GPU-hours
    startup_time_s: float = _opt(0.0, range=TIME_S)  # s a worker added mid-run spends starting
    # data-parallel ranks per worker, each its own scheduler and KV pool (Dynamo's dp_size);
    # GPU-hours count ranks x gpus_per_worker
    dp_size: int = _opt(1, range=DP_RANKS)


@dataclass
class EngineSection:
    backend: str = _opt("vllm", choices=BACKENDS)   # scheduler core: vllm | sglang | trtllm
    # tokens per KV block (SGLang: page); not given = the backend's (vllm 64, sglang 1, trtllm 32)
    block_size: int = _opt(64, range=BLOCK_SIZE)
    num_gpu_blocks: int = _opt(16384, range=NUM_GPU_BLOCKS)  # KV blocks per worker (SGLang: tokens)
    max_num_seqs: int = _opt(256, range=SEQS)  # running sequences per worker
    max_num_batched_tokens: int = _opt(8192, range=TOKENS)  # token budget of one forward pass
    max_model_len: int | None = _opt(None, range=TOKENS)  # reject prompts this long; null = none
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    preemption_mode: str = _opt("lifo", choices=("lifo", "fifo"))   # victim: newest | oldest
    # SGLang core only (Dynamo's names and defaults); an error with another backend
    schedule_policy: str = _opt("fifo", choices=("fifo", "fcfs", "lpm"))   # fcfs = fifo
    max_prefill_tokens: int = _opt(16384, range=TOKENS)      # prompt tokens admitted per pass
    chunked_prefill_size: int = _opt(8192, range=TOKENS)     # prompt tokens per prefill chunk
    clip_max_new_tokens: int = _opt(4096, range=TOKENS)      # cap of a request's output reserve
    schedule_conservativeness: float = _opt(1.0, range=RATIO)   # scales the new-token ratio
    # G2 host KV offload tier (vLLM only; Dynamo's native_host_offload): host blocks per DP
    # rank (null = none), link bandwidths in decimal GB/s (0 = instantaneous), and the KV
    # bytes of one token, which size a block's copy (required with the tier)
    num_host_blocks: int | None = _opt(None, range=NUM_GPU_BLOCKS)
    host_d2h_gbps: float = _opt(32.0, range=GBPS)
    host_h2d_gbps: float = _opt(32.0, range=GBPS)
    kv_cache_bytes_per_token: int | None = _opt(None, range=KV_BYTES)

    def engine_config(self) -> EngineConfig:
        d = asdict(self)
        if d["schedule_policy"] == "fcfs":
            d["schedule_policy"] = "fifo"
        return EngineConfig(**d)


@dataclass
class TimingSection:
    model: str = "polynomial"        # polynomial | fixed:PREFILL_MS,DECODE_MS | table:PATH
    speedup_ratio: float = _opt(1.0, range=RATIO)  # divides every pass time
    decode_speedup_ratio: float = _opt(1.0, range=RATIO)  # further divides decode time


@dataclass
class RouterSection:
    mode: str = _opt("round_robin", choices=ROUTER_MODES)   # kv_router = kv
    overlap_score_credit: float = _opt(1.0, range=WEIGHT)  # prefill blocks credited per hit block
    prefill_load_scale: float = _opt(1.0, range=WEIGHT)  # weight of the prefill term in the cost
    temperature: float = _opt(0.0, range=WEIGHT)  # 0 = argmin (random ties); > 0 = softmax
    assume_kv_reuse: bool = True                     # count blocks shared by active requests once
    track_active_blocks: bool = True     # decode-load term (off for a disaggregated prefill pool)
    track_prefill_tokens: bool = True    # pending-prefill term (off for a decode pool)
    # G2 host tier: prefill blocks credited per prompt block in a worker's host tier
    # (Dynamo's KvRouterConfig.host_cache_hit_weight; Dynamo requires [0, 1])
    host_cache_hit_weight: float = _opt(0.75, range=FRACTION)


@dataclass
class SlaSection:
    ttft_ms: float | None = _opt(None, range=TIME_MS_POS)  # goodput: TTFT <= this (ms)
    itl_ms: float | None = _opt(None, range=TIME_MS_POS)  # goodput: per-request TPOT <= this (ms)
    e2e_ms: float | None = _opt(None, range=TIME_MS_POS)  # goodput: end-to-end latency <= this (ms)


@dataclass
class RunSection:
    seed: int = _opt(0, range=SEED)  # one SeedSequence per run (router, synthetic)
    max_sim_time_s: float | None = _opt(None, range=TIME_S_POS)  # stop here (null: drain)
    exact_steps: bool = False                    # step pass by pass (reference; slower)


SECTIONS: dict[str, type] = {
    "cluster": ClusterSection, "engine": EngineSection, "timing": TimingSection,
    "router": RouterSection, "sla": SlaSection, "run": RunSection,
}
#: ``planner: {kind: load|throughput, <sim.planner.PlannerConfig field>: ...}``: an
#: autoscaling planner in the loop. Its SLA targets are the run's ``sla`` section (one SLA
#: for goodput and planner): a planner run without one gets the planner defaults there.
PLANNER_KINDS = ("load", "throughput")
PLANNER_SLA = {"ttft_ms": "ttft_ms", "itl_ms": "itl_ms"}   # PlannerConfig -> sla
TOP_KEYS = ("workload", *SECTIONS, "planner", "disagg")


# -- disaggregated prefill/decode (sim.disagg) ----------------------------------------------
@dataclass
class DisaggSection:
    """``disagg:`` - separate prefill and decode pools (Dynamo's names). Absent = one
    aggregated pool of ``cluster.num_workers``. ``prefill_engine``/``decode_engine`` hold
    ``engine`` fields that differ for that role; unset routers and GPU counts are the run's
    ``router.mode`` and ``cluster.gpus_per_worker``."""
    num_prefill_workers: int = _opt(1, range=WORKERS)
    num_decode_workers: int = _opt(1, range=WORKERS)
    # GB/s; null (unset: Dynamo 1.6.1's engine default) or 0 = no transfer delay
    kv_transfer_bandwidth: float | None = _opt(None, range=GBPS)
    # null = engine.kv_cache_bytes_per_token (--kv-bytes-per-token); both null = no delay
    kv_bytes_per_token: int | None = _opt(None, range=KV_BYTES)
    kv_transfer_timing_mode: str = _opt("full_prompt", choices=TRANSFER_TIMING_MODES)
    prefill_router_mode: str | None = _opt(None, choices=ROUTER_MODES)
    decode_router_mode: str | None = _opt(None, choices=ROUTER_MODES)
    prefill_gpus_per_worker: int | None = _opt(None, range=GPUS)
    decode_gpus_per_worker: int | None = _opt(None, range=GPUS)
    prefill_engine: dict | None = None      # engine-field overrides for prefill workers
    decode_engine: dict | None = None       # ... and for decode workers
    # a timing.model spec per role (e.g. gpu:MODEL:GPU:BACKEND:TP, another TP's table);
    # null = timing.model
    prefill_timing_model: str | None = None
    decode_timing_model: str | None = None


DISAGG_ROLES = ("prefill", "decode")


def _check_disagg(data: Any, cfg: "RunConfig", v: "_Validator",
                  base_dir: Path) -> dict[str, Any] | None:
    """The validated ``disagg`` block as a plain dict (role engines merged over ``engine``
    and checked like it), or None when aggregated."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise v.error(f"expected a mapping, got {_show(data)}", "disagg")
    scalars = {k: val for k, val in data.items() if not k.endswith("_engine")}
    for key in ("prefill_router_mode", "decode_router_mode"):
        if scalars.get(key) in ROUTER_ALIASES:
            scalars[key] = ROUTER_ALIASES[scalars[key]]
    sec = v.section(scalars, DisaggSection, "disagg")
    v.check_keys(data, [f.name for f in fields(DisaggSection)], "disagg")
    if "cluster.num_workers" in v.where:
        raise v.error("does not apply to disaggregated pools (disagg.num_prefill_workers "
                      "and disagg.num_decode_workers size them)", "cluster.num_workers")
    out = asdict(sec)
    # One KV size per token (Dynamo has one, --kv-bytes-per-token): disagg.kv_bytes_per_token
    # and engine.kv_cache_bytes_per_token may both be given only if they agree.
    eng_bytes = cfg.engine.kv_cache_bytes_per_token
    if out["kv_bytes_per_token"] is not None and eng_bytes is not None \
            and out["kv_bytes_per_token"] != eng_bytes:
        raise v.error(f"{out['kv_bytes_per_token']} conflicts with "
                      f"engine.kv_cache_bytes_per_token {eng_bytes}: give one KV size "
                      f"per token",
                      "disagg.kv_bytes_per_token")
    for role in DISAGG_ROLES:
        key = f"{role}_timing_model"
        if out[key] is not None:
            out[key] = _check_timing(out[key], base_dir, v, f"disagg.{key}")
    base = asdict(cfg.engine)
    for role in DISAGG_ROLES:
        over = data.get(f"{role}_engine") or {}
        name = f"disagg.{role}_engine"
        if not isinstance(over, Mapping):
            raise v.error(f"expected a mapping of engine fields, got {_show(over)}", name)
        v.check_keys(over, list(base), name)
        role_eng = v.section(over, EngineSection, name)
        merged = {**base, **{k: getattr(role_eng, k) for k in over}}
        out[f"{role}_engine"] = dict(over)
        out[f"_{role}_resolved"] = merged
        if merged["backend"] != "vllm":
            raise v.error(f"disaggregated pools are modelled for the vllm backend only "
                          f"(got {merged['backend']})", f"{name}.backend" if "backend" in over
                          else "engine.backend")
    if out["_prefill_resolved"]["block_size"] != out["_decode_resolved"]["block_size"]:
        field_ = next((f"disagg.{r}_engine.block_size" for r in ("decode", "prefill")
                       if "block_size" in (data.get(f"{r}_engine") or {})), "disagg")
        raise v.error(f"the prefill and decode pools need the same block_size (got "
                      f"{out['_prefill_resolved']['block_size']} and "
                      f"{out['_decode_resolved']['block_size']})", field_)
    return out


def disagg_config(cfg: "RunConfig") -> DisaggConfig | None:
    """The :class:`sim.disagg.DisaggConfig` of ``cfg.disagg`` (None when aggregated)."""
    d = cfg.disagg
    if d is None:
        return None
    def engine(role: str) -> EngineConfig:
        e = dict(d[f"_{role}_resolved"])
        if e["schedule_policy"] == "fcfs":
            e["schedule_policy"] = "fifo"
        return EngineConfig(**e)
    gpus = cfg.cluster.gpus_per_worker
    return DisaggConfig(
        num_prefill_workers=d["num_prefill_workers"], num_decode_workers=d["num_decode_workers"],
        prefill_engine=engine("prefill"), decode_engine=engine("decode"),
        prefill_router=d["prefill_router_mode"] or cfg.router.mode,
        decode_router=d["decode_router_mode"] or cfg.router.mode,
        kv_transfer_bandwidth=d["kv_transfer_bandwidth"],
        kv_bytes_per_token=(d["kv_bytes_per_token"] if d["kv_bytes_per_token"] is not None
                            else cfg.engine.kv_cache_bytes_per_token),
        kv_transfer_timing_mode=d["kv_transfer_timing_mode"],
        prefill_gpus_per_worker=d["prefill_gpus_per_worker"] or gpus,
        decode_gpus_per_worker=d["decode_gpus_per_worker"] or gpus,
        **{f"{role}_timing": _role_timing(cfg, d[f"{role}_timing_model"], role)
           for role in DISAGG_ROLES})


def _role_timing(cfg: "RunConfig", spec: str | None, role: str):
    """A pool's own timing model (``disagg.<role>_timing_model``; the run's speed-up
    ratios apply), or None for the run's ``timing.model``."""
    if spec is None:
        return None
    name = f"disagg.{role}_timing_model"
    table = spec.partition("table:")[2]
    if table and not Path(table).is_file():
        file, line = cfg.locate(name)
        raise InputError(f"timing table not found: {table}", file=file, line=line, field=name)
    with _located(cfg, "", {"timing": name}):
        return make_timing(spec, speedup_ratio=cfg.timing.speedup_ratio,
                           decode_speedup_ratio=cfg.timing.decode_speedup_ratio)



@dataclass
class RunConfig:
    """One validated run. Build it with :func:`load_config` / :func:`parse_config`."""

    workload: dict[str, Any] | None = None       # a sim.workloads.from_config block
    cluster: ClusterSection = field(default_factory=ClusterSection)
    engine: EngineSection = field(default_factory=EngineSection)
    timing: TimingSection = field(default_factory=TimingSection)
    router: RouterSection = field(default_factory=RouterSection)
    sla: SlaSection = field(default_factory=SlaSection)
    run: RunSection = field(default_factory=RunSection)
    planner: dict[str, Any] | None = None        # {kind, PlannerConfig knobs}; None = off
    disagg: dict[str, Any] | None = None         # validated DisaggSection; None = aggregated
    source: str | None = field(default=None, compare=False)
    #: dotted field -> where its value came from, for error messages.
    where: dict[str, Where] = field(default_factory=dict, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (YAML/JSON-ready); ``parse_config(cfg.to_dict())`` round-trips."""
        out: dict[str, Any] = {"workload": copy.deepcopy(self.workload)}
        for name in SECTIONS:
            out[name] = asdict(getattr(self, name))
        out["planner"] = copy.deepcopy(self.planner)
        if self.disagg is not None:
            out["disagg"] = {k: copy.deepcopy(v) for k, v in self.disagg.items()
                             if not k.startswith("_")}
            del out["cluster"]["num_workers"]       # the pools are sized in disagg
        if self.engine.backend != "sglang":
            for knob in SGLANG_KNOBS:          # not this core's: giving them is an error
                del out["engine"][knob]
        for knob, backends in VLLM_KNOBS.items():
            if self.engine.backend not in backends:
                del out["engine"][knob]
        if self.engine.num_host_blocks is None:
            for knob in HOST_TIER_KNOBS:       # no host tier: giving them is an error
                del out["engine"][knob]
        return out

    def resolved(self) -> RunConfig:
        """This config with every default a run would use written out, so that its
        ``to_dict()`` reproduces the run on its own (``--print-config``, the JSON's
        ``config``): the planner's knobs all filled in (interval by kind) and, for a planner
        run, the SLA targets it uses in ``sla``."""
        if self.planner is None:
            return self
        pcfg = planner_config(self)
        knobs = {k: v for k, v in asdict(pcfg).items() if k not in PLANNER_SLA}
        out = copy.copy(self)
        out.planner = {"kind": self.planner["kind"], **knobs}
        out.sla = SlaSection(**{**asdict(self.sla),
                                **{s: getattr(pcfg, p) for p, s in PLANNER_SLA.items()}})
        return out

    def locate(self, dotted: str | None) -> Where:
        """(file, line) of a field, or of its nearest located parent."""
        return _lookup(self.where, dotted, (self.source, None))

    def with_overrides(self, overrides: Mapping[str, Any], *, source: str = "overrides",
                       base_dir: str | Path | None = None) -> RunConfig:
        """A new config with ``overrides`` applied: nested dicts or dotted keys
        (``{"engine.block_size": 64}``). A ``workload`` with another ``kind`` replaces the
        block; otherwise keys merge. Relative paths resolve against ``base_dir`` (cwd)."""
        nested = _nest(overrides)
        merged = self.to_dict()
        where = dict(self.where)
        for top, value in nested.items():
            old = merged.get(top)
            if isinstance(old, dict) and isinstance(value, dict) and (
                    top != "workload" or value.get("kind", old.get("kind")) == old.get("kind")):
                _merge(old, value)
            else:
                merged[top] = value
                where = {k: w for k, w in where.items() if k.partition(".")[0] != top}
        where.update({k: (source, None) for k in _leaves(nested)})
        return parse_config(merged, source=self.source, where=where,
                            base_dir=base_dir if base_dir is not None else Path.cwd(),
                            default_where=(source, None), mark_given=False)


# -- parsing -------------------------------------------------------------------------------

def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML run config. Relative trace/table paths resolve against the
    YAML's directory; ``bundled:NAME`` paths against ``sim/data``."""
    data, where = read_yaml(path)
    return parse_config({} if data is None else data, source=str(path), where=where,
                        base_dir=Path(path).resolve().parent)


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's float rule: ``1e9``, ``2E-3`` and ``.5e1`` are
    floats (YAML 1.1, PyYAML's default, needs a dot, so ``1e9`` would be the string "1e9").
    Every YAML the project reads (configs, ``--set`` values, hyperparameter files) uses it."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def yaml_load(text: str) -> Any:
    """Parse YAML text with :class:`YamlLoader` (safe; YAML 1.2 floats)."""
    return yaml.load(text, Loader=YamlLoader)   # noqa: S506 - a SafeLoader subclass


def read_yaml(path: str | Path) -> tuple[Any, dict[str, Where]]:
    """Parse a YAML file and record the line of every mapping key (for error messages);
    bad files raise InputErrors naming the file and line."""
    fname = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"not valid UTF-8 ({exc.reason})", file=fname) from None
    try:
        root = yaml.compose(text, Loader=YamlLoader)
        data = yaml_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(", ".join(str(x) for x in (exc.context, exc.problem) if x).split())
        raise InputError(f"invalid YAML: {problem}", file=fname,
                         line=mark.line + 1 if mark is not None else None) from None
    except yaml.YAMLError as exc:
        raise InputError(f"invalid YAML: {' '.join(str(exc).split())}", file=fname) from None
    except RecursionError:
        raise InputError("invalid YAML: nested too deeply", file=fname) from None
    where: dict[str, Where] = {}
    if root is not None:
        _marks(root, "", fname, where)
    return data, where


def parse_config(data: Any, *, source: str | None = None, where: dict[str, Where] | None = None,
                 base_dir: str | Path | None = None,
                 default_where: Where | None = None, mark_given: bool = True) -> RunConfig:
    """Validate a plain nested dict (e.g. parsed YAML) into a :class:`RunConfig`.
    ``mark_given=False``: ``where`` already lists the fields the user gave."""
    where = dict(where or {})
    v = _Validator(source, where, default_where or (source, None))
    if not isinstance(data, Mapping):
        raise v.error(f"expected a mapping of sections ({', '.join(TOP_KEYS)}), "
                      f"got {_show(data)}", None)
    v.check_keys(data, TOP_KEYS, "")
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    cfg = RunConfig(source=source, where=where)
    for name, cls in SECTIONS.items():
        setattr(cfg, name, v.section(data.get(name), cls, name))
    # Flavour rules need to know which engine fields were given (YAML keys, overrides).
    if mark_given and isinstance(data.get("engine"), Mapping):
        for key in data["engine"]:
            where.setdefault(f"engine.{key}", v.default)
    eng = cfg.engine
    for knob in SGLANG_KNOBS:
        if eng.backend != "sglang" and f"engine.{knob}" in where:
            raise v.error(f"applies to engine.backend sglang only (backend is {eng.backend})",
                          f"engine.{knob}")
    for knob, backends in VLLM_KNOBS.items():
        if eng.backend not in backends and f"engine.{knob}" in where:
            raise v.error(f"applies to engine.backend {' or '.join(backends)} only (backend is "
                          f"{eng.backend})", f"engine.{knob}")
    if "engine.block_size" not in where:
        eng.block_size = DEFAULT_BLOCK_SIZE[eng.backend]
    _check_host_tier(eng, where, v)
    cfg.timing.model = _check_timing(cfg.timing.model, base, v)
    cfg.workload = _check_workload(data.get("workload"), base, v)
    cfg.planner = _check_planner(data.get("planner"), v)
    cfg.disagg = _check_disagg(data.get("disagg"), cfg, v, base)
    if cfg.planner is not None and cfg.cluster.dp_size > 1:
        raise v.error("a planner scales workers of one DP rank; dp_size must be 1 with a "
                      "planner", "cluster.dp_size")
    if cfg.disagg is not None and cfg.engine.num_host_blocks is not None:
        raise v.error("the G2 host tier with disaggregated pools is not modelled yet",
                      "engine.num_host_blocks")
    if cfg.disagg is not None and cfg.cluster.dp_size > 1:
        raise v.error("DP ranks with disaggregated pools are not modelled yet; dp_size must "
                      "be 1 with disaggregated pools", "cluster.dp_size")
    if cfg.planner is not None:
        with _located(cfg):
            planner_config(cfg)          # every knob checked now, not at the first tick
    return cfg


HOST_TIER_KNOBS = ("host_d2h_gbps", "host_h2d_gbps")


def _check_host_tier(eng: EngineSection, where: dict[str, Where], v: "_Validator") -> None:
    """The G2 host tier's rules (Dynamo's native_host_offload validation)."""
    if eng.num_host_blocks is None:
        for knob in HOST_TIER_KNOBS:
            if f"engine.{knob}" in where:
                raise v.error("needs engine.num_host_blocks (--num-host-blocks), the host tier's "
                              "size",
                              f"engine.{knob}")
        return
    if eng.backend != "vllm":
        raise v.error(f"the host tier is supported only for engine.backend vllm (backend is "
                      f"{eng.backend})", "engine.num_host_blocks")
    if not eng.enable_prefix_caching:
        raise v.error("the host tier needs prefix caching", "engine.num_host_blocks")
    if eng.kv_cache_bytes_per_token is None:
        raise v.error("the host tier needs engine.kv_cache_bytes_per_token "
                      "(--kv-bytes-per-token) to size its copies", "engine.num_host_blocks")


class _Validator:
    """Raises InputErrors located by dotted field (file and YAML line when known)."""

    def __init__(self, source: str | None, where: dict[str, Where], default: Where) -> None:
        self.source, self.where, self.default = source, where, default

    def error(self, msg: str, dotted: str | None) -> InputError:
        file, line = _lookup(self.where, dotted, self.default)
        return InputError(msg, file=file, line=line, field=dotted)

    def check_keys(self, data: Mapping[str, Any], allowed: tuple[str, ...] | list[str],
                   prefix: str) -> None:
        for key in data:
            if key not in allowed:
                dotted = f"{prefix}.{key}" if prefix else str(key)
                hint = difflib.get_close_matches(str(key), allowed, n=1)
                more = f" (did you mean '{hint[0]}'?)" if hint else \
                    f"; expected one of {', '.join(allowed)}"
                raise self.error(f"unknown key '{dotted}'{more}", dotted)

    def section(self, data: Any, cls: type, name: str) -> Any:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise self.error(f"expected a mapping, got {_show(data)}", name)
        specs = {f.name: f for f in fields(cls)}
        self.check_keys(data, list(specs), name)
        hints = get_type_hints(cls)
        values = {}
        for key, value in data.items():
            dotted = f"{name}.{key}"
            value = _coerce(value, hints[key], dotted, self.error)
            if dotted == "router.mode" and value in ROUTER_ALIASES:
                value = ROUTER_ALIASES[value]
            self.rules(value, specs[key].metadata, dotted)
            values[key] = value
        return cls(**values)

    def rules(self, value: Any, rules: Mapping[str, Any], dotted: str) -> None:
        if value is None:
            return
        msg = rules["range"].violation(value) if "range" in rules else None
        if msg:
            raise self.error(msg, dotted)
        if "choices" in rules and value not in rules["choices"]:
            raise self.error(f"unknown value {value!r}; expected one of "
                             f"{', '.join(rules['choices'])}", dotted)


def _coerce(value: Any, typ: Any, dotted: str,
            error: Callable[[str, str | None], InputError]) -> Any:
    """Check a YAML scalar against a field annotation (int, float, bool, str, X | None)."""
    def err(msg: str) -> InputError:
        return error(msg, dotted)

    args = get_args(typ) if get_origin(typ) in (Union, types.UnionType) else (typ,)
    optional = type(None) in args
    base = next(a for a in args if a is not type(None))
    if value is None:
        if optional:
            return None
        raise err(f"expected {_NAMES[base]}, got null")
    if base is bool and type(value) is bool:
        return value
    if base is int and not isinstance(value, bool):
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)         # YAML 1.0e+6
    if base is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise err(f"expected a finite number, got {value}")
        return float(value)
    if base is str and isinstance(value, str):
        return value
    raise err(f"expected {_NAMES[base]}{' or null' if optional else ''}, got {_show(value)}")


_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


def _check_timing(spec: str, base: Path, v: _Validator, name: str = "timing.model") -> str:
    """Check the timing spec's syntax now (a table file is read at build time)."""
    if spec.startswith("table:"):
        path = spec[len("table:"):]
        if not path:
            raise v.error("expected table:PATH", name)
        return "table:" + str(_resolve(path, base))
    try:
        make_timing(spec)
    except InputError as exc:
        raise v.error(exc.detail, name) from None
    return spec


def _check_workload(data: Any, base: Path, v: _Validator) -> dict[str, Any] | None:
    """Shallow check (a mapping with a kind); resolve trace paths. The rest is checked by
    ``from_config`` when the simulation is built."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise v.error(f"expected a mapping, got {_show(data)}", "workload")
    out = copy.deepcopy(dict(data))
    if out.get("kind") in TRACE_KINDS and isinstance(out.get("path"), str):
        path = out["path"]
        if path.startswith("bundled:"):
            name = path[len("bundled:"):]
            if name not in BUNDLED_TRACES:
                raise v.error(f"unknown bundled trace {name!r}; expected one of "
                              f"{', '.join('bundled:' + n for n in BUNDLED_TRACES)}",
                              "workload.path")
            out["path"] = str(DATA_DIR / BUNDLED_TRACES[name])
        else:
            out["path"] = str(_resolve(path, base))
    return out


def _check_planner(data: Any, v: _Validator) -> dict[str, Any] | None:
    """A mapping with a known ``kind``; knob names and ranges (sim.schema) checked here, types
    by PlannerConfig."""
    if data is None:
        return None
    if not isinstance(data, Mapping):
        raise v.error(f"expected a mapping, got {_show(data)}", "planner")
    from .planner import PlannerConfig
    knobs = [f.name for f in fields(PlannerConfig) if f.name not in PLANNER_SLA]
    for key in PLANNER_SLA:
        if key in data:
            raise v.error(f"set the planner's targets in the run's sla section "
                          f"(sla.{PLANNER_SLA[key]}), one SLA for goodput and planner",
                          f"planner.{key}")
    v.check_keys(data, ["kind", *knobs], "planner")
    for key, value in data.items():      # ranges here; types are PlannerConfig's to check
        rng = PLANNER_FIELDS.get(key)
        if rng is not None and isinstance(value, Real) and not isinstance(value, bool) \
                and math.isfinite(value):
            v.rules(value, {"range": rng}, f"planner.{key}")
    if not isinstance(data.get("kind"), str) or data.get("kind") not in PLANNER_KINDS:
        raise v.error(f"expected one of {', '.join(PLANNER_KINDS)}, got {data.get('kind')!r}",
                      "planner.kind")
    return copy.deepcopy(dict(data))


def planner_config(cfg: RunConfig):
    """The :class:`sim.planner.PlannerConfig` of ``cfg.planner`` (None without a planner);
    its SLA targets are ``cfg.sla``'s, else the planner's defaults. Bad knobs raise
    InputErrors with the field ``planner.<knob>``."""
    if cfg.planner is None:
        return None
    from .planner import PlannerConfig
    knobs = {k: v for k, v in cfg.planner.items() if k != "kind"}
    if cfg.disagg is not None:           # disaggregated pools: Dynamo's disagg planner
        if knobs.get("mode", "disagg") != "disagg":
            raise InputError("disaggregated pools need mode 'disagg'", field="planner.mode")
        knobs["mode"] = "disagg"
    for p, s in PLANNER_SLA.items():
        if getattr(cfg.sla, s) is not None:
            knobs[p] = getattr(cfg.sla, s)
    try:
        return PlannerConfig(**knobs)
    except InputError as exc:
        name = PLANNER_SLA.get(exc.field or "")
        raise InputError(exc.detail, field=f"sla.{name}" if name else
                         f"planner.{exc.field}" if exc.field else "planner") from None


def build_planner(cfg: RunConfig):
    """A fresh planner for ``cfg`` (attach it to the simulation), or None."""
    pcfg = planner_config(cfg)
    if pcfg is None:
        return None
    from .planner import (DisaggLoadPlanner, DisaggThroughputPlanner, LoadPlanner,
                          ThroughputPlanner)
    if cfg.disagg is not None:
        return (DisaggLoadPlanner if cfg.planner["kind"] == "load"
                else DisaggThroughputPlanner)(pcfg)
    return (LoadPlanner if cfg.planner["kind"] == "load" else ThroughputPlanner)(pcfg)


def _resolve(path: str, base: Path) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p


def _marks(node: yaml.Node, prefix: str, fname: str, out: dict[str, Where]) -> None:
    """Record the line of every mapping key; reject duplicate keys (YAML keeps the last)."""
    if not isinstance(node, yaml.MappingNode):
        return
    seen: set[str] = set()
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            continue
        dotted = f"{prefix}.{key_node.value}" if prefix else key_node.value
        line = key_node.start_mark.line + 1
        if key_node.value in seen:
            raise InputError(f"duplicate key '{dotted}'", file=fname, line=line, field=dotted)
        seen.add(key_node.value)
        out[dotted] = (fname, line)
        _marks(value_node, dotted, fname, out)


def _lookup(where: Mapping[str, Where], dotted: str | None, default: Where) -> Where:
    """Location of a field, or of its nearest located parent."""
    key = dotted or ""
    while key:
        if key in where:
            return where[key]
        key = key.rpartition(".")[0]
    return default


def _merge(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
    """Recursive update: ``workload.arrival.rate`` keeps ``workload.arrival.process``."""
    for key, value in src.items():
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            _merge(dst[key], value)
        else:
            dst[key] = copy.deepcopy(value)


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "c": {"d": 2}}`` -> ``{"a": {"b": 1}, "c": {"d": 2}}``."""
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"conflicting overrides for '{key}'", field=str(key))
        if isinstance(value, Mapping) and isinstance(node.get(parts[-1]), dict):
            _merge(node[parts[-1]], value)
        else:
            node[parts[-1]] = copy.deepcopy(dict(value)) if isinstance(value, Mapping) else value
    return out


def _leaves(nested: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in nested.items():
        dotted = f"{prefix}.{key}" if prefix else key
        yield dotted
        if isinstance(value, Mapping):
            yield from _leaves(value, dotted)


def default_config() -> dict[str, Any]:
    """Every default, as a nested dict (the workload has none: it must be given)."""
    return RunConfig().to_dict()


# -- building --------------------------------------------------------------------------------

@contextmanager
def _located(cfg: RunConfig, prefix: str = "", rename: Mapping[str, str] | None = None
             ) -> Iterator[None]:
    """Give unlocated InputErrors from core factories the config's file, line and field."""
    try:
        yield
    except InputError as exc:
        if exc.file is not None:          # a trace or table line: already located
            raise
        name = (rename or {}).get(exc.field or "", exc.field)
        dotted = name if not prefix or (name or "").startswith(prefix + ".") \
            else ".".join(p for p in (prefix, name) if p)
        file, line = cfg.locate(dotted)
        raise InputError(exc.detail, file=file, line=line, field=dotted) from None


def check_trace_path(cfg: RunConfig) -> None:
    """A trace workload's file must exist: an InputError at ``workload.path``'s file and
    line otherwise (called at load by configs that build their workload later, e.g. an
    environment's, so the error still names the YAML line)."""
    path = (cfg.workload or {}).get("path")
    if cfg.workload and cfg.workload.get("kind") in TRACE_KINDS and isinstance(path, str) \
            and not Path(path).is_file():
        file, line = cfg.locate("workload.path")
        what = "is a directory" if Path(path).is_dir() else "not found"
        raise InputError(f"trace file {what}: {path}", file=file, line=line,
                         field="workload.path")


def build_workload(cfg: RunConfig):
    """The run's workload. Synthetic randomness comes from the run seed's second child
    stream (the simulator's router uses the first), so runs are reproducible."""
    if cfg.workload is None:
        file, line = cfg.locate("workload")
        raise InputError("missing required section (a trace or synthetic workload)",
                         file=file, line=line, field="workload")
    check_trace_path(cfg)
    rng = np.random.default_rng(np.random.SeedSequence(cfg.run.seed).spawn(2)[1])
    with _located(cfg):
        return from_config(cfg.workload, rng, prefix="workload")


def build_simulation(cfg: RunConfig, progress: Callable[[float], None] | None = None,
                     workload: Any = None, token_gaps: bool = True) -> Simulation:
    """A ready-to-run :class:`~sim.simulator.Simulation` for ``cfg`` (parses the trace,
    unless given a fresh ``workload`` built from ``cfg``: a caller replaying many configs of
    one trace parses it once). ``token_gaps=False``: no distribution of gaps between tokens
    (see :class:`~sim.simulator.Simulation`; a caller that reads no ITL or per-user field)."""
    if workload is None:
        workload = build_workload(cfg)
    table = cfg.timing.model.partition("table:")[2]
    if table and not Path(table).is_file():
        file, line = cfg.locate("timing.model")
        raise InputError(f"timing table not found: {table}", file=file, line=line,
                         field="timing.model")
    with _located(cfg, "timing", {"timing": "timing.model"}):
        timing = make_timing(cfg.timing.model, speedup_ratio=cfg.timing.speedup_ratio,
                             decode_speedup_ratio=cfg.timing.decode_speedup_ratio)
    sla = asdict(cfg.sla)
    max_s = cfg.run.max_sim_time_s
    return Simulation(
        workload,
        engine=cfg.engine.engine_config(),
        timing=timing,
        cluster=ClusterConfig(**asdict(cfg.cluster)),
        router=cfg.router.mode,
        kv_router=KvRouterConfig(**{k: v for k, v in asdict(cfg.router).items() if k != "mode"}),
        disagg=disagg_config(cfg),
        seed=cfg.run.seed,
        max_sim_time_ms=None if max_s is None else max_s * 1000.0,
        exact=cfg.run.exact_steps,
        sla=sla if any(x is not None for x in sla.values()) else None,
        progress=progress,
        token_gaps=token_gaps,
    )
