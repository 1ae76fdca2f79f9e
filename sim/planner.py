"""Autoscaling planners for an aggregated worker pool (Dynamo planner, agg mode).

Two planners, each attached to a :class:`~sim.simulator.Simulation` with
``planner.attach(sim)``; ticks are control events (``sim.call_at``), handled after the
timestamp's pass ends, start-ups and arrivals (as Dynamo's replay does, §6.6).

* :class:`LoadPlanner` -- reactive, SLA target (Dynamo ``core/load_scaling.py``, §6.4).
  FPM samples: every ``interval_s / fpm_samples_per_interval`` the planner takes the
  difference of each engine's cumulative ``fpm_totals``; a sample is the interval's mean
  per pass: ``(prefill_tokens/pass, decode_kv_tokens/pass) -> busy_ms/pass`` (the last
  ``max_num_fpm_samples`` per engine are kept). The agg "2-D regression" is the linear
  model ``pass_ms = a + b * prefill_tokens + c * decode_kv_tokens`` (least squares with a
  tiny ridge on standardised features, coefficients clamped >= 0). An engine with fewer
  than ``load_min_observations`` samples of its own uses the pool of all engines' samples
  (same hardware); if even the pool is short, the tick uses the "easy target" thresholds.
  Estimates per active engine:
    - TTFT: chunked prefill (chunks of ``max_num_batched_tokens`` minus the decode batch)
      of the queued prefill tokens + one average request's ISL x (1 - KV hit rate), each
      chunk costing ``a + b * chunk + c * decode_kv``;
    - ITL: ``a + b * recent prefill tokens/pass + c * (scheduled + queued decode KV)``.
  Scale up by 1 if ALL engines' TTFT estimates exceed the TTFT SLA, or ALL engines' ITL
  estimates exceed the ITL SLA. Scale down by 1 (N > 1) only if, for every engine, both
  consolidation checks pass (sens = ``load_scaling_down_sensitivity / 100``):
  TTFT with the queue x N/(N-1): ``post - T_own < (SLA - T_own) * sens``; decode KV x
  N/(N-1) < KV capacity and the ITL there < ``SLA * sens``.
  Easy targets (throughput thresholds): per engine, ``queued_prefill/context_length``
  (up >= 1.0, down < 0.1) and ``(queued prefill + scheduled + queued decode KV) / KV
  capacity`` (up > 1.0, down < 0.6); up if ANY engine is over, down if ALL are under.
* :class:`ThroughputPlanner` -- predictive (``core/throughput_scaling.py``, §6.3). Each
  interval it observes the number of arrived requests and their mean ISL/OSL, forecasts
  the next interval with the predictor, and sets
  ``N = max(ceil(demand_rps / engine_rps), min_endpoint)``, where ``engine_rps`` is the
  best steady-state rate of one engine meeting both SLAs under the timing model (see
  :func:`agg_engine_capacity`), with the prompt discounted by the observed KV hit rate.

Both: at most one action in progress (nothing new while any worker is starting or
draining; ``hold_while_scaling``), LoadPlanner moves by at most +-1 per tick; targets are
clamped to ``[min_endpoint, max_gpu_budget // gpus_per_worker]``. ``N`` counts provisioned
workers that will serve: active + starting. Records: ``planner.events`` =
``(at_s, from_count, to_count, reason)``, ``planner.ticks`` = one dict per tick.

Ticks reschedule themselves only while the simulation has non-control events (pass ends,
arrivals, start-ups) or work, so a run still ends when the workload does.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import InputError
from .predictors import PREDICTORS, make_predictor
from .simulator import ACTIVE, DRAINING

DEFAULT_LOAD_INTERVAL_S = 5.0          # Dynamo load_adjustment_interval_seconds
DEFAULT_THROUGHPUT_INTERVAL_S = 180.0  # Dynamo throughput_adjustment_interval_seconds


@dataclass
class PlannerConfig:
    """Planner settings (Dynamo defaults, §6.1, agg mode)."""
    mode: str = "agg"
    ttft_sla_ms: float = 500.0
    itl_sla_ms: float = 50.0
    interval_s: float | None = None       # None: 5 s (load) / 180 s (throughput)
    max_gpu_budget: int = 8
    min_endpoint: int = 1
    gpus_per_worker: int | None = None    # None: the simulation's cluster setting
    load_predictor: str = "arima"
    predictor_kwargs: dict[str, Any] = field(default_factory=dict)
    load_predictor_log1p: bool = False
    load_scaling_down_sensitivity: float = 80.0
    load_min_observations: int = 5
    max_num_fpm_samples: int = 64
    fpm_samples_per_interval: int = 5     # FPM samples per load interval (ours)
    context_length: int | None = None     # easy targets; None: max_model_len or batch budget
    hold_while_scaling: bool = True

    def __post_init__(self) -> None:
        if self.mode != "agg":
            raise InputError(f"only 'agg' is supported, got {self.mode!r}", field="mode")
        for name in ("ttft_sla_ms", "itl_sla_ms"):
            v = getattr(self, name)
            if not _num(v) or v <= 0:
                raise InputError(f"must be > 0, got {v!r}", field=name)
        if self.interval_s is not None and (not _num(self.interval_s) or self.interval_s <= 0):
            raise InputError(f"must be > 0, got {self.interval_s!r}", field="interval_s")
        for name, lo in (("min_endpoint", 1), ("max_gpu_budget", 1), ("load_min_observations", 1),
                         ("max_num_fpm_samples", 2), ("fpm_samples_per_interval", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise InputError(f"must be an integer >= {lo}, got {v!r}", field=name)
        if self.gpus_per_worker is not None:
            g = self.gpus_per_worker
            if not isinstance(g, int) or isinstance(g, bool) or g < 1:
                raise InputError(f"must be an integer >= 1, got {g!r}", field="gpus_per_worker")
            self._check_budget(g)
        if self.load_predictor not in PREDICTORS:
            raise InputError(f"unknown predictor {self.load_predictor!r} "
                             f"({' | '.join(PREDICTORS)})", field="load_predictor")
        s = self.load_scaling_down_sensitivity
        if not _num(s) or not 0 <= s <= 100:
            raise InputError(f"must be in [0, 100], got {s!r}",
                             field="load_scaling_down_sensitivity")
        if self.context_length is not None and (not isinstance(self.context_length, int)
                                                or self.context_length < 1):
            raise InputError(f"must be an integer >= 1, got {self.context_length!r}",
                             field="context_length")
        make_predictor(self.load_predictor, **self._predictor_kw())   # bad kwargs fail here

    def _check_budget(self, gpus: int) -> None:
        if self.max_gpu_budget < self.min_endpoint * gpus:
            raise InputError(f"{self.max_gpu_budget} GPUs cannot hold min_endpoint="
                             f"{self.min_endpoint} workers of {gpus} GPUs",
                             field="max_gpu_budget")

    def _predictor_kw(self) -> dict[str, Any]:
        kw = dict(self.predictor_kwargs)
        if self.load_predictor == "arima" and self.load_predictor_log1p:
            kw.setdefault("log1p", True)
        return kw


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# -- base ------------------------------------------------------------------------------------

class _Planner:
    default_interval_s = DEFAULT_LOAD_INTERVAL_S

    def __init__(self, config: PlannerConfig | None = None) -> None:
        self.cfg = config or PlannerConfig()
        self.interval_s = self.cfg.interval_s or self.default_interval_s
        self.events: list[tuple[float, int, int, str]] = []
        self.ticks: list[dict[str, Any]] = []
        self.sim = None
        self.gpus_per_worker = 1
        self.max_workers = 1
        # interval observations
        self._last_arrived = (0, 0, 0)
        self._reused_idx = 0
        self.kv_hit_rate = 0.0         # last-value semantics, cold start 0

    def attach(self, sim) -> "_Planner":
        if self.sim is not None:
            raise RuntimeError("planner already attached")
        self.sim = sim
        g = sim.cluster_cfg.gpus_per_worker
        if self.cfg.gpus_per_worker is not None and self.cfg.gpus_per_worker != g:
            raise InputError(f"planner says {self.cfg.gpus_per_worker} GPUs per worker, the "
                             f"cluster {g} (GPU-hours use the cluster's)",
                             field="gpus_per_worker")
        self.cfg._check_budget(g)
        self.gpus_per_worker = g
        self.max_workers = self.cfg.max_gpu_budget // g
        self._last_arrived = (sim.num_arrived, sim.arrived_input_tokens,
                              sim.arrived_output_tokens)
        self._start(sim)
        return self

    def _start(self, sim) -> None:
        sim.call_at(sim.now + self.interval_s * 1000.0, self._tick)

    # -- helpers ----------------------------------------------------------------------------
    @staticmethod
    def _alive(sim) -> bool:
        """Anything left to happen besides control events?"""
        return sim.has_pending_work()

    def _reschedule(self, sim, fn, dt_s: float) -> None:
        if self._alive(sim):
            sim.call_at(sim.now + dt_s * 1000.0, fn)

    def _observe_interval(self, sim) -> tuple[int, float, float]:
        """Requests arrived since the last tick and their mean ISL / OSL; updates the KV
        hit rate from requests recorded since then (reused / input tokens)."""
        n0, i0, o0 = self._last_arrived
        n = sim.num_arrived - n0
        di = sim.arrived_input_tokens - i0
        do = sim.arrived_output_tokens - o0
        self._last_arrived = (sim.num_arrived, sim.arrived_input_tokens,
                              sim.arrived_output_tokens)
        cols = sim.metrics.cols
        reused = cols["reused_input_tokens"]
        inp = cols["input_length"]
        k = len(reused)
        if k > self._reused_idx:
            r = sum(reused[self._reused_idx:k])
            t = sum(inp[self._reused_idx:k])
            if t > 0:
                self.kv_hit_rate = r / t
            self._reused_idx = k
        return n, (di / n if n else 0.0), (do / n if n else 0.0)

    def _clamp(self, n: int) -> int:
        return max(self.cfg.min_endpoint, min(self.max_workers, n))

    def _apply(self, sim, target: int, reason: str) -> None:
        a, s, d = sim.counts()
        cur = a + s
        if target > cur:
            sim.add_workers(target - cur)
        elif target < cur:
            sim.remove_workers(cur - target)
        else:
            return
        a2, s2, _ = sim.counts()
        if a2 + s2 != cur:      # (remove_workers never drains the last active worker)
            self.events.append((sim.now / 1000.0, cur, a2 + s2, reason))

    def _in_progress(self, sim) -> bool:
        _, s, d = sim.counts()
        return self.cfg.hold_while_scaling and (s > 0 or d > 0)

    # -- report -------------------------------------------------------------------------------
    def report(self, result: Any = None) -> dict[str, Any]:
        """Scaling summary. ``result``: the run's RunResult or summary dict (GPU-hours are
        read from its totals, which integrate starting, active and draining workers); without
        it, GPU-hours are integrated up to the simulation's current time."""
        sim = self.sim
        replicas = list(sim.replicas) if sim is not None else []
        if result is not None:
            summary = getattr(result, "summary", result)
            gpu_hours = summary["totals"]["gpu_hours"]
        else:
            ws = 0.0
            for w in sim.workers:
                stop = w.removed_ms if w.removed_ms is not None else sim.now
                ws += max(0.0, stop - w.created_ms) / 1000.0
            gpu_hours = ws * self.gpus_per_worker / 3600.0
        return {
            "scaling_events": len(self.events),
            "events": list(self.events),
            "max_replicas": max((a + s + d for _, a, s, d in replicas), default=0),
            "max_active": max((a for _, a, _s, _d in replicas), default=0),
            "replicas_over_time": replicas,
            "gpu_hours": gpu_hours,
        }


