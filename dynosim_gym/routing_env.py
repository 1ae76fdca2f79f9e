"""``DynoSimRouting-v0``: route every arriving request of an LLM-serving pool to a worker."""
from __future__ import annotations

from dataclasses import asdict
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sim.errors import InputError
from sim.kv_cache import block_keys
from sim.metrics import STATUS_COMPLETED

from .base import EPISODE_OVER, ResetNeeded, SimEnv, check_discrete
from .config import EnvConfig, EnvSection, load_env_config
from .episodes import EpisodeFactory, begin_episode
from .monitor import ClusterMonitor, _pct
from .observations import _sq

DEFAULT_CONFIG = "routing_default"

#: Per-worker features, in vector order (the observation is worker 0's, worker 1's, ...,
#: then :data:`REQUEST_FEATURES`).
WORKER_FEATURES = (
    "queued_prefill",      # uncomputed prompt tokens waiting or mid-prefill / max_num_batched_tokens
    "kv_active",           # KV blocks held by running requests / num_gpu_blocks
    "running_requests",    # running requests / RUNNING_SCALE
    "waiting_requests",    # waiting requests / WAITING_SCALE
    "prefix_overlap",      # this request's leading full blocks cached on the worker / its full blocks
)
#: Features of the request being routed (after the per-worker block).
REQUEST_FEATURES = (
    "isl",                 # prompt tokens / env.observation.isl_scale
)
RUNNING_SCALE = 8.0        # requests: 8 running on a worker maps to 0.5
WAITING_SCALE = 1.0        # requests: 1 waiting maps to 0.5
MAX_REQUESTS = 10_000      # default cap on routed requests per episode


#: The ``env`` keys this env reads (dotted, under ``env``); every other ``env`` key is an
#: autoscaler's (``DynoSim-v0``'s) and is refused when set away from its default
#: (:func:`check_routing_keys`). ``max_gpu_budget`` and ``min_endpoint`` bound the fixed pool.
ROUTING_ENV_KEYS = frozenset({
    "interval_s", "episode_steps", "max_gpu_budget", "min_endpoint", "initial_workers",
    "split", "eval_fraction", "scenarios", "eval_scenarios", "rate_min_rps", "rate_max_rps",
    "day_period_s", "timeout_s", "observation.isl_scale", "reward.sla_weight"})
#: Why an autoscaler key does not apply here, by its first dotted part (or its name's head).
_WHY_NOT = {
    "action": "its action is a worker choice, Discrete(num_workers)",
    "observation": "it observes per-worker and request features of its own",
    "reward": "its reward is reward.sla_weight x (met - violated) per decided request",
    "planner": "no planner runs: the agent routes over a fixed pool",
    "startup": "the fixed pool is ready at t = 0; no worker starts",
    "swing": "its scenarios draw no swing (DynoSim-v0's workload families do)",
}


