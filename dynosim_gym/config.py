"""Environment configuration: a simulator run config plus an ``env:`` section.

An environment YAML is a ``dynosim simulate`` config (``workload``, ``cluster``, ``engine``,
``timing``, ``router``, ``sla``) with one more top-level section, ``env``, that says how the
simulation becomes an MDP: decision interval, episode length, the scaling limits, and the
observation, action and reward factories. Every key is validated once, with errors that
name the file, the YAML line and the dotted key (``env.reward.gpu_weight``), the same way
as the simulator's own config (:mod:`sim.config`).

``gym.make(id, config=PATH_OR_DICT, **overrides)``: an override is a dotted key
(``**{"env.reward.gpu_weight": 0.2}``), a section (``engine={"block_size": 64}``) or the
bare name of an ``env`` field (``interval_s=5``, ``reward={"change_penalty": 0}``).
"""
from __future__ import annotations

import copy
import difflib
import math
import os
from dataclasses import asdict, dataclass, field, fields, make_dataclass, replace
from numbers import Real
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from sim.config import (RunConfig, _leaves, _merge, _nest, _show, _Validator, check_trace_path,
                        disagg_config, load_config, parse_config, read_yaml)
from sim.errors import InputError
from sim.schema import (COUNT, GPUS, MAX_TOKENS, MAX_WORKERS, PLANNER_FIELDS, RATE,
                        SHARE_OPEN, TIME_S, TIME_S_POS, WEIGHT, WORKERS, Range)

import envs_configs as _bundled

from .observations import ALL_FEATURES, FEATURES
from .scenarios import FAMILIES, ROUTING_FAMILIES

CONFIG_DIR = Path(_bundled.__file__).resolve().parent     # the bundled YAML scenarios
#: Load shapes an episode can draw: the v0.1 shapes (a mean rate in [rate_min, rate_max])
#: and the workload families of :mod:`dynosim_gym.scenarios` (a peak rate in that range and a
#: 5-20x swing).
LEGACY_SCENARIOS = ("diurnal", "bursty", "ramp", "steady")
SCENARIOS = LEGACY_SCENARIOS + FAMILIES + tuple(ROUTING_FAMILIES)
REWARD_MODES = ("per_request", "interval", "lagrangian")


def _opt(default: Any, **rules: Any) -> Any:
    return field(default=default, metadata=rules)


STACK = Range(1, 4096, unit="intervals", why="observation of 19 x stack float32")
SCALE = Range(0, MAX_TOKENS, lo_open=True, unit="tokens", why="token counts are int32-sized")


@dataclass
class ActionSection:
    # delta: -k..+k workers; target: N; residual: an offset to the throughput planner's count
    type: str = _opt("delta", choices=("delta", "target", "residual"))
    max_step: int = _opt(2, range=WORKERS)  # delta: largest change per step (workers)
    # residual: [lo, hi] offsets (workers, lo <= 0 <= hi) added to the base count, the
    # throughput planner's ceil(predicted demand / one engine's rate at the SLA), each step
    residual_offsets: list[int] = field(default_factory=lambda: [-2, 4], metadata={
        "range": Range(-MAX_WORKERS, MAX_WORKERS, unit="workers",
                       why="[lo, hi] with lo <= 0 <= hi, offsets to the throughput "
                           "planner's count (type: residual)")})
    # scale-down stabilisation (Kubernetes HPA's behavior.scaleDown.stabilizationWindowSeconds):
    # the env provisions the highest count the policy asked for over the last window_s seconds
    # of decisions (this one included), so scale-ups apply at once and a scale-down only once
    # every request in the window was lower; 0 = off. Aggregated pool only.
    scale_down_window_s: float = _opt(0.0, range=TIME_S)
    # what the scale-down window holds at the episode's start (issue 11, round 14b). none (as
    # since 0.2.3): only the decisions made so far; hold: the initial count (active +
    # starting at reset) counts as asked at t = 0, so no scale-down is decided in the first
    # scale_down_window_s seconds (Kubernetes HPA's stabilisation window over a recommendation
    # history that starts at the current replicas); scale-ups are not held by it. Needs a
    # window (scale_down_window_s > 0) and stabilise: count. Aggregated pool only.
    scale_down_window_initial: str = _opt("none", choices=("none", "hold"))
    # residual: the base's demand is the arrivals averaged over the trailing base_interval_s
    # (the throughput planner's throughput_adjustment_interval_seconds; Dynamo's default
    # 180 s), re-evaluated every env step; a multiple of env.interval_s; null = interval_s
    base_interval_s: float | None = _opt(None, range=TIME_S_POS.with_rule(
        "a positive multiple of env.interval_s (null: env.interval_s)"))
    # residual: the base before the advisor's first tick (the first step): min_endpoint (as
    # since round 7b) or hold, the count provisioned (Dynamo's planner does not scale
    # before its first adjustment interval)
    base_before_first_tick: str = _opt("min_endpoint", choices=("min_endpoint", "hold"))
    # a move opposite to the last scaling event within this many seconds of it is held (EC2
    # Auto Scaling's cooldown, applied to reversals only); 0 = off. Aggregated pool only.
    reversal_cooldown_s: float = _opt(0.0, range=TIME_S)
    # residual: what the scale-down window and the reversal cooldown stabilise. count (as
    # since round 7b): the requested count, base + offset; base: the base alone, and the
    # offset is added after them, so a sampled offset takes effect at once (issue 11,
    # round 11: under count, a stochastic policy is provisioned its recent samples' highest)
    stabilise: str = _opt("count", choices=("count", "base"))
    # residual with stabilise: base: a minimum dwell on the applied offset (issue 11, round
    # 13). Once the applied offset changes it is held for at least offset_dwell_s seconds:
    # an action asked during the hold is not applied (the base is still re-computed and
    # stabilised every step, the held offset added to it); info["applied_offset"],
    # info["offset_held"]. A multiple of env.interval_s; 0 (and interval_s) = off
    offset_dwell_s: float = _opt(0.0, range=TIME_S.with_rule(
        "0 (off) or a multiple of env.interval_s (needs env.action.stabilise: base)"))


