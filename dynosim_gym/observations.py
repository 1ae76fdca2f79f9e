"""Observation of the autoscaling environment: one float32 vector per interval.

Unbounded quantities are divided by a reference scale and log-scaled, ``log1p(x)`` (the
reference maps to ~0.69; there is no saturation: ten times the reference is 2.4, a thousand
times 6.9), so a policy still tells loads apart far outside its training range. Signed
trends use ``sign(x) * log1p(|x|)``. Shares are clipped to ``[0, 1]``. Every feature is
clipped to ``[-LOG_MAX, LOG_MAX]`` (``LOG_MAX = 20``: e^20 times the reference) to keep the
Box finite. With ``env.observation.stack = N`` the last N vectors are concatenated, oldest
first (zeros before the episode's first interval).

``env.observation.features`` chooses the vector's entries by name, in the order given, from
:data:`FEATURES` (the default, in that order: ``DynoSim-v0``'s observation) and
:data:`CAPACITY_FEATURES`, load relative to what one worker of the scenario's engine can
serve under its timing model (issue 11, round 6): a rate in requests/s keys a policy to
the request mix it was trained on (Azure's short prompts arrive at 4x the training families'
peak rate for less work); "workers' worth" of prefill or decode does not. Round 7 adds
:data:`WORK_FEATURES`: the running and waiting request counts in the same units (workers'
worth of one worker's decode batch at the ITL SLA). Round 17 adds :data:`TREND_FEATURES`:
the arrival rate's trend over 60, 120 and 300 s and its acceleration (the default's only
rate trend, ``arrival_rate_slope``, spans 15 s, against worker start-ups of 30-180 s).
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
from gymnasium import spaces

from sim.planner import agg_engine_capacity, decode_engine_capacity, prefill_engine_capacity

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
#: Load relative to the engine's capacity (opt-in through ``env.observation.features``).
#: "One worker's" throughput is read from the scenario's timing model by the throughput
#: planner's own capacity functions (:mod:`sim.planner`; Dynamo's throughput planner
#: divides demand by it, reference/dynamo_semantics.md §6.3), for the interval's arrivals'
#: mean ISL and OSL, quantised to a 2 % geometric grid (so the capacity is computed once per
#: grid cell); requests/s = arrivals in the interval / its length. All are log1p'd and 0
#: in an interval without arrivals (the queue features excepted). ``A`` = active workers
#: at the interval's end, at least 1.
CAPACITY_FEATURES = (
    "prefill_demand",      # arriving uncached prompt tokens/s (ISL x (1 - kv_hit_rate), the
                           # hit rate of recent completions) / one worker's prefill tokens/s at
                           # a full chunked-prefill pass of max_num_batched_tokens: workers'
                           # worth of prefill (sim.planner.prefill_engine_capacity)
    "decode_demand",       # arriving requests/s / one worker's request rate at the largest
                           # batch whose decode ITL meets the ITL SLA: workers' worth of decode
                           # (= output tokens/s over decode tokens/s at the SLA;
                           # sim.planner.decode_engine_capacity)
    "planner_demand",      # arriving requests/s / one aggregated worker's best rate meeting
                           # both SLAs: the throughput planner's worker count before its ceil
                           # (sim.planner.agg_engine_capacity, prompt discounted by kv_hit_rate)
    "prefill_demand_per_active",   # prefill_demand's ratio / A
    "decode_demand_per_active",    # decode_demand's ratio / A
    "queued_prefill_per_active",   # uncomputed prompt tokens queued / (A x one worker's prefill
                                   # tokens/s) / TTFT SLA: TTFT budgets of backlog per worker
    "queued_requests_per_active",  # waiting requests / A
)
#: Request COUNTS relative to the engine's capacity (issue 11, round 7; opt-in): round 6's
#: diagnosis found ``running_requests`` (running sequences / (8 x max workers)) moving the
#: policy's count most on the held-out ``azure_mod``, whose many short requests raise it for
#: little work. Here a count is in units of ``B``, one worker's largest decode batch whose
#: ITL meets the ITL SLA (``sim.planner.decode_engine_capacity``'s ``batch``, the batch
#: ``decode_demand`` is computed at) for the mean ISL and OSL of the latest interval with
#: arrivals (ISL = OSL = 1 before the episode's first, when nothing runs or waits): workers'
#: worth of decode concurrency. All log1p'd; ``A`` as above. Queued prompt WORK is
#: ``queued_prefill_per_active`` (TTFT budgets of one worker's prefill per active worker).
WORK_FEATURES = (
    "running_batches",             # running sequences / B: workers' worth of decode batch
    "running_batches_per_active",  # running_batches' ratio / A: each active worker's batch
                                   # as a share of the batch meeting the ITL SLA (> 1: more
                                   # than the SLA allows at that ISL/OSL)
    "queued_batches",              # waiting requests / B: workers' worth of decode batch
                                   # still waiting (their prompts: queued_prefill_per_active)
)
#: The arrival rate's trend over longer horizons (issue 11, round 17; opt-in). ``y_i`` is
#: the default's ``arrival_rate`` of interval ``i`` (log1p of requests/s / rate scale), and
#: the slope over ``H`` s is the least-squares slope of ``y`` against time over the latest
#: ``H / interval_s + 1`` intervals (the ones whose ends span the last ``H`` s), in log-rate
#: per minute, signed-log scaled: ``sign(s) * log1p(|s|)``. A least-squares fit, not
#: "now minus ``H`` s ago": one 5 s interval's Poisson noise in its arrival count would
#: otherwise be the whole feature; the fit weighs every interval of the window. Per minute
#: for every horizon, so the three are on one scale and their differences are accelerations.
#: Before ``H`` s have passed the fit uses the intervals there are (as ``arrival_rate_slope``
#: does), and it is 0 with fewer than two. Bounds: with every ``y`` in ``[0, R]`` the fitted
#: slope is at most ``R`` per interval, so ``|slope| <= log1p(R * 60 / interval_s)`` and
#: ``|acceleration| <= log1p(2 * R * 60 / interval_s)``; always within ``[-LOG_MAX, LOG_MAX]``.
TREND_FEATURES = (
    "arrival_rate_slope_60s",     # least-squares slope of the log-rate over the last 60 s,
                                  # per minute, signed log
    "arrival_rate_slope_120s",    # the same over the last 120 s
    "arrival_rate_slope_300s",    # the same over the last 300 s
    "arrival_rate_acceleration",  # signed log of (60 s slope - 300 s slope), both per minute
                                  # before their signed logs: > 0 when the rate rises faster
                                  # now than over the last 5 minutes
)
TREND_HORIZONS_S = (60.0, 120.0, 300.0)
#: Every name ``env.observation.features`` accepts.
ALL_FEATURES = FEATURES + CAPACITY_FEATURES + WORK_FEATURES + TREND_FEATURES
#: Features that can be negative (trends).
SIGNED = ("arrival_rate_slope", "queue_growth") + TREND_FEATURES
GRID = math.log(1.02)      # the capacity cache's geometric step in ISL and OSL


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


def _cell(x: float) -> float:
    """``x`` (> 0) rounded to the 2 % geometric grid the capacity cache is keyed on."""
    return math.exp(round(math.log(x) / GRID) * GRID)


class EngineCapacity:
    """One worker's throughput under the scenario's engine config and timing model, by the
    throughput planner's functions (:mod:`sim.planner`), cached per grid cell."""

    def __init__(self, timing, engine_cfg, ttft_sla_ms: float, itl_sla_ms: float) -> None:
        self.timing, self.engine_cfg = timing, engine_cfg
        self.ttft_sla, self.itl_sla = ttft_sla_ms, itl_sla_ms
        #: prefill tokens/s of one worker at full chunks of max_num_batched_tokens
        self.prefill_tps = prefill_engine_capacity(timing, engine_cfg, 1.0)["rps"]
        self._decode: dict[tuple[float, float], dict[str, float]] = {}
        self._agg: dict[tuple[float, float, float], float] = {}

    def _decode_at(self, isl: float, osl: float) -> dict[str, float]:
        key = (_cell(max(isl, 1.0)), _cell(max(osl, 1.0)))
        r = self._decode.get(key)
        if r is None:
            r = self._decode[key] = decode_engine_capacity(
                self.timing, self.engine_cfg, key[0], key[1], self.itl_sla)
        return r

    def decode_rps(self, isl: float, osl: float) -> float:
        """Requests/s of one worker at the largest decode batch meeting the ITL SLA."""
        return self._decode_at(isl, osl)["rps"]

    def decode_batch(self, isl: float, osl: float) -> int:
        """That batch: sequences one worker decodes within the ITL SLA (1 if none does)."""
        return self._decode_at(isl, osl)["batch"]

    def agg_rps(self, isl: float, osl: float, hit: float) -> float:
        """Requests/s of one aggregated worker meeting both SLAs (hit rate to 0.01)."""
        key = (_cell(max(isl, 1.0)), _cell(max(osl, 1.0)), round(min(max(hit, 0.0), 1.0), 2))
        r = self._agg.get(key)
        if r is None:
            r = self._agg[key] = agg_engine_capacity(
                self.timing, self.engine_cfg, key[0], key[1], self.ttft_sla, self.itl_sla,
                key[2])["rps"]
        return r