def _leaves(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and k != "planner":       # env.planner is one value (knobs)
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def check_routing_keys(cfg: EnvConfig) -> None:
    """Refuse every ``env`` key this env does not read (not in :data:`ROUTING_ENV_KEYS`) whose
    value differs from its default: the autoscaler's action, observation, reward
    (``mode``, ``gpu_weight``, ``change_penalty``, ...), planner and start-up settings, and
    the run config's ``planner`` section, would otherwise be recorded as applied while
    having no effect. One line: the first such key (file and line), the others named after
    it.

    Raises:
        InputError: ``field`` the first such key (``env.reward.mode``).
    """
    given = _leaves(asdict(cfg.env))
    default = _leaves(asdict(EnvSection()))
    bad = [f"env.{k}" for k in given if k not in ROUTING_ENV_KEYS and given[k] != default[k]]
    if cfg.sim.planner:             # the run config's planner section (heuristics' base)
        bad.append("planner")
    if not bad:
        return
    first = bad[0]
    head = first.removeprefix("env.").split(".")[0]
    why = _WHY_NOT.get(head) or _WHY_NOT.get(head.split("_")[0]) or "the pool is fixed"
    also = f"; also {', '.join(bad[1:])}" if len(bad) > 1 else ""
    file, line = cfg.sim.locate(first)
    raise InputError(f"does not apply to the routing env DynoSimRouting-v0 (no effect: {why})"
                     f"; remove it{also}", file=file, line=line, field=first)


def feature_names(num_workers: int) -> list[str]:
    """Names of the observation's entries, in order (``w0.queued_prefill``, ..., ``isl``)."""
    return [f"w{i}.{f}" for i in range(num_workers) for f in WORKER_FEATURES] + \
        list(REQUEST_FEATURES)


class DynoSimRoutingEnv(SimEnv):
    """
    ## Description

    A fixed pool of ``cluster.num_workers`` aggregated LLM-serving workers (vLLM-style engines
    with prefix caching, replayed by the ``sim`` discrete-event core with Dynamo's semantics)
    receives a request stream: a seeded synthetic load (diurnal, bursty or ramping
    conversations sharing system prompts, by default) or a window of a real trace (Mooncake,
    Azure). The agent is the router: each ``step`` sends the request that has just arrived to
    one worker, and the simulation runs on to the next arrival. Sending a request where its
    prompt prefix is cached saves prefill (Dynamo's KV-aware routing); piling requests on
    one worker makes them queue. The goal is the TTFT and ITL SLAs for as many requests as
    possible.

    ## Action Space

    ``Discrete(num_workers)``: the index of the worker that gets the request (workers in
    ascending id; the pool never changes). Every action is always legal
    (``action_masks()`` is all True); an action the space does not contain (floats, bools,
    strings, arrays other than 0-d integer ones) raises ``ValueError``; ``step`` after
    ``truncated=True`` without ``reset`` raises :class:`~dynosim_gym.base.ResetNeeded`.

    ## Observation Space

    ``Box(0, 1, (5 * num_workers + 1,), float32)``: for each worker ``w`` (entries
    ``5w .. 5w + 4``, :data:`WORKER_FEATURES`), read from the engine's actual state when the
    request arrives:

    * ``queued_prefill``: prompt tokens not yet computed of its waiting requests and of its
      running requests without a first token, / ``engine.max_num_batched_tokens``;
    * ``kv_active``: share of its KV blocks held by running requests (``num_active /
      num_gpu_blocks``), in [0, 1];
    * ``running_requests`` / 8 and ``waiting_requests`` / 1;
    * ``prefix_overlap``: the request's leading full prompt blocks resident in the worker's
      prefix cache / its full prompt blocks (0 if it has none), in [0, 1] (a read-only
      lookup, the one the engine makes at admission without its one-token cap);

    then (last entry) the request's prompt length / ``env.observation.isl_scale``.
    Unbounded values are scaled and squashed with ``x / (1 + x)``: invert with
    ``x = y / (1 - y)`` times the scale (``obs_scales``). :func:`feature_names` lists the
    entries. After the last arrival the request features are 0.

    ## Rewards

    ``r = sla_weight * (met - violated)`` over the requests decided since the previous step:
    ``met`` completed within both SLAs (TTFT <= ``sla.ttft_ms`` and per-request ITL <=
    ``sla.itl_ms``), ``violated`` the others: completed late, rejected, or first seen waiting
    longer than ``timeout_s`` without a first token (counted once). Default weight 1 (+1 per
    met request, -1 per violation); the terms are in ``info["reward_terms"]`` (``met``,
    ``violated``). The autoscaler's settings (``reward.mode``, ``gpu_weight``,
    ``change_penalty``, ``env.action``, the other ``env.observation`` keys, the planner and
    start-up keys: every ``env`` key not in :data:`ROUTING_ENV_KEYS`) do not apply and are
    refused at ``gym.make`` when set away from their defaults. ``info["request_outcomes"]`` lists ``(request index, met)`` of the requests
    decided in the step, and ``info["routed_request_index"]`` the request the step routed,
    so a learner can credit each outcome to the decision that served it.

    ## Starting State

    ``num_workers`` active workers with empty caches at t = 0 of the episode's window; the
    first observation shows the first request of the window arriving.

    ## Episode End

    Never terminates. ``truncated=True`` on the step that routes the last request arriving
    within ``episode_steps * interval_s`` simulated seconds (default 120 s; the reward of
    that step counts the requests decided up to the end of the window), or the
    ``max_requests``-th request (default 10,000). Requests still in flight then are not
    scored (the value bootstrap on truncation stands for them). An episode without any
    arrival truncates on its first step, which routes nothing (``info["requests_routed"]``
    stays 0). The final ``info["episode_summary"]`` summarises the episode: SLA attainment, p90
    TTFT/ITL, prefix-cache hit rate, requests per worker, GPU-hours. Its ``ttft_p90_ms`` /
    ``itl_p90_ms`` (ms) are what ``dynosim evaluate`` reports as ``p90_ttft_ms`` /
    ``p90_itl_ms`` (pooled over every episode's requests, and under those names per
    episode); the env's names are public API and stay.

    ## Arguments

    ``gym.make("DynoSimRouting-v0", config=None, render_mode=None, max_requests=10000,
    **overrides)``: ``config`` is a YAML path, the name of a bundled scenario in
    ``envs_configs`` or a dict (default ``routing_default``); overrides are env fields
    (``episode_steps=6``), sections (``workload={"num_prefix_groups": 4}``) or dotted keys
    (this env refuses ``env.planner`` and the ``planner`` section: no planner runs).
    The pool size is ``env.initial_workers`` or ``cluster.num_workers``; ``router.mode`` is
    ignored (the agent routes). ``reset(seed=..., options=...)`` options: ``split``
    (``train``/``eval``), ``window_start_s`` (a trace config, or a ``mooncake_window`` /
    ``azure_window`` episode), ``scenario`` (the legacy shapes and the routing families;
    ``DynoSim-v0``'s families are refused) and ``rate_rps`` (synthetic), each checked
    (:meth:`~dynosim_gym.episodes.EpisodeFactory.describe_options`).
    ``render_mode="ansi"`` renders a status line.

    ## Version History

    * v0: initial release (event-triggered routing over a fixed aggregated pool).
    """

    metadata = {"render_modes": ["ansi"], "render_fps": 4}

    def __init__(self, config: Any = None, *, render_mode: str | None = None,
                 max_requests: int = MAX_REQUESTS, **overrides: Any) -> None:
        if isinstance(max_requests, bool) or not isinstance(max_requests, (int, np.integer)) \
                or max_requests < 1:
            raise InputError(f"must be an integer >= 1, got {max_requests!r}",
                             field="max_requests")
        self.max_requests = int(max_requests)
        self.cfg: EnvConfig = self._configure(config, DEFAULT_CONFIG, render_mode, overrides)
        if self.cfg.sim.disagg is not None:     # here, not at reset: one line at gym.make
            file, line = self.cfg.sim.locate("disagg")
            raise InputError("DynoSimRouting-v0 routes over one aggregated pool; this config "
                             "has prefill and decode pools (a disagg section): size them with "
                             "DynoSim-v0, or remove disagg to route", file=file, line=line,
                             field="disagg")
        sla = self.cfg.sim.sla
        # The agent routes (Simulation.route_to); the simulation's own router only keeps
        # its bookkeeping, and round robin's is free.
        self.cfg.sim.router.mode = "round_robin"
        e = self.cfg.env
        self.num_workers = int(e.initial_workers or self.cfg.sim.cluster.num_workers)
        self.gpus_per_worker = self.cfg.sim.cluster.gpus_per_worker
        # the other env's families first (a config of the other env), then its keys
        self.episodes = EpisodeFactory(self.cfg, "DynoSimRouting-v0")
        check_routing_keys(self.cfg)
        self.horizon_ms = e.interval_s * e.episode_steps * 1000.0
        eng = self.cfg.sim.engine
        self.block_size = eng.block_size
        #: Divisors of the observation's raw quantities (before squashing).
        self.obs_scales = {"queued_prefill_tokens": float(eng.max_num_batched_tokens),
                           "kv_blocks": float(eng.num_gpu_blocks),
                           "running_requests": RUNNING_SCALE,
                           "waiting_requests": WAITING_SCALE,
                           "isl_tokens": float(e.observation.isl_scale),
                           "block_size": float(eng.block_size)}
        self.action_space = spaces.Discrete(self.num_workers)
        self.n_features = len(WORKER_FEATURES) * self.num_workers + len(REQUEST_FEATURES)
        self.observation_space = spaces.Box(0.0, 1.0, shape=(self.n_features,),
                                            dtype=np.float32)
        self.w_sla = e.reward.sla_weight
        self.sim = None
        self.monitor = None
        self.episode: dict[str, Any] = {}
        self._req = None
        self._keys: list[int] | None = None
        self._over = False

    # -- gymnasium API ----------------------------------------------------------------------
    def _begin(self, ep_seed: int, options: dict[str, Any] | None):
        begin_episode(self, ep_seed, options)
        self._log: list[int] = []          # actions since reset, for pickling
        sim = self.sim
        if len(sim.workers) != self.num_workers:       # defensive: the factory's pool
            raise RuntimeError(f"episode has {len(sim.workers)} workers, expected "
                               f"{self.num_workers}")
        sim.hold_arrivals = True
        sla = self.cfg.sim.sla
        self.monitor = ClusterMonitor(sim, sla.ttft_ms, sla.itl_ms,
                                      self.cfg.env.timeout_s * 1000.0, self.gpus_per_worker)
        self._steps = 0
        self._routed = 0
        self._per_worker = [0] * self.num_workers
        self._totals = {"met": 0, "finished": 0, "completed": 0, "rejected": 0,
                        "timed_out": 0, "gpu_seconds": 0.0}
        self._ttfts: list[float] = []
        self._tpots: list[float] = []
        self._over = False
        self._advance()
        self._empty = self._req is None
        obs = self._observe()
        return obs, {"episode_setup": dict(self.episode), "t_s": sim.now / 1000.0,
                     "request_index": self._req_index(), "no_arrivals": self._empty}

    # Pickling: the simulation holds generators, so a pickle keeps the episode's seed,
    # options and the actions taken since reset, and replays them (the env is deterministic).
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        for key in ("sim", "monitor", "_req", "_keys"):
            state.pop(key, None)
        state["_replay"] = (self.episode.get("seed"), getattr(self, "_options", None),
                            list(getattr(self, "_log", []))) if self.sim is not None else None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        replay = state.pop("_replay", None)
        self.__dict__.update(state)
        self.sim, self.monitor, self._req, self._keys = None, None, None, None
        if replay is not None:
            ep_seed, options, log = replay
            self._begin(ep_seed, options)
            for a in log:
                self.step(a)

    def step(self, action):
        if self.sim is None:
            raise ResetNeeded("call reset() before step()")
        if self._over:
            raise ResetNeeded(EPISODE_OVER)
        a = check_discrete(self.action_space, action)
        self._log.append(a)
        sim = self.sim
        req = self._req
        if req is not None:
            sim.route_to(req, a, self._keys)
            self._routed += 1
            self._per_worker[a] += 1
        routed_index = req.index if req is not None else -1
        self._advance()
        iv = self.monitor.collect()
        self._steps += 1
        met = iv.met
        decided = iv.finished
        terms = {"met": self.w_sla * met, "violated": -self.w_sla * (decided - met)}
        reward = terms["met"] + terms["violated"]
        tot = self._totals
        tot["met"] += met
        tot["finished"] += decided
        tot["completed"] += iv.completed
        tot["rejected"] += iv.rejected
        tot["timed_out"] += iv.timed_out
        tot["gpu_seconds"] += iv.gpu_seconds
        self._ttfts.extend(iv.ttfts)
        self._tpots.extend(iv.tpots)
        truncated = self._req is None
        self._over = truncated
        obs = self._observe()
        info: dict[str, Any] = {
            "reward_terms": terms,
            "t_s": sim.now / 1000.0,
            "worker": a,
            "routed_request_index": routed_index,
            "request_index": self._req_index(),
            "requests_routed": self._routed,
            "requests_decided": decided,
            "requests_met": met,
            "sla_attainment": iv.sla_attainment,
            # (request index, met) of the requests decided in this step: lets a learner
            # credit each outcome to the step that routed it (agents/router_train.py)
            "request_outcomes": iv.outcomes,
        }
        if truncated:
            info["episode_summary"] = self.episode_summary()
        return obs, float(reward), False, bool(truncated), info

    def render(self):
        if self.render_mode != "ansi" or self.sim is None:
            return None
        sim = self.sim
        parts = []
        for w in sim.workers:
            eng = w.engine
            parts.append(f"{len(eng.running):3d}r{len(eng.waiting):3d}w "
                         f"{eng.kv.num_active / eng.kv.num_blocks:4.0%}")
        req = self._req
        nxt = f"req {req.index} isl {req.input_length}" if req is not None else "window over"
        return (f"t={sim.now / 1000.0:8.2f}s routed {self._routed:5d} | "
                + " | ".join(parts) + f" | {nxt}")

    def close(self) -> None:
        self.sim = None
        self.monitor = None
        self._req = None

    # -- extras -------------------------------------------------------------------------------
    def action_masks(self) -> np.ndarray:
        """Every worker can take every request (for sb3-contrib's MaskablePPO)."""
        return np.ones(self.num_workers, dtype=bool)

    def episode_summary(self) -> dict[str, Any]:
        """The episode so far: SLA attainment, p90 TTFT and ITL (ms), prefix-cache hit rate of
        the completed requests (``kv_hit_rate`` = ``reused_input_tokens / prompt_tokens``),
        requests routed per worker and routed but not decided (``requests_in_flight``), the
        window length (``simulated_s``), GPU-hours."""
        tot = self._totals
        reused = prompt = 0
        if self.sim is not None:
            c = self.sim.metrics.cols
            st, ru, il = c["status"], c["reused_input_tokens"], c["input_length"]
            for j in range(len(st)):
                if st[j] == STATUS_COMPLETED:
                    reused += ru[j]
                    prompt += il[j]
        return {
            "sla_attainment": tot["met"] / tot["finished"] if tot["finished"] else 1.0,
            "gpu_hours": tot["gpu_seconds"] / 3600.0,
            "ttft_p90_ms": _pct(sorted(self._ttfts), 0.9) if self._ttfts else 0.0,
            "itl_p90_ms": _pct(sorted(self._tpots), 0.9) if self._tpots else 0.0,
            "kv_hit_rate": reused / prompt if prompt else 0.0,
            "reused_input_tokens": int(reused),
            "prompt_tokens": int(prompt),
            "simulated_s": self.horizon_ms / 1000.0,
            "requests_in_flight": max(0, self._routed - tot["finished"]),
            "requests_routed": self._routed,
            "requests_per_worker": list(self._per_worker),
            "requests_decided": tot["finished"],
            "requests_met": tot["met"],
            "requests_completed": tot["completed"],
            "requests_rejected": tot["rejected"],
            "requests_timed_out": tot["timed_out"],
            "steps": self._steps,
        }

    # -- internals ------------------------------------------------------------------------------
    def _advance(self) -> None:
        """Run the simulation to the next arrival within the window (held, not routed)."""
        sim = self.sim
        self._req = self._keys = None
        if self._routed >= self.max_requests:
            return
        sim.run_until(self.horizon_ms)
        req = sim.held_arrival
        if req is None:
            return
        self._req = req
        bs = self.block_size
        full = req.input_length // bs
        # The prompt's full-block keys, as the engine computes them (handed to it on routing).
        self._keys = block_keys(req.hash_ids, req.trace_block_size, bs, full) \
            if req.hash_ids is not None and full > 0 else []

    def _req_index(self) -> int:
        return self._req.index if self._req is not None else -1

    def _observe(self) -> np.ndarray:
        sc = self.obs_scales
        qscale = sc["queued_prefill_tokens"]
        v = np.zeros(self.n_features, dtype=np.float32)
        keys = self._keys
        nkeys = len(keys) if keys else 0
        j = 0
        for w in self.sim.workers:
            eng = w.engine
            qp = 0
            for s in eng.waiting:
                qp += s.prompt_len + s.generated - s.computed
            for s in eng.running:
                if s.first_token != s.first_token:          # NaN: no first token yet
                    left = s.prompt_len - s.computed
                    if left > 0:
                        qp += left
            kv = eng.kv
            v[j] = _sq(qp / qscale)
            v[j + 1] = min(kv.num_active / kv.num_blocks, 1.0)
            v[j + 2] = _sq(len(eng.running) / RUNNING_SCALE)
            v[j + 3] = _sq(len(eng.waiting) / WAITING_SCALE)
            v[j + 4] = kv.match_prefix(keys)[0] / nkeys if nkeys else 0.0
            j += len(WORKER_FEATURES)
        if self._req is not None:
            v[j] = _sq(self._req.input_length / sc["isl_tokens"])
        return v


__all__ = ["DynoSimRoutingEnv", "DEFAULT_CONFIG", "WORKER_FEATURES", "REQUEST_FEATURES",
           "ROUTING_ENV_KEYS", "check_routing_keys", "feature_names"]
