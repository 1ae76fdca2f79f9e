"""``DynoSim-v0``: learn to autoscale an aggregated LLM-serving pool."""
from __future__ import annotations

import collections
import dataclasses
import json
import math
from typing import Any

import gymnasium as gym
import numpy as np

from sim.planner import (DisaggLoadPlanner, DisaggThroughputPlanner, LoadPlanner,
                         PlannerConfig, ThroughputPlanner)

from .actions import POOLS, PoolDeltaAction, make_action_type
from .base import EPISODE_OVER, ResetNeeded, SimEnv
from .config import EnvConfig, load_env_config
from .episodes import EpisodeFactory, begin_episode
from .monitor import ClusterMonitor, Interval, _pct
from .observations import FEATURES, ObservationBuilder, PoolObservationBuilder

DEFAULT_CONFIG = "autoscale_default"
#: A *flap* is a reversal (a scaling event opposite to the previous one) issued less than this
#: many seconds after that previous move: scale up then down again (or down then up) within
#: the window. 300 s is Kubernetes HPA's default scale-down stabilization window
#: (``behavior.scaleDown.stabilizationWindowSeconds``; the HPA docs' "Flapping" section:
#: https://kubernetes.io/docs/tasks/run-application/horizontal-pod-autoscale/#flapping).
#: Counted in ``episode_summary()["flaps"]``; reversals also count the two per cycle any
#: load-following controller makes on a load that rises and falls, flaps do not.
FLAP_WINDOW_S = 300.0


class _Advice:
    """Planner mixin: remember the target instead of scaling (the env applies it). A target
    above the provisioned count (active + starting) is a scale-up decided now: it starts
    the planner's ``scale_down_cooldown_seconds`` as :meth:`sim.planner.LoadPlanner._apply`
    does when the planner scales itself (the env applies the advice in the same step)."""
    advice: int | None = None

    def _apply(self, sim, target: "int | dict[str, int]", reason: str) -> None:
        self.advice = target
        # disaggregated: one target per pool (sim.planner._DisaggPools._apply)
        ups = ([target[p] > sum(sim.counts(p)[:2]) for p in target] if isinstance(target, dict)
               else [target > sum(sim.counts()[:2])])
        if any(ups):
            self.last_scale_up_s = sim.now / 1000.0


class LoadAdvisor(_Advice, LoadPlanner):
    pass


class ThroughputAdvisor(_Advice, ThroughputPlanner):
    pass


class TrailingThroughputAdvisor(ThroughputAdvisor):
    """The residual action's base with ``env.action.base_interval_s = B`` > ``interval_s``:
    the throughput planner ticking every ``interval_s`` (the env step), its demand the
    arrivals over the trailing ``B`` seconds rather than the last ``interval_s`` (its
    requests, and their mean ISL and OSL, over ``min(B, time since attach)``), i.e. the
    demand Dynamo's throughput planner reads with ``throughput_adjustment_interval_seconds
    = B`` (its default: 180 s), re-evaluated every step instead of every ``B`` s. The
    requests fed to the predictor are that count scaled to one ``interval_s`` (so
    ``demand = requests / interval_s`` is the trailing mean rate, requests/s); the KV hit
    rate is the planner's own (requests recorded since its last tick)."""

    def __init__(self, config: PlannerConfig, trailing_s: float) -> None:
        super().__init__(config)
        self.trailing_ms = trailing_s * 1000.0
        # (sim time ms, arrived requests, input tokens, output tokens), cumulative, one per tick
        self._marks: collections.deque[tuple[float, int, int, int]] = collections.deque()

    def attach(self, sim) -> "TrailingThroughputAdvisor":
        super().attach(sim)
        self._marks.append((sim.now, *self._last_arrived))
        return self

    def _observe_interval(self, sim) -> tuple[float, float, float]:
        super()._observe_interval(sim)                     # the KV hit rate, the last mark
        now = sim.now
        self._marks.append((now, *self._last_arrived))
        start = now - self.trailing_ms
        while len(self._marks) > 2 and self._marks[1][0] <= start + 1e-6:
            self._marks.popleft()                          # keep the newest mark <= start
        t0, n0, i0, o0 = self._marks[0]
        _, n1, i1, o1 = self._marks[-1]
        n = n1 - n0
        span_s = (now - t0) / 1000.0
        per_interval = n * self.interval_s / span_s if span_s > 0 else 0.0
        return per_interval, ((i1 - i0) / n if n else 0.0), ((o1 - o0) / n if n else 0.0)


ADVISORS = {"load": LoadAdvisor, "throughput": ThroughputAdvisor}


def planner_config(cfg: EnvConfig, knobs: dict | None = None) -> PlannerConfig:
    """The planner an env's heuristics run, in layers: Dynamo's defaults, the config's
    ``planner`` section (Dynamo's knob names; its ``kind`` is the CLI's, here the heuristic
    picks the planner), the env's structure (SLA targets, budget, min_endpoint,
    ``env.planner_predictor``, intervals), then ``env.planner`` and ``knobs`` (any other
    :class:`~sim.planner.PlannerConfig` field, by name; a tuned planner) on top.

    Intervals: ``env.planner_interval_s`` if set; else the load planner decides every env
    step and the throughput planner at its own interval (Dynamo: 180 s). Ticking the
    throughput planner every 10 s made its forecast of a 10 s window flip between N and
    N+1, so it drained each new worker the moment it became ready, before it served."""
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
    return dataclasses.replace(base, **kw)