def capacity_values(iv: Interval, cap: EngineCapacity, dt: float) -> tuple[float, ...]:
    """:data:`CAPACITY_FEATURES` of one interval (``dt`` its length in s), in order."""
    a = float(max(iv.active, 1))
    hit = min(max(iv.kv_hit_rate, 0.0), 1.0)
    if iv.arrived:
        rps = iv.arrived / dt
        pre = rps * iv.mean_isl * (1.0 - hit) / cap.prefill_tps
        dec = rps / cap.decode_rps(iv.mean_isl, iv.mean_osl)
        agg = rps / cap.agg_rps(iv.mean_isl, iv.mean_osl, hit)
    else:
        pre = dec = agg = 0.0
    backlog_s = iv.queued_prefill_tokens / (a * cap.prefill_tps)
    return (_lg(pre), _lg(dec), _lg(agg), _lg(pre / a), _lg(dec / a),
            _lg(backlog_s * 1000.0 / cap.ttft_sla), _lg(iv.queued / a))


def work_values(iv: Interval, cap: EngineCapacity, isl: float, osl: float
                ) -> tuple[float, ...]:
    """:data:`WORK_FEATURES` of one interval, in order, with the decode batch ``B`` read at
    ``isl`` / ``osl`` (the latest arrivals' means)."""
    b = float(cap.decode_batch(isl, osl))
    run = iv.running / b
    return _lg(run), _lg(run / max(iv.active, 1)), _lg(iv.queued / b)