@dataclass
class ObservationSection:
    stack: int = _opt(1, range=STACK)  # past intervals concatenated (1 = current only)
    rate_scale_rps: float | None = _opt(None, range=RATE)  # arrival rate scale; null = rate_max_rps
    isl_scale: float = _opt(8192.0, range=SCALE)  # tokens
    osl_scale: float = _opt(1024.0, range=SCALE)  # tokens
    # the vector's entries, by name, in this order (dynosim_gym.observations: FEATURES, the
    # default, CAPACITY_FEATURES and WORK_FEATURES); aggregated pool only
    features: list[str] = field(default_factory=lambda: list(FEATURES),
                                metadata={"choices": ALL_FEATURES})


@dataclass
class RewardSection:
    # per_request: -sla_weight x requests that missed the SLA in the interval / request_scale
    #   (each request counts once, when it completes, is rejected or times out);
    # interval: sla_weight x the interval's attainment (1.0 if no request was decided; v0.1);
    # lagrangian: multiplier x (met - sla_target x decided) / request_scale, the multiplier
    #   being a dual variable updated during training (agents.train's callback).
    mode: str = _opt("per_request", choices=REWARD_MODES)
    sla_weight: float = _opt(1.0, range=WEIGHT)
    # x GPU-seconds provisioned in the interval (starting + active + draining workers);
    # null = 0.5 / (interval_s * max_gpu_budget): a full budget for a whole step costs 0.5.
    gpu_weight: float | None = _opt(None, range=WEIGHT)
    change_penalty: float = _opt(0.01, range=WEIGHT)  # x workers added or removed by the action
    # requests per step that weigh 1.0 (per_request, lagrangian); null = rate_max_rps x interval_s
    request_scale: float | None = _opt(None, range=WEIGHT.with_lo(0, lo_open=True))
    # lagrangian: attainment to reach; oracle too
    sla_target: float = _opt(0.95, range=Range(0, 1, lo_open=True, unit="", why="a share"))
    multiplier: float = _opt(1.0, range=WEIGHT)          # lagrangian: initial dual variable
    multiplier_lr: float = _opt(2.0, range=WEIGHT)       # lagrangian: dual step per unit of violation


@dataclass
class EnvSection:
    interval_s: float = _opt(10.0, range=TIME_S_POS)  # simulated seconds per step
    episode_steps: int = _opt(60, range=COUNT)  # steps per episode; then truncated=True
    max_gpu_budget: int = _opt(16, range=GPUS)  # GPUs of starting + active workers, at most
    min_endpoint: int = _opt(1, range=WORKERS)  # workers, at least
    initial_workers: int | None = _opt(None, range=WORKERS)  # at reset; null = cluster.num_workers
    split: str = _opt("train", choices=("train", "eval"))  # which windows / seeds episodes use
    # trace: trailing share held out for split=eval
    eval_fraction: float = _opt(0.25, range=SHARE_OPEN)
    scenarios: str = "diurnal,bursty,ramp"   # synthetic: load shapes drawn at reset (comma list)
    eval_scenarios: str | None = None        # shapes for split=eval; null = scenarios
    # mean (legacy shapes) or peak (families) arrival rate, drawn in [min, max] per episode
    rate_min_rps: float = _opt(0.2, range=RATE)
    rate_max_rps: float = _opt(1.0, range=RATE)
    # families: peak / trough drawn in [min, max]
    swing_min: float = _opt(5.0, range=Range(1, 1e6, unit="x", why="peak over trough"))
    swing_max: float = _opt(20.0, range=Range(1, 1e6, unit="x", why="peak over trough"))
    # worker start-up drawn per episode in [min, max]; null = cluster.startup_time_s
    startup_min_s: float | None = _opt(None, range=TIME_S)
    startup_max_s: float | None = _opt(None, range=TIME_S)
    day_period_s: float = _opt(1200.0, range=TIME_S_POS)  # simulated day (diurnal, time of day)
    timeout_s: float = _opt(60.0, range=TIME_S_POS)  # no first token by then: SLA violated
    # heuristic planners (agents.heuristics): forecaster and decision interval
    planner_predictor: str = _opt("constant",
                                  choices=("constant", "moving_average", "kalman", "arima"))
    # null: env interval_s (load), planner.throughput_adjustment_interval_seconds (throughput)
    planner_interval_s: float | None = _opt(None, range=TIME_S_POS.with_rule(
        "a positive multiple of env.interval_s"))
    # any other sim.planner.PlannerConfig field, by its name (Dynamo's knob names)
    planner: dict = field(default_factory=dict)
    action: ActionSection = field(default_factory=ActionSection)
    observation: ObservationSection = field(default_factory=ObservationSection)
    reward: RewardSection = field(default_factory=RewardSection)