# -- load-based ------------------------------------------------------------------------------

@dataclass
class _Fit:
    a: float
    b: float
    c: float
    n: int
    source: str   # "engine" | "pool"

    def pass_ms(self, prefill_tokens: float, decode_kv: float) -> float:
        return self.a + self.b * prefill_tokens + self.c * decode_kv


def fit_pass_time(samples: list[tuple[float, float, float]]) -> tuple[float, float, float]:
    """Least squares ``ms = a + b * prefill + c * kv`` over (prefill, kv, ms) samples, with a
    tiny ridge on standardised features (constant features get coefficient 0) and
    coefficients clamped at 0 (the fit is redone without a feature whose slope is negative)."""
    arr = np.asarray(samples, dtype=float)
    x, y = arr[:, :2], arr[:, 2]
    use = [j for j in range(2) if np.ptp(x[:, j]) > 1e-9]
    while True:
        coef = np.zeros(2)
        if use:
            xs = x[:, use]
            mu, sd = xs.mean(0), xs.std(0)
            z = (xs - mu) / sd
            ym = y.mean()
            A = z.T @ z + 1e-6 * len(y) * np.eye(len(use))
            w = np.linalg.solve(A, z.T @ (y - ym))
            coef[use] = w / sd
        a = float(y.mean() - (x.mean(0) @ coef))
        neg = [j for j in use if coef[j] < 0]
        if not neg:
            break
        use = [j for j in use if j not in neg]
    if a < 0:    # keep the estimates conservative: no negative per-pass overhead
        a = 0.0
    return a, float(coef[0]), float(coef[1])