def trend_window(horizon_s: float, interval_s: float) -> int:
    """Intervals whose ends span the last ``horizon_s``: ``round(horizon_s / interval_s) + 1``,
    at least 2."""
    return max(int(round(horizon_s / interval_s)) + 1, 2)


def ls_slope(ys: list, n: int) -> float:
    """Least-squares slope per interval of the last ``min(n, len(ys))`` of the list ``ys``
    (equally spaced); 0 with fewer than two points."""
    m = min(n, len(ys))
    if m < 2:
        return 0.0
    c = 0.5 * (m - 1)
    num = 0.0
    for i, y in enumerate(ys[len(ys) - m:]):
        num += (i - c) * y
    return num / (m * (m * m - 1) / 12.0)     # sum of (i - c)^2 over 0..m-1


def trend_values(rates, interval_s: float) -> tuple[float, ...]:
    """:data:`TREND_FEATURES` from the per-interval log-rates ``rates`` (oldest first, the
    latest interval last; only the last 300 s are read), in order."""
    per_min = 60.0 / interval_s
    rates = list(rates)
    s = [ls_slope(rates, trend_window(h, interval_s)) * per_min for h in TREND_HORIZONS_S]
    return _slog(s[0]), _slog(s[1]), _slog(s[2]), _slog(s[0] - s[2])


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
        self.features = tuple(ocfg.features)
        # None: the default vector as is; else the entries of ALL_FEATURES
        self._pick = None if self.features == FEATURES else \
            [ALL_FEATURES.index(f) for f in self.features]
        self._work = any(f in WORK_FEATURES for f in self.features)
        self._capacity = self._work or any(f in CAPACITY_FEATURES for f in self.features)
        self._trends = any(f in TREND_FEATURES for f in self.features)
        self._mix = (1.0, 1.0)            # latest arrivals' mean (ISL, OSL): WORK_FEATURES
        self.engine: EngineCapacity | None = None
        self.n = len(self.features)
        self.interval_s = cfg.env.interval_s
        low = np.array([-LOG_MAX if f in SIGNED else 0.0 for f in self.features],
                       dtype=np.float32)
        self.space = spaces.Box(np.tile(low, self.stack),
                                np.full(self.n * self.stack, LOG_MAX, dtype=np.float32),
                                dtype=np.float32)
        self._hist: deque[np.ndarray] = deque(maxlen=self.stack)
        self._last = (0.0, 0.0, 0.0)     # latency percentiles carried over quiet intervals
        self._trend: deque[tuple[float, float]] = deque(maxlen=SLOPE_STEPS + 1)
        # log-rates of the last 300 s of intervals (TREND_FEATURES only)
        self._rates: deque[float] = deque(
            maxlen=trend_window(max(TREND_HORIZONS_S), self.interval_s))
        self.startup_s = 0.0

    def attach(self, sim) -> None:
        """Read the episode's engine config and timing model (capacity features only)."""
        if self._capacity and (self.engine is None or self.engine.timing is not sim.timing
                               or self.engine.engine_cfg is not sim.engine_cfg):
            self.engine = EngineCapacity(sim.timing, sim.engine_cfg, self.ttft_sla,
                                         self.itl_sla)

    def reset(self) -> None:
        self._hist.clear()
        for _ in range(self.stack):
            self._hist.append(np.zeros(self.n, dtype=np.float32))
        self._last = (0.0, 0.0, 0.0)
        self._trend.clear()
        self._rates.clear()
        self._mix = (1.0, 1.0)

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
        if self._pick is not None:
            if self._capacity:
                v = v + capacity_values(iv, self.engine, dt)
            elif self._trends:     # placeholders: _pick indexes ALL_FEATURES
                v = v + (0.0,) * len(CAPACITY_FEATURES)
            if self._work:
                if iv.arrived:
                    self._mix = (iv.mean_isl, iv.mean_osl)
                v = v + work_values(iv, self.engine, *self._mix)
            elif self._trends:
                v = v + (0.0,) * len(WORK_FEATURES)
            if self._trends:
                self._rates.append(rate)
                v = v + trend_values(self._rates, self.interval_s)
            v = [v[i] for i in self._pick]
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