NESTED = {"action": ActionSection, "observation": ObservationSection, "reward": RewardSection}
ENV_FIELDS = tuple(f.name for f in fields(EnvSection))
SIM_SECTIONS = ("workload", "cluster", "engine", "timing", "router", "sla", "run", "planner",
                "disagg")


@dataclass
class EnvConfig:
    """A validated environment config: the simulator's run config and the MDP settings."""

    sim: RunConfig
    env: EnvSection
    source: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def max_workers(self) -> int:
        return self.env.max_gpu_budget // self.sim.cluster.gpus_per_worker

    def to_dict(self) -> dict[str, Any]:
        out = self.sim.to_dict()
        out["env"] = asdict(self.env)
        return out


def _read_yaml(path: str | Path) -> tuple[dict[str, Any], dict]:
    fname = str(path)
    try:
        data, where = read_yaml(path)
    except FileNotFoundError:
        raise InputError("config file not found", file=fname) from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise InputError(f"expected a mapping of sections, got {_show(data)}", file=fname)
    return dict(data), where


def resolve_config_path(name: str | Path) -> Path:
    """A YAML path, or the name of a bundled scenario (``autoscale_default``)."""
    p = Path(name)
    if p.is_file():
        return p
    cands = [CONFIG_DIR / str(name), CONFIG_DIR / f"{name}.yaml"]
    if p.parent.name == "envs_configs":          # "envs_configs/x.yaml" from another cwd
        cands.append(CONFIG_DIR / p.name)
    for cand in cands:
        if cand.is_file():
            return cand
    names = sorted(x.stem for x in CONFIG_DIR.glob("*.yaml"))
    hint = difflib.get_close_matches(p.stem, names, n=1)
    raise InputError("config file not found (a path, or one of: "
                     f"{', '.join(names)})" + (f"; did you mean '{hint[0]}'?" if hint else ""),
                     file=str(name))


def override_key(key: str) -> str:
    """Map a ``gym.make`` keyword to a dotted config key."""
    head = key.split(".")[0]
    if head in SIM_SECTIONS or head == "env":
        return key
    if head in ENV_FIELDS:
        return "env." + key
    allowed = [*ENV_FIELDS, *SIM_SECTIONS, "env"]
    hint = difflib.get_close_matches(head, allowed, n=1)
    more = f" (did you mean '{hint[0]}'?)" if hint else \
        f"; expected an env field ({', '.join(ENV_FIELDS)}) or a section " \
        f"({', '.join(SIM_SECTIONS)})"
    raise InputError(f"unknown key '{key}'{more}", field=key)


