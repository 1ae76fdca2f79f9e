"""Observation of the autoscaling environment: one float32 vector per interval.

Unbounded quantities are divided by a reference scale and log-scaled, ``log1p(x)`` (the
reference maps to ~0.69; there is no saturation: ten times the reference is 2.4, a thousand
times 6.9), so a policy still tells loads apart far outside its training range. Signed
trends use ``sign(x) * log1p(|x|)``. Shares are clipped to ``[0, 1]``. Every feature is
clipped to ``[-LOG_MAX, LOG_MAX]`` (``LOG_MAX = 20``: e^20 times the reference) to keep the
Box finite. With ``env.observation.stack = N`` the last N vectors are concatenated, oldest
first (zeros before the episode's first interval).
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
from gymnasium import spaces

from .monitor import Interval

LOG_MAX = 20.0
SLOPE_STEPS = 3          # trend features compare with the interval this many steps back

#: Feature names, in vector order (one entry per float).
FEATURES = (
    "arrival_rate",        # log1p(requests/s in the interval / rate scale)
    "mean_isl",            # prompt tokens of arrivals / isl_scale
    "mean_osl",            # requested output tokens of arrivals / osl_scale
    "queued_requests",     # waiting requests / max workers
    "running_requests",    # running requests / (8 x max workers)
    "queued_prefill",      # uncomputed prompt tokens / (batch budget x max workers)
    "kv_utilisation",      # mean used share of the active workers' KV blocks
    "kv_hit_rate",         # reused / prompt tokens of recent completions
    "ttft_p50",            # / TTFT SLA
    "ttft_p90",            # / TTFT SLA
    "itl_p90",             # per-request TPOT p90 / ITL SLA
    "oldest_wait",         # oldest request still without a first token / TTFT SLA
    "sla_attainment",      # share of decided requests that met the SLA
    "active_workers",      # / max workers
    "starting_workers",    # / max workers
    "draining_workers",    # / max workers
    "time_of_day_sin",     # (1 + sin) / 2 over env.day_period_s
    "time_of_day_cos",     # (1 + cos) / 2
    "episode_progress",    # elapsed / episode length
    "arrival_rate_slope",  # log-rate now minus SLOPE_STEPS intervals ago (signed)
    "queue_growth",        # signed log1p of the change in queued prefill tokens per
                           # interval over the last SLOPE_STEPS intervals / batch budget
    "startup_time",        # the episode's worker start-up time / interval_s, log1p
)
#: Features that can be negative (trends).
SIGNED = ("arrival_rate_slope", "queue_growth")


def _sq(x: float) -> float:
    """``x / (1 + x)``: the routing env's squash (DynoSimRouting-v0 keeps it)."""
    return x / (1.0 + x) if x > 0 else 0.0


def _lg(x: float) -> float:
    """log1p for non-negative unbounded quantities."""
    return math.log1p(x) if x > 0 else 0.0


def _clamp(x: float) -> float:
    """``x`` clipped to ``[-LOG_MAX, LOG_MAX]`` (NaN stays NaN, as with ``np.clip``)."""
    if x > LOG_MAX:
        return LOG_MAX
    if x < -LOG_MAX:
        return -LOG_MAX
    return x


def _slog(x: float) -> float:
    return math.copysign(math.log1p(abs(x)), x)