class DynoSimEnv(SimEnv):
    """
    ## Description

    An aggregated pool of LLM-serving workers (vLLM-style engines behind a router, replayed by
    the ``sim`` discrete-event core with Dynamo's semantics) receives a request stream whose
    rate swings 5-20x within each 30-minute episode: one of the named workload families of
    :mod:`dynosim_gym.scenarios` (diurnal swings, flash crowds, rate steps, ramps, and the
    bundled Mooncake and Azure traces under a diurnal or step envelope). Training episodes
    draw from ``env.scenarios``, held-out ones (``split="eval"``) from
    ``env.eval_scenarios``. Every ``interval_s`` of simulated time (default 5 s, Dynamo's
    load-planner interval) the agent decides how many workers to provision. New workers
    spend a start-up time (drawn per episode in 30-180 s) starting (paid for, not serving); removed workers first cancel
    starting ones, then drain (paid for until their last request finishes). The goal is
    Dynamo's planner's: meet the TTFT and ITL SLAs with as few GPU-seconds as possible.
    Config ``autoscale_legacy`` is v0.1's default (10-minute episodes of 0.3-2 req/s);
    ``autoscale_mooncake`` replays windows of the real trace.

    ## Action Space

    ``Discrete(2k + 1)`` with ``env.action.type = delta`` (default, ``k = max_step = 2``):
    action ``i`` changes the provisioned workers (active + starting) by ``i - k``. With
    ``type = target``: ``Discrete(max_workers - min_endpoint + 1)``, action ``i`` asks for
    ``min_endpoint + i`` workers. With ``type = residual`` (residual policy learning: Silver
    et al. 2018, "Residual Policy Learning"; Johannink et al. 2019, "Residual Reinforcement
    Learning for Robot Control"): ``Discrete(hi - lo + 1)`` for ``env.action.
    residual_offsets = [lo, hi]`` (default ``[-2, 4]``), action ``i`` asks for ``base + lo +
    i`` workers, where ``base`` is Dynamo's throughput planner's count for the load it reads
    (Dynamo 1.6.1 ``components/src/dynamo/planner/core/throughput_scaling.py``, aggregated
    mode; ``dynamo_semantics.md`` §6.3: predicted requests/s over one engine's best rate
    meeting the TTFT and ITL SLAs at the predicted ISL/OSL, ceiled):
    a :class:`~sim.planner.ThroughputPlanner` advisor ticks every ``interval_s`` inside the
    simulation, with ``env.planner_predictor`` (default ``constant``: the last interval) and
    ``env.planner`` knobs, without its per-decision step limit; ``base`` is its last tick's
    count (``min_endpoint`` before the first tick, i.e. for the first step; the count
    provisioned with ``env.action.base_before_first_tick: hold``), reported as
    ``info["base_workers"]``. ``env.action.base_interval_s = B`` (default: ``interval_s``,
    the above) smooths the base: its demand is the arrivals over the trailing ``B`` seconds
    (Dynamo's ``throughput_adjustment_interval_seconds``, default 180 s there), still
    re-evaluated every step (:class:`TrailingThroughputAdvisor`; ``B`` a multiple of
    ``interval_s``). ``target_action(n)`` maps a count to the nearest offset.
    Requests are clamped to ``[min_endpoint, max_gpu_budget //
    gpus_per_worker]`` inside the env; ``action_masks()`` gives the actions that need no
    clamping (sb3-contrib MaskablePPO). ``env.action.scale_down_window_s = W`` (default 0,
    off; aggregated pool only) stabilises scale-downs as Kubernetes' HPA does
    (``behavior.scaleDown.stabilizationWindowSeconds``): the env provisions the highest count
    requested over the last ``ceil(W / interval_s)`` decisions, this one included, so a
    scale-up applies at once and a scale-down once every request in the window was lower
    (``info["requested_workers"]`` is the request, ``info["target_workers"]`` what was
    provisioned). ``env.action.scale_down_window_initial = hold`` (default ``none``; needs
    a window and, residual, ``stabilise: count``) counts the count provisioned at reset as
    a request at t = 0: no scale-down is decided in the first ``W`` s, scale-ups apply. ``env.action.reversal_cooldown_s = C`` (default 0, off; aggregated pool
    only) holds a move opposite to the last scaling event issued less than ``C`` s after it
    (EC2 Auto Scaling's cooldown, "no further scaling activity until it expires", applied
    to reversals only, so a policy can keep climbing through a surge; after the window):
    with ``C >= 300`` no flap (below) can happen. ``info["requested_workers"]`` and
    ``info["target_workers"]`` show a held move as they show the window's. With a residual
    action, ``env.action.stabilise = base`` (default ``count``: the above) applies the
    window and the cooldown to the base sequence alone, before the decision: the stabilised
    base (clamped, reported as ``info["base_workers"]``, the raw planner count as
    ``info["raw_base_workers"]``) plus the offset is provisioned at once, clamped, so a
    stochastic policy's sampled offset takes effect that step (under ``count`` it is
    provisioned the highest of its recent samples). ``target_action(n)`` maps a count to
    the offset from the stabilised base. Under ``base``, ``env.action.offset_dwell_s = D``
    (default 0, off; a multiple of ``interval_s``) is a minimum dwell on the applied offset:
    once it changes (the first change included) it is held for at least ``D`` s, and an
    action asked during the hold is not applied; the base is still re-computed and
    stabilised every step and the held offset added to it. ``info["applied_offset"]`` is
    the offset in force (workers, before clamping), ``info["offset_held"]`` whether the
    step's action asked for another one (``info["requested_workers"]`` is still the ask).
    ``D = interval_s`` allows a change every step, the trajectory without a dwell (the
    two ``info`` keys aside). ``action_masks()`` reads the ask, not the hold. An action the
    space does not contain (floats, bools,
    strings, arrays other than 0-d integer ones) raises ``ValueError``; ``step`` after
    ``truncated=True`` without ``reset`` raises :class:`~dynosim_gym.base.ResetNeeded`.

    Disaggregated pools (a config with a ``disagg`` section, e.g. ``autoscale_disagg``;
    :class:`DynoSimDisaggEnv`): ``MultiDiscrete([2k + 1, 2k + 1])``, one delta per pool
    (prefill, decode), each pool clamped to ``min_endpoint`` and the pair to the GPU
    budget; ``action_masks()`` is a bool array over the flattened sub-actions (MaskablePPO's
    convention), prefill's first.

    ## Observation Space

    ``Box(low, 20, (22 * stack,), float32)``, features in :data:`FEATURES` order: arrival
    rate, mean ISL and OSL of the interval's arrivals, queued and running requests, queued
    prefill tokens, KV utilisation, KV hit rate, p50/p90 TTFT and p90 ITL of the interval's
    completions (relative to the SLAs), the oldest request still waiting for its first token,
    last interval's SLA attainment, active/starting/draining workers, time of day (sin, cos),
    episode progress, the arrival-rate slope and queue growth over the last 3 intervals, and
    the episode's start-up time. ``env.observation.features`` chooses other entries by name
    (these, :data:`~dynosim_gym.observations.CAPACITY_FEATURES`, load in workers' worth
    of one worker's throughput, and :data:`~dynosim_gym.observations.WORK_FEATURES`,
    running and waiting sequences in decode batches one worker holds within the ITL SLA;
    the shape follows the list). Disaggregated pools: ``Box(low, 20, (35 * stack,))``, the 22
    over both pools then, per pool, its active/starting/draining workers, queued and running
    requests and KV utilisation, and the KV handoffs in flight (:data:`~dynosim_gym.
    observations.POOL_FEATURES`). Unbounded values are scaled and log-scaled (``log1p``), so
    they do not saturate outside the training range; the two trends are signed (low -20,
    else 0). ``env.observation.stack = N`` concatenates the last N intervals.

    ## Rewards

    ``r = sla - gpu_weight * gpu_seconds - change_penalty * |changed|``, with the SLA term
    by ``env.reward.mode``: ``per_request`` (default) ``-sla_weight * missed /
    request_scale``, where ``missed`` counts requests that missed the SLA in the interval
    (completed with TTFT > ``sla.ttft_ms`` or per-request ITL > ``sla.itl_ms``, rejected, or
    first seen waiting longer than ``timeout_s`` without a first token); each request
    counts once, when it is decided, so quiet intervals do not dilute bursts;
    ``lagrangian``: ``multiplier * (met - sla_target * decided) / request_scale`` with a dual
    variable updated during training (:mod:`agents.lagrangian`); ``interval`` (v0.1):
    ``sla_weight * attainment`` of the interval, 1.0 if none was decided. GPU-seconds are
    provisioned in the interval, starting and draining workers included; ``|changed|`` =
    workers added or removed. Defaults: ``sla_weight`` 1.0, ``request_scale`` =
    ``rate_max_rps * interval_s``, ``gpu_weight`` 0.5 / (interval_s x max_gpu_budget) (a full
    budget for a whole step costs 0.5), ``change_penalty`` 0.01. Each term is in
    ``info["reward_terms"]``. Disaggregated pools: GPU-seconds count each role's GPUs per
    worker, and ``gpu_prefill`` + ``gpu_decode`` split the GPU term.

    ## Starting State

    ``initial_workers`` (default ``cluster.num_workers``) active workers with empty caches at
    t = 0 of the episode; the first observation describes an empty interval.

    ## Episode End

    Never terminates; after ``episode_steps`` steps (default 360 x 5 s = 30 simulated minutes)
    ``truncated=True``. The final ``info["episode_summary"]`` summarises the episode: SLA
    attainment, GPU-hours, p90 TTFT/ITL, requests decided, scaling events and reversals.

    Scaling keys of ``episode_summary``: ``scaling_events`` (steps that changed the
    provisioned count), ``reversals`` (scaling events opposite to the previous one), ``flaps``
    (reversals issued less than :data:`FLAP_WINDOW_S` = 300 s after the previous, opposite,
    move; Kubernetes HPA's default scale-down stabilization window,
    ``behavior.scaleDown.stabilizationWindowSeconds``, its docs' "Flapping" section) and
    ``flap_steps`` (the 0-based step of each flap). ``flaps <= reversals <=
    scaling_events``.

    Info keys vs ``dynosim evaluate``: the env names percentiles metric first,
    ``info["ttft_p90_ms"]`` / ``info["itl_p90_ms"]`` (the interval's, and the episode's in
    ``episode_summary``; nearest-rank p90 of TTFT and per-request ITL (TPOT), ms); the
    evaluation reports the same figures as ``p90_ttft_ms`` / ``p90_itl_ms``, pooled over
    every request of every episode, and under those names in its ``per_episode`` entries
    (:mod:`agents.evaluate`). The env's names are public API and stay.

    ## Arguments

    ``gym.make("DynoSim-v0", config=None, render_mode=None, **overrides)``: ``config`` is a
    YAML path, the name of a bundled scenario in ``envs_configs`` or a dict (default
    ``autoscale_default``); overrides are env fields (``interval_s=5``), sections
    (``reward={"gpu_weight": 0}``) or dotted keys. ``reset(seed=..., options=...)`` options:
    ``split`` (``train``/``eval``: held-out families, windows and seeds), ``window_start_s``
    (trace configs: pin the window; any window that fits in the trace), ``scenario``,
    ``rate_rps`` (mean rate of a legacy shape, peak rate of a family; a trace family's
    peak is it times its ``scenarios.TRACE_LOAD``, e.g. ``mooncake_mod`` x 0.11) and
    ``swing``;
    each is checked and one that does not apply to the config's workload refused
    (:meth:`~dynosim_gym.episodes.EpisodeFactory.describe_options`: a one-line ``ValueError``).
    ``render_mode`` (``metadata["render_modes"]``): ``"ansi"`` renders a status line (str);
    ``"rgb_array"`` the episode so far as a ``(96, 4 * episode_steps, 3)`` uint8 image (grey
    columns = arrivals per step scaled to the busiest step, blue = provisioned workers out
    of the budget, red dots = steps under 90 % SLA attainment); ``None`` renders nothing.

    ## Version History

    * v0 (issue 11, round 14b): ``env.action.scale_down_window_initial`` (``none``, the
      default and unchanged behaviour, or ``hold``: the scale-down window counts the initial
      count as asked at t = 0, so no scale-down in the first ``scale_down_window_s``).
    * v0 (issue 11, round 13): ``env.action.offset_dwell_s``, a minimum dwell on the
      residual's applied offset under ``stabilise: base`` (default 0: unchanged),
      ``info["applied_offset"]`` and ``info["offset_held"]`` when it is on.
    * v0 (issue 11, round 11): ``env.action.stabilise`` (``count``, the default and
      unchanged behaviour, or ``base``: the window and the cooldown act on the residual
      base alone, the offset after them) and ``info["raw_base_workers"]`` under ``base``.
    * v0 (issue 11, round 9): ``env.action.base_interval_s`` (the residual base's demand
      over a trailing window), ``env.action.base_before_first_tick`` and
      ``env.action.reversal_cooldown_s`` (defaults unchanged).
    * v0 (issue 11): ``episode_summary`` counts ``flaps`` (reversals within 300 s of the
      opposite move, :data:`FLAP_WINDOW_S`) and their ``flap_steps``; observation features
      ``WORK_FEATURES`` (round 7) selectable by name (default observation unchanged).
    * v0 (issue 11, round 7b): ``env.action.type: residual``, an offset to the throughput
      planner's count (default action unchanged).
    * v0 (0.2.3, issue 11): ``env.action.scale_down_window_s``, HPA-style scale-down
      stabilisation (default 0: unchanged behaviour).
    * v0 (0.2.2, issue 11): ``mooncake_mod`` caps each row's prompt at the longest an
      idle worker of the config's engine prefills within the TTFT SLA (computed from the
      config by :func:`dynosim_gym.scenarios.idle_prefill_cap`: 21,868 tokens for the
      default Qwen3-32B TP2 H200 at 1.5 s; ``hash_ids`` cut to match, outputs unchanged;
      ``isl_cap_tokens`` and ``capped_requests`` in ``info["episode_setup"]``). Uncapped,
      ~18 % of its rows missed the SLA on idle workers, so no worker count reached the
      95 % target. ``TRACE_LOAD["mooncake_mod"]`` re-derived for the capped rows (0.18 ->
      0.11, ``scripts/calibrate_trace_load.py``).
    * v0 (0.2.1, issue 11): ``mooncake_mod`` (a training family) rescaled so the full budget
      serves its peak as it does the synthetic families' (``TRACE_LOAD`` 0.6 -> 0.18, see
      :mod:`dynosim_gym.scenarios`); at 0.6 it was overloaded at any worker count.
    * v0 (0.2, issue 11; changed in place, pre-1.0): the default scenario poses the
      autoscaling problem -- 30-minute episodes of workload families swinging 5-20x, with
      held-out families for evaluation, start-up drawn in 30-180 s; per-request SLA reward
      (``reward.mode: per_request``) and an optional Lagrangian form; observations
      log-scaled (no saturation) plus rate slope, queue growth and start-up time (22
      features, was 19); planner knobs via ``env.planner``; ``window_start_s`` may pin any
      window of a trace. v0.1's scenario is ``config="autoscale_legacy"``.
    * v0 (issue 15): disaggregated prefill/decode pools on a config with a ``disagg``
      section (``autoscale_disagg``): one delta per pool, per-pool observations, GPU cost per
      role, Dynamo's disagg planner as the heuristics.
    * v0 (0.1): initial release (aggregated pool, vLLM-style engine, Dynamo replay semantics).
    """

    metadata = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}
    advisors = ADVISORS

    def __new__(cls, config: Any = None, *args: Any, **overrides: Any):
        """A config with a ``disagg`` section makes a :class:`DynoSimDisaggEnv`."""
        if cls is DynoSimEnv and (config is not None or overrides.get("disagg") is not None):
            ov = {k: v for k, v in overrides.items() if k != "render_mode"}
            if load_env_config(config, DEFAULT_CONFIG, **ov).sim.disagg is not None:
                return super().__new__(DynoSimDisaggEnv)
        return super().__new__(cls)

    def __init__(self, config: Any = None, *, render_mode: str | None = None,
                 **overrides: Any) -> None:
        self.cfg: EnvConfig = self._configure(config, DEFAULT_CONFIG, render_mode, overrides)
        sla = self.cfg.sim.sla
        e = self.cfg.env
        self.max_workers = self.cfg.max_workers
        self.gpus_per_worker = self.cfg.sim.cluster.gpus_per_worker
        self.episodes = EpisodeFactory(self.cfg, "DynoSim-v0")
        self.action_type = make_action_type(e.action, e.min_endpoint, self.max_workers)
        self.action_space = self.action_type.space
        # env.action.scale_down_window_s as decisions (this one included); 1 = off
        self._window = max(1, math.ceil(e.action.scale_down_window_s / e.interval_s - 1e-9))
        self._cooldown_ms = e.action.reversal_cooldown_s * 1000.0   # 0 = off
        # env.action.scale_down_window_initial: hold -> the initial count is a request at t = 0
        self._hold_initial = e.action.scale_down_window_initial == "hold"
        # env.action.stabilise: base -> the window and the cooldown act on the base alone
        self._stabilise_base = e.action.type == "residual" and e.action.stabilise == "base"
        # env.action.offset_dwell_s (needs stabilise: base, validated): 0 = off
        self._dwell_ms = e.action.offset_dwell_s * 1000.0 if self._stabilise_base else 0.0
        self.obs_builder = ObservationBuilder(self.cfg, self.max_workers, sla.ttft_ms,
                                              sla.itl_ms)
        self.observation_space = self.obs_builder.space
        rw = e.reward
        self.reward_mode = rw.mode
        self.w_sla = rw.sla_weight
        self.w_gpu = rw.gpu_weight if rw.gpu_weight is not None else \
            0.5 / (e.interval_s * e.max_gpu_budget)
        self.w_change = rw.change_penalty
        self.request_scale = rw.request_scale or e.rate_max_rps * e.interval_s
        self.sla_target = rw.sla_target
        self.multiplier = rw.multiplier
        self.interval_ms = e.interval_s * 1000.0
        self.sim = None
        self.episode: dict[str, Any] = {}
        self._advisor_kinds: list[str] = []
        self._advisors: dict[str, Any] = {}
        self._base_planner: ThroughputAdvisor | None = None     # action.type: residual
        self._last: Interval | None = None

    # -- gymnasium API ----------------------------------------------------------------------
    def _begin(self, ep_seed: int, options: dict[str, Any] | None):
        begin_episode(self, ep_seed, options)
        self._log: list[tuple[str, Any]] = []      # calls since reset, for pickling
        sla = self.cfg.sim.sla
        self.monitor = ClusterMonitor(self.sim, sla.ttft_ms, sla.itl_ms,
                                      self.cfg.env.timeout_s * 1000.0, self.gpus_per_worker)
        self._steps = 0
        self._over = False
        self._t_ms = 0.0
        self._totals = {"met": 0, "finished": 0, "completed": 0, "rejected": 0,
                        "timed_out": 0, "gpu_seconds": 0.0, "changes": 0, "scaling_events": 0,
                        "reversals": 0, "flaps": 0}
        self._last_dir = 0
        self._last_move_ms = -math.inf       # time of the last scaling event (flaps)
        self._flap_steps: list[int] = []     # step index (0-based) of each flap
        self._requests: collections.deque[int] = collections.deque(maxlen=self._window)
        # env.action.scale_down_window_initial: hold: the count provisioned at reset, a floor
        # on the first window's decisions (as step 0's request would be)
        self._initial = int(sum(self.sim.counts()[:2]))
        self.obs_builder.startup_s = self.sim.cluster_cfg.startup_time_s
        self.obs_builder.attach(self.sim)
        self._ttfts: list[float] = []
        self._tpots: list[float] = []
        self._history: list[tuple[int, int, float]] = []     # for render(): per step
        self._advisors = {}
        for kind in self._advisor_kinds:
            self._attach_advisor(kind)
        self._advisors_at_begin = list(self._advisor_kinds)
        self._base_planner = None
        if self.cfg.env.action.type == "residual":
            # env.action.stabilise: base: the last stabilised base (the provisioned count
            # before the first decision), its last move's direction and time
            self._stab = int(sum(self.sim.counts()[:2]))
            self._stab_dir, self._stab_move_ms = 0, -math.inf
            # env.action.offset_dwell_s: the applied offset and when it last changed
            self._offset, self._offset_since_ms = 0, -math.inf
            self._base_planner = self._make_base_planner()
            self._refresh_base()
        self.obs_builder.reset()
        iv = self.monitor.collect()
        self._last = iv
        obs = self.obs_builder.observe(iv, self.episode["day_offset_s"], 0.0)
        return obs, {"episode_setup": dict(self.episode), **self._replicas(iv)}

    # Pickling: the simulation holds generators, so a pickle keeps the episode's seed,
    # options and the calls made since reset, and replays them (the env is deterministic).
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("sim", "monitor", "_advisors", "_last", "_base_planner"):
            state.pop(key, None)
        state["_replay"] = (self.episode.get("seed"), getattr(self, "_options", None),
                            list(getattr(self, "_log", [])), list(self._advisors_at_begin)) \
            if self.sim is not None else None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        replay = state.pop("_replay", None)
        kinds = state["_advisor_kinds"]
        self.__dict__.update(state)
        self.sim, self._advisors, self._last, self._base_planner = None, {}, None, None
        if replay is not None:
            ep_seed, options, log, at_reset = replay
            self._advisor_kinds = list(at_reset)
            self._begin(ep_seed, options)
            for what, arg in log:
                if what == "step":
                    self.step(arg)
                else:
                    kind, _, knobs = arg.partition("|")
                    self.planner_action(kind, json.loads(knobs) if knobs else None)
            self._advisor_kinds = kinds

    def step(self, action):
        if self.sim is None:
            raise ResetNeeded("call reset() before step()")
        if self._over:
            raise ResetNeeded(EPISODE_OVER)
        a = self.action_type.check(action)
        self._log.append(("step", a))
        sim = self.sim
        changed, direction, scaled = self._scale(a)
        self._t_ms += self.interval_ms
        sim.run_until(self._t_ms)
        if sim.now < self._t_ms:          # nothing left to happen before the boundary
            sim.now = self._t_ms
        if self._base_planner is not None:
            self._refresh_base()
        iv = self.monitor.collect()
        self._last = iv
        self._steps += 1
        terms = {"sla": self.sla_term(iv),
                 "gpu": -self.w_gpu * iv.gpu_seconds,
                 "change": -self.w_change * changed}
        reward = terms["sla"] + terms["gpu"] + terms["change"]
        tot = self._totals
        if changed:
            tot["scaling_events"] += 1
            if self._last_dir == -direction:
                tot["reversals"] += 1
                if self._t_ms - self._last_move_ms < FLAP_WINDOW_S * 1000.0:
                    tot["flaps"] += 1
                    self._flap_steps.append(self._steps - 1)
            self._last_dir = direction
            self._last_move_ms = self._t_ms
        tot["met"] += iv.met
        tot["finished"] += iv.finished
        tot["completed"] += iv.completed
        tot["rejected"] += iv.rejected
        tot["timed_out"] += iv.timed_out
        tot["gpu_seconds"] += iv.gpu_seconds
        for role, gs in iv.role_gpu_seconds.items():
            tot[f"gpu_seconds_{role}"] = tot.get(f"gpu_seconds_{role}", 0.0) + gs
        tot["changes"] += changed
        self._ttfts.extend(iv.ttfts)
        self._tpots.extend(iv.tpots)
        self._history.append((iv.arrived, iv.active + iv.starting, iv.sla_attainment))
        elapsed = self._t_ms / 1000.0
        obs = self.obs_builder.observe(iv, self.episode["day_offset_s"], elapsed)
        truncated = self._steps >= self.cfg.env.episode_steps
        self._over = truncated
        info: dict[str, Any] = {
            "reward_terms": terms,
            "t_s": elapsed,
            **scaled,
            "changed_workers": int(changed),
            "arrival_rate_rps": iv.arrived / (self.interval_ms / 1000.0),
            "sla_attainment": iv.sla_attainment,
            "requests_decided": iv.finished,
            "requests_met": iv.met,
            "gpu_seconds": iv.gpu_seconds,
            "ttft_p90_ms": iv.ttft_p90_ms,
            "itl_p90_ms": iv.itl_p90_ms,
            **self._replicas(iv),
        }
        if truncated:
            info["episode_summary"] = self.episode_summary()
        return obs, float(reward), False, bool(truncated), info

    def _scale(self, a) -> tuple[int, int, dict[str, Any]]:
        """Apply action ``a``: (workers changed, direction +1/-1/0, info fields)."""
        sim = self.sim
        act, start, _ = sim.counts()
        cur = act + start
        want = self.action_type.target(a, cur)
        lo = self.cfg.env.min_endpoint
        if self._stabilise_base:
            # env.action.stabilise: base: the base was stabilised before the decision
            # (_stabilised_base); the offset applies to it at once
            self._requests.append(self._raw_base)
            b = self.action_type.base
            if b != self._stab:
                self._stab_dir = (b > self._stab) - (b < self._stab)
                self._stab_move_ms = self._t_ms + self.interval_ms
                self._stab = b
            if self._dwell_ms:
                # env.action.offset_dwell_s: a new offset only once the last one has been
                # applied for the dwell; otherwise the held one is added to the base
                asked = want - b
                if asked != self._offset and \
                        self._t_ms - self._offset_since_ms >= self._dwell_ms - 1e-6:
                    self._offset, self._offset_since_ms = asked, self._t_ms
                target = min(max(b + self._offset, lo), self.max_workers)
            else:
                target = min(max(want, lo), self.max_workers)
        else:
            self._requests.append(want)
            # scale-down stabilisation (env.action.scale_down_window_s): the window's highest
            target = min(max(max(self._requests), lo), self.max_workers)
            if self._hold_initial and self._steps < self._window:
                # env.action.scale_down_window_initial: hold: the initial count counts as
                # asked at t = 0, in the window for its first decisions; raises, never lowers
                target = max(target, min(self._initial, self.max_workers))
        # reversal cooldown (env.action.reversal_cooldown_s): a move opposite to the last
        # scaling event within the cooldown of it is held (times as the flap count's)
        if not self._stabilise_base and \
                self._cooldown_holds(target, cur, self._last_dir, self._last_move_ms):
            target = cur
        changed = 0
        if target > cur:
            sim.add_workers(target - cur)
            changed = target - cur
        elif target < cur:
            changed = sim.remove_workers(cur - target)
        info = {"requested_workers": int(want), "target_workers": int(target)}
        if self._base_planner is not None:
            info["base_workers"] = int(self.action_type.base)
            if self._stabilise_base:
                info["raw_base_workers"] = int(self._raw_base)
            if self._dwell_ms:
                info["applied_offset"] = int(self._offset)
                info["offset_held"] = bool(want - self.action_type.base != self._offset)
        return changed, (target > cur) - (target < cur), info

    def _make_base_planner(self) -> ThroughputAdvisor:
        """``env.action.type: residual``: the throughput planner whose count is the base,
        ticking every env step, its per-decision step limit lifted (the env's own clamps
        apply to base + offset)."""
        e = self.cfg.env
        pc = planner_config(self.cfg, {
            "throughput_adjustment_interval_seconds": e.interval_s,
            "max_throughput_scaling_replicas": self.max_workers})
        b = e.action.base_interval_s
        if b is None or abs(b - e.interval_s) < 1e-9:
            return ThroughputAdvisor(pc).attach(self.sim)
        return TrailingThroughputAdvisor(pc, b).attach(self.sim)

    def base_workers(self) -> int:
        """The residual action's base now: the throughput planner's last count
        (``max(ceil(demand / engine rate), min_endpoint)``); before its first tick
        ``min_endpoint``, or with ``env.action.base_before_first_tick: hold`` the count
        provisioned (active + starting)."""
        ticks = self._base_planner.ticks
        if ticks:
            return int(ticks[-1]["wanted"])
        if self.cfg.env.action.base_before_first_tick == "hold":
            return int(sum(self.sim.counts()[:2]))
        return self.cfg.env.min_endpoint

    def _refresh_base(self) -> None:
        if self._stabilise_base:
            self._raw_base = self.base_workers()
            self.action_type.base = self._stabilised_base(self._raw_base)
        else:
            self.action_type.base = self.base_workers()

    def _stabilised_base(self, raw: int) -> int:
        """``env.action.stabilise: base``: the base the next decision's offset applies to.
        The highest raw base over the scale-down window's decisions (the next one
        included), clamped to ``[min_endpoint, max_workers]``; a move opposite to the
        stabilised base's last one, within ``reversal_cooldown_s`` of it, is held. Reads
        the state, changes nothing (``_scale`` commits it)."""
        past = list(self._requests)[-(self._window - 1):] if self._window > 1 else []
        b = min(max(max(past + [raw]), self.cfg.env.min_endpoint), self.max_workers)
        if self._cooldown_holds(b, self._stab, self._stab_dir, self._stab_move_ms):
            b = self._stab
        return b

    def _cooldown_holds(self, new: int, old: int, last_dir: int, last_move_ms: float) -> bool:
        """``env.action.reversal_cooldown_s``: whether a move ``old`` -> ``new`` decided now
        (taking effect at the step's end, as the flap count times it) reverses the last
        move (direction ``last_dir``, at ``last_move_ms``) within the cooldown, so is held."""
        return bool(self._cooldown_ms) and new != old and \
            (new > old) - (new < old) == -last_dir and \
            self._t_ms + self.interval_ms - last_move_ms < self._cooldown_ms

    def sla_term(self, iv: Interval) -> float:
        """The SLA part of the reward for one interval (see ``## Rewards``)."""
        mode = self.reward_mode
        if mode == "per_request":
            return -self.w_sla * (iv.finished - iv.met) / self.request_scale
        if mode == "lagrangian":
            return self.multiplier * (iv.met - self.sla_target * iv.finished) \
                / self.request_scale
        return self.w_sla * iv.sla_attainment

    def set_multiplier(self, value: float) -> None:
        """Set the Lagrange multiplier of ``reward.mode: lagrangian`` (the training callback
        updates it between rollouts; takes effect from the next step)."""
        self.multiplier = max(0.0, float(value))

    def render(self):
        if self._last is None or self.render_mode is None:
            return None
        if self.render_mode == "rgb_array":
            return self._frame()
        iv = self._last
        return (f"t={iv.t1_s:7.1f}s workers {iv.active}+{iv.starting}s/{iv.draining}d "
                f"arrivals {iv.arrived:4d} queued {iv.queued:4d} running {iv.running:4d} "
                f"kv {iv.kv_utilisation:5.1%} p90 TTFT {iv.ttft_p90_ms:8.1f} ms "
                f"SLA {iv.sla_attainment:6.1%} GPU-s {iv.gpu_seconds:7.1f}")

    def _frame(self) -> np.ndarray:
        """The episode so far as a small chart: grey columns = arrivals per step (scaled to
        the busiest step), blue = provisioned workers (out of the budget), red dots =
        steps under 90 % SLA attainment."""
        h, col = 96, 4
        n = self.cfg.env.episode_steps
        img = np.full((h, n * col, 3), 255, dtype=np.uint8)
        hist = self._history
        peak = max((x[0] for x in hist), default=0) or 1
        for i, (arr, workers, sla) in enumerate(hist):
            x0 = i * col
            top = h - int(round((h - 8) * arr / peak))
            img[top:, x0:x0 + col - 1] = (200, 200, 200)
            y = h - 1 - int(round((h - 8) * workers / self.max_workers))
            img[max(y - 1, 0):y + 1, x0:x0 + col] = (31, 119, 180)
            if sla < 0.9:
                img[2:5, x0 + 1:x0 + col - 1] = (214, 39, 40)
        return img

    def close(self) -> None:
        self.sim = None
        self._advisors = {}

    # -- extras -------------------------------------------------------------------------------
    def action_masks(self) -> np.ndarray:
        """Actions that need no clamping (for sb3-contrib's MaskablePPO)."""
        if self.sim is None:
            return np.ones(self.action_space.n, dtype=bool)
        a, s, _ = self.sim.counts()
        return self.action_type.masks(a + s)

    def episode_summary(self) -> dict[str, Any]:
        """The episode so far: SLA attainment, GPU-hours, p90 TTFT and ITL (ms)."""
        tot = self._totals
        return {
            "sla_attainment": tot["met"] / tot["finished"] if tot["finished"] else 1.0,
            "gpu_hours": tot["gpu_seconds"] / 3600.0,
            "ttft_p90_ms": _pct(sorted(self._ttfts), 0.9) if self._ttfts else 0.0,
            "itl_p90_ms": _pct(sorted(self._tpots), 0.9) if self._tpots else 0.0,
            "requests_decided": tot["finished"],
            "requests_met": tot["met"],
            "requests_completed": tot["completed"],
            "requests_rejected": tot["rejected"],
            "requests_timed_out": tot["timed_out"],
            # arrived but not decided yet (in flight at the cut-off)
            "requests_in_flight": self.sim.num_arrived - tot["finished"],
            "workers_changed": tot["changes"],
            "scaling_events": tot["scaling_events"],
            "reversals": tot["reversals"],
            "flaps": tot["flaps"],
            "flap_steps": list(self._flap_steps),
            "steps": self._steps,
            **{f"gpu_hours_{r}": tot[f"gpu_seconds_{r}"] / 3600.0 for r in POOLS
               if f"gpu_seconds_{r}" in tot},
        }

    def hold_action(self) -> int:
        """The action that keeps the provisioned worker count."""
        cur = sum(self.sim.counts()[:2]) if self.sim is not None else 0
        return self.action_type.from_target(cur, cur)

    def target_action(self, workers: int) -> int:
        """The action that moves the provisioned worker count towards ``workers``."""
        cur = sum(self.sim.counts()[:2]) if self.sim is not None else workers
        return self.action_type.from_target(int(workers), cur)

    def planner_action(self, kind: str, knobs: dict | None = None) -> "int | np.ndarray":
        """The action Dynamo's ``load`` or ``throughput`` planner would take now (an int; on
        a ``disagg:`` config an int64 array of shape (2,), one action per pool).

        The planner runs inside the simulation as an advisor (same interval as the env's
        steps, the env's SLA, budget and min_endpoint) and reads what it reads in Dynamo:
        per-engine forward-pass metrics and queues (load), arrival counts, ISL/OSL and the
        timing model (throughput). ``knobs`` override :class:`sim.planner.PlannerConfig`
        fields on top of the env's ``env.planner`` (a tuned planner). Used by
        :mod:`agents.heuristics`."""
        if kind not in self.advisors:
            raise ValueError(f"unknown planner {kind!r}; expected one of "
                             f"{', '.join(self.advisors)}")
        if knobs:
            kind = kind + "|" + json.dumps(knobs, sort_keys=True)
        if kind not in self._advisor_kinds:
            self._advisor_kinds.append(kind)
        if self.sim is None:
            return self._advice_action(None)
        self._log.append(("advise", kind))
        adv = self._advisors.get(kind) or self._attach_advisor(kind)
        return self._advice_action(adv)

    def _advice_action(self, adv) -> int:
        """The action towards ``adv``'s advice (hold without one); ``adv`` None: before
        the first reset, the action towards ``min_endpoint``."""
        if adv is None:
            return self.action_type.from_target(self.cfg.env.min_endpoint, 0)
        a, s, _ = self.sim.counts()
        cur = a + s
        target = adv.advice if adv.advice is not None else cur
        adv.advice = None
        return self.action_type.from_target(target, cur)

    def _attach_advisor(self, kind: str):
        kind, _, knobs = kind.partition("|")
        pc = planner_config(self.cfg, json.loads(knobs) if knobs else None)
        adv = self.advisors[kind](pc).attach(self.sim)
        self._advisors[kind + ("|" + knobs if knobs else "")] = adv
        return adv

    @staticmethod
    def _replicas(iv: Interval) -> dict[str, int]:
        return {"active_workers": iv.active, "starting_workers": iv.starting,
                "draining_workers": iv.draining}