def load_env_config(config: str | Path | Mapping[str, Any] | None = None,
                    defaults: str | Path | None = None, **overrides: Any) -> EnvConfig:
    """Validate ``config`` (YAML path, bundled name or dict; None = ``defaults``) with
    ``overrides`` applied on top."""
    base_dir = Path.cwd()
    source: str | None = "config"
    where: dict = {}
    if config is None:
        config = defaults
    if config is not None and not isinstance(config, (str, Path, Mapping)):
        raise InputError("expected a YAML path, a bundled config name or a dict, got "
                         + _show(config), field="config")
    if config is None:
        data: dict[str, Any] = {}
    elif isinstance(config, Mapping):
        data = copy.deepcopy(dict(config))
    else:
        path = resolve_config_path(config)
        data, where = _read_yaml(path)
        source = str(path)
        base_dir = path.resolve().parent
    if overrides:
        nested = _nest({override_key(k): v for k, v in overrides.items()})
        for top, value in nested.items():
            if top == "workload" and isinstance(data.get(top), dict) and isinstance(value, dict) \
                    and value.get("kind", data[top].get("kind")) == data[top].get("kind"):
                _merge(data[top], value)
            elif isinstance(data.get(top), dict) and isinstance(value, dict) and top != "workload":
                _merge(data[top], value)
            else:
                data[top] = value
            for k in _leaves({top: value}):   # an override's value is located there
                where[k] = ("overrides", None)
    env_data = data.pop("env", None)
    v = _Validator(source, where, (source, None))
    from sim.config import TOP_KEYS     # an env config's top level: env too (a run.json
    v.check_keys(data, [*TOP_KEYS, "env"], "")      # given as --config lists it)
    try:
        sim_cfg = parse_config(data, source=source, where=where, base_dir=base_dir,
                               default_where=(source, None))
    except InputError as exc:   # planner= is the run config's section, not env.planner
        if (exc.field or "").startswith("planner") and any(
                k.split(".")[0] == "planner" for k in overrides):
            raise InputError(f"{exc.detail} (the planner keyword is the run config's planner "
                             "section, which needs its kind; the env's planner knobs are "
                             "env.planner={KNOB: VALUE} or env.planner.KNOB)", file=exc.file,
                             line=exc.line, field=exc.field) from None
        raise
    check_trace_path(sim_cfg)      # here, where the YAML's file and line are known
    env = _parse_env(env_data, v, disagg=sim_cfg.disagg is not None)
    cfg = EnvConfig(sim=sim_cfg, env=env, source=source)
    if sim_cfg.disagg is not None:
        _check_disagg(cfg, v)
    _check(cfg, v)
    return cfg


def require_sla(cfg: EnvConfig) -> None:
    """InputError, naming the config's ``sla`` line, unless it sets the SLA targets the envs
    score requests against and the planner aims at (``sla.ttft_ms``, ``sla.itl_ms``)."""
    sla = cfg.sim.sla
    if sla.ttft_ms is None or sla.itl_ms is None:
        file, line = cfg.sim.locate("sla")
        raise InputError("the environment needs SLA targets: set sla.ttft_ms and sla.itl_ms",
                         file=file, line=line, field="sla")


def planner_config(cfg: EnvConfig, knobs: dict | None = None) -> "PlannerConfig":
    """The planner an env's heuristics run, in layers: Dynamo's defaults, the config's
    ``planner`` section (Dynamo's knob names; its ``kind`` is the CLI's, here the heuristic
    picks the planner), the env's structure (SLA targets, budget, min_endpoint,
    ``env.planner_predictor``, intervals), then ``env.planner`` and ``knobs`` (any other
    :class:`~sim.planner.PlannerConfig` field, by name; a tuned planner) on top.

    Intervals: ``env.planner_interval_s`` if set; else the load planner decides every env
    step and the throughput planner at its own interval (Dynamo: 180 s). Ticking the
    throughput planner every 10 s made its forecast of a 10 s window flip between N and
    N+1, so it drained each new worker the moment it became ready, before it served."""
    from sim.planner import PlannerConfig
    e = cfg.env
    sla = cfg.sim.sla
    base = PlannerConfig(**{k: v for k, v in (cfg.sim.planner or {}).items() if k != "kind"})
    kw: dict[str, Any] = dict(
        ttft_ms=sla.ttft_ms, itl_ms=sla.itl_ms,
        load_adjustment_interval_seconds=e.planner_interval_s or e.interval_s,
        throughput_adjustment_interval_seconds=(
            e.planner_interval_s or base.throughput_adjustment_interval_seconds),
        max_gpu_budget=e.max_gpu_budget, min_endpoint=e.min_endpoint,
        load_predictor=e.planner_predictor)
    if cfg.sim.disagg is not None:
        kw["mode"] = "disagg"
    kw.update(e.planner)
    kw.update(knobs or {})
    return replace(base, **kw)


def unread_planner_knobs(cfg: EnvConfig) -> list[str]:
    """One note per ``env.planner`` knob that neither Dynamo planner reads as configured
    (:func:`sim.planner.fields_read` of :func:`planner_config`: the load planner's
    ``optimization_target`` and both planners' ``load_predictor`` decide), naming where it
    would be read; [] when every knob acts. Setting such a knob changes nothing, so the CLI
    says so rather than drop it silently."""
    import copy

    from sim.planner import OPTIMIZATION_TARGETS, fields_read
    from sim.predictors import PREDICTORS
    pc = planner_config(cfg)
    read = fields_read(pc, "load") | fields_read(pc, "throughput")
    notes = []
    for key in cfg.env.planner:
        if key in read:
            continue
        would = []
        for name, choices in (("optimization_target", OPTIMIZATION_TARGETS),
                              ("load_predictor", tuple(PREDICTORS))):
            for choice in choices:
                alt = copy.copy(pc)
                object.__setattr__(alt, name, choice)     # no __post_init__: a probe only
                would += [f"the {p} planner reads it under {name}: {choice}"
                          for p in ("load", "throughput") if key in fields_read(alt, p)]
        notes.append(f"env.planner.{key} has no effect here: neither planner reads it under "
                     f"optimization_target: {pc.optimization_target}, load_predictor: "
                     f"{pc.load_predictor}" + (f" ({'; '.join(would)})" if would else ""))
    return notes



