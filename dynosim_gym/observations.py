"""Observation of the autoscaling environment: one normalised float32 vector per interval.

Unbounded quantities are divided by a reference scale and squashed with ``x / (1 + x)``
(so the reference maps to 0.5 and nothing leaves ``[0, 1)``); shares are clipped to
``[0, 1]``. With ``env.observation.stack = N`` the last N vectors are concatenated, oldest
first (zeros before the episode's first interval).
"""
from __future__ import annotations

import math
from collections import deque

import numpy as np
from gymnasium import spaces

from .monitor import Interval

#: Feature names, in vector order (one entry per float).
FEATURES = (
    "arrival_rate",        # requests/s in the interval / rate scale
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
)


def _sq(x: float) -> float:
    return x / (1.0 + x) if x > 0 else 0.0


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
        self.space = spaces.Box(0.0, 1.0, shape=(self.n * self.stack,), dtype=np.float32)
        self._hist: deque[np.ndarray] = deque(maxlen=self.stack)
        self._last = (0.0, 0.0, 0.0)     # latency percentiles carried over quiet intervals

    def reset(self) -> None:
        self._hist.clear()
        for _ in range(self.stack):
            self._hist.append(np.zeros(self.n, dtype=np.float32))
        self._last = (0.0, 0.0, 0.0)

    def vector(self, iv: Interval, day_offset_s: float, elapsed_s: float) -> np.ndarray:
        dt = max(iv.t1_s - iv.t0_s, 1e-9)
        if iv.ttfts:
            self._last = (iv.ttft_p50_ms, iv.ttft_p90_ms, iv.itl_p90_ms)
        p50, p90, itl = self._last
        W = self.W
        phase = 2.0 * math.pi * ((elapsed_s + day_offset_s) % self.period) / self.period
        v = (
            _sq(iv.arrived / dt / self.rate_scale),
            _sq(iv.mean_isl / self.isl_scale),
            _sq(iv.mean_osl / self.osl_scale),
            _sq(iv.queued / W),
            _sq(iv.running / (8.0 * W)),
            _sq(iv.queued_prefill_tokens / self.budget),
            min(max(iv.kv_utilisation, 0.0), 1.0),
            min(max(iv.kv_hit_rate, 0.0), 1.0),
            _sq(p50 / self.ttft_sla),
            _sq(p90 / self.ttft_sla),
            _sq(itl / self.itl_sla),
            _sq(iv.oldest_wait_ms / self.ttft_sla),
            iv.sla_attainment,
            min(iv.active / W, 1.0),
            min(iv.starting / W, 1.0),
            min(iv.draining / W, 1.0),
            0.5 * (1.0 + math.sin(phase)),
            0.5 * (1.0 + math.cos(phase)),
            min(elapsed_s / self.horizon, 1.0),
        )
        return np.asarray(v, dtype=np.float32)

    def observe(self, iv: Interval, day_offset_s: float, elapsed_s: float) -> np.ndarray:
        self._hist.append(self.vector(iv, day_offset_s, elapsed_s))
        if self.stack == 1:
            return self._hist[-1].copy()
        return np.concatenate(self._hist)