# -- disaggregated pools ------------------------------------------------------------------------

class DisaggLoadAdvisor(_Advice, DisaggLoadPlanner):
    pass


class DisaggThroughputAdvisor(_Advice, DisaggThroughputPlanner):
    pass


DISAGG_ADVISORS = {"load": DisaggLoadAdvisor, "throughput": DisaggThroughputAdvisor}


class DynoSimDisaggEnv(DynoSimEnv):
    """``DynoSim-v0`` on a config with a ``disagg`` section (e.g. ``autoscale_disagg``): the
    agent sizes a prefill pool and a decode pool (:mod:`sim.disagg`, Dynamo's disaggregated
    serving) under one GPU budget. What differs from :class:`DynoSimEnv`:

    * action: ``MultiDiscrete([2k + 1, 2k + 1])``, one delta per pool (prefill, decode),
      clamped to ``min_endpoint`` per pool and the budget (:class:`~dynosim_gym.actions.
      PoolDeltaAction`); ``action_masks()`` is a bool array over the flattened sub-actions
      (sb3-contrib MaskablePPO's convention for MultiDiscrete);
    * observation: :data:`FEATURES` over both pools, then per-pool workers, queues, KV
      utilisation and the handoffs in flight (:data:`~dynosim_gym.observations.
      POOL_FEATURES`);
    * reward: GPU-seconds count each role's GPUs per worker (``disagg.
      prefill_gpus_per_worker`` / ``decode_gpus_per_worker``); ``info["reward_terms"]``
      splits the GPU term into ``gpu_prefill`` and ``gpu_decode`` (they sum to ``gpu``);
    * heuristics: ``planner_action("load" | "throughput")`` is Dynamo's disagg planner
      (:class:`~sim.planner.DisaggLoadPlanner`, :class:`~sim.planner.
      DisaggThroughputPlanner`), one target per pool.

    Requested/target workers in ``info`` are per pool (``requested_prefill_workers``, ...);
    ``target_action(n)`` takes ``(prefill, decode)`` or one count for both pools.

    The full description (shared with the aggregated env) follows.
    """

    advisors = DISAGG_ADVISORS

    def __init__(self, config: Any = None, *, render_mode: str | None = None,
                 **overrides: Any) -> None:
        super().__init__(config, render_mode=render_mode, **overrides)
        # a scale-down window is refused with the config (dynosim_gym.config._check_disagg)
        from sim.config import disagg_config
        d = disagg_config(self.cfg.sim)
        e = self.cfg.env
        self.pool_gpus = {"prefill": d.prefill_gpus_per_worker,
                          "decode": d.decode_gpus_per_worker}
        floors = {p: e.min_endpoint for p in POOLS}
        self.pool_max = {p: (e.max_gpu_budget - floors[o] * self.pool_gpus[o])
                         // self.pool_gpus[p] for p, o in zip(POOLS, POOLS[::-1])}
        self.max_workers = sum(self.pool_max.values())
        self.action_type = PoolDeltaAction(floors, self.pool_gpus, e.max_gpu_budget,
                                           e.action.max_step)
        self.action_space = self.action_type.space
        sla = self.cfg.sim.sla
        self.obs_builder = PoolObservationBuilder(self, self.cfg, self.max_workers,
                                                  self.pool_max, sla.ttft_ms, sla.itl_ms)
        self.observation_space = self.obs_builder.space

    def _pools(self) -> dict[str, int]:
        """Provisioned (active + starting) workers per pool."""
        return {p: sum(self.sim.counts(p)[:2]) for p in POOLS}

    def _scale(self, a) -> tuple[int, int, dict[str, Any]]:
        sim = self.sim
        cur = self._pools()
        want = self.action_type.targets(a, cur)
        target = self.action_type.clamp(want, cur)
        changed = 0
        for p in POOLS:
            if target[p] < cur[p]:
                changed += sim.remove_workers(cur[p] - target[p], p)
        for p in POOLS:
            if target[p] > cur[p]:
                sim.add_workers(target[p] - cur[p], p)
                changed += target[p] - cur[p]
        net = sum((target[p] - cur[p]) * self.pool_gpus[p] for p in POOLS)
        info = {}
        for p in POOLS:
            info[f"requested_{p}_workers"] = int(want[p])
            info[f"target_{p}_workers"] = int(target[p])
        return changed, (net > 0) - (net < 0), info

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(action)
        if "reward_terms" in info:
            iv = self._last
            for p in POOLS:
                info["reward_terms"][f"gpu_{p}"] = -self.w_gpu * iv.role_gpu_seconds[p]
        return obs, reward, terminated, truncated, info

    def _replicas(self, iv: Interval) -> dict[str, int]:
        out = DynoSimEnv._replicas(iv)
        if self.sim is not None:
            for p in POOLS:
                a, s, d = self.sim.counts(p)
                out.update({f"active_{p}_workers": a, f"starting_{p}_workers": s,
                            f"draining_{p}_workers": d})
        return out

    def action_masks(self) -> np.ndarray:
        """Sub-actions that need no clamping, flattened (prefill's first)."""
        if self.sim is None:
            return np.ones(int(self.action_space.nvec.sum()), dtype=bool)
        return self.action_type.masks(self._pools())

    def hold_action(self) -> np.ndarray:
        """The action that keeps both pools."""
        cur = self._pools() if self.sim is not None else {p: 0 for p in POOLS}
        return self.action_type.from_targets(cur, cur)

    def target_action(self, workers) -> np.ndarray:
        """The action that moves the pools towards ``workers``: ``(prefill, decode)``, or
        one count for both pools."""
        if isinstance(workers, (int, np.integer)):
            workers = (int(workers), int(workers))
        want = dict(zip(POOLS, (int(w) for w in workers)))
        cur = self._pools() if self.sim is not None else want
        return self.action_type.from_targets(want, cur)

    def _advice_action(self, adv) -> np.ndarray:
        if adv is None:
            return self.action_type.from_targets(self.action_type.floor,
                                                 {p: 0 for p in POOLS})
        cur = self._pools()
        target = adv.advice if adv.advice is not None else cur
        adv.advice = None
        return self.action_type.from_targets(target, cur)


DynoSimDisaggEnv.__doc__ += DynoSimEnv.__doc__

__all__ = ["DynoSimEnv", "DynoSimDisaggEnv", "FEATURES", "DEFAULT_CONFIG"]