#: environment variable listing the notes (their digests) a process has given: processes it
#: starts afterwards (vec-env workers, Ray's env runners) inherit it and stay quiet
NOTED_ENV = "DYNOSIM_NOTED"
_NOTED: set[str] = set(os.environ.get(NOTED_ENV, "").split())


def _first_worker(digest: str) -> bool:
    """Whether this process is the first of its siblings to give note ``digest``: a
    multiprocessing child (SB3's ``SubprocVecEnv`` workers, whose parent built no env and so
    gave no note) claims a marker file named by its parent process (pid and start time, so
    a later process with a reused pid is another parent) in the temp directory; the first
    to create it gives the note. Any other process, or where ``/proc`` is missing: True."""
    import multiprocessing
    import tempfile
    if multiprocessing.parent_process() is None:
        return True

    def started(pid: int | str) -> str | None:     # /proc/PID/stat field 22
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
        except (OSError, IndexError):
            return None
    parent = os.getppid()
    since = started(parent)
    if since is None:
        return True
    d = Path(tempfile.gettempdir()) / f"dynosim-notes-{os.getuid()}"
    try:
        d.mkdir(exist_ok=True)
        fd = os.open(d / f"{parent}-{since}-{digest}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    except OSError:
        return True
    os.close(fd)
    for m in d.iterdir():                   # markers of parents that have exited
        pid, start = (m.name.split("-") + ["", ""])[:2]
        if started(pid) != start:
            m.unlink(missing_ok=True)
    return True


def note_unread_planner_knobs(cfg: EnvConfig) -> None:
    """A one-line stderr note for each ``env.planner`` knob no planner reads as configured
    (:func:`unread_planner_knobs`), once per run: a process gives each note once, and not
    when the process that started it gave it (``NOTED_ENV``) or, for vec-env worker
    processes, a sibling did (:func:`_first_worker`). ``DynoSim-v0`` calls it when built
    (the routing env refuses ``env.planner`` instead); trainers whose envs are built in
    worker processes call it first (``agents/rllib_train.py``)."""
    if not cfg.env.planner:
        return
    import hashlib
    import sys
    for text in unread_planner_knobs(cfg):
        digest = hashlib.sha1(text.encode()).hexdigest()[:16]
        if digest in _NOTED:
            continue
        _NOTED.add(digest)
        os.environ[NOTED_ENV] = " ".join(sorted(_NOTED))
        if _first_worker(digest):
            sys.stderr.write(f"note: {text}\n")       # one write: workers do not interleave


def _check_disagg(cfg: EnvConfig, v: _Validator) -> None:
    """A disaggregated env (DynoSim-v0 with a ``disagg`` section): both pools' floors fit
    the budget, and the initial pools lie within it (``env.initial_workers`` is for one
    aggregated pool; the pools start at ``disagg.num_prefill_workers`` / ``_decode_``)."""
    e, d = cfg.env, disagg_config(cfg.sim)
    # every key an aggregated recipe sets that pools do not take, in one error (the
    # first one's line), so a recipe is fixed in one go (RLlib: before Ray starts)
    bad = []
    if tuple(e.observation.features) != FEATURES:
        bad.append(("env.observation.features", "observes the default features (and "
                    "per-pool ones); remove env.observation.features"))
    if e.action.type != "delta":
        bad.append(("env.action.type", "takes one delta per pool; use type: delta"))
    if e.action.scale_down_window_s:
        bad.append(("env.action.scale_down_window_s", "has no scale-down window (one delta "
                    f"per pool; got {e.action.scale_down_window_s:g} s); use 0"))
    if e.action.reversal_cooldown_s:
        bad.append(("env.action.reversal_cooldown_s", "has no reversal cooldown (one delta "
                    f"per pool; got {e.action.reversal_cooldown_s:g} s); use 0"))
    if e.action.scale_down_window_initial != "none":
        bad.append(("env.action.scale_down_window_initial", "has no scale-down window (one "
                    "delta per pool); remove env.action.scale_down_window_initial"))
    if e.initial_workers is not None:
        bad.append(("env.initial_workers", "starts with disagg.num_prefill_workers and "
                    "disagg.num_decode_workers; remove env.initial_workers"))
    if bad:
        also = "".join(f"; also {k}: {why}" for k, why in bad[1:])
        raise v.error(f"a disaggregated env {bad[0][1]}{also}", bad[0][0])
    gp, gd = d.prefill_gpus_per_worker, d.decode_gpus_per_worker
    floor = e.min_endpoint * (gp + gd)
    if e.max_gpu_budget < floor:
        raise v.error(f"budget of {e.max_gpu_budget} GPUs is below min_endpoint "
                      f"({e.min_endpoint}) x ({gp} prefill + {gd} decode GPUs per worker)",
                      "env.max_gpu_budget")
    n_p, n_d = d.num_prefill_workers, d.num_decode_workers
    if n_p < e.min_endpoint or n_d < e.min_endpoint or n_p * gp + n_d * gd > e.max_gpu_budget:
        raise v.error(f"{n_p} prefill + {n_d} decode workers is outside [min_endpoint "
                      f"{e.min_endpoint} per pool, budget {e.max_gpu_budget} GPUs]",
                      "disagg.num_prefill_workers")


def _parse_env(data: Any, v: _Validator, disagg: bool = False) -> EnvSection:
    """The ``env`` section; ``disagg``: the config has pools (no residual action there, so
    a residual-only key's hint does not suggest one)."""
    if data is None:
        return EnvSection()
    if not isinstance(data, Mapping):
        raise v.error(f"expected a mapping, got {_show(data)}", "env")
    # every key env takes, its sections included (so an unknown key lists them too)
    v.check_keys(data, [f.name for f in fields(_FlatEnv)] + [*NESTED, "planner"], "env")
    flat = {k: x for k, x in data.items() if k not in NESTED and k != "planner"}
    for key in ("scenarios", "eval_scenarios"):
        if isinstance(flat.get(key), (list, tuple)):
            flat[key] = ",".join(str(s) for s in flat[key])
    env = v.section(flat, _FlatEnv, "env")
    out = EnvSection(**{f.name: getattr(env, f.name) for f in fields(_FlatEnv)})
    for name, cls in NESTED.items():
        sec = data.get(name)
        features = offsets = None
        if name == "observation" and isinstance(sec, Mapping) and "features" in sec:
            sec = dict(sec)
            features = _parse_features(sec.pop("features"), v)
        if name == "action" and isinstance(sec, Mapping) and "residual_offsets" in sec:
            sec = dict(sec)
            offsets = _parse_offsets(sec.pop("residual_offsets"), v)
        setattr(out, name, v.section(sec, cls, f"env.{name}"))
        if features is not None:
            out.observation.features = features
        if offsets is not None:
            out.action.residual_offsets = offsets
    # offsets other than the default under another action type have no effect: refused (a
    # resolved config, e.g. a run record's, carries the default under every type)
    # (the same for the base's own keys)
    if out.action.type != "residual":
        for key, why in (("residual_offsets", "takes offsets"),
                         ("base_interval_s", "has a base"),
                         ("base_before_first_tick", "has a base"),
                         ("stabilise", "has a base"),
                         ("offset_dwell_s", "takes offsets")):
            if getattr(out.action, key) != getattr(type(out.action)(), key):
                raise v.error(f"has no effect with env.action.type {out.action.type} (only "
                              f"a residual action {why}); remove it"
                              f"{'' if disagg else ' or use type: residual'}",
                              f"env.action.{key}")
    out.planner = data.get("planner") if data.get("planner") is not None else {}
    if isinstance(out.planner, Mapping):
        out.planner = dict(out.planner)
    return out


def _parse_features(value: Any, v: _Validator) -> list[str]:
    """``env.observation.features``: a non-empty list (or comma string) of distinct names
    from :data:`~dynosim_gym.observations.ALL_FEATURES`."""
    key = "env.observation.features"
    if isinstance(value, str):
        value = [x.strip() for x in value.split(",") if x.strip()]
    if not isinstance(value, (list, tuple)) or not value:
        raise v.error(f"expected a non-empty list of feature names, got {_show(value)}", key)
    seen: set[str] = set()
    for i, name in enumerate(value):
        if not isinstance(name, str):
            raise v.error(f"entry {i}: expected a feature name, got {_show(name)}", key)
        if name not in ALL_FEATURES:
            hint = difflib.get_close_matches(name, ALL_FEATURES, n=1)
            more = f" (did you mean '{hint[0]}'?)" if hint else \
                f"; expected names from {', '.join(ALL_FEATURES)}"
            raise v.error(f"entry {i}: unknown feature {name!r}{more}", key)
        if name in seen:
            raise v.error(f"entry {i}: feature {name!r} is listed twice", key)
        seen.add(name)
    return list(value)


def _parse_offsets(value: Any, v: _Validator) -> list[int]:
    """``env.action.residual_offsets``: ``[lo, hi]``, integers with ``lo <= 0 <= hi`` (offset
    0, the planner's own count, is always an action) and at most the field's worker range
    apart."""
    key = "env.action.residual_offsets"
    if not isinstance(value, (list, tuple)) or len(value) != 2 or \
            any(type(x) is not int for x in value):
        raise v.error(f"expected [lo, hi], two integers (workers), got {_show(value)}", key)
    lo, hi = value
    if not lo <= 0 <= hi:
        raise v.error(f"expected lo <= 0 <= hi (offset 0 is the planner's count), got "
                      f"[{lo}, {hi}]", key)
    if -lo > MAX_WORKERS or hi > MAX_WORKERS:
        raise v.error(f"[{lo}, {hi}] is outside [-{MAX_WORKERS}, {MAX_WORKERS}] workers", key)
    return [lo, hi]


# EnvSection's scalar fields (rules included), for the shared field validator.
_FlatEnv = make_dataclass(
    "_FlatEnv", [(f.name, f.type, field(default=f.default, metadata=f.metadata))
                 for f in fields(EnvSection) if f.name not in NESTED and f.name != "planner"],
    namespace={"__module__": __name__})


def _check(cfg: EnvConfig, v: _Validator) -> None:
    e = cfg.env
    if cfg.sim.workload is None:
        raise v.error("missing required section (a trace or synthetic workload)", "workload")
    kind = cfg.sim.workload.get("kind")
    if kind not in ("mooncake", "azure", "synthetic"):
        raise v.error(f"unknown workload kind {kind!r}; expected mooncake, azure or synthetic",
                      "workload.kind")
    for key in ("scenarios", "eval_scenarios"):
        for name in (getattr(e, key) or "").split(","):
            if name.strip() and name.strip() not in SCENARIOS:
                # per env (each env refuses the other's families)
                raise v.error(f"unknown scenario {name.strip()!r}; expected names of "
                              f"DynoSim-v0's families ({', '.join(FAMILIES)}), or of "
                              f"DynoSimRouting-v0's ({', '.join(ROUTING_FAMILIES)}), or the "
                              f"v0.1 load shapes either env takes "
                              f"({', '.join(LEGACY_SCENARIOS)})", f"env.{key}")
    if e.swing_min > e.swing_max:
        raise v.error(f"must be <= env.swing_max ({e.swing_max}), got {e.swing_min}",
                      "env.swing_min")
    if (e.startup_min_s is None) != (e.startup_max_s is None):
        raise v.error("give both startup_min_s and startup_max_s, or neither",
                      "env.startup_min_s")
    if e.startup_min_s is not None and e.startup_min_s > e.startup_max_s:
        raise v.error(f"must be <= env.startup_max_s ({e.startup_max_s}), got "
                      f"{e.startup_min_s}", "env.startup_min_s")
    if e.reward.sla_target > 1:
        raise v.error(f"must be <= 1, got {e.reward.sla_target}", "env.reward.sla_target")
    _check_planner(e, v)
    if e.planner:               # the knobs with the env's own fields (budget, SLA) on top
        require_sla(cfg)        # (without it, PlannerConfig's "must not be null" on env.planner)
        try:
            pc = planner_config(cfg)
            if cfg.sim.disagg is None:      # as the planner checks when attached
                pc._check_budget(cfg.sim.cluster.gpus_per_worker)
        except InputError as exc:
            # blame the env.planner key the user set (the error may name the budget it
            # meets, which came from the env)
            keys = [k for k in e.planner if k == exc.field or k in exc.detail]
            raise v.error(exc.detail, f"env.planner.{keys[0]}" if keys
                          else "env.planner") from None
    if e.rate_min_rps > e.rate_max_rps:
        raise v.error(f"must be <= env.rate_max_rps ({e.rate_max_rps}), got {e.rate_min_rps}",
                      "env.rate_min_rps")
    g = cfg.sim.cluster.gpus_per_worker
    if cfg.sim.disagg is not None:
        pass                              # pools checked by _check_disagg
    elif e.max_gpu_budget < e.min_endpoint * g:
        raise v.error(f"budget of {e.max_gpu_budget} GPUs is below min_endpoint "
                      f"({e.min_endpoint}) x {g} GPUs per worker", "env.max_gpu_budget")
    n0 = e.initial_workers or cfg.sim.cluster.num_workers
    if cfg.sim.disagg is None and not e.min_endpoint <= n0 <= cfg.max_workers:
        raise v.error(f"{n0} initial workers is outside [min_endpoint {e.min_endpoint}, "
                      f"budget {cfg.max_workers} workers]",
                      "env.initial_workers" if e.initial_workers else "cluster.num_workers")
    if kind == "synthetic":   # a default arrival (episodes draw their own); keys given on top
        given = cfg.sim.workload.get("arrival")
        if given is None or (isinstance(given, Mapping) and "process" not in given):
            cfg.sim.workload["arrival"] = {"process": "poisson", "rate": e.rate_max_rps,
                                           **(given or {})}
    if kind == "synthetic":
        _check_synthetic_workload(cfg)
    if e.planner_interval_s is not None and \
            abs(e.planner_interval_s / e.interval_s - round(e.planner_interval_s / e.interval_s)) > 1e-9:
        raise v.error(f"must be a multiple of env.interval_s ({e.interval_s:g}), got "
                      f"{e.planner_interval_s:g}", "env.planner_interval_s")
    b = e.action.base_interval_s
    if b is not None and abs(b / e.interval_s - round(b / e.interval_s)) > 1e-9:
        raise v.error(f"must be a positive multiple of env.interval_s ({e.interval_s:g}), "
                      f"got {b:g}", "env.action.base_interval_s")
    d = e.action.offset_dwell_s
    if d and abs(d / e.interval_s - round(d / e.interval_s)) > 1e-9:
        raise v.error(f"must be 0 or a multiple of env.interval_s ({e.interval_s:g}), got "
                      f"{d:g}", "env.action.offset_dwell_s")
    if d and e.action.stabilise != "base":
        raise v.error("needs env.action.stabilise: base (under count the scale-down window "
                      "and the reversal cooldown act on base + offset, so the provisioned "
                      "offset is not the held one); set stabilise: base, or use 0",
                      "env.action.offset_dwell_s")
    if e.action.scale_down_window_initial != "none":
        if not e.action.scale_down_window_s:
            raise v.error("needs a scale-down window (env.action.scale_down_window_s > 0; it "
                          "holds the initial count for that window); set one, or use none",
                          "env.action.scale_down_window_initial")
        if e.action.type == "residual" and e.action.stabilise != "count":
            raise v.error("needs env.action.stabilise: count (under base the window acts on "
                          "the base alone); set stabilise: count, or use none",
                          "env.action.scale_down_window_initial")
    if e.interval_s * e.episode_steps <= 0:
        raise v.error("episode has no length", "env.episode_steps")
    if e.interval_s * e.episode_steps > TIME_S_POS.hi:
        raise v.error(f"an episode of {e.episode_steps} x {e.interval_s:g} s exceeds "
                      f"{TIME_S_POS.hi:g} s (times are ms-exact below 2^52 ms)",
                      "env.episode_steps")


def _check_synthetic_workload(cfg: EnvConfig) -> None:
    """Validate the synthetic ``workload`` block when the config loads, located by file,
    line and field (or ``overrides``), not only at the first ``reset``: the episodes build
    it with their own arrivals and length (:mod:`dynosim_gym.episodes`), so a bad
    ``workload.arrival`` would otherwise never be read. A one-second build: cheap."""
    from sim.config import _located
    from sim.workloads import from_config
    block = dict(cfg.sim.workload)
    block.pop("num_requests", None)
    block["duration_s"] = 1.0
    with _located(cfg.sim):
        from_config(block, np.random.default_rng(0), prefix="workload")


def _check_planner(e: EnvSection, v: _Validator) -> None:
    """``env.planner``: keys are :class:`sim.planner.PlannerConfig` fields (not the ones the
    env sets itself); values must build a valid PlannerConfig."""
    from sim.planner import PlannerConfig
    if not isinstance(e.planner, Mapping):
        raise v.error(f"expected a mapping of planner knobs, got {_show(e.planner)}",
                      "env.planner")
    known = [f.name for f in fields(PlannerConfig) if f.name not in ENV_SET_PLANNER_FIELDS]
    for key in e.planner:
        if key in ("ttft_ms", "itl_ms"):
            raise v.error(f"the SLA is not a planner knob here: the env's planners read the "
                          f"run config's sla.{key} (YAML sla: {{{key}: V}}, or --set "
                          f"sla.{key}=V)", f"env.planner.{key}")
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            raise v.error("unknown planner knob" + (f" (did you mean '{hint[0]}'?)" if hint
                                                    else f"; expected one of {', '.join(known)}"),
                          f"env.planner.{key}")
    for key, value in e.planner.items():   # ranges as the run config's planner section
        rng = PLANNER_FIELDS.get(key)
        if rng is not None and isinstance(value, Real) and not isinstance(value, bool) \
                and math.isfinite(value):
            v.rules(value, {"range": rng}, f"env.planner.{key}")
    # the same quantity as env.planner_interval_s: the load planner decides at env steps
    key = "load_adjustment_interval_seconds"
    x = e.planner.get(key)
    if isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x) and x > 0 \
            and abs(x / e.interval_s - round(x / e.interval_s)) > 1e-9:
        raise v.error(f"must be a multiple of env.interval_s ({e.interval_s:g}), got {x:g}",
                      f"env.planner.{key}")
    try:
        PlannerConfig(**dict(e.planner))
    except InputError as exc:
        raise v.error(exc.detail, f"env.planner.{exc.field}") from None
    except TypeError as exc:
        raise v.error(str(exc), "env.planner") from None


#: PlannerConfig fields the env sets from its own config (SLAs; budget and min_endpoint
#: default to the env's, an ``env.planner`` entry may tighten them).
ENV_SET_PLANNER_FIELDS = ("mode", "ttft_ms", "itl_ms")


__all__ = ["EnvConfig", "EnvSection", "ActionSection", "ObservationSection", "RewardSection",
           "load_env_config", "resolve_config_path", "SCENARIOS", "LEGACY_SCENARIOS", "REWARD_MODES",
           "CONFIG_DIR", "load_config"]
