"""Episodes: which workload an environment replays after ``reset``.

A trace config gives windows of the trace: the trailing ``eval_fraction`` of it is held out
for ``split="eval"``, the rest serves training; the window start is drawn from the episode
seed (or pinned with ``options={"window_start_s": S}``). A synthetic config gives a load
shape per episode (diurnal, bursty, ramp or steady; ``options={"scenario": NAME}`` pins
one) with its mean rate drawn from ``[rate_min_rps, rate_max_rps]``; the train and eval
splits draw from different seed streams, so evaluation episodes are never training ones.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from gymnasium.utils import seeding

from sim.config import _coerce, _located, _show, build_workload, disagg_config
from sim.engine import EngineConfig
from sim.errors import InputError
from sim.schema import TIME_S
from sim.simulator import ClusterConfig, Simulation
from sim.router import KvRouterConfig
from sim.timing_spec import make_timing
from sim.workloads import TraceWindow, from_config
from sim.workloads.window import trace_duration_s

from . import scenarios as fam
from .config import SCENARIOS, EnvConfig, EnvSection

SPLIT_KEY = {"train": 0, "eval": 1}
OPTION_KEYS = ("window_start_s", "scenario", "split", "rate_rps", "swing")
_ENV_RANGES = {f.name: f.metadata.get("range") for f in fields(EnvSection)}
#: Numeric reset options -> (allowed range, the config field it comes from): the rate and
#: swing an episode would otherwise draw from ``env``'s ranges, a window start in seconds.
OPTION_RULES = {"rate_rps": (_ENV_RANGES["rate_max_rps"], "env.rate_max_rps"),
                "swing": (_ENV_RANGES["swing_max"], "env.swing_max"),
                "window_start_s": (TIME_S, None)}

#: Most requests an episode may generate (expected, at the highest rate it can draw): every
#: request stays in memory until the episode ends, ~0.8 KB each (measured on
#: ``autoscale_tiny`` at 300 req/s), so 2M is ~1.6 GB; the rates' own range (up to 1e6
#: req/s) would ask for terabytes. The default scenario's peak is ~65k (azure_mod).
MAX_EPISODE_REQUESTS = 2_000_000

_TRACES: dict[str, Any] = {}      # bundled traces of the trace families, parsed once per process
_CONFIG_TRACES: dict[tuple, Any] = {}   # traces of trace configs, by workload block and file
_ISL_CAPS: dict[str, int | None] = {}   # idle_prefill_cap by engine, timing, SLA and exactness


def config_trace(scfg):
    """The parsed trace of a trace config, shared by every env of the process that uses the
    same ``workload`` block and file (a vector env's copies, evaluation and tuning loops
    that build env after env): parsing the bundled Mooncake trace (~0.2 s) costs as much
    as ~30 steps of ``autoscale_mooncake``. Sharing is safe: windows only read the parsed rows (iteration state lives
    in each episode's :class:`~sim.workloads.TraceWindow`)."""
    block = scfg.workload
    path = block.get("path")
    stamp = None
    if isinstance(path, str) and Path(path).is_file():
        st = Path(path).stat()
        stamp = (str(Path(path).resolve()), st.st_mtime_ns, st.st_size)
    key = (json.dumps(block, sort_keys=True, default=str), stamp)
    if key not in _CONFIG_TRACES:
        _CONFIG_TRACES[key] = build_workload(scfg)
    return _CONFIG_TRACES[key]


def family_trace(name: str):
    """The parsed bundled trace behind a trace family (cached)."""
    if name not in _TRACES:
        from sim.config import BUNDLED_TRACES, DATA_DIR
        from sim.workloads import load_azure, load_mooncake
        path = DATA_DIR / BUNDLED_TRACES[name]
        _TRACES[name] = (load_mooncake(path) if name.startswith("mooncake")
                         else load_azure(path))
    return _TRACES[name]


class EpisodeFactory:
    """Builds one episode's workload and simulation from the config and an episode seed."""

    def __init__(self, cfg: EnvConfig, env_id: str | None = None) -> None:
        """``env_id`` (``DynoSim-v0`` or ``DynoSimRouting-v0``; None: no check) refuses
        the other environment's families (:data:`~dynosim_gym.scenarios.ENV_FAMILIES`) in
        the config and in ``reset`` options, with a one-line InputError."""
        self.cfg = cfg
        self.duration_s = cfg.env.interval_s * cfg.env.episode_steps
        kind = cfg.sim.workload["kind"]
        self.is_trace = kind in ("mooncake", "azure")
        self._trace = None
        self._timing = None
        self.scenarios = {"train": tuple(s.strip() for s in cfg.env.scenarios.split(","))}
        self.scenarios["eval"] = tuple(s.strip() for s in (
            cfg.env.eval_scenarios or cfg.env.scenarios).split(",") if s.strip())
        self.env_id = env_id
        self.foreign = {s: other for other, names in fam.ENV_FAMILIES.items()
                        if env_id is not None and other != env_id for s in names}
        self.valid_scenarios = tuple(s for s in SCENARIOS if s not in self.foreign)
        for split, key in (("train", "scenarios"), ("eval", "eval_scenarios")):
            bad = next((s for s in self.scenarios[split] if s in self.foreign), None)
            if bad is not None:
                file, line = cfg.sim.locate(f"env.{key}" if getattr(cfg.env, key) else
                                            "env.scenarios")
                raise ForeignScenario(self._foreign_msg(bad), owner=self.foreign[bad],
                                      file=file, line=line, field=f"env.{key}")
        if self.is_trace:
            # parsed here (once per process, :func:`config_trace`), so a bad trace line is a
            # one-line error at gym.make, before a caller prints or writes anything
            self._trace = config_trace(cfg.sim)
        else:
            file, line = cfg.sim.locate("env.rate_max_rps")
            self._check_requests(cfg.env.rate_max_rps, self.scenarios["train"]
                                 + self.scenarios["eval"], "env.rate_max_rps",
                                 file=file, line=line)

    def _check_requests(self, rate: float, names, field: str, **where: Any) -> None:
        """Refuse a rate whose episode would generate over :data:`MAX_EPISODE_REQUESTS`
        requests (expected; a scenario's requests per unit of rate: 1.5 for the legacy
        shapes' ramp, its TRACE_LOAD for a trace family, times a routing family's turns
        per session)."""
        turns = self.cfg.sim.workload.get("turns_per_session", 1) or 1
        per = max(fam.TRACE_LOAD.get(s, 1.5) * fam.ROUTING_FAMILIES.get(s, {}).get(
            "workload", {}).get("turns_per_session", turns) for s in names)
        n = rate * per * self.duration_s
        if n > MAX_EPISODE_REQUESTS:
            raise InputError(f"{rate:g} req/s would generate ~{n:,.0f} requests in a "
                             f"{self.duration_s:g} s episode, over the "
                             f"{MAX_EPISODE_REQUESTS:,} an episode may hold (each stays in "
                             "memory until the episode ends)", field=field, **where)

    def _foreign_msg(self, scenario: str) -> str:
        return (f"{scenario} is a {self.foreign[scenario]} scenario, not a {self.env_id} "
                f"one; expected one of {', '.join(self.valid_scenarios)}")

    # -- pieces shared across episodes ---------------------------------------------------
    @property
    def trace(self):
        if self._trace is None:
            self._trace = config_trace(self.cfg.sim)
        return self._trace

    @property
    def timing(self):
        if self._timing is None:
            t = self.cfg.sim.timing
            with _located(self.cfg.sim, "timing", {"timing": "timing.model"}):
                self._timing = make_timing(t.model, speedup_ratio=t.speedup_ratio,
                                           decode_speedup_ratio=t.decode_speedup_ratio)
        return self._timing

    @property
    def isl_cap(self) -> int | None:
        """Prompt cap of :data:`~dynosim_gym.scenarios.PROMPT_CAPPED` families (tokens):
        :func:`~dynosim_gym.scenarios.idle_prefill_cap` of this config's engine, timing model
        and TTFT SLA, computed once per process and config."""
        scfg = self.cfg.sim
        key = json.dumps([asdict(scfg.engine), asdict(scfg.timing), scfg.sla.ttft_ms,
                          scfg.run.exact_steps], sort_keys=True, default=str)
        if key not in _ISL_CAPS:
            _ISL_CAPS[key] = fam.idle_prefill_cap(
                EngineConfig(**asdict(scfg.engine)), self.timing, scfg.sla.ttft_ms,
                scfg.run.exact_steps)
        return _ISL_CAPS[key]

    # -- one episode -------------------------------------------------------------------------
    def describe_options(self, options: Mapping[str, Any] | None) -> dict[str, Any]:
        """``reset``'s ``options`` checked against this config: known keys only, each one
        that applies to the config's workload (``window_start_s`` to trace configs and
        trace-window families, ``mooncake_window`` and ``azure_window``;
        ``scenario``, ``rate_rps`` and ``swing`` to synthetic ones, ``swing`` to workload
        families and ``rate_rps`` to scenarios with a drawn rate), numbers finite and within
        the range of the ``env`` field they stand for (:data:`OPTION_RULES`, the ranges of
        :mod:`sim.schema`). Returns them with numbers as floats; raises a one-line
        :class:`~sim.errors.InputError` (a ``ValueError``) naming ``options.KEY``."""
        if options is None:
            return {}
        if not isinstance(options, Mapping):
            raise InputError(f"expected a dict of reset options, got "
                             f"{type(options).__name__}", field="options")
        opts = dict(options)
        for key in opts:
            if key not in OPTION_KEYS:
                raise InputError(f"unknown reset option {key!r}; expected one of "
                                 f"{', '.join(OPTION_KEYS)}", field=f"options.{key}")
        for key in ("split", "scenario"):
            if key in opts and not isinstance(opts[key], str):
                raise _option_error(f"expected a string, got {_show(opts[key])}", key)
        split = opts.get("split", self.cfg.env.split)
        if split not in SPLIT_KEY:
            raise _option_error(f"unknown split {split!r}; expected train or eval", "split")
        scenario = opts.get("scenario")
        if scenario in self.foreign:
            raise ForeignScenario(self._foreign_msg(scenario), owner=self.foreign[scenario],
                                  field="options.scenario")
        if scenario is not None and scenario not in SCENARIOS:
            raise _option_error(f"unknown scenario {scenario!r}; expected one of "
                                f"{', '.join(self.valid_scenarios)}", "scenario")
        self._applies(opts, split)
        for key, (allowed, like) in OPTION_RULES.items():
            if key in opts:
                value = opts[key]
                if isinstance(value, np.generic):      # numpy scalars count as numbers
                    value = value.item()
                value = _coerce(value, float, f"options.{key}",
                                lambda msg, dotted: InputError(msg, field=dotted))
                msg = allowed.violation(value)
                if msg:
                    raise _option_error(msg + (f"; the range of {like}" if like else ""), key)
                opts[key] = value
        if "rate_rps" in opts:
            scenario = opts.get("scenario")
            self._check_requests(opts["rate_rps"], (scenario,) if scenario else
                                 self.scenarios[split], "options.rate_rps")
        return opts

    def _applies(self, opts: dict[str, Any], split: str) -> None:
        """Refuse an option that does not apply to this config's workload."""
        error = _option_error
        if self.is_trace:
            for key in ("scenario", "rate_rps", "swing"):
                if key in opts:
                    raise error(f"applies to synthetic workloads only; this config replays a "
                                f"{self.cfg.sim.workload['kind']} trace (pin its window "
                                "with window_start_s)",
                                key)
            return
        scenario = opts.get("scenario")
        possible = (scenario,) if scenario is not None else self.scenarios[split]
        # a trace-window family (mooncake_window, azure_window) takes a window start: each
        # scenario the episode may draw must be one
        if "window_start_s" in opts and not all(
                "trace" in fam.ROUTING_FAMILIES.get(s, {}) for s in possible):
            windows = [s for s, spec in fam.ROUTING_FAMILIES.items() if "trace" in spec]
            raise error("applies to trace workloads only (a trace config, or scenario "
                        f"{' or '.join(windows)}); this episode's workload is synthetic "
                        f"({', '.join(possible)}; pin its load with scenario, rate_rps, "
                        "swing)", "window_start_s")
        if "swing" in opts and not any(s in fam.FAMILIES for s in possible):
            raise error(f"applies to workload families ({', '.join(fam.FAMILIES)}) only, not "
                        f"to {', '.join(possible)}", "swing")
        if "rate_rps" in opts and all("trace" in fam.ROUTING_FAMILIES.get(s, {})
                                      for s in possible):
            raise error(f"{', '.join(possible)} replays a trace at its own rate",
                        "rate_rps")

    def build(self, ep_seed: int, options: Mapping[str, Any] | None = None
              ) -> tuple[Simulation, dict[str, Any]]:
        """A fresh simulation for one episode, and a JSON-ready description of it."""
        opts = self.describe_options(options)
        env = self.cfg.env
        split = opts.get("split", env.split)
        ss = np.random.SeedSequence(ep_seed, spawn_key=(SPLIT_KEY[split],))
        rng_episode, rng_workload, rng_sim = (np.random.default_rng(s) for s in ss.spawn(3))
        sim_seed = int(rng_sim.integers(2**31))
        if self.is_trace:
            workload, desc = self._window(rng_episode, split, opts)
        else:
            workload, desc = self._synthetic(rng_episode, rng_workload, opts, split)
        desc["split"] = split
        scfg = self.cfg.sim
        n0 = env.initial_workers or scfg.cluster.num_workers
        startup = scfg.cluster.startup_time_s
        if env.startup_min_s is not None:         # drawn last: earlier draws stay as in v0.1
            startup = float(np.floor(rng_episode.uniform(env.startup_min_s, env.startup_max_s)))
            desc["startup_time_s"] = startup
        cluster = ClusterConfig(num_workers=n0, gpus_per_worker=scfg.cluster.gpus_per_worker,
                                startup_time_s=startup)
        sla = {"ttft_ms": scfg.sla.ttft_ms, "itl_ms": scfg.sla.itl_ms, "e2e_ms": None}
        sim = Simulation(
            workload, engine=EngineConfig(**asdict(scfg.engine)), timing=self.timing,
            cluster=cluster, router=scfg.router.mode,
            kv_router=KvRouterConfig(**{k: v for k, v in asdict(scfg.router).items()
                                        if k != "mode"}),
            seed=sim_seed, exact=scfg.run.exact_steps, sla=sla,
            disagg=disagg_config(scfg),   # None, or the pools of a disaggregated env
            token_gaps=False)          # observations and rewards use per-request TPOT
        return sim, desc

    def _window(self, rng: np.random.Generator, split: str, opts: dict) -> tuple[Any, dict]:
        trace = self.trace
        total = trace_duration_s(trace)
        train_end = total * (1.0 - self.cfg.env.eval_fraction)
        lo, hi = (0.0, train_end) if split == "train" else (train_end, total)
        if "window_start_s" in opts:
            start = opts["window_start_s"]
            if not (isinstance(start, (int, float)) and math.isfinite(start)
                    and 0 <= start <= max(0.0, total - self.duration_s)) \
                    or self.duration_s > total + self.cfg.env.interval_s:
                raise InputError(f"a {self.duration_s:g} s window must start in [0, "
                                 f"{max(0.0, total - self.duration_s)!r}] s of this "
                                 f"{total:.0f} s trace, got {start!r}",
                                 field="options.window_start_s")
            start = float(start)
        else:
            if hi - lo < self.duration_s:
                file, line = self.cfg.sim.locate("env")
                raise InputError(f"the {split} split of this {total:.0f} s trace "
                                 f"({hi - lo:.0f} s; eval_fraction "
                                 f"{self.cfg.env.eval_fraction}) is shorter than a "
                                 f"{self.duration_s:g} s episode; pin windows with "
                                 "options={'window_start_s': S}", file=file, line=line,
                                 field="env.episode_steps")
            start = float(rng.uniform(lo, hi - self.duration_s))
            start = math.floor(start)          # whole seconds: readable, reproducible
        window = TraceWindow(trace, start, start + self.duration_s)
        return window, {"workload": "trace_window", "window_start_s": start,
                        "day_offset_s": start}

    def _synthetic(self, rng: np.random.Generator, rng_workload: np.random.Generator,
                   opts: dict, split: str = "train") -> tuple[Any, dict]:
        env = self.cfg.env
        scenario = opts.get("scenario")
        names = self.scenarios[split]
        if scenario is None:
            scenario = names[int(rng.integers(len(names)))]
        rate = float(opts.get("rate_rps", rng.uniform(env.rate_min_rps, env.rate_max_rps)))
        if scenario in fam.FAMILIES:
            return self._family(scenario, rate, rng, rng_workload, opts, split)
        if scenario in fam.ROUTING_FAMILIES:
            return self._routing_family(scenario, rate, rng, rng_workload, split,
                                        opts.get("window_start_s"))
        day_offset = float(rng.uniform(0.0, env.day_period_s))
        T = self.duration_s
        if scenario == "diurnal":
            arrival = {"process": "diurnal", "mean_rate": rate,
                       "amplitude": float(rng.uniform(0.4, 0.9)),
                       "period_s": env.day_period_s, "phase_s": day_offset}
        elif scenario == "bursty":
            arrival = {"process": "gamma", "rate": rate, "cv": float(rng.uniform(2.0, 4.0))}
        elif scenario == "ramp":
            lo, hi = sorted((rate * float(rng.uniform(0.2, 0.6)), rate * 1.5))
            up = bool(rng.integers(2))
            arrival = {"process": "ramp", "start_rate": lo if up else hi,
                       "end_rate": hi if up else lo, "duration_s": T}
        else:
            arrival = {"process": "poisson", "rate": rate}
        block = dict(self.cfg.sim.workload)
        block.pop("num_requests", None)
        block.update(arrival=arrival, duration_s=T)
        with _located(self.cfg.sim):
            workload = from_config(block, rng_workload, prefix="workload")
        return workload, {"workload": "synthetic", "scenario": scenario,
                          "arrival": arrival, "day_offset_s": day_offset}


    def _family(self, family: str, peak: float, rng: np.random.Generator,
                rng_workload: np.random.Generator, opts: dict, split: str
                ) -> tuple[Any, dict]:
        """An episode of a workload family (:mod:`dynosim_gym.scenarios`)."""
        env = self.cfg.env
        swing = float(opts.get("swing", rng.uniform(env.swing_min, env.swing_max)))
        T = self.duration_s
        desc: dict[str, Any] = {"workload": "family", "scenario": family,
                                "peak_rps": peak, "swing": swing, "day_offset_s": 0.0}
        if family in fam.TRACE_FAMILIES:
            trace = family_trace(fam.TRACE_FAMILIES[family])
            peak *= fam.TRACE_LOAD[family]
            envelope = fam.draw_envelope(family, rng, T, peak, swing)
            row = fam.trace_start_row(trace, rng, split, env.eval_fraction)
            times = fam.poisson_times_ms(envelope, T, rng_workload)
            cap = self.isl_cap if family in fam.PROMPT_CAPPED else None
            workload = fam.EnvelopeTraceWorkload(trace, row, times, f"{family}[row {row}]",
                                                 isl_cap=cap)
            desc.update(peak_rps=peak, first_row=row)
            if family in fam.PROMPT_CAPPED:
                desc.update(isl_cap_tokens=cap, capped_requests=workload.capped)
        else:
            envelope = fam.draw_envelope(family, rng, T, peak, swing)
            block = dict(self.cfg.sim.workload)
            block.pop("num_requests", None)
            block.pop("arrival", None)
            block.update(arrival={"process": "poisson", "rate": 1.0}, duration_s=T)
            with _located(self.cfg.sim):
                workload = from_config(block, rng_workload, prefix="workload")
            workload.arrival = fam.EnvelopeArrivals(envelope, T)
        desc["envelope"] = envelope.describe()
        # the same load as a run-config arrival process (``dynosim simulate --config``)
        desc["arrival"] = {"process": "piecewise", "knots_s": list(envelope.knots_s),
                           "rates_rps": list(envelope.rates)}
        desc["mean_rps"] = envelope.mean(T)
        return workload, desc

    def _routing_family(self, family: str, rate: float, rng: np.random.Generator,
                        rng_workload: np.random.Generator, split: str,
                        window_start_s: float | None = None) -> tuple[Any, dict]:
        """An episode of a routing family (:data:`dynosim_gym.scenarios.ROUTING_FAMILIES`);
        a trace-window family's window starts at ``window_start_s`` when given (any start
        whose window fits in the trace, as for a trace config), else drawn in the split."""
        spec = fam.ROUTING_FAMILIES[family]
        T = self.duration_s
        desc: dict[str, Any] = {"workload": "routing_family", "scenario": family,
                                "day_offset_s": 0.0}
        if "trace" in spec:
            trace = family_trace(spec["trace"])
            total = trace_duration_s(trace)
            start = fam.trace_window_start(total, T, rng, split, self.cfg.env.eval_fraction)
            if window_start_s is not None:
                if not 0 <= window_start_s <= total - T:
                    raise _option_error(f"a {T:g} s window must start in [0, "
                                        f"{max(0.0, total - T)!r}] s of the {total:.0f} s "
                                        f"{spec['trace']} trace, got {window_start_s:g}",
                                        "window_start_s")
                start = float(window_start_s)
            desc.update(trace=spec["trace"], window_start_s=start)
            return TraceWindow(trace, start, start + T), desc
        arrival = fam.routing_arrival(spec["arrival"], rate, rng)
        block = dict(self.cfg.sim.workload)
        block.pop("num_requests", None)
        block.update(spec["workload"])
        block.update(arrival=arrival, duration_s=T)
        with _located(self.cfg.sim):
            workload = from_config(block, rng_workload, prefix="workload")
        desc["arrival"] = arrival
        return workload, desc


class ForeignScenario(InputError):
    """A scenario of the other environment (``owner``: the env it belongs to)."""

    def __init__(self, message: str, *, owner: str, **where: Any) -> None:
        super().__init__(message, **where)
        self.owner = owner


def _option_error(msg: str, key: str) -> InputError:
    return InputError(msg, field=f"options.{key}")


def draw_episode_seed(rng: np.random.Generator) -> int:
    """The next episode seed from an environment's ``np_random`` (``reset``)."""
    return int(rng.integers(2**63))


def episode_seed(seed: int) -> int:
    """The episode seed ``env.reset(seed=seed)`` builds its episode from (either
    environment): :meth:`EpisodeFactory.build` of it is that reset's episode."""
    return draw_episode_seed(seeding.np_random(seed)[0])


def begin_episode(env, ep_seed: int, options: Mapping[str, Any] | None) -> Simulation:
    """Common start of an episode for both environments: a fresh simulation, the episode's
    description (seed included) and its options (kept for pickling by replay)."""
    env.sim, env.episode = env.episodes.build(ep_seed, options)
    env.episode["seed"] = ep_seed
    env._options = dict(options or {})
    return env.sim