class ObservationBuilder:
    def __init__(self, cfg, max_workers: int, ttft_sla_ms: float, itl_sla_ms: float) -> None:
        ocfg = cfg.env.observation
        self.stack = ocfg.stack
        self.rate_scale = ocfg.rate_scale_rps or cfg.env.rate_max_rps
        self.isl_scale, self.osl_scale = ocfg.isl_scale, ocfg.osl_scale
        self.W = float(max_workers)
        self.budget = float(cfg.sim.engine.max_num_batched_tokens * max_workers)
        self.ttft_sla, self.itl_sla = ttft_sla_ms, itl_sla_ms
        self.period = cfg.env.day_period_s
        self.horizon = cfg.env.interval_s * cfg.env.episode_steps
        self.n = len(FEATURES)
        self.interval_s = cfg.env.interval_s
        low = np.array([-LOG_MAX if f in SIGNED else 0.0 for f in FEATURES], dtype=np.float32)
        self.space = spaces.Box(np.tile(low, self.stack),
                                np.full(self.n * self.stack, LOG_MAX, dtype=np.float32),
                                dtype=np.float32)
        self._hist: deque[np.ndarray] = deque(maxlen=self.stack)
        self._last = (0.0, 0.0, 0.0)     # latency percentiles carried over quiet intervals
        self._trend: deque[tuple[float, float]] = deque(maxlen=SLOPE_STEPS + 1)
        self.startup_s = 0.0

    def reset(self) -> None:
        self._hist.clear()
        for _ in range(self.stack):
            self._hist.append(np.zeros(self.n, dtype=np.float32))
        self._last = (0.0, 0.0, 0.0)
        self._trend.clear()

    def vector(self, iv: Interval, day_offset_s: float, elapsed_s: float) -> np.ndarray:
        dt = max(iv.t1_s - iv.t0_s, 1e-9)
        if iv.ttfts:
            self._last = (iv.ttft_p50_ms, iv.ttft_p90_ms, iv.itl_p90_ms)
        p50, p90, itl = self._last
        W = self.W
        phase = 2.0 * math.pi * ((elapsed_s + day_offset_s) % self.period) / self.period
        rate = _lg(iv.arrived / dt / self.rate_scale)
        trend = self._trend
        trend.append((rate, iv.queued_prefill_tokens / self.budget))
        r0, q0 = trend[0]
        k = max(len(trend) - 1, 1)
        v = (
            rate,
            _lg(iv.mean_isl / self.isl_scale),
            _lg(iv.mean_osl / self.osl_scale),
            _lg(iv.queued / W),
            _lg(iv.running / (8.0 * W)),
            _lg(iv.queued_prefill_tokens / self.budget),
            min(max(iv.kv_utilisation, 0.0), 1.0),
            min(max(iv.kv_hit_rate, 0.0), 1.0),
            _lg(p50 / self.ttft_sla),
            _lg(p90 / self.ttft_sla),
            _lg(itl / self.itl_sla),
            _lg(iv.oldest_wait_ms / self.ttft_sla),
            iv.sla_attainment,
            min(iv.active / W, 1.0),
            min(iv.starting / W, 1.0),
            min(iv.draining / W, 1.0),
            0.5 * (1.0 + math.sin(phase)),
            0.5 * (1.0 + math.cos(phase)),
            min(elapsed_s / self.horizon, 1.0),
            (rate - r0) / k,
            _slog((trend[-1][1] - q0) / k),
            _lg(self.startup_s / self.interval_s),
        )
        # Clamped before the float32 conversion: the same values as np.clip after it (the
        # bounds are exact in float32, rounding is monotone, NaN passes), without np.clip's
        # ~15 us of dispatch per call (~1 % of a step).
        return np.array([_clamp(x) for x in v], dtype=np.float32)

    def observe(self, iv: Interval, day_offset_s: float, elapsed_s: float) -> np.ndarray:
        self._hist.append(self.vector(iv, day_offset_s, elapsed_s))
        if self.stack == 1:
            return self._hist[-1].copy()
        return np.concatenate(self._hist)


# -- disaggregated pools (DynoSim-v0 on a config with a ``disagg`` section) -------------------

POOLS = ("prefill", "decode")
#: Per-pool features appended to :data:`FEATURES` (which then describe both pools together).
POOL_FEATURES = tuple(f"{pool}_{name}" for pool in POOLS for name in (
    "active_workers",      # / the pool's max workers (budget less the other pool's floor)
    "starting_workers",    # / the pool's max workers
    "draining_workers",    # / the pool's max workers
    "queued_requests",     # waiting requests / the pool's max workers, log1p
    "running_requests",    # running requests / (8 x the pool's max workers), log1p
    "kv_utilisation",      # mean used share of the pool's active workers' KV blocks
)) + ("handoffs_in_flight",)   # KV handoffs held, awaiting a reservation or in transfer /
#                                (8 x max decode workers), log1p


class PoolObservationBuilder(ObservationBuilder):
    """:data:`FEATURES` of both pools together, then :data:`POOL_FEATURES` read from
    ``env.sim`` (its workers by role and its handoffs in flight) at each interval's end."""

    def __init__(self, env, cfg, max_workers: int, pool_max: dict[str, int],
                 ttft_sla_ms: float, itl_sla_ms: float) -> None:
        super().__init__(cfg, max_workers, ttft_sla_ms, itl_sla_ms)
        self.env = env
        self.pool_max = {p: float(n) for p, n in pool_max.items()}
        self.n = len(FEATURES) + len(POOL_FEATURES)
        low = np.array([-LOG_MAX if f in SIGNED else 0.0 for f in FEATURES]
                       + [0.0] * len(POOL_FEATURES), dtype=np.float32)
        self.space = spaces.Box(np.tile(low, self.stack),
                                np.full(self.n * self.stack, LOG_MAX, dtype=np.float32),
                                dtype=np.float32)

    def vector(self, iv: Interval, day_offset_s: float, elapsed_s: float) -> np.ndarray:
        base = super().vector(iv, day_offset_s, elapsed_s)
        return np.concatenate([base, self.pool_vector()])

    def pool_vector(self) -> np.ndarray:
        sim = self.env.sim
        st = {p: [0, 0, 0, 0, 0, 0.0] for p in POOLS}
        for w in sim.workers:
            s = st.get(w.role)
            if s is None or w.state == "removed":
                continue
            eng = w.engine
            if w.state == "active":
                s[0] += 1
                s[5] += eng.kv.num_active / eng.kv.num_blocks
            elif w.state == "starting":
                s[1] += 1
            else:
                s[2] += 1
            s[3] += len(eng.waiting)
            s[4] += len(eng.running)
        v = []
        for p in POOLS:
            a, start, drain, q, r, kv = st[p]
            W = self.pool_max[p]
            v += [min(a / W, 1.0), min(start / W, 1.0), min(drain / W, 1.0), _lg(q / W),
                  _lg(r / (8.0 * W)), min(max(kv / a, 0.0), 1.0) if a else 0.0]
        v.append(_lg(len(sim._handoffs) / (8.0 * self.pool_max["decode"])))
        return np.array([_clamp(x) for x in v], dtype=np.float32)