class LoadPlanner(_Planner):
    """Reactive load-based scaling (see the module doc)."""

    default_interval_s = DEFAULT_LOAD_INTERVAL_S

    def __init__(self, config: PlannerConfig | None = None) -> None:
        super().__init__(config)
        self._snap: dict[int, tuple[int, float, int, int]] = {}
        self.samples: dict[int, deque] = {}
        self._last_prefill_per_pass: dict[int, float] = {}
        self._avg_isl = 0.0
        self._sub = 0

    def _start(self, sim) -> None:
        for w in sim.workers:
            if w.state == ACTIVE:
                self._snap[w.id] = self._totals(w.engine, sim.now)
        self._sub_dt = self.interval_s / self.cfg.fpm_samples_per_interval
        sim.call_at(sim.now + self._sub_dt * 1000.0, self._step)

    @staticmethod
    def _totals(eng, now: float) -> tuple[int, float, int, int]:
        t = eng.fpm_totals(now)
        return (t.passes, t.busy_ms, t.prefill_tokens, t.decode_kv_tokens)

    def _sample(self, sim) -> None:
        now = sim.now
        for w in sim.workers:
            if w.state not in (ACTIVE, DRAINING):
                continue
            cur = self._totals(w.engine, now)
            old = self._snap.get(w.id)
            self._snap[w.id] = cur
            if old is None:
                continue
            dp = cur[0] - old[0]
            if dp <= 0:
                continue
            pf = (cur[2] - old[2]) / dp
            kv = (cur[3] - old[3]) / dp
            ms = (cur[1] - old[1]) / dp
            q = self.samples.setdefault(w.id, deque(maxlen=self.cfg.max_num_fpm_samples))
            q.append((pf, kv, ms))
            self._last_prefill_per_pass[w.id] = pf

    def _step(self, sim) -> None:
        self._sample(sim)
        self._sub += 1
        if self._sub >= self.cfg.fpm_samples_per_interval:
            self._sub = 0
            self._tick(sim)
        self._reschedule(sim, self._step, self._sub_dt)

    def _fit(self, wid: int, pool: list | None) -> _Fit | None:
        m = self.cfg.load_min_observations
        own = self.samples.get(wid)
        if own is not None and len(own) >= m:
            return _Fit(*fit_pass_time(list(own)), len(own), "engine")
        if pool is not None and len(pool) >= m:
            return _Fit(*fit_pass_time(pool), len(pool), "pool")
        return None

    # estimates --------------------------------------------------------------------------------
    @staticmethod
    def engine_load(eng) -> dict[str, float]:
        """Queued prefill tokens, scheduled / queued decode KV, decode batch size."""
        qp = eng.queued_prefill_tokens()
        sched_kv = 0
        for s in eng.running:
            rest = s.prompt_len - s.computed
            if rest > 0:
                qp += rest
            sched_kv += s.prompt_len + s.generated
        queued_kv = sum(s.prompt_len + s.generated for s in eng.waiting)
        return {"queued_prefill": qp, "sched_kv": sched_kv, "queued_kv": queued_kv,
                "n_decode": len(eng.running)}

    def est_ttft(self, fit: _Fit, eng, queued_prefill: float, load: dict) -> float:
        new = self._avg_isl * (1.0 - self.kv_hit_rate)
        tokens = queued_prefill + new
        chunk = max(1, eng.cfg.max_num_batched_tokens - load["n_decode"])
        n_full, rest = divmod(tokens, chunk)
        per = fit.pass_ms(chunk, load["sched_kv"])
        t = n_full * per
        if rest > 0 or tokens == 0:
            t += fit.pass_ms(rest, load["sched_kv"])
        return t

    def est_itl(self, fit: _Fit, wid: int, kv: float) -> float:
        return fit.pass_ms(self._last_prefill_per_pass.get(wid, 0.0), kv)

    def _tick(self, sim) -> None:
        cfg = self.cfg
        n_req, isl, _osl = self._observe_interval(sim)
        if n_req:
            self._avg_isl = isl
        a, s, d = sim.counts()
        n = a + s
        tick: dict[str, Any] = {"t_s": sim.now / 1000.0, "active": a, "starting": s,
                                "draining": d, "num_req": n_req, "kv_hit_rate": self.kv_hit_rate}
        self.ticks.append(tick)
        clamped = self._clamp(n)
        if clamped != n:        # outside [min_endpoint, budget]: fix first
            tick.update(decision="clamp", reason="budget/min_endpoint")
            if not self._in_progress(sim) or clamped < n:
                self._apply(sim, clamped, "clamp to budget/min_endpoint")
            return
        if self._in_progress(sim):
            tick.update(decision="hold", reason="scaling in progress")
            return
        engines = [w for w in sim.workers if w.state == ACTIVE]
        if not engines:
            tick.update(decision="hold", reason="no active engine")
            return
        pool = [x for w in engines for x in self.samples.get(w.id, ())]
        fits = [self._fit(w.id, pool) for w in engines]
        loads = [self.engine_load(w.engine) for w in engines]
        if any(f is None for f in fits):
            up, down, why = self._easy(engines, loads)
            tick["mode"] = "easy"
        else:
            up, down, why = self._regression(engines, loads, fits, n, tick)
            tick["mode"] = "regression"
        if up and n < self.max_workers:
            tick.update(decision="up", reason=why)
            self._apply(sim, self._clamp(n + 1), "load: " + why)
        elif down and n > cfg.min_endpoint:
            tick.update(decision="down", reason=why)
            self._apply(sim, self._clamp(n - 1), "load: " + why)
        else:
            tick.update(decision="hold", reason=why if up else "within targets")

    def _easy(self, engines, loads) -> tuple[bool, bool, str]:
        up = False
        down = True
        for w, ld in zip(engines, loads):
            eng = w.engine
            ctx = (self.cfg.context_length or eng.cfg.max_model_len
                   or eng.cfg.max_num_batched_tokens)
            p = ld["queued_prefill"] / ctx
            kv = (ld["queued_prefill"] + ld["sched_kv"] + ld["queued_kv"]) / eng.capacity_tokens
            if p >= 1.0 or kv > 1.0:
                up = True
            if not (p < 0.1 and kv < 0.6):
                down = False
        return up, down and not up, ("easy: over threshold" if up else "easy: under thresholds")

    def _regression(self, engines, loads, fits, n, tick) -> tuple[bool, bool, str]:
        cfg = self.cfg
        sens = cfg.load_scaling_down_sensitivity / 100.0
        ttfts, itls = [], []
        down_ok = n > 1
        for w, ld, fit in zip(engines, loads, fits):
            eng = w.engine
            kv = ld["sched_kv"] + ld["queued_kv"]
            ttft = self.est_ttft(fit, eng, ld["queued_prefill"], ld)
            itl = self.est_itl(fit, w.id, kv)
            ttfts.append(ttft)
            itls.append(itl)
            if down_ok:
                f = n / (n - 1)
                t_own = self.est_ttft(fit, eng, 0, ld)
                post = self.est_ttft(fit, eng, ld["queued_prefill"] * f, ld)
                if not (post - t_own < (cfg.ttft_sla_ms - t_own) * sens):
                    down_ok = False
                kv_post = kv * f
                if not (kv_post < eng.capacity_tokens
                        and self.est_itl(fit, w.id, kv_post) < cfg.itl_sla_ms * sens):
                    down_ok = False
        tick["ttft_est_ms"] = ttfts
        tick["itl_est_ms"] = itls
        up_t = all(t > cfg.ttft_sla_ms for t in ttfts)
        up_i = all(t > cfg.itl_sla_ms for t in itls)
        if up_t or up_i:
            return True, False, "TTFT over SLA on all engines" if up_t else \
                "ITL over SLA on all engines"
        return False, down_ok, "consolidation fits SLA" if down_ok else "within targets"


