"""Autoscaling planners (Dynamo 1.6.1 planner): an aggregated pool (agg mode) and
disaggregated prefill/decode pools (disagg mode: :class:`DisaggLoadPlanner`,
:class:`DisaggThroughputPlanner`, at the end of this module).

Two planners, each attached to a :class:`~sim.simulator.Simulation` with
``planner.attach(sim)``; ticks are control events (``sim.call_at``) at multiples of the
adjustment interval from the attach time, handled after the timestamp's pass ends,
start-ups and arrivals (as Dynamo's planner-in-the-loop replay does).

Configuration is :class:`PlannerConfig`, whose fields carry the names and defaults of
Dynamo's ``PlannerConfig`` (``dynamo/planner/config/planner_config.py``,
``config/defaults.py``); ``from_dict`` accepts Dynamo's JSON (``--planner-config-json``),
aliases included (``ttft``, ``itl``, ``load_adjustment_interval``, ...).

:class:`LoadPlanner` -- Dynamo's load-based scaling (``core/load_scaling.py``), by
``optimization_target``:

* ``throughput`` (Dynamo's default), ``latency``, ``load``: the static-threshold ("easy")
  rules, which is what Dynamo runs unless told ``optimization_target: sla`` -- the SLA
  targets ``ttft_ms``/``itl_ms`` are then ignored (Dynamo logs a warning saying so). Per
  active engine, from its latest forward-pass snapshot (FPM: the latest *finished* pass,
  or zero for an idle engine; see :func:`fpm_snapshot`), the KV utilisation
  ``u = (scheduled decode KV + queued decode KV + queued prefill tokens) / KV capacity``.
  Scale up by one if ANY engine has ``u > up`` (``load``: ``u >= up``); scale down by one
  (N > 1) if ALL engines have ``u < down`` (``load``: ``<=``), unless the consolidation
  guard ``max(u) * N / (N - 1) >= up`` refuses it. Thresholds (up, down): throughput
  (1.0, 0.6), latency (0.4, 0.1), load (``decode_scale_up_kv_rate``,
  ``decode_scale_down_kv_rate``) / 100 (``_agg_easy_decision``).
* ``sla``: regression estimates of TTFT and ITL against ``ttft_ms``/``itl_ms``. Dynamo
  1.6.1 computes these with the AISimulate perf model; that package cannot be installed
  here, so Dynamo's own replay fails at start-up with ``optimization_target: sla`` and this
  mode has no parity check. Ours: FPM samples every ``interval / fpm_samples_per_interval``
  (each engine's cumulative ``fpm_totals`` differenced; one sample = the interval's mean
  per pass ``(prefill_tokens, decode_kv_tokens) -> busy_ms``, last ``max_num_fpm_samples``
  kept); the linear model ``pass_ms = a + b * prefill + c * decode_kv`` (least squares,
  tiny ridge, coefficients >= 0); an engine with fewer than ``load_min_observations``
  samples (the cold-start threshold) borrows the pool of all engines' samples, and with
  too few even there the tick holds. TTFT = chunked prefill of the queue plus one average
  prompt x (1 - KV hit rate); ITL at the scheduled + queued decode KV. Up if ALL engines'
  TTFT > ``ttft_ms`` or ALL ITL > ``itl_ms``; down (N > 1) only if for every engine the
  queue-induced TTFT with the queue x N/(N-1) stays below ``(ttft_ms - T_own) * sens`` and
  the ITL at KV x N/(N-1) below ``itl_ms * sens`` with that KV inside the cache
  (``sens = load_scaling_down_sensitivity / 100``).

Decisions (both targets) move by one worker from the *ready* (active) count, clamped to
``min_endpoint`` and the GPU budget band ``[min_gpu_budget, max_gpu_budget]`` without
reversing direction (``core/budget.py`` ``guard_single_scaling_budget``). Like Dynamo's
replay adapter: nothing is decided while a worker is starting (the expected count differs
from the ready count); draining workers do not hold decisions (they are neither ready nor
expected); a tick at the very moment a worker became ready, before that worker has run a
pass, sees one FPM fewer than ready workers and holds (``worker_count_mismatch``).
Provisioned count = active + starting; GPU-hours integrate starting, active and draining.

Known defect, reproduced by default: under steady load near a threshold both targets can
flap (down, then up one interval later, every start-up + 2 intervals).
``scale_down_cooldown_seconds`` (ours, default 0 = Dynamo) forbids a scale-down within that
many seconds of the last scale-up, the stabilisation window Kubernetes' HPA uses.

:class:`ThroughputPlanner` -- predictive (``core/throughput_scaling.py``, §6.3; Dynamo runs
it only with ``optimization_target: sla``, which this planner always assumes). Each
``throughput_adjustment_interval_seconds`` it observes the arrived requests and their mean
ISL/OSL, forecasts the next interval with ``load_predictor``, and sets ``N = max(ceil(
demand_rps / engine_rps), min_endpoint)``, moving at most ``max_throughput_scaling_replicas``
per decision, where ``engine_rps`` is one engine's best steady-state rate meeting both SLAs
under the timing model (:func:`agg_engine_capacity`), the prompt discounted by the observed
KV hit rate. Not parity-checked (Dynamo's replay needs AISimulate for it).

Records: ``planner.events`` = ``(at_s, from_count, to_count, reason)``, ``planner.ticks``
= one dict per tick. Ticks reschedule themselves only while the simulation has non-control
events (pass ends, arrivals, start-ups) or work, so a run still ends when the workload does;
a tick that finds the workload over decides nothing (Dynamo's replay has stopped ticking).

Parity: with Dynamo's default target the load planner's worker trajectory equals Dynamo
1.6.1's planner replay step for step on ramps, steps, flash crowds and constant load
(``bench/planner_parity.py``, ``tests/test_planner_parity.py``). The disagg load planner's
per-pool trajectories match Dynamo's disagg planner replay on the same eight traces, decode
KV overload included (``bench/planner_parity.py --disagg``); its budget helpers equal Dynamo's
``core/budget.py`` (``tests/test_planner_disagg.py``).
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping

import numpy as np

from .errors import InputError
from .predictors import PREDICTORS, make_predictor
from .simulator import ACTIVE

OPTIMIZATION_TARGETS = ("throughput", "latency", "load", "sla")
#: (up, down) KV-utilisation thresholds of the static targets (Dynamo load_scaling.py)
EASY_THRESHOLDS = {"throughput": (1.0, 0.6), "latency": (0.4, 0.1)}
#: Dynamo's accepted spellings (pydantic AliasChoices) -> our field
ALIASES = {"ttft": "ttft_ms", "itl": "itl_ms",
           "load_adjustment_interval": "load_adjustment_interval_seconds",
           "throughput_adjustment_interval": "throughput_adjustment_interval_seconds"}
#: Dynamo PlannerConfig keys that configure its deployment (ports, Prometheus, reports,
#: Kubernetes, plugins) or features without a simulated counterpart: named in the error.
NOT_SIMULATED = frozenset({
    "environment", "namespace", "backend", "log_dir", "control_api_port",
    "metric_pulling_prometheus_endpoint", "metric_reporting_prometheus_port",
    "throughput_metrics_source", "model_name", "global_planner_namespace", "advisory",
    "report_interval_hours", "report_output_dir", "report_filename", "report_write_gzip_log",
    "live_dashboard_port", "scheduling", "plugin_registration", "profile_results_dir",
    "pre_deployment_sweeping_mode", "aic_interpolation", "ais_perf_model",
    "enable_power_awareness", "total_gpu_power_limit", "speculative_nextn",
    "fpm_sample_bucket_size", "prophet_window_size", "load_predictor_warmup_trace",
    "enable_load_scaling", "enable_throughput_scaling"})


def _opt(default: Any, **rules: Any) -> Any:
    return field(default=default, metadata=rules)


@dataclass
class PlannerConfig:
    """Planner settings: Dynamo 1.6.1's field names and defaults (agg mode).

    Units: ``*_ms`` milliseconds, ``*_seconds`` seconds, budgets in GPUs, rates in percent
    of the KV cache. Every field is validated in ``__post_init__``; errors are
    :class:`~sim.errors.InputError` naming the field. Fields marked "ours" are not Dynamo's.
    """
    mode: str = _opt("agg", choices=("agg", "disagg"))   # disagg: DisaggLoad/Throughput
    optimization_target: str = _opt("throughput", choices=OPTIMIZATION_TARGETS)
    ttft_ms: float = _opt(500.0, gt=0)             # SLA targets (optimization_target: sla)
    itl_ms: float = _opt(50.0, gt=0)
    load_adjustment_interval_seconds: float = _opt(5.0, gt=0)
    throughput_adjustment_interval_seconds: float = _opt(180.0, gt=0)
    max_throughput_scaling_replicas: int = _opt(8, ge=1)   # per throughput decision
    max_gpu_budget: int = _opt(8, ge=1)            # (Dynamo's -1 = no ceiling: not offered)
    min_gpu_budget: int = _opt(-1, ge=-1)          # -1 disables the floor
    min_endpoint: int = _opt(1, ge=1)              # Dynamo allows 0; we never drain the last
    decode_engine_num_gpu: int | None = _opt(None, ge=1)   # None: the cluster's GPUs/worker
    load_predictor: str = _opt("arima", choices=tuple(PREDICTORS))
    load_predictor_log1p: bool = False
    kalman_q_level: float = _opt(1.0, ge=0)
    kalman_q_trend: float = _opt(0.1, ge=0)
    kalman_r: float = _opt(10.0, gt=0)
    kalman_min_points: int = _opt(5, ge=1)
    load_scaling_down_sensitivity: int = _opt(80, ge=0, le=100)
    load_min_observations: int = _opt(5, ge=1)     # cold-start threshold (sla)
    max_num_fpm_samples: int = _opt(64, ge=2)
    decode_scale_up_kv_rate: float | None = _opt(None, ge=0, le=100)     # target: load
    decode_scale_down_kv_rate: float | None = _opt(None, ge=0, le=100)
    # disaggregated pools (mode: disagg); None = as min_endpoint / the cluster's GPUs
    prefill_engine_num_gpu: int | None = _opt(None, ge=1)
    prefill_min_endpoint: int | None = _opt(None, ge=1)
    decode_min_endpoint: int | None = _opt(None, ge=1)
    prefill_scale_up_queue_tokens: int | None = _opt(None, ge=0)     # target: load
    prefill_scale_down_queue_tokens: int | None = _opt(None, ge=0)
    # -- ours ------------------------------------------------------------------------------
    scale_down_cooldown_seconds: float = _opt(0.0, ge=0)   # 0 = Dynamo (flaps)
    fpm_samples_per_interval: int = _opt(5, ge=1)          # sla: FPM samples per interval

    def __post_init__(self) -> None:
        hints = {"int": int, "float": float, "bool": bool, "str": str}
        for f in fields(self):
            v = getattr(self, f.name)
            kind = str(f.type).replace(" | None", "")
            if v is None:
                if "None" not in str(f.type):
                    raise InputError("must not be null", field=f.name)
                continue
            base = hints[kind]
            if base is bool:
                ok = isinstance(v, bool)
            elif base is int:
                ok = isinstance(v, int) and not isinstance(v, bool) or (
                    isinstance(v, float) and v.is_integer())
                if ok:
                    v = int(v)
            elif base is float:
                ok = _num(v)
                if ok:
                    v = float(v)
            else:
                ok = isinstance(v, str)
            if not ok:
                raise InputError(f"expected {kind}, got {v!r}", field=f.name)
            setattr(self, f.name, v)
            r = f.metadata
            if "choices" in r and v not in r["choices"]:
                raise InputError(f"unknown value {v!r}; expected one of "
                                 f"{', '.join(r['choices'])}", field=f.name)
            if "gt" in r and not v > r["gt"]:
                raise InputError(f"must be > {r['gt']}, got {v!r}", field=f.name)
            if "ge" in r and not v >= r["ge"]:
                raise InputError(f"must be >= {r['ge']}, got {v!r}", field=f.name)
            if "le" in r and not v <= r["le"]:
                raise InputError(f"must be <= {r['le']}, got {v!r}", field=f.name)
        if self.optimization_target == "load":
            up, down = self.decode_scale_up_kv_rate, self.decode_scale_down_kv_rate
            if up is None or down is None:
                raise InputError("optimization_target 'load' needs decode_scale_up_kv_rate "
                                 "and decode_scale_down_kv_rate",
                                 field="decode_scale_up_kv_rate")
            if up <= down:
                raise InputError(f"must be greater than decode_scale_down_kv_rate ({down:g}),"
                                 f" got {up:g}", field="decode_scale_up_kv_rate")
        if self.mode == "disagg" and self.optimization_target == "sla":
            raise InputError("'sla' with mode 'disagg' is not modelled (Dynamo's replay "
                             "needs AISimulate for it)", field="optimization_target")
        if self.decode_engine_num_gpu is not None and self.mode == "agg":
            self._check_budget(self.decode_engine_num_gpu)
        make_predictor(self.load_predictor, **self.predictor_kwargs())  # bad kwargs fail here

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **base: Any) -> "PlannerConfig":
        """A config from Dynamo-style keys (``--planner-config-json``), over ``base``.
        Unknown keys, and Dynamo keys without a simulated counterpart, raise an
        InputError naming the key."""
        if not isinstance(data, Mapping):
            raise InputError(f"expected a JSON object of planner fields, got {data!r}")
        names = [f.name for f in fields(cls)]
        kw = dict(base)
        for key, value in data.items():
            name = ALIASES.get(key, key)
            if name not in names:
                if key in NOT_SIMULATED:
                    raise InputError(f"Dynamo planner key '{key}' has no simulated "
                                     "counterpart in dynosim", field=key)
                import difflib
                hint = difflib.get_close_matches(str(key), names, n=1)
                raise InputError(f"unknown planner key '{key}'" + (
                    f" (did you mean '{hint[0]}'?)" if hint else ""), field=key)
            kw[name] = value
        return cls(**kw)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _check_budget(self, gpus: int) -> None:
        if 0 <= self.max_gpu_budget < self.min_endpoint * gpus:
            raise InputError(f"{self.max_gpu_budget} GPUs cannot hold min_endpoint="
                             f"{self.min_endpoint} workers of {gpus} GPUs",
                             field="max_gpu_budget")

    def predictor_kwargs(self) -> dict[str, Any]:
        """Constructor arguments of ``load_predictor`` from the Dynamo fields."""
        if self.load_predictor == "kalman":
            return {"q_level": self.kalman_q_level, "q_trend": self.kalman_q_trend,
                    "r": self.kalman_r, "min_points": self.kalman_min_points}
        if self.load_predictor == "arima":
            return {"log1p": self.load_predictor_log1p}
        return {}

    def easy_thresholds(self) -> tuple[float, float]:
        """(up, down) KV-utilisation thresholds of a static target (fractions)."""
        if self.optimization_target == "load":
            return self.decode_scale_up_kv_rate / 100.0, self.decode_scale_down_kv_rate / 100.0
        return EASY_THRESHOLDS[self.optimization_target]


#: PlannerConfig fields both planners read whatever the target: the pool's structure
#: (mode, GPU budget band, floors, GPUs per worker) and our scale-down cooldown.
_READ_BY_ALL = ("mode", "max_gpu_budget", "min_gpu_budget", "min_endpoint",
                "decode_engine_num_gpu", "scale_down_cooldown_seconds")


def fields_read(cfg: PlannerConfig, planner: str) -> frozenset[str]:
    """The :class:`PlannerConfig` fields that ``planner`` (``"load"``: :class:`LoadPlanner`
    / :class:`DisaggLoadPlanner`; ``"throughput"``: :class:`ThroughputPlanner` /
    :class:`DisaggThroughputPlanner`) reads when run with ``cfg`` (its ``mode``,
    ``optimization_target`` and ``load_predictor`` decide the rest). Every other field
    leaves the planner's decisions unchanged (``tests/test_cli_polish4.py`` perturbs
    them); ``dynosim tune`` writes only these. Errors: ValueError for another planner.

    load: ``optimization_target`` and ``load_adjustment_interval_seconds``; under ``sla``
    the SLA targets and the regression's ``load_scaling_down_sensitivity``,
    ``load_min_observations``, ``max_num_fpm_samples``, ``fpm_samples_per_interval``;
    under ``load`` the KV thresholds ``decode_scale_{up,down}_kv_rate`` (and, disaggregated,
    ``prefill_scale_{up,down}_queue_tokens``); ``throughput``/``latency`` use fixed
    thresholds (:data:`EASY_THRESHOLDS`). throughput: the SLA targets,
    ``throughput_adjustment_interval_seconds``, ``max_throughput_scaling_replicas``,
    ``load_predictor`` and its own parameters (:meth:`PlannerConfig.predictor_kwargs`);
    ``optimization_target`` is not read (it always assumes ``sla``, as Dynamo runs it)."""
    read = set(_READ_BY_ALL)
    if cfg.mode == "disagg":
        read |= {"prefill_engine_num_gpu", "prefill_min_endpoint", "decode_min_endpoint"}
    if planner == "load":
        read |= {"optimization_target", "load_adjustment_interval_seconds"}
        if cfg.optimization_target == "sla":
            read |= {"ttft_ms", "itl_ms", "load_scaling_down_sensitivity",
                     "load_min_observations", "max_num_fpm_samples", "fpm_samples_per_interval"}
        elif cfg.optimization_target == "load":
            read |= {"decode_scale_up_kv_rate", "decode_scale_down_kv_rate"}
            if cfg.mode == "disagg":
                read |= {"prefill_scale_up_queue_tokens", "prefill_scale_down_queue_tokens"}
    elif planner == "throughput":
        read |= {"ttft_ms", "itl_ms", "throughput_adjustment_interval_seconds",
                 "max_throughput_scaling_replicas", "load_predictor"}
        read |= {_PREDICTOR_FIELDS[k] for k in cfg.predictor_kwargs()}
    else:
        raise ValueError(f"unknown planner {planner!r}; expected load or throughput")
    return frozenset(read)


#: predictor_kwargs() argument -> the PlannerConfig field it comes from
_PREDICTOR_FIELDS = {"q_level": "kalman_q_level", "q_trend": "kalman_q_trend", "r": "kalman_r",
                     "min_points": "kalman_min_points", "log1p": "load_predictor_log1p"}


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def budget_clamp(desired: int, gpu: int, min_gpus: int, max_gpus: int,
                 min_endpoint: int) -> int:
    """Replicas within the GPU band ``[min_gpus - tol, max_gpus]`` (tol = ``gpu`` when both
    bounds are set; a negative bound is disabled) -- Dynamo ``proportional_clamp_single``."""
    if min_gpus < 0 and max_gpus < 0:
        return desired
    total = desired * gpu
    tol = gpu if (min_gpus >= 0 and max_gpus >= 0) else 0
    if max_gpus >= 0 and total > max_gpus:
        return max(min_endpoint, max_gpus // gpu)
    if min_gpus >= 0 and total < min_gpus - tol:
        return max(min_endpoint, math.ceil(min_gpus / gpu))
    return desired


def budget_guard(current: int, proposed: int, gpu: int, min_gpus: int, max_gpus: int,
                 min_endpoint: int) -> tuple[int, str | None]:
    """Apply the GPU band to a proposal without reversing its direction -- Dynamo
    ``guard_single_scaling_budget``. Returns (replicas, reason or None)."""
    tol = gpu if (min_gpus >= 0 and max_gpus >= 0) else 0
    cur = current * gpu
    if (max_gpus >= 0 and cur > max_gpus) or (min_gpus >= 0 and cur < min_gpus - tol):
        return budget_clamp(current, gpu, min_gpus, max_gpus, min_endpoint), \
            "gpu_budget_reconcile"
    if min_gpus >= 0 and cur <= min_gpus and proposed < current:
        return current, "gpu_budget_guard_hold"
    if max_gpus >= 0 and cur >= max_gpus and proposed > current:
        return current, "gpu_budget_guard_hold"
    final = budget_clamp(proposed, gpu, min_gpus, max_gpus, min_endpoint)
    if not min(current, proposed) <= final <= max(current, proposed):
        return current, "gpu_budget_guard_hold"
    return final, None


def fpm_snapshot(eng, now: float) -> tuple[int, int]:
    """(scheduled decode KV, queued tokens) of ``eng``'s forward-pass metrics as Dynamo's
    planner sees them at ``now``: the snapshot of the latest pass that has *finished* by
    ``now`` (the mocker's ``build_fpm_snapshot``, taken when that pass was scheduled: the
    context tokens of its decode sequences, and the waiting sequences' tokens -- fresh
    prompts plus preempted prompt + generated). A bulk stretch contributes its finished
    passes; an idle engine reports zeros. Matched token for token against Dynamo 1.6.1's
    replay on a single-worker ramp (the planner ticks' recorded FPM inputs)."""
    if not eng.busy and not eng.has_work():
        return 0, 0
    ends = eng.stretch_ends
    if eng.busy and ends is not None:
        j = int(ends.searchsorted(now, "right")) - 1
        if j >= 0:
            return eng._stretch_ctx0 + len(eng.running) * j, eng.fpm_queued_tokens
    return eng.last_fpm_decode_kv, eng.last_fpm_queued


# -- base ------------------------------------------------------------------------------------

class _Planner:
    def __init__(self, config: PlannerConfig | None = None) -> None:
        self.cfg = config or PlannerConfig()
        self.interval_s = self._interval()
        self.events: list[tuple[float, int, int, str]] = []
        self.ticks: list[dict[str, Any]] = []
        self.sim = None
        self.gpus_per_worker = 1
        self.max_workers = 1
        self.last_scale_up_s = -math.inf
        # interval observations
        self._last_arrived = (0, 0, 0)
        self._reused_idx = 0
        self.kv_hit_rate = 0.0         # last-value semantics, cold start 0

    def _interval(self) -> float:
        return self.cfg.load_adjustment_interval_seconds

    def attach(self, sim) -> "_Planner":
        if self.sim is not None:
            raise RuntimeError("planner already attached")
        self.sim = sim
        g = sim.cluster_cfg.gpus_per_worker
        if self.cfg.decode_engine_num_gpu is not None and self.cfg.decode_engine_num_gpu != g:
            raise InputError(f"planner says {self.cfg.decode_engine_num_gpu} GPUs per worker, "
                             f"the cluster {g} (GPU-hours use the cluster's)",
                             field="decode_engine_num_gpu")
        self.cfg._check_budget(g)
        self.gpus_per_worker = g
        self.max_workers = self.cfg.max_gpu_budget // g if self.cfg.max_gpu_budget >= 0 \
            else math.inf
        self._last_arrived = (sim.num_arrived, sim.arrived_input_tokens,
                              sim.arrived_output_tokens)
        self._start(sim)
        return self

    def _start(self, sim) -> None:
        sim.call_at(sim.now + self.interval_s * 1000.0, self._tick)

    # -- helpers ----------------------------------------------------------------------------
    def _reschedule(self, sim, fn, dt_s: float) -> None:
        if sim.has_pending_work():
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

    def _budget(self, current: int, proposed: int) -> tuple[int, str | None]:
        c = self.cfg
        return budget_guard(current, max(proposed, c.min_endpoint), self.gpus_per_worker,
                            c.min_gpu_budget, c.max_gpu_budget, c.min_endpoint)

    def _apply(self, sim, target: int, reason: str) -> None:
        a, s, d = sim.counts()
        cur = a + s
        if target > cur:
            sim.add_workers(target - cur)
            self.last_scale_up_s = sim.now / 1000.0
        elif target < cur:
            sim.remove_workers(cur - target)
        else:
            return
        a2, s2, _ = sim.counts()
        if a2 + s2 != cur:      # (remove_workers never drains the last active worker)
            self.events.append((sim.now / 1000.0, cur, a2 + s2, reason))

    @staticmethod
    def _starting(sim) -> bool:
        """A scale-up still in progress (Dynamo: expected count != ready count)."""
        return sim.counts()[1] > 0

    def _cooling_down(self, sim) -> bool:
        """Inside ``scale_down_cooldown_seconds`` of the last scale-up (ours)."""
        cd = self.cfg.scale_down_cooldown_seconds
        return cd > 0 and sim.now / 1000.0 - self.last_scale_up_s < cd - 1e-9

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
            "config": self.cfg.to_dict(),
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
    """Dynamo's load-based scaling (see the module doc): static KV-utilisation thresholds
    for ``optimization_target`` throughput / latency / load, regression estimates for
    ``sla``. Ticks every ``load_adjustment_interval_seconds``."""

    def __init__(self, config: PlannerConfig | None = None) -> None:
        super().__init__(config)
        self.sla = self.cfg.optimization_target == "sla"
        self._snap: dict[int, tuple[int, float, int, int]] = {}
        self.samples: dict[int, deque] = {}
        self._last_prefill_per_pass: dict[int, float] = {}
        self._avg_isl = 0.0
        self._sub = 0

    def _start(self, sim) -> None:
        if not self.sla:
            super()._start(sim)
            return
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
            if w.state == "removed" or w.state == "starting":
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
            self._tick(sim, reschedule=False)
        self._reschedule(sim, self._step, self._sub_dt)

    def _fit(self, wid: int, pool: list | None) -> _Fit | None:
        m = self.cfg.load_min_observations
        own = self.samples.get(wid)
        if own is not None and len(own) >= m:
            return _Fit(*fit_pass_time(list(own)), len(own), "engine")
        if pool is not None and len(pool) >= m:
            return _Fit(*fit_pass_time(pool), len(pool), "pool")
        return None

    # estimates (sla) ------------------------------------------------------------------------
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

    # the tick ---------------------------------------------------------------------------------
    def _tick(self, sim, reschedule: bool = True) -> None:
        if not sim.has_pending_work():
            return       # the workload is over: Dynamo's replay has stopped ticking
        cfg = self.cfg
        now = sim.now
        n_req, isl, _osl = self._observe_interval(sim)
        if n_req:
            self._avg_isl = isl
        a, s, d = sim.counts()
        tick: dict[str, Any] = {"t_s": now / 1000.0, "active": a, "starting": s,
                                "draining": d, "num_req": n_req, "kv_hit_rate": self.kv_hit_rate}
        self.ticks.append(tick)
        if reschedule:
            self._reschedule(sim, self._tick, self.interval_s)
        engines = [w for w in sim.workers if w.state == ACTIVE]
        if s > 0:
            tick.update(decision="hold", reason="scaling_in_progress")
            return
        if any(self._no_fpm_yet(w, now) for w in engines):
            tick.update(decision="hold", reason="worker_count_mismatch")
            return
        if not engines:
            tick.update(decision="hold", reason="no_fpm_data")
            return
        if self.sla:
            desired, why = self._regression(sim, engines, a, tick)
        else:
            desired, why = self._easy(sim, engines, a, tick)
        if desired is None:
            tick.update(decision="hold", reason=why)
            return
        if desired < a and self._cooling_down(sim):
            tick.update(decision="hold", reason="scale_down_cooldown")
            return
        target, budget_why = self._budget(a, desired)
        if target == a:
            tick.update(decision="hold", reason=budget_why or (why if desired == a else
                                                                "no_change"))
            return
        tick.update(decision="up" if target > a else "down", target=target,
                    reason=budget_why or why)
        self._apply(sim, target, "load: " + (budget_why or why))

    @staticmethod
    def _no_fpm_yet(w, now: float) -> bool:
        """Has this worker published no forward-pass metrics yet? Dynamo's replay publishes
        one when a pass finishes, or a zero snapshot once an engine sits idle after the
        instant it became ready; until then its adapter counts one FPM fewer than ready
        workers and the tick holds (``worker_count_mismatch``)."""
        eng = w.engine
        if w.ready_ms is None or eng.tot.passes or eng.num_stretch_passes:
            return False
        return w.ready_ms == now or (eng.busy and eng.pass_start == w.ready_ms)

    def _easy(self, sim, engines, n: int, tick) -> tuple[int | None, str]:
        """Dynamo ``_agg_easy_decision``: the wanted count, or None for no change."""
        tick["mode"] = "easy"
        up, down = self.cfg.easy_thresholds()
        cap = [w.engine.capacity_tokens for w in engines]
        utils = []
        for w, c in zip(engines, cap):
            sched, queued = fpm_snapshot(w.engine, sim.now)
            utils.append((sched + queued) / c)
        tick["kv_util"] = utils
        load = self.cfg.optimization_target == "load"
        return easy_rule(utils, n, up, down, load, load, self.cfg.min_endpoint)

    def _regression(self, sim, engines, n: int, tick) -> tuple[int | None, str]:
        cfg = self.cfg
        pool = [x for w in engines for x in self.samples.get(w.id, ())]
        fits = [self._fit(w.id, pool) for w in engines]
        if any(f is None for f in fits):
            return None, "insufficient_data"
        tick["mode"] = "regression"
        loads = [self.engine_load(w.engine) for w in engines]
        sens = cfg.load_scaling_down_sensitivity / 100.0
        ttfts, itls = [], []
        down_ok = n > 1
        for w, ld, fit in zip(engines, loads, fits):
            eng = w.engine
            kv = ld["sched_kv"] + ld["queued_kv"]
            ttfts.append(self.est_ttft(fit, eng, ld["queued_prefill"], ld))
            itls.append(self.est_itl(fit, w.id, kv))
            if down_ok:
                f = n / (n - 1)
                t_own = self.est_ttft(fit, eng, 0, ld)
                post = self.est_ttft(fit, eng, ld["queued_prefill"] * f, ld)
                if not (post - t_own < (cfg.ttft_ms - t_own) * sens):
                    down_ok = False
                kv_post = kv * f
                if not (kv_post < eng.capacity_tokens
                        and self.est_itl(fit, w.id, kv_post) < cfg.itl_ms * sens):
                    down_ok = False
        tick["ttft_est_ms"] = ttfts
        tick["itl_est_ms"] = itls
        if all(t > cfg.ttft_ms for t in ttfts):
            return n + 1, "TTFT over SLA on all engines"
        if all(t > cfg.itl_ms for t in itls):
            return n + 1, "ITL over SLA on all engines"
        if down_ok:
            return n - 1, "consolidation fits SLA"
        return None, "no_change"


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


def agg_engine_capacity(timing, engine_cfg, isl: float, osl: float, ttft_ms: float,
                        itl_ms: float, kv_hit_rate: float = 0.0) -> dict[str, float]:
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
        if itl <= itl_ms and ttft <= ttft_ms and (best is None or rps > best["rps"]):
            best = cand
    if best is None:
        return dict(first, feasible=False)
    return dict(best, feasible=True)


class ThroughputPlanner(_Planner):
    """Predictive throughput-based scaling (see the module doc). Ticks every
    ``throughput_adjustment_interval_seconds``."""

    def __init__(self, config: PlannerConfig | None = None) -> None:
        super().__init__(config)
        kw = self.cfg.predictor_kwargs()
        self.pred_req = make_predictor(self.cfg.load_predictor, **kw)
        self.pred_isl = make_predictor(self.cfg.load_predictor, **kw)
        self.pred_osl = make_predictor(self.cfg.load_predictor, **kw)

    def _interval(self) -> float:
        return self.cfg.throughput_adjustment_interval_seconds

    def _forecast(self, sim) -> tuple[int, float, float, float, float, float]:
        """This interval's (requests, mean ISL, mean OSL) fed to the predictors, and their
        forecasts for the next interval (ISL/OSL are fed only when requests arrived)."""
        n_req, isl, osl = self._observe_interval(sim)
        self.pred_req.add(n_req)
        if n_req:
            self.pred_isl.add(isl)
            self.pred_osl.add(osl)
        return (n_req, isl, osl, self.pred_req.predict(), self.pred_isl.predict(),
                self.pred_osl.predict())

    def _tick(self, sim) -> None:
        if not sim.has_pending_work():
            return       # the workload is over: Dynamo's replay has stopped ticking
        cfg = self.cfg
        n_req, isl, osl, next_req, next_isl, next_osl = self._forecast(sim)
        a, s, d = sim.counts()
        n = a + s
        tick: dict[str, Any] = {"t_s": sim.now / 1000.0, "active": a, "starting": s,
                                "draining": d, "num_req": n_req, "isl": isl, "osl": osl,
                                "next_num_req": next_req, "next_isl": next_isl,
                                "next_osl": next_osl, "kv_hit_rate": self.kv_hit_rate}
        self.ticks.append(tick)
        self._reschedule(sim, self._tick, self.interval_s)
        demand = next_req / self.interval_s
        if demand > 0 and next_osl > 0:
            capa = agg_engine_capacity(sim.timing, sim.engine_cfg, next_isl, next_osl,
                                       cfg.ttft_ms, cfg.itl_ms, self.kv_hit_rate)
            want = max(math.ceil(demand / capa["rps"] - 1e-9), cfg.min_endpoint)
            tick.update(engine_rps=capa["rps"], engine_batch=capa["batch"],
                        feasible=capa["feasible"])
        else:
            want = cfg.min_endpoint
        step = cfg.max_throughput_scaling_replicas
        want = max(n - step, min(n + step, want))
        target, budget_why = self._budget(n, want)
        tick.update(demand_rps=demand, wanted=want, target=target)
        if target == n:
            tick["decision"] = "hold"
        elif self._starting(sim) and budget_why is None:
            tick.update(decision="hold", reason="scaling_in_progress")
        elif target < n and self._cooling_down(sim):
            tick.update(decision="hold", reason="scale_down_cooldown")
        else:
            tick["decision"] = "up" if target > n else "down"
            self._apply(sim, target, f"throughput: demand {demand:.3g} rps")


# -- disaggregated pools (mode: disagg) ---------------------------------------------------------
#
# Dynamo 1.6.1's planner in ``mode: disagg`` (``core/load_scaling.py``
# ``_advance_load_disagg``, ``core/throughput_scaling.py`` ``_throughput_disagg``,
# ``core/budget.py``; semantics §6.3-6.5): one decision per tick for the pair (prefill P,
# decode D), each pool by its own signal, then one GPU budget ``P * gpu_p + D * gpu_d`` for
# both. Written from Dynamo's rules; the budget helpers below reproduce its results.

POOLS = ("prefill", "decode")
#: (up, down) of the prefill pool's static targets: queued prefill tokens / context length
PREFILL_EASY_THRESHOLDS = {"throughput": (1.0, 0.1), "latency": (0.1, 0.0)}


def _fits(total: int, min_gpus: int, max_gpus: int, tol: int) -> bool:
    """``total`` inside ``[min_gpus - tol, max_gpus]`` (a negative bound is disabled)."""
    return not (max_gpus >= 0 and total > max_gpus) and \
        not (min_gpus >= 0 and total < min_gpus - tol)


def budget_clamp_pair(p: int, d: int, gp: int, gd: int, min_gpus: int, max_gpus: int,
                      min_p: int, min_d: int) -> tuple[int, int]:
    """(P, D) moved into the GPU band: above the ceiling both shrink proportionally
    (prefill first, each pool keeping its floor); below the floor prefill grows
    proportionally and decode takes the rest (never shrinking). Tolerance ``max(gp, gd)``
    when both bounds are set. Dynamo ``proportional_clamp_pair``."""
    if min_gpus < 0 and max_gpus < 0:
        return p, d
    total = p * gp + d * gd
    tol = max(gp, gd) if (min_gpus >= 0 and max_gpus >= 0) else 0
    if _fits(total, min_gpus, max_gpus, tol):
        return p, d
    if max_gpus >= 0 and total > max_gpus:
        if max_gpus < min_p * gp + min_d * gd:
            return 0, 0
        new_p = max(min_p, min((max_gpus - min_d * gd) // gp,
                               math.floor(p * max_gpus / total)))
        return new_p, max(min_d, (max_gpus - new_p * gp) // gd)
    if total <= 0:
        new_p = max(min_p, math.ceil(min_gpus / 2 / gp))
    else:
        new_p = max(min_p, math.ceil(p * min_gpus / total))
    new_d = max(min_d, math.ceil(max(0, min_gpus - new_p * gp) / gd))
    shrank = new_d < d
    new_d = max(d, new_d)
    if max_gpus >= 0 and new_p * gp + new_d * gd > max_gpus:
        if not shrank:
            return p, d
        return budget_fit_pair(p, d, new_p, d, gp, gd, min_gpus, max_gpus, min_p, min_d)
    return new_p, new_d


def budget_fit_pair(cur_p: int, cur_d: int, prop_p: int, prop_d: int, gp: int, gd: int,
                    min_gpus: int, max_gpus: int, min_p: int, min_d: int) -> tuple[int, int]:
    """The pair inside the GPU band closest to the proposal with each pool between its
    current and proposed count; in an opposing rebalance (one pool up, one down) both
    move or neither does. Ties: smaller proportional skew, more progress, smaller P, D.
    Dynamo ``fit_directional_budget_pair`` (same result; a plain search over the box)."""
    tol = max(gp, gd) if (min_gpus >= 0 and max_gpus >= 0) else 0
    if prop_p >= min_p and prop_d >= min_d and \
            _fits(prop_p * gp + prop_d * gd, min_gpus, max_gpus, tol):
        return prop_p, prop_d
    opposing = (prop_p - cur_p) * (prop_d - cur_d) < 0
    req_p, req_d = abs(prop_p - cur_p), abs(prop_d - cur_d)
    best = None
    for p in range(max(min(cur_p, prop_p), min_p), max(cur_p, prop_p) + 1):
        for d in range(max(min(cur_d, prop_d), min_d), max(cur_d, prop_d) + 1):
            if opposing and (p == cur_p) != (d == cur_d):
                continue
            if not _fits(p * gp + d * gd, min_gpus, max_gpus, tol):
                continue
            mp, md = abs(p - cur_p), abs(d - cur_d)
            score = (abs(prop_p - p) + abs(prop_d - d), abs(mp * req_d - md * req_p),
                     -(mp + md), p, d)
            if best is None or score < best[0]:
                best = (score, (p, d))
    return (cur_p, cur_d) if best is None else best[1]


def budget_guard_pair(cur_p: int, cur_d: int, prop_p: int, prop_d: int, gp: int, gd: int,
                      min_gpus: int, max_gpus: int, min_p: int, min_d: int
                      ) -> tuple[int, int, str | None]:
    """Apply the GPU band to a proposal for both pools without reversing or amplifying
    either pool's move -- Dynamo ``guard_disagg_scaling_budget``. An allocation already
    outside the band is reconciled (``gpu_budget_reconcile``); at the floor a down-only
    proposal holds; at the ceiling a scale-up passes only as an opposing rebalance (one
    pool up, the other down, fitted together); else the clamped proposal, or a hold when
    clamping would reverse a move. Returns (P, D, reason or None)."""
    tol = max(gp, gd) if max_gpus >= 0 else 0
    cur = cur_p * gp + cur_d * gd
    if not _fits(cur, min_gpus, max_gpus, tol):
        return (*budget_clamp_pair(cur_p, cur_d, gp, gd, min_gpus, max_gpus, min_p, min_d),
                "gpu_budget_reconcile")
    up = prop_p > cur_p or prop_d > cur_d
    down = prop_p < cur_p or prop_d < cur_d
    opposing = up and down
    hold = (cur_p, cur_d, "gpu_budget_guard_hold")
    if cur <= min_gpus and down and not up:
        return hold
    if (cur <= min_gpus and opposing) or (max_gpus >= 0 and cur >= max_gpus and up):
        if not opposing:
            return hold
        p, d = budget_fit_pair(cur_p, cur_d, prop_p, prop_d, gp, gd, min_gpus, max_gpus,
                               min_p, min_d)
        return hold if (p, d) == (cur_p, cur_d) else (p, d, None)
    p, d = budget_clamp_pair(prop_p, prop_d, gp, gd, min_gpus, max_gpus, min_p, min_d)
    if not (min(cur_p, prop_p) <= p <= max(cur_p, prop_p)
            and min(cur_d, prop_d) <= d <= max(cur_d, prop_d)) \
            or not _fits(p * gp + d * gd, min_gpus, max_gpus, tol):
        return hold
    return p, d, None


def easy_rule(values: list[float], n: int, up: float, down: float, up_inclusive: bool,
              down_inclusive: bool, floor: int) -> tuple[int | None, str]:
    """Dynamo's static-threshold rule for one pool of ``n`` ready engines: one more if ANY
    value is over ``up``; one fewer (n > 1, not below ``floor``) if ALL are under ``down``,
    unless the consolidation guard ``max * n / (n - 1) >= up`` refuses it. Returns (the
    wanted count, or None for no change; the reason)."""
    if any(v >= up if up_inclusive else v > up for v in values):
        return n + 1, "scale_up"
    if n > 1 and all(v <= down if down_inclusive else v < down for v in values):
        want = max(n - 1, floor)
        if 0 < want < n and max(values) * n / want >= up:
            return n, "consolidation guard"
        return want, "scale_down"
    return None, "no_change"


def prefill_engine_capacity(timing, engine_cfg, isl: float,
                            kv_hit_rate: float = 0.0) -> dict[str, float]:
    """Request rate of one prefill engine saturated with full chunks of
    ``max_num_batched_tokens`` (``1000 * chunk / pass_ms(chunk) / isl_eff``), and the TTFT
    of one prompt alone (chunked); ``isl_eff = isl * (1 - kv_hit_rate)``."""
    chunk = engine_cfg.max_num_batched_tokens
    isl_eff = max(1.0, isl * (1.0 - min(max(kv_hit_rate, 0.0), 1.0)))
    per_chunk = timing.prefill_ms(chunk, 0, 1)
    rps = 1000.0 * chunk / per_chunk / isl_eff if per_chunk > 0 else math.inf
    return {"rps": rps, "ttft_ms": prefill_cost_ms(timing, isl_eff, chunk)}


def decode_engine_capacity(timing, engine_cfg, isl: float, osl: float,
                           itl_ms: float) -> dict[str, float]:
    """Best steady-state request rate of one decode engine with ``ITL(B) = decode_ms(B,
    B * ctx) <= itl_ms`` (``ctx = isl + osl / 2``; B up to min(max_num_seqs, KV capacity /
    (isl + osl))): ``rps = 1000 * B / (osl * ITL(B))``. If no B meets the SLA, B = 1
    (``feasible = False``)."""
    osl = max(1.0, osl)
    cap = engine_cfg.num_gpu_blocks * engine_cfg.block_size
    ctx = max(0.0, isl) + osl / 2.0
    b_max = int(min(engine_cfg.max_num_seqs, max(1, cap // max(1.0, isl + osl))))
    best = first = None
    for b in range(1, b_max + 1):
        kv = int(b * ctx)
        itl = timing.decode_ms(b, kv, kv, cap)
        cand = {"rps": 1000.0 * b / (osl * itl) if itl > 0 else math.inf, "batch": b,
                "itl_ms": itl}
        first = first or cand
        if itl <= itl_ms and (best is None or cand["rps"] > best["rps"]):
            best = cand
    return dict(best, feasible=True) if best is not None else dict(first, feasible=False)


class _DisaggPools:
    """What both disaggregated planners share: per-pool GPUs and floors, one budget, and
    moving both pools. Records: ``events`` = ``(at_s, from, to, "<pool> <reason>")`` per
    pool that moved; ``ticks`` as the aggregated planners'."""

    def attach(self, sim) -> "_DisaggPools":
        if self.sim is not None:
            raise RuntimeError("planner already attached")
        if not sim.disaggregated:
            raise InputError("mode 'disagg' needs disaggregated pools (a disagg section)",
                             field="mode")
        c = self.cfg
        if c.mode != "disagg":
            raise InputError("disaggregated pools need mode 'disagg'", field="mode")
        dc = sim.disagg
        self.pool_gpus = {"prefill": dc.prefill_gpus_per_worker,
                          "decode": dc.decode_gpus_per_worker}
        for pool in POOLS:
            said = getattr(c, f"{pool}_engine_num_gpu")
            if said is not None and said != self.pool_gpus[pool]:
                raise InputError(f"planner says {said} GPUs per {pool} worker, the cluster "
                                 f"{self.pool_gpus[pool]}", field=f"{pool}_engine_num_gpu")
        self.floor = {pool: getattr(c, f"{pool}_min_endpoint") or c.min_endpoint
                      for pool in POOLS}
        need = sum(self.floor[p] * self.pool_gpus[p] for p in POOLS)
        if 0 <= c.max_gpu_budget < need:
            raise InputError(f"{c.max_gpu_budget} GPUs cannot hold the minimum pools "
                             f"({self.floor['prefill']} prefill + {self.floor['decode']} "
                             f"decode workers, {need} GPUs)", field="max_gpu_budget")
        self.sim = sim
        self._last_arrived = (sim.num_arrived, sim.arrived_input_tokens,
                              sim.arrived_output_tokens)
        self._start(sim)
        return self

    def _guard(self, cur: dict[str, int], want: dict[str, int]) -> tuple[dict, str | None]:
        c, g = self.cfg, self.pool_gpus
        p, d, why = budget_guard_pair(cur["prefill"], cur["decode"], want["prefill"],
                                      want["decode"], g["prefill"], g["decode"],
                                      c.min_gpu_budget, c.max_gpu_budget,
                                      self.floor["prefill"], self.floor["decode"])
        return {"prefill": p, "decode": d}, why

    def _apply(self, sim, target: dict[str, int], reason: str) -> None:
        """Move each pool to ``target[pool]`` provisioned (active + starting) workers."""
        for pool in POOLS:
            a, s, _ = sim.counts(pool)
            cur = a + s
            if target[pool] > cur:
                sim.add_workers(target[pool] - cur, pool)
                self.last_scale_up_s = sim.now / 1000.0
            elif target[pool] < cur:
                sim.remove_workers(cur - target[pool], pool)
            a2, s2, _ = sim.counts(pool)
            if a2 + s2 != cur:
                self.events.append((sim.now / 1000.0, cur, a2 + s2, f"{pool} {reason}"))

    def report(self, result: Any = None) -> dict[str, Any]:
        """The aggregated report (GPU-hours over both pools, each at its GPUs per worker)
        plus ``pools``: per pool, its replicas over time and maximum."""
        sim = self.sim
        if result is None:
            ws = 0.0
            for w in sim.workers:
                stop = w.removed_ms if w.removed_ms is not None else sim.now
                ws += max(0.0, stop - w.created_ms) / 1000.0 * self.pool_gpus[w.role]
            result = {"totals": {"gpu_hours": ws / 3600.0}}
        out = _Planner.report(self, result)
        out["pools"] = {pool: {"replicas_over_time": list(rec),
                               "max_replicas": max((a + s + d for _, a, s, d in rec),
                                                   default=0)}
                        for pool, rec in sim.pool_replicas.items()}
        return out


class DisaggLoadPlanner(_DisaggPools, LoadPlanner):
    """Dynamo's load-based scaling of disaggregated pools, static targets (``throughput``,
    ``latency``, ``load``; ``sla`` is refused: Dynamo's replay cannot run it here).

    Every ``load_adjustment_interval_seconds``, from each ready engine's latest FPM
    (:func:`fpm_snapshot`):

    * prefill pool: ``queued prefill tokens / context_length`` (the prefill engine's
      ``max_model_len``); up if ANY >= 1.0, down if ALL < 0.1 (latency: >= 0.1 / <= 0;
      ``load``: raw queued tokens against ``prefill_scale_up_queue_tokens`` /
      ``prefill_scale_down_queue_tokens``, >= / <=). Without a context length (Dynamo's
      mocker default ``max_model_len: null``) or load thresholds, the prefill pool holds
      (Dynamo: ``insufficient_data``) -- so by default only the decode pool scales;
    * decode pool: KV utilisation ``(scheduled + queued decode KV) / KV capacity``, the
      thresholds of the aggregated rule (:meth:`PlannerConfig.easy_thresholds`).

    Each proposal is floored at its pool's ``min_endpoint`` and the pair passes
    :func:`budget_guard_pair`. The whole tick holds while a worker of either pool is
    starting, or a ready worker has not published its first FPM."""

    def _start(self, sim) -> None:
        _Planner._start(self, sim)

    def _tick(self, sim, reschedule: bool = True) -> None:
        if not sim.has_pending_work():
            return
        now = sim.now
        n_req, _isl, _osl = self._observe_interval(sim)
        counts = {pool: sim.counts(pool) for pool in POOLS}
        tick: dict[str, Any] = {"t_s": now / 1000.0, "num_req": n_req,
                                **{pool: dict(zip(("active", "starting", "draining"), c))
                                   for pool, c in counts.items()}}
        self.ticks.append(tick)
        if reschedule:
            self._reschedule(sim, self._tick, self.interval_s)
        if any(c[1] for c in counts.values()):
            tick.update(decision="hold", reason="scaling_in_progress")
            return
        engines = {pool: [w for w in sim.workers if w.state == ACTIVE and w.role == pool]
                   for pool in POOLS}
        if any(self._no_fpm_yet(w, now) for ws in engines.values() for w in ws):
            tick.update(decision="hold", reason="worker_count_mismatch")
            return
        cur = {pool: c[0] for pool, c in counts.items()}
        want_p, why_p = self._prefill_easy(sim, engines["prefill"], cur["prefill"], tick)
        want_d, why_d = self._decode_easy(sim, engines["decode"], cur["decode"], tick)
        want = {"prefill": cur["prefill"] if want_p is None else want_p,
                "decode": cur["decode"] if want_d is None else want_d}
        for pool in POOLS:
            want[pool] = max(want[pool], self.floor[pool])
            if want[pool] < cur[pool] and self._cooling_down(sim):
                want[pool] = cur[pool]
        target, budget_why = self._guard(cur, want)
        tick["reason_prefill"], tick["reason_decode"] = why_p, why_d
        if target == cur:
            tick.update(decision="hold", reason=budget_why or "no_change")
            return
        tick.update(decision="scale", target=dict(target), reason=budget_why or "load")
        self._apply(sim, target, "load: " + (budget_why or
                                              f"prefill {why_p}, decode {why_d}"))

    def _prefill_easy(self, sim, engines, n: int, tick) -> tuple[int | None, str]:
        cfg = self.cfg
        target = cfg.optimization_target
        if target == "load":
            up, down = cfg.prefill_scale_up_queue_tokens, cfg.prefill_scale_down_queue_tokens
            scale = 1.0
        else:
            up, down = PREFILL_EASY_THRESHOLDS[target]
            scale = sim.disagg.prefill_engine.max_model_len
        if up is None or down is None or not scale or not engines:
            return None, "insufficient_data"
        values = [fpm_snapshot(w.engine, sim.now)[1] / scale for w in engines]
        tick["prefill_queue"] = values
        return easy_rule(values, n, up, down, True, target != "throughput",
                         self.floor["prefill"])

    def _decode_easy(self, sim, engines, n: int, tick) -> tuple[int | None, str]:
        if not engines:
            return None, "insufficient_data"
        up, down = self.cfg.easy_thresholds()
        # queued decode KV includes the handoffs waiting for a reservation here (Dynamo's
        # WaitingForRemoteKv requests sit in the decode engine's waiting queue)
        utils = [(sum(fpm_snapshot(w.engine, sim.now))
                  + sum(h.req.input_length for h in w.pending)) / w.engine.capacity_tokens
                 for w in engines]
        tick["decode_kv_util"] = utils
        load = self.cfg.optimization_target == "load"
        return easy_rule(utils, n, up, down, load, load, self.floor["decode"])


class DisaggThroughputPlanner(_DisaggPools, ThroughputPlanner):
    """Predictive throughput-based scaling of disaggregated pools (Dynamo
    ``_throughput_disagg``, §6.3). Each ``throughput_adjustment_interval_seconds``: the
    forecast demand ``next_num_req / interval`` over one engine's capacity per pool,
    ``P = max(ceil(demand / prefill_rps), min_endpoint)`` (:func:`prefill_engine_capacity`,
    prompts discounted by the observed KV hit rate) and ``D = max(ceil(demand /
    decode_rps), min_endpoint)`` (:func:`decode_engine_capacity` at ``itl_ms``); each pool
    moves at most ``max_throughput_scaling_replicas``, the pair is fitted under the GPU
    ceiling and passes :func:`budget_guard_pair`. Holds while a worker is starting. Not
    parity-checked (Dynamo's replay needs AISimulate for it)."""

    def _tick(self, sim) -> None:
        if not sim.has_pending_work():
            return
        cfg = self.cfg
        n_req, isl, osl, next_req, next_isl, next_osl = self._forecast(sim)
        counts = {pool: sim.counts(pool) for pool in POOLS}
        cur = {pool: c[0] + c[1] for pool, c in counts.items()}
        demand = next_req / self.interval_s
        tick: dict[str, Any] = {"t_s": sim.now / 1000.0, "num_req": n_req, "isl": isl,
                                "osl": osl, "next_num_req": next_req, "next_isl": next_isl,
                                "next_osl": next_osl, "kv_hit_rate": self.kv_hit_rate,
                                "demand_rps": demand, "current": dict(cur)}
        self.ticks.append(tick)
        self._reschedule(sim, self._tick, self.interval_s)
        want = dict(self.floor)
        if demand > 0 and next_osl > 0:
            dg = sim.disagg
            # each pool on its own timing model when it has one (TP per role), else the run's
            pt = getattr(dg, "prefill_timing", None) or sim.timing
            dt = getattr(dg, "decode_timing", None) or sim.timing
            pc = prefill_engine_capacity(pt, dg.prefill_engine, next_isl, self.kv_hit_rate)
            dc = decode_engine_capacity(dt, dg.decode_engine, next_isl, next_osl, cfg.itl_ms)
            tick.update(prefill_rps=pc["rps"], decode_rps=dc["rps"],
                        decode_feasible=dc["feasible"])
            want["prefill"] = max(math.ceil(demand / pc["rps"] - 1e-9), self.floor["prefill"])
            want["decode"] = max(math.ceil(demand / dc["rps"] - 1e-9), self.floor["decode"])
        step = cfg.max_throughput_scaling_replicas
        g = self.pool_gpus
        for pool in POOLS:
            want[pool] = max(cur[pool] - step, min(cur[pool] + step, want[pool]))
            if want[pool] < cur[pool] and self._cooling_down(sim):
                want[pool] = cur[pool]
        p, d = budget_fit_pair(cur["prefill"], cur["decode"], want["prefill"],
                               want["decode"], g["prefill"], g["decode"], -1,
                               cfg.max_gpu_budget, self.floor["prefill"],
                               self.floor["decode"])
        target, budget_why = self._guard(cur, {"prefill": p, "decode": d})
        tick.update(wanted=want, target=dict(target))
        if target == cur:
            tick.update(decision="hold", reason=budget_why or "no_change")
        elif self._starting(sim):
            tick.update(decision="hold", reason="scaling_in_progress")
        else:
            tick["decision"] = "scale"
            self._apply(sim, target, f"throughput: demand {demand:.3g} rps")