# -- throughput-based --------------------------------------------------------------------------

def prefill_cost_ms(timing, tokens: float, max_batched: int) -> float:
    """Time to prefill ``tokens`` alone, in chunks of ``max_batched``."""
    if tokens <= 0:
        return 0.0
    n_full, rest = divmod(int(math.ceil(tokens)), max_batched)
    t = n_full * timing.prefill_ms(max_batched, 0, 1)
    if rest:
        t += timing.prefill_ms(rest, 0, 1)
    return t


def agg_engine_capacity(timing, engine_cfg, isl: float, osl: float, ttft_sla_ms: float,
                        itl_sla_ms: float, kv_hit_rate: float = 0.0) -> dict[str, float]:
    """Best steady-state request rate of one aggregated engine meeting both SLAs.

    For a concurrency (batch) B, each request lives ~OSL decode passes, so B/OSL new
    requests join per pass, each with ``isl_eff = isl * (1 - kv_hit_rate)`` prompt tokens
    whose prefill (alone, chunked) costs ``P``. Model: ``ITL(B) = decode_ms(B, B*ctx) +
    (B/OSL) * P`` with ``ctx = isl + osl/2``; ``TTFT(B) = P + ITL(B)`` (wait for the pass in
    flight, then prefill); ``rps(B) = 1000 * B / (OSL * ITL(B))``. B ranges over 1 ..
    min(max_num_seqs, KV capacity / (isl + osl)); the best feasible rps wins. If no B meets
    the SLAs, B = 1 is used (``feasible = False``)."""
    osl = max(1.0, osl)
    isl = max(0.0, isl)
    cap = engine_cfg.num_gpu_blocks * engine_cfg.block_size
    isl_eff = isl * (1.0 - min(max(kv_hit_rate, 0.0), 1.0))
    p_cost = prefill_cost_ms(timing, isl_eff, engine_cfg.max_num_batched_tokens)
    ctx = isl + osl / 2.0
    b_max = int(min(engine_cfg.max_num_seqs, max(1, cap // max(1.0, isl + osl))))
    best = None
    first = None
    for b in range(1, b_max + 1):
        kv = int(b * ctx)
        itl = timing.decode_ms(b, kv, kv, cap) + (b / osl) * p_cost
        ttft = p_cost + itl
        rps = 1000.0 * b / (osl * itl) if itl > 0 else math.inf
        cand = {"rps": rps, "batch": b, "itl_ms": itl, "ttft_ms": ttft}
        if first is None:
            first = cand
        if itl <= itl_sla_ms and ttft <= ttft_sla_ms and (best is None or rps > best["rps"]):
            best = cand
    if best is None:
        return dict(first, feasible=False)
    return dict(best, feasible=True)


class ThroughputPlanner(_Planner):
    """Predictive throughput-based scaling (see the module doc)."""

    default_interval_s = DEFAULT_THROUGHPUT_INTERVAL_S

    def __init__(self, config: PlannerConfig | None = None) -> None:
        super().__init__(config)
        kw = self.cfg._predictor_kw()
        self.pred_req = make_predictor(self.cfg.load_predictor, **kw)
        self.pred_isl = make_predictor(self.cfg.load_predictor, **kw)
        self.pred_osl = make_predictor(self.cfg.load_predictor, **kw)

    def _tick(self, sim) -> None:
        cfg = self.cfg
        n_req, isl, osl = self._observe_interval(sim)
        self.pred_req.add(n_req)
        if n_req:
            self.pred_isl.add(isl)
            self.pred_osl.add(osl)
        next_req = self.pred_req.predict()
        next_isl = self.pred_isl.predict()
        next_osl = self.pred_osl.predict()
        a, s, d = sim.counts()
        n = a + s
        tick: dict[str, Any] = {"t_s": sim.now / 1000.0, "active": a, "starting": s,
                                "draining": d, "num_req": n_req, "isl": isl, "osl": osl,
                                "next_num_req": next_req, "next_isl": next_isl,
                                "next_osl": next_osl, "kv_hit_rate": self.kv_hit_rate}
        self.ticks.append(tick)
        demand = next_req / self.interval_s
        if demand > 0 and next_osl > 0:
            capa = agg_engine_capacity(sim.timing, sim.engine_cfg, next_isl, next_osl,
                                       cfg.ttft_sla_ms, cfg.itl_sla_ms, self.kv_hit_rate)
            want = max(math.ceil(demand / capa["rps"] - 1e-9), cfg.min_endpoint)
            tick.update(engine_rps=capa["rps"], engine_batch=capa["batch"],
                        feasible=capa["feasible"])
        else:
            want = cfg.min_endpoint
        target = self._clamp(want)
        tick.update(demand_rps=demand, wanted=want, target=target)
        if target == n:
            tick["decision"] = "hold"
        elif self._in_progress(sim) and not (n > self.max_workers):
            tick["decision"] = "hold"
            tick["reason"] = "scaling in progress"
        else:
            tick["decision"] = "up" if target > n else "down"
            self._apply(sim, target, f"throughput: demand {demand:.3g} rps")
        self._reschedule(sim, self._tick, self.interval_s)
