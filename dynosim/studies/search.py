"""``dynosim search``: deployment search over a space of ``dynosim simulate`` settings.

Each candidate is one deployment of one model/GPU/backend (the shipped GPU tables, see
``dynosim models``): workers, tensor parallelism, router mode and weights, KV block size,
``max_num_batched_tokens``, ``max_num_seqs`` and, optionally, a Dynamo planner with its
knobs. A candidate replays the whole trace; the search minimises (or maximises) one field of
the run report subject to constraints on others, written with the report's field names::

    minimise totals.gpu_hours subject to latency_ms.ttft.p90 <= 1500 and latency_ms.itl.p90 <= 50

Samplers and early stopping are Optuna's and Ray Tune's, not ours:

* ``--executor local``: an Optuna study in this process (TPE sampler or, ``--sampler
  random``, random sampling; seeded). One core; the same seed gives byte-identical outputs.
  With ``--jobs N`` the study asks ahead and ``N`` worker processes replay
  (:func:`search_pool`; TPE with Optuna's constant liar), still byte-identical per seed.
* ``--executor ray``: Ray Tune with Optuna's sampler (``OptunaSearch``), one trial per Ray
  CPU, on a local Ray or the cluster at ``--ray-address``. Which candidates are sampled then
  depends on the order trials finish in; every candidate's numbers are still deterministic.

Early stopping (``--early-stop``) works on the replay of the *same* whole trace:

* ``bound`` (default), exact: every ``--check-s`` simulated seconds (default 60) a
  candidate computes proven lower bounds on its final fields (:func:`lower_bounds`:
  GPU-hours provisioned up to the last completion so far, or to now while a request
  certain to complete is in flight; TTFT/E2E percentiles from the requests completed so
  far, which stay in the final sample, from those in flight that are certain to
  complete, at ``now - arrival``: :func:`pending_lower_bounds`, and, in static runs, from
  those still to arrive, at a floor on their TTFT: :func:`future_ttft_floors`) and stops
  once they prove it infeasible (a ``<=`` limit already exceeded) or dominated by a
  complete feasible candidate (:func:`bound_stop`).
  A stopped candidate can be neither feasible, nor on the feasible Pareto front, nor the
  best, so the front and the best are those of replaying every sampled candidate in full
  (``tests/test_search.py``; ``bench/scale_out.py bound``).
* ``asha``: successive halving (Optuna's pruner locally, Tune's ASHA on Ray) on the score
  of the replay truncated at each rung (``--rungs``, default 600/1200/2400 s): the report's
  fields over the requests finished by then, GPU-hours until then. A heuristic screen: on
  the conversation trace its rung ranks correlate 0.68-0.83 with the full replay's
  (``bench/scale_out.py exactness``), and it stops good candidates.
* ``none`` (``--no-early-stop``): every candidate replays in full.

Every number in ``trials.csv`` marked ``complete`` is the full replay, the same as
``dynosim simulate`` on the candidate's YAML (``tests/test_search.py``); a ``pruned`` row
holds the values at its stop (with ``bound``: the lower bounds) and why it stopped.
When no complete candidate is feasible, the three closest stopped ones are replayed in full
(:func:`replay_closest`) before the closest is reported.

Score (what the sampler and the scheduler minimise): the objective (negated when maximised)
when every constraint holds, else ``1e6 x (1 + sum of relative violations)``: any feasible
candidate beats any infeasible one, and among infeasible ones the closest wins.

Outputs in ``OUT/``: ``trials.csv`` (every trial: status complete/pruned/failed, parameters,
fields, score, error), ``front.csv`` and ``front.png`` (the Pareto front of the objective
against the first constraint's field over complete feasible trials), ``best.yaml`` (the best
candidate as a ``dynosim simulate --config`` file; its first lines give the command, with
the planner flags when it has a planner) and ``search.json`` (the resolved space, objective,
seed, executor, CPUs, wall time, simulated requests and requests/s).
"""
from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from sim.errors import InputError
from sim.schema import SEED, arg_type

from ..options import CMDLINE, env_script, plural

DEFAULT_TRACE = "bundled:mooncake_conversation"
DEFAULT_RUNGS_S = (600.0, 1200.0, 2400.0)
DEFAULT_CHECK_S = 60.0
TUNE_REPORT_S = 300.0      # simulated seconds between a Ray trial's reports to Tune
EARLY_STOPS = ("bound", "asha", "none")
SAMPLERS = ("tpe", "random")
PENALTY = 1e6
STATUSES = ("complete", "pruned", "failed")
PLANNERS = ("none", "load", "throughput")

#: Space keys that are ``simulate`` flags (so the best candidate is a runnable command):
#: config fields (dotted), ``tp`` (from the shipped GPU tables), ``planner`` and its knobs.
CONFIG_KEYS = ("cluster.num_workers", "cluster.startup_time_s", "engine.block_size",
               "engine.max_num_batched_tokens", "engine.max_num_seqs", "engine.num_gpu_blocks",
               "router.mode", "router.temperature", "router.overlap_score_credit",
               "router.prefill_load_scale")
#: Knobs of the KV router's cost (``sim.router``): sampled only when the router is ``kv``.
KV_ROUTER_KEYS = ("router.temperature", "router.overlap_score_credit",
                  "router.prefill_load_scale")
#: space key -> where it goes in the run config: a knob of the ``planner`` section (Dynamo's
#: names; ``interval_s`` is the chosen planner kind's adjustment interval) or the run's one
#: SLA (``sla.*``, which is also the planner's target).
PLANNER_KEYS = {"planner.interval_s": "interval_s",
                "planner.optimization_target": "optimization_target",
                "planner.load_predictor": "load_predictor",
                "planner.load_scaling_down_sensitivity": "load_scaling_down_sensitivity",
                "planner.max_gpu_budget": "max_gpu_budget",
                "planner.min_endpoint": "min_endpoint",
                "planner.ttft_sla_ms": "sla.ttft_ms", "planner.itl_sla_ms": "sla.itl_ms"}
_INTERVAL = {"load": "load_adjustment_interval_seconds",
             "throughput": "throughput_adjustment_interval_seconds"}
SPACE_KEYS = ("tp", *CONFIG_KEYS, "planner", *PLANNER_KEYS)
TOP_KEYS = ("model", "gpu", "backend", "max_gpus", "fixed", "space")


# -- the space -------------------------------------------------------------------------------

@dataclass
class Dim:
    """One dimension: ``choices`` (categorical) or ``low``/``high`` (int or float range)."""
    key: str
    choices: list[Any] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    integer: bool = False

    def suggest(self, trial, high: float | None = None) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(self.key, self.choices)
        hi = self.high if high is None else high
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(hi), log=self.log,
                                     step=int(self.step or 1))
        return trial.suggest_float(self.key, self.low, hi, log=self.log, step=self.step)

    def as_dict(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"choices": self.choices}
        d = {"low": self.low, "high": self.high}
        if self.log:
            d["log"] = True
        if self.step is not None:
            d["step"] = self.step
        return d


@dataclass
class Space:
    """A validated search space (``--space SPACE.yaml``)."""
    model: str
    gpu: str
    backend: str
    max_gpus: int
    dims: dict[str, Dim]
    fixed: dict[str, Any] = field(default_factory=dict)
    source: str = "space"

    def suggest(self, trial) -> dict[str, Any]:
        """Sample one candidate (define-by-run: Optuna's ``Trial`` or Tune's OptunaSearch).
        Workers are drawn within the GPU budget of the drawn TP (``max_gpus``)."""
        p: dict[str, Any] = {}
        tp = self._value("tp", trial, p)
        for key in CONFIG_KEYS:
            if key in KV_ROUTER_KEYS and self._mode(p) not in (None, "kv"):
                continue      # weights of the KV router's cost: no effect on other routers
            if key == "cluster.num_workers" and key in self.dims:
                d = self.dims[key]
                top = min(d.high, self.max_gpus // tp) if d.choices is None else None
                p[key] = d.suggest(trial, top) if top is not None else d.suggest(trial)
            elif key in self.dims:
                p[key] = self.dims[key].suggest(trial)
        planner = self._value("planner", trial, p)
        if planner != "none":
            for key in PLANNER_KEYS:
                if key in self.dims:
                    p[key] = self.dims[key].suggest(trial)
        return p

    def _mode(self, p: dict[str, Any]) -> str | None:
        """The candidate's router mode (None: the config's default)."""
        return p.get("router.mode", self.fixed.get("router.mode"))

    def _value(self, key: str, trial, p: dict[str, Any]) -> Any:
        if key in self.dims:
            p[key] = self.dims[key].suggest(trial)
            return p[key]
        return self.fixed.get(key, {"tp": 1, "planner": "none"}[key])

    def as_dict(self) -> dict[str, Any]:
        return {"model": self.model, "gpu": self.gpu, "backend": self.backend,
                "max_gpus": self.max_gpus, "fixed": self.fixed,
                "space": {k: d.as_dict() for k, d in self.dims.items()}}


def load_space(path: str | Path) -> Space:
    """Read and check ``SPACE.yaml``. Every error names the file, line and key.

    Format: ``model``/``gpu``/``backend`` (a shipped GPU table), ``max_gpus`` (budget per
    candidate, default 16), ``fixed`` (key -> value for every candidate), ``space`` (key ->
    a list of choices, or ``{low, high[, log][, step]}``). Keys: ``SPACE_KEYS``.
    """
    from sim.config import read_yaml
    fname = str(path)
    if not Path(path).is_file():
        raise InputError("space file not found", file=fname)
    data, where = read_yaml(path)

    def err(msg: str, key: str | None = None) -> InputError:
        w = where.get(key) if key else None
        return InputError(msg, file=w[0] if w else fname, line=w[1] if w else None,
                          field=key)

    if not isinstance(data, dict):
        raise err("expected a mapping with a 'space' section")
    for k in data:
        if k not in TOP_KEYS:
            raise err(f"unknown key; expected one of {', '.join(TOP_KEYS)}", str(k))
    model = data.get("model", "Qwen/Qwen3-32B")
    gpu = data.get("gpu", "h200_sxm")
    backend = data.get("backend", "vllm")
    tps = shipped_tps(model, gpu, backend)
    if not tps:
        raise err(f"no shipped GPU table for {model} on {gpu} ({backend}); see `dynosim "
                  "models`", "model" if "model" in data else None)
    max_gpus = data.get("max_gpus", 16)
    if not isinstance(max_gpus, int) or isinstance(max_gpus, bool) or max_gpus < 1:
        raise err(f"must be an integer >= 1, got {max_gpus!r}", "max_gpus")
    raw = data.get("space")
    if not isinstance(raw, dict) or not raw:
        raise err("'space' must be a non-empty mapping of key -> choices or range",
                  "space" if "space" in data else None)
    dims: dict[str, Dim] = {}
    for key, spec in raw.items():
        dotted = f"space.{key}"
        if key not in SPACE_KEYS:
            raise err(f"unknown space key {key!r}; expected one of {', '.join(SPACE_KEYS)}",
                      dotted)
        dims[key] = _dim(key, spec, lambda m, k=dotted: err(m, k))
    fixed = data.get("fixed") or {}
    if not isinstance(fixed, dict):
        raise err("'fixed' must be a mapping of key -> value", "fixed")
    for key in fixed:
        if key not in SPACE_KEYS:
            raise err(f"unknown key {key!r}; expected one of {', '.join(SPACE_KEYS)}",
                      f"fixed.{key}")
        if key in dims:
            raise err("is both fixed and searched", f"fixed.{key}")
    tp_choices = dims["tp"].choices if "tp" in dims else [fixed.get("tp", 1)]
    if "tp" in dims and dims["tp"].choices is None:
        raise err("tp takes a list of choices", "space.tp")
    for tp in tp_choices:
        if tp not in tps:
            raise err(f"no shipped table for TP {tp!r} ({model}, {gpu}, {backend}); shipped: "
                      f"{', '.join(map(str, tps))}", "space.tp" if "tp" in dims else "fixed.tp")
        if tp > max_gpus:
            raise err(f"TP {tp} exceeds max_gpus {max_gpus}", "space.tp")
    if "planner" in dims:
        bad = [c for c in dims["planner"].choices or [] if c not in PLANNERS]
        if dims["planner"].choices is None or bad:
            raise err(f"planner takes choices among {', '.join(PLANNERS)}", "space.planner")
    if fixed.get("planner", "none") not in PLANNERS:
        raise err(f"expected one of {', '.join(PLANNERS)}", "fixed.planner")
    return Space(model=model, gpu=gpu, backend=backend, max_gpus=max_gpus, dims=dims,
                 fixed=dict(fixed), source=fname)


def _dim(key: str, spec: Any, err: Callable[[str], InputError]) -> Dim:
    if isinstance(spec, list):
        if not spec:
            raise err("empty list of choices")
        if len(set(map(repr, spec))) != len(spec):
            raise err("repeated choices")
        return Dim(key, choices=list(spec))
    if not isinstance(spec, dict):
        raise err("expected a list of choices or a mapping {low, high[, log][, step]}")
    unknown = set(spec) - {"low", "high", "log", "step"}
    if unknown or "low" not in spec or "high" not in spec:
        raise err("a range is {low, high[, log][, step]}"
                  + (f"; unknown {', '.join(sorted(map(str, unknown)))}" if unknown else ""))
    lo, hi = spec["low"], spec["high"]
    for v in (lo, hi, spec.get("step", 1)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise err(f"range bounds must be finite numbers, got {v!r}")
    if lo > hi:
        raise err(f"empty range: low {lo} > high {hi}")
    log = bool(spec.get("log", False))
    if log and lo <= 0:
        raise err(f"a log range needs low > 0, got {lo}")
    step = spec.get("step")
    if step is not None and step <= 0:
        raise err(f"step must be > 0, got {step}")
    integer = all(isinstance(v, int) for v in (lo, hi)) and (step is None or
                                                            isinstance(step, int))
    return Dim(key, low=lo, high=hi, log=log, step=step, integer=integer)


def shipped_tps(model: str, gpu: str, backend: str) -> list[int]:
    """TP sizes with a shipped GPU table for (model, gpu, backend)."""
    from sim.gpu_timing import _norm_gpu, _norm_model, list_tables
    return sorted({int(r["tp"]) for r in list_tables()
                   if _norm_model(r["model"]) == _norm_model(str(model))
                   and _norm_gpu(r["gpu"]) == _norm_gpu(str(gpu)) and r["backend"] == backend})


# -- the objective ---------------------------------------------------------------------------

_OBJ = re.compile(r"^\s*(minimi[sz]e|maximi[sz]e|min|max)\s+(\S+)"
                  r"(?:\s+subject\s+to\s+(.+?))?\s*$", re.I)
_CON = re.compile(r"^\s*(\S+?)\s*(<=|>=|<|>)\s*([-+0-9.eE]+)\s*$")


@dataclass
class Objective:
    """``minimise FIELD [subject to FIELD <= X [and ...]]`` over the run report."""
    field: str
    maximise: bool
    constraints: list[tuple[str, str, float]]
    text: str = ""

    def fields(self) -> list[str]:
        return [self.field, *(c[0] for c in self.constraints)]

    def score(self, values: dict[str, float]) -> tuple[float, float]:
        """(score, relative violation). Missing/NaN constraint values violate fully."""
        viol = 0.0
        for f, op, limit in self.constraints:
            v = values.get(f, math.nan)
            if not math.isfinite(v):
                viol += 1e3
                continue
            over = v - limit if op in ("<=", "<") else limit - v
            if over > 0 or (op in ("<", ">") and over == 0):
                viol += max(over, 1e-12) / max(abs(limit), 1e-9)
        obj = values.get(self.field, math.nan)
        if viol > 0:
            return PENALTY * (1.0 + viol), viol
        if not math.isfinite(obj):
            return PENALTY * 1e3, 0.0
        return (-obj if self.maximise else obj), 0.0


def parse_objective(text: str, known: Sequence[str]) -> Objective:
    """Parse ``--objective``; fields must be numeric fields of the run report (``known``)."""
    m = _OBJ.match(text or "")
    if not m:
        raise InputError("expected 'minimise FIELD [subject to FIELD <= X [and ...]]', got "
                         f"{text!r}", file=CMDLINE, field="--objective")
    direction, fld, rest = m.groups()
    cons: list[tuple[str, str, float]] = []
    for part in re.split(r"\s+and\s+", rest, flags=re.I) if rest else []:
        c = _CON.match(part)
        if not c:
            raise InputError(f"bad constraint {part!r}; expected FIELD <= NUMBER",
                             file=CMDLINE, field="--objective")
        try:
            cons.append((c.group(1), c.group(2), float(c.group(3))))
        except ValueError:
            raise InputError(f"bad number in {part!r}", file=CMDLINE,
                             field="--objective") from None
    for f in [fld, *(c[0] for c in cons)]:
        if f not in known:
            close = [k for k in known if k.split(".")[-1] == f.split(".")[-1]][:4]
            raise InputError(f"unknown report field {f!r}"
                             + (f"; did you mean {', '.join(close)}?" if close else
                                "; fields look like totals.gpu_hours, latency_ms.ttft.p90"),
                             file=CMDLINE, field="--objective")
    return Objective(fld, direction.lower().startswith("max"), cons, text.strip())


def report_fields(summary: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a run summary by dotted name (``latency_ms.ttft.p90``)."""
    out: dict[str, float] = {}
    for k, v in summary.items():
        if k in ("workload", "config", "run_info"):
            continue
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(report_fields(v, name + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[name] = float(v)
        elif v is None:
            out[name] = math.nan
    return out


# -- one candidate ---------------------------------------------------------------------------

@dataclass
class Setup:
    """What every candidate shares (pickled to Ray workers)."""
    trace: str
    space: Space
    objective: Objective
    rungs_s: tuple[float, ...]
    arrival_speedup_ratio: float | None = None
    seed: int = 0
    #: ``bound`` (stop a candidate once it provably cannot be feasible or on the front),
    #: ``asha`` (successive halving on the truncated score at ``rungs_s``) or ``none``.
    early_stop: str = "bound"
    check_s: float = DEFAULT_CHECK_S     # simulated seconds between bound checks
    sampler: str = "tpe"

    def needs_token_gaps(self) -> bool:
        """Whether a report field of the objective is a distribution over token gaps (ITL
        percentiles, per-user throughput): replays skip that distribution otherwise (the
        other fields are unaffected, ``Simulation``'s ``token_gaps``)."""
        return any(f.startswith(_GAP_FIELDS) for f in self.objective.fields())

    def checkpoints(self):
        """Simulated seconds at which a running candidate reports: the rungs (``asha``,
        ``none``, where they are only recorded) or every ``check_s`` (``bound``)."""
        if self.early_stop != "bound":
            yield from self.rungs_s
            return
        k = 1
        while True:
            yield k * self.check_s
            k += 1


#: Report fields whose bound uses the TTFT floors of requests still to arrive.
_FLOOR_FIELDS = ("latency_ms.ttft.", "latency_ms.e2e_latency.")
#: Report fields computed from the distribution of gaps between tokens.
_GAP_FIELDS = ("latency_ms.itl.", "output_token_throughput_per_user.")

_CACHE: dict[str, Any] = {}      # per process: the parser and parsed traces


def _parser():
    if "parser" not in _CACHE:
        from ..options import simulate_parser
        _CACHE["parser"] = simulate_parser()
    return _CACHE["parser"]


def _workload(cfg):
    """The candidate's workload, built once per process. A parsed trace is shared by every
    candidate replayed here: a replay never writes to a trace's requests (only the loader
    sets their fields), ``iter()`` resets its per-run state, and the requests it releases
    later (session turns) are copies (``Workload.on_complete``); replays in one process run
    one after another. This saves unpickling 12k requests per candidate (~0.1 CPU-s). Any
    other workload (a generator with its own random state) is a fresh unpickled copy."""
    import pickle

    from sim.config import build_workload
    from sim.workloads.traces import TraceWorkload
    key = json.dumps([cfg.workload, cfg.run.seed], sort_keys=True, default=str)
    wl = _CACHE.get(key)
    if wl is None:
        wl = build_workload(cfg)
        _CACHE[key] = wl if isinstance(wl, TraceWorkload) else pickle.dumps(wl, protocol=5)
    return wl if isinstance(wl, TraceWorkload) else pickle.loads(_CACHE[key])


def candidate_config(setup: Setup, params: dict[str, Any]):
    """(RunConfig, planner kind or None, extra ``simulate`` flags: none, as the planner is
    in the config) of one candidate."""
    from ..options import config_from_args
    sp = setup.space
    values = {**sp.fixed, **params}
    tp = int(values.get("tp", 1))
    argv = ["--trace", setup.trace, "--model", sp.model, "--gpu", sp.gpu,
            "--backend", sp.backend, "--tp", str(tp), "--seed", str(setup.seed), "--quiet"]
    if setup.arrival_speedup_ratio is not None:
        argv += ["--arrival-speedup-ratio", f"{setup.arrival_speedup_ratio:g}"]
    cfg = config_from_args(_parser().parse_args(argv))
    over = {k: v for k, v in values.items() if k in CONFIG_KEYS}
    if "engine.block_size" in over and "engine.num_gpu_blocks" not in over:
        # The table's KV capacity is in its own block size: keep the tokens it holds.
        tokens = cfg.engine.num_gpu_blocks * cfg.engine.block_size
        over["engine.num_gpu_blocks"] = max(1, tokens // int(over["engine.block_size"]))
    kind = values.get("planner", "none")
    if kind != "none":            # the planner is part of the run config (best.yaml runs it)
        section: dict[str, Any] = {"kind": str(kind)}
        for key, dest in PLANNER_KEYS.items():
            if key in values:
                if dest.startswith("sla."):
                    over[dest] = values[key]
                else:
                    section[_INTERVAL[str(kind)] if dest == "interval_s" else dest] = values[key]
        over["planner"] = section
    if over:
        cfg = cfg.with_overrides(over, source=sp.source)
    return cfg, (None if kind == "none" else kind), []


def _interim(sim) -> dict[str, Any]:
    """The report so far (read-only): requests finished by now, GPU-hours provisioned
    until now. Used only to rank candidates at a rung."""
    now = sim.now
    worker_s = sum(max(0.0, min(w.removed_ms if w.removed_ms is not None else now, now)
                       - w.created_ms) / 1000.0 for w in sim.workers)
    return sim.metrics.summary(num_requests=sim.num_arrived, sla=sim.sla,
                               provisioned_worker_seconds=worker_s,
                               gpus_per_worker=sim.cluster_cfg.gpus_per_worker)


# -- sound early stopping: lower bounds on the final report ------------------------------------

#: Latency metrics with a proven lower bound (the report's sample of each is over completed
#: requests with output tokens, ``sim.metrics.MetricsCollector.summary``).
_LB_LATENCY = {"ttft": "first_token_ms", "e2e_latency": "last_token_ms"}


def _quantile_lb(values, q: float | None, n_total: int) -> float:
    """A lower bound on the nearest-rank ``q`` quantile (``None``: the maximum) of the final
    sample, given ``values`` (part of it, or lower bounds on part of it; any order) and
    ``n_total`` >= its final size.

    The final quantile is the ``k(M) = M - round_half_up(q (M - 1))``-th largest of the
    final sample of size M (``sim.metrics.nearest_rank``). ``k`` never decreases with M and
    M <= n_total, so it is >= the final sample's ``k(n_total)``-th largest, which is >= the
    ``k(n_total)``-th largest of ``values`` (the final sample holds every one of them, at
    that value or higher). Latencies are >= 0, so 0 bounds a sample too small to say more.
    """
    import numpy as np

    from sim.metrics import _round_half_up
    n = len(values)
    if n == 0:
        return 0.0
    if q is None:
        return float(np.max(values))
    k = n_total - _round_half_up(q * (n_total - 1))
    if not 1 <= k <= n:
        return 0.0
    return float(np.partition(values, n - k)[n - k])       # the k-th largest, O(n)


def pending_lower_bounds(sim):
    """Requests in flight at ``sim.now`` that are certain to complete, with lower bounds on
    their final TTFT and E2E latency (ms): ``(request index, ttft_lb, e2e_lb)`` arrays
    (int64, float64, float64), or None when the run is not one this proof covers.

    Covered: an aggregated run (no disaggregation) of vLLM workers (``sim.engines.vllm``).
    A request there is in an engine's waiting queue or running batch from its routing (at
    arrival; requests are not held at the router) until its record. In a run without a
    cut-off it then ends completed unless rejected, and vLLM rejects only (1) a fresh
    request whose prompt, or prompt plus ``max_out - 1`` tokens, can never fit the KV pool,
    exceeds ``max_model_len``, or (unchunked) the batch budget: ``VllmEngine._reject_reason``,
    a function of the request and the engine config alone, asked here of every request
    never admitted, and (2) ``reject_head``: a waiting head that cannot fit with nothing
    running, which (1) rules out for an admitted request (its known sequence is at most
    prompt + ``max_out - 1`` tokens, which fit the empty pool). A request on a worker that
    is still starting is left out (the planner may cancel that worker). So every request
    counted completes, after ``sim.now`` unless its first token is already stamped:

    * TTFT >= ``first_token - arrival`` when stamped, else ``now - arrival`` (its first
      token comes at a pass end still to be processed, after ``now``);
    * E2E >= ``now - arrival`` (its last token is still to come).

    Only requests with output tokens are counted (the report's TTFT and E2E samples).
    """
    import numpy as np

    from sim.simulator import DRAINING, ACTIVE
    if sim.disaggregated or sim.cut_off:
        return None
    now = sim.now
    index: list[int] = []
    ttft: list[float] = []
    e2e: list[float] = []
    for w in sim.workers:
        eng = w.engine
        if type(eng).__name__ != "VllmEngine":
            return None
        if w.state not in (ACTIVE, DRAINING):
            continue
        for s in (*eng.running, *eng.waiting):
            if s.max_out <= 0 or (not s.admitted and eng._reject_reason(s)):
                continue
            a = s.req.arrival_ms
            f = s.first_token
            index.append(s.req.index)
            ttft.append((f if f == f else now) - a)
            e2e.append(now - a)
    return (np.asarray(index, dtype=np.int64), np.asarray(ttft, dtype=np.float64),
            np.asarray(e2e, dtype=np.float64))


def uncached_prompt_tokens(workload, block_size: int):
    """Per request of a trace (by ``Request.index``): the fewest prompt tokens it must
    prefill itself at ``block_size``, whatever the cache holds (int64 array).

    Token ``t`` of a trace prompt is ``hash_ids[t // trace_block_size]``, and engine block
    ``b``'s key names the prompt's tokens up to the block's end (``sim.kv_cache.block_keys``),
    so two requests share block ``b``'s key exactly when both have it as a full block and
    their ``hash_ids`` agree up to it. A prefix-cache hit is a run of leading keys resident in
    the pool; a key no other request has is resident only because this request computed it.
    So every prompt position past ``S``, the longest prefix this request shares with another
    one (in whole tokens of both prompts), rounded down to blocks, is computed by this
    request at least once (preempted and re-admitted too), and vLLM computes at least the
    last prompt token (``VllmEngine._lookup``): it prefills at least
    ``L - min(S // bs * bs, (L - 1) // bs * bs)`` tokens. ``S`` comes from a trie of the
    ``hash_ids`` (the two longest prompts through each node), once per process and trace."""
    import numpy as np
    key = ("shared", id(workload))
    if key not in _CACHE or _CACHE[key][0] is not workload:     # (an id can be reused)
        reqs = sorted([*workload._firsts, *workload._successors.values()],
                      key=lambda r: r.index)
        nodes: dict[tuple[int, int], int] = {}
        node_of: list[int] = []                     # per (request, depth): its trie node
        for r in reqs:
            node = -1
            for h in (r.hash_ids or ()):
                node = nodes.setdefault((node, h), len(nodes))
                node_of.append(node)
        depth_n = np.array([len(r.hash_ids or ()) for r in reqs], dtype=np.int64)
        lens = np.array([r.input_length for r in reqs], dtype=np.int64)
        tbs = np.array([r.trace_block_size for r in reqs], dtype=np.int64)
        node_e = np.array(node_of, dtype=np.int64)
        req_e = np.repeat(np.arange(len(reqs)), depth_n)
        starts = np.cumsum(depth_n) - depth_n
        depth_e = np.arange(len(node_e)) - np.repeat(starts, depth_n) + 1
        # The two longest prompts through each node (ties: the lower position first).
        order = np.lexsort((req_e, -lens[req_e], node_e))
        first = np.ones(len(order), dtype=bool)
        first[1:] = node_e[order][1:] != node_e[order][:-1]
        top1 = np.full(len(nodes), -1, dtype=np.int64)
        top2 = np.full(len(nodes), -1, dtype=np.int64)
        top1[node_e[order][first]] = req_e[order][first]
        second = np.zeros(len(order), dtype=bool)
        second[1:] = first[:-1] & ~first[1:]
        top2[node_e[order][second]] = req_e[order][second]
        other = np.where(top1[node_e] != req_e, top1[node_e], top2[node_e])
        val = np.where(other >= 0, np.minimum(np.minimum(depth_e * tbs[req_e], lens[req_e]),
                                              lens[np.maximum(other, 0)]), 0)
        shared = np.zeros(len(reqs), dtype=np.int64)
        np.maximum.at(shared, req_e, val)
        _CACHE[key] = (workload, np.array([r.input_length for r in reqs], dtype=np.int64),
                       shared)
    _, lens, shared = _CACHE[key]
    bs = int(block_size)
    return lens - np.minimum(shared // bs * bs, (lens - 1) // bs * bs)


def prefill_floor(timing, budget: int, max_seqs: int, max_cached: int):
    """``F(U)``: a lower bound (ms) on the time a vLLM worker spends in the passes that
    prefill ``U`` tokens of one request, or None for a timing model other than a GPU table
    at speed-up 1. Returns a function of an int64 array of ``U``.

    A pass's duration is at least its prefill term ``prefill_ms(T, P, n)``
    (``VllmEngine.start_pass``): ``T`` >= the request's chunk ``c`` and <= ``budget +
    max_seqs`` new tokens, ``P`` <= ``max_cached`` cached tokens, any ``n``. The shipped
    tables are *not* monotone in ``T`` or ``P`` (every one falls somewhere along new
    tokens, by up to 197 ms, and along cached tokens), so
    ``m(c)`` is the least table value over ``c <= T <= budget + max_seqs``, every cached
    value and every ``num_seqs`` plane: bilinear on each grid cell, so the least value of a
    cell is at a corner, and interpolation between planes lies between them. ``m`` is
    non-decreasing; ``h`` is its greatest convex minorant on ``[1, budget]`` (so also
    non-decreasing). A request's chunks ``c_1..c_k`` (each <= ``budget``, summing to >= U)
    run in distinct passes after its arrival, so its TTFT >= sum m(c_i) >= k h(U / k) >=
    min over integer ``k`` in ``[ceil(U / budget), U]`` of ``k h(U / k)`` (Jensen; that is
    convex in ``k``, so the integer minimum is next to ``U / x*``, ``x*`` minimising
    ``h(x) / x``, or at the bound). Less 1 us for the engine clock's rounding per pass
    (``sim.timing.modeled_ms``) and float sums. ``tests/test_search.py`` checks ``m``
    against the tables and the floor against real replays."""
    import numpy as np

    from sim.gpu_timing import GpuTableTiming, _seg_extrap
    if not isinstance(timing, GpuTableTiming) or timing.speedup_ratio != 1.0:
        return None
    key = ("floor", timing.source, budget, max_seqs, max_cached)
    if key in _CACHE:
        return _CACHE[key]
    t_hi = float(budget + max_seqs)
    b = float(budget)
    tn = sorted({x for x in timing._pt if x < t_hi} | {1.0, b, t_hi})
    pn = [x for x in timing._pp if x < max_cached] + [float(max_cached)]
    planes = range(len(timing._pn))

    def at(t: float, p: float) -> float:           # least plane value at (t, p)
        it, ft = _seg_extrap(timing._pt, t)
        ip, fp = _seg_extrap(timing._pp, p)
        return min(timing._plane(k, it, ft, ip, fp) for k in planes)
    grid = np.array([[at(t, p) for p in pn] for t in tn])        # (T nodes, P values)
    best_t = grid.min(axis=1)
    tail = np.minimum.accumulate(best_t[::-1])[::-1]             # least over T >= node
    # m on [1, budget] is the least of: each (P) line through the T nodes, and the steps
    # tail[j] on c <= tn[j]. Its convex minorant is the lower hull of those vertices.
    xs = [x for x in tn if 1.0 <= x <= b]
    pts = {(x, min(at(x, p) for p in pn)) for x in xs}
    pts |= {(1.0, float(v)) for v in tail}
    pts |= {(min(t, b), float(v)) for t, v in zip(tn, tail) if t >= 1.0}
    hull: list[tuple[float, float]] = []
    for pt in sorted(pts):                                       # Andrew's lower hull
        while len(hull) >= 2 and ((hull[-1][0] - hull[-2][0]) * (pt[1] - hull[-2][1])
                                  - (hull[-1][1] - hull[-2][1]) * (pt[0] - hull[-2][0])) <= 0:
            hull.pop()
        if hull and hull[-1][0] == pt[0]:
            continue
        hull.append(pt)
    hx = np.array([q[0] for q in hull])
    hy = np.array([q[1] for q in hull])
    if not (hy > 0).all():
        return None                   # (no shipped table: pass times are positive)
    xstar = float(hx[np.argmin(hy / hx)])

    def floor(u):
        u = np.asarray(u, dtype=np.float64)
        k_lo = np.ceil(u / b)
        best = np.full(u.shape, np.inf)
        for k in (k_lo, np.floor(u / xstar), np.ceil(u / xstar)):
            k = np.clip(k, k_lo, np.maximum(u, 1.0))
            best = np.minimum(best, k * np.interp(u / k, hx, hy) - 1e-6 * k - 1e-3)
        return np.maximum(best, 0.0)
    _CACHE[key] = floor
    return floor


def future_ttft_floors(sim, workload):
    """``(arrival_ms, ttft_floor_ms, request index)`` sorted by arrival, of the trace's
    requests that are certain to complete when they arrive (float64, float64, int64
    arrays), for :func:`lower_bounds`; None when this proof does not cover the run.

    Covered: a static aggregated run of vLLM workers (no planner: every worker is active
    from the start and stays so, so a request is routed at its arrival to one) replaying a
    trace's first turns (the arrival times of later session turns depend on the run, they
    are left out). Such a request completes unless ``VllmEngine._reject_reason`` rejects it
    (a function of the request and the engine config, asked here), and its TTFT is at least
    :func:`prefill_floor` of :func:`uncached_prompt_tokens`. The caller knows whether a
    planner is attached. Cached per process, trace and engine config."""
    import numpy as np

    from sim.engines.base import Seq
    from sim.workloads.traces import TraceWorkload
    if not isinstance(workload, TraceWorkload) or sim.disaggregated or sim.cut_off \
            or not sim.workers or not workload._firsts:
        return None
    eng = sim.workers[0].engine
    if type(eng).__name__ != "VllmEngine" or eng.host is not None:    # (no G2 tier)
        return None
    cfg = eng.cfg
    key = ("future", id(workload), eng.timing.describe(), eng.timing.source,
           getattr(eng.timing, "speedup_ratio", None), cfg.block_size, cfg.num_gpu_blocks,
           cfg.max_num_batched_tokens, cfg.max_num_seqs, cfg.max_model_len,
           bool(cfg.enable_chunked_prefill), bool(cfg.enable_prefix_caching))
    if key not in _CACHE or _CACHE[key][0] is not workload:     # (an id can be reused)
        firsts = workload._firsts
        max_len = max(r.input_length for r in firsts)
        floor = prefill_floor(eng.timing, cfg.max_num_batched_tokens, cfg.max_num_seqs,
                              cfg.max_num_seqs * max_len)
        if floor is None:
            _CACHE[key] = (workload, None)
        else:
            keep = [r for r in firsts
                    if r.output_length > 0 and not eng._reject_reason(Seq(r, None))]
            arrival = np.array([r.arrival_ms for r in keep], dtype=np.float64)
            index = np.array([r.index for r in keep], dtype=np.int64)
            floors = floor(uncached_prompt_tokens(workload, cfg.block_size)[index])
            order = np.argsort(arrival, kind="stable")
            _CACHE[key] = (workload, (arrival[order], floors[order], index[order]))
    return _CACHE[key][1]


def lower_bounds(sim, fields: Sequence[str], n_total: int, future=None) -> dict[str, float]:
    """Proven lower bounds on the final (full-replay) values of ``fields`` from a replay
    stopped at ``sim.now``; fields with no bound are left out.

    * ``totals.gpu_hours`` / ``totals.provisioned_worker_seconds``: the report integrates
      provisioned workers up to the last completion (``Simulation.finish``), which is no
      earlier than the last completion so far, nor than ``now`` while a request certain to
      complete is in flight (:func:`pending_lower_bounds`); integrating up to that is a
      lower bound.
    * ``latency_ms.ttft.*`` / ``latency_ms.e2e_latency.*`` quantiles (``median``, ``p75``...
      ``p99``) and ``max``: see :func:`_quantile_lb`; the sample is over completed requests
      with output tokens, whose values never change, plus the requests in flight certain
      to complete, each at a lower bound on its final value (:func:`pending_lower_bounds`;
      a nearest-rank quantile never falls when a sample value rises), the requests still
      to arrive that are certain to complete, at a floor on their TTFT (``future``, from
      :func:`future_ttft_floors`; E2E >= TTFT), and ``n_total``
      (requests in the trace) bounds its final size. Requests rejected later only shrink
      the sample.

    Valid for a replay run to the end (no ``--max-sim-time-s`` cut-off), as in a search.
    """
    import numpy as np
    from sim.metrics import _QUANTILES, STATUS_COMPLETED
    out: dict[str, float] = {}
    lat = {}
    for f in fields:
        parts = f.split(".")
        if len(parts) == 3 and parts[0] == "latency_ms" and parts[1] in _LB_LATENCY \
                and (parts[2] in _QUANTILES or parts[2] == "max"):
            lat[f] = (parts[1], _QUANTILES.get(parts[2]))
    gpu = [f for f in fields if f in ("totals.gpu_hours", "totals.provisioned_worker_seconds")]
    if not (lat or gpu):
        return out
    pending = pending_lower_bounds(sim)
    cols = sim.metrics.cols
    if gpu:
        last = np.frombuffer(cols["last_token_ms"], dtype=np.float64) if len(
            cols["last_token_ms"]) else np.zeros(0)
        last = last[~np.isnan(last)]
        end = float(last.max()) if len(last) else 0.0
        if pending is not None and len(pending[0]):
            end = max(end, sim.now)          # a request certain to complete is in flight
        worker_s = sum(max(0.0, min(w.removed_ms if w.removed_ms is not None else end, end)
                           - w.created_ms) / 1000.0 for w in sim.workers)
        for f in gpu:
            out[f] = worker_s if f.endswith("worker_seconds") else (
                worker_s * sim.cluster_cfg.gpus_per_worker / 3600.0)
    if lat:
        n = len(cols["status"])
        arr = {k: np.frombuffer(cols[k], dtype=np.float64 if cols[k].typecode == "d" else
                                np.int64) if n else np.zeros(0)
               for k in ("status", "output_length", "arrival_time_ms", *_LB_LATENCY.values())}
        sel = (arr["status"] == STATUS_COMPLETED) & (arr["output_length"] > 0)
        vals = {}
        for f, (metric, q) in lat.items():
            if metric not in vals:
                v = (arr[_LB_LATENCY[metric]] - arr["arrival_time_ms"])[sel]
                if pending is not None:
                    v = np.concatenate([v, pending[1 if metric == "ttft" else 2]])
                    if future is not None:      # not yet arrived, certain to complete
                        v = np.concatenate([v, future[1][np.searchsorted(
                            future[0], sim.now, side="right"):]])
                vals[metric] = v
            out[f] = _quantile_lb(vals[metric], q, n_total)
    return out


def bound_stop(obj: Objective, lb: dict[str, float], front: Sequence[tuple[float, float]]
               ) -> str | None:
    """Why a candidate with final values >= ``lb`` can neither be feasible nor on the
    feasible Pareto front (objective vs first constraint field, :func:`front_axes`) nor
    the best, or None if it still might. ``front``: (x, y) of complete feasible candidates.

    Infeasible: a ``<=``/``<`` constraint's bound already exceeds its limit. Dominated: a
    feasible candidate has a strictly lower objective and no higher y than the bounds (so
    it beats this one whatever the rest of the replay does). Only ``minimise`` objectives
    and upper-limit constraints have bounds; other fields never stop a candidate."""
    for f, op, limit in obj.constraints:
        v = lb.get(f)
        if v is not None and op in ("<=", "<") and (v > limit or (op == "<" and v >= limit)):
            return f"infeasible: {f} >= {v:.6g} {'>' if v > limit else '>='} {limit:g}"
    x, y, ylow = front_axes(obj)
    if obj.maximise or not ylow or x not in lb or y not in lb:
        return None
    for fx, fy in front:
        if fx < lb[x] and fy <= lb[y]:
            return f"dominated: a feasible candidate has {x} {fx:.6g} < {lb[x]:.6g} and " \
                   f"{y} {fy:.6g} <= {lb[y]:.6g}"
    return None


# -- one candidate ---------------------------------------------------------------------------

def run_candidate(setup: Setup, params: dict[str, Any],
                  report: Callable[[int, dict[str, float], float], str | bool | None]
                  | None = None) -> dict[str, Any]:
    """Replay one candidate, stopping early when ``report(step, values, score)`` says so.

    ``report`` is called at each checkpoint (:meth:`Setup.checkpoints`, steps 1, 2, ...).
    With ``early_stop="bound"`` ``values`` are proven lower bounds on the final fields
    (:func:`lower_bounds`; cheap), else the report so far (the fields over the requests
    finished by then, GPU-hours until then). A truthy return stops the replay (pruned; a
    string is kept as the reason). Returns ``{"status", "step", "sim_s", "values", "score",
    "violation", "requests", "rung_scores", "reason", "cpu_s"}`` (``cpu_s``: this process's
    CPU seconds for the candidate, ``report`` included); the values of a complete candidate
    are those of the full replay (:meth:`Simulation.finish`), i.e. of ``dynosim simulate``.
    """
    from sim.config import build_planner, build_simulation
    cpu0 = time.process_time()
    cfg, _kind, _flags = candidate_config(setup, params)
    planner = build_planner(cfg)
    workload = _workload(cfg)
    n_total = int(workload.describe()["num_requests"])
    sim = build_simulation(cfg, workload=workload, token_gaps=setup.needs_token_gaps())
    if planner is not None:
        planner.attach(sim)
    bound = setup.early_stop == "bound"
    future = (future_ttft_floors(sim, workload) if bound and planner is None
              and any(f.startswith(_FLOOR_FIELDS) for f in setup.objective.fields()) else None)
    fields = setup.objective.fields()
    rung_scores: list[float] = []
    step = 0
    for step, t_s in enumerate(setup.checkpoints(), start=1):
        if not sim.run_until(t_s * 1000.0):
            break
        values = ({**lower_bounds(sim, fields, n_total, future),
                   "totals.num_requests": float(sim.num_arrived)} if bound
                  else report_fields(_interim(sim)))
        score, viol = setup.objective.score(values)
        rung_scores.append(score)
        stop = report(step, values, score) if report is not None else None
        if stop:
            return {"status": "pruned", "step": step, "sim_s": sim.now / 1000.0,
                    "values": values, "score": score, "violation": viol,
                    "requests": sim.num_arrived, "rung_scores": rung_scores,
                    "reason": stop if isinstance(stop, str) else "asha",
                    "cpu_s": time.process_time() - cpu0}
    summary = sim.finish().summary
    values = report_fields(summary)
    score, viol = setup.objective.score(values)
    return {"status": "complete", "step": step if bound else len(setup.rungs_s) + 1,
            "sim_s": sim.now / 1000.0, "values": values, "score": score, "violation": viol,
            "requests": summary["totals"]["num_requests"],
            "rung_scores": [] if bound else rung_scores, "reason": None,
            "cpu_s": time.process_time() - cpu0}


# -- executors -------------------------------------------------------------------------------

def _record(number: int, params: dict[str, Any], res: dict[str, Any] | None,
            error: str | None = None) -> dict[str, Any]:
    if res is None:
        return {"trial": number, "status": "failed", "params": params, "values": {},
                "score": math.nan, "violation": math.nan, "sim_s": 0.0, "requests": 0,
                "rung_scores": [], "reason": None, "error": error, "cpu_s": 0.0}
    return {"trial": number, "params": params, "error": None, "reason": None, **res}


def _one_line(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:400]


def _front_point(obj: Objective, rec: dict[str, Any]) -> tuple[float, float] | None:
    """(x, y) of a complete feasible candidate, for :func:`bound_stop`."""
    if rec.get("status") != "complete" or rec.get("violation") != 0:
        return None
    x, y, _ = front_axes(obj)
    return rec["values"].get(x, math.nan), rec["values"].get(y, math.nan)


def _optuna_sampler(setup: Setup, constant_liar: bool = False):
    """The seeded sampler; ``constant_liar``: TPE counts trials still running as bad ones,
    so that trials asked while others run spread out (:func:`search_pool`)."""
    import optuna
    if setup.sampler == "random":
        return optuna.samplers.RandomSampler(seed=setup.seed)
    return optuna.samplers.TPESampler(seed=setup.seed, constant_liar=constant_liar)


def search_local(setup: Setup, trials: int, *, reduction_factor: int,
                 progress: Callable[[dict], None]) -> list[dict[str, Any]]:
    """An Optuna study in this process: TPE (seeded) or random sampling; early stopping by
    proven bounds (:func:`bound_stop`), Optuna's successive halving, or none."""
    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)   # failures: ours
    pruner = (optuna.pruners.SuccessiveHalvingPruner(min_resource=1,
                                                     reduction_factor=reduction_factor)
              if setup.early_stop == "asha" else optuna.pruners.NopPruner())
    study = optuna.create_study(direction="minimize", pruner=pruner,
                                sampler=_optuna_sampler(setup))
    records: list[dict[str, Any]] = []
    front: list[tuple[float, float]] = []
    seen: dict[str, int] = {}          # candidate -> its first trial (replays are deterministic)

    def objective(trial):
        params = setup.space.suggest(trial)

        def report(step, values, score):
            trial.report(score, step)
            if setup.early_stop == "bound":
                return bound_stop(setup.objective, values, front)
            return setup.early_stop == "asha" and trial.should_prune()
        key = json.dumps(params, sort_keys=True, default=str)
        first = seen.setdefault(key, trial.number)
        try:
            if first != trial.number and setup.early_stop != "asha" \
                    and records[first]["status"] != "failed":
                # The same candidate replays to the same numbers; the front has only grown
                # since, so a stopped one would stop again. (ASHA's rungs move: rerun.)
                res = {**records[first], "reason": f"same candidate as trial {first}"}
                res = {k: v for k, v in res.items() if k not in ("trial", "params", "error")}
                res["requests"] = res["cpu_s"] = 0            # nothing simulated
                for step, score in enumerate(res["rung_scores"], start=1):
                    trial.report(score, step)
            else:
                res = run_candidate(setup, params, report)
        except Exception as exc:           # noqa: BLE001 - recorded as a failed trial
            records.append(_record(trial.number, params, None, _one_line(exc)))
            progress(records[-1])
            raise
        records.append(_record(trial.number, params, res))
        point = _front_point(setup.objective, records[-1])
        if point is not None:
            front.append(point)
        progress(records[-1])
        if res["status"] == "pruned":
            raise optuna.TrialPruned()
        return res["score"]

    try:
        study.optimize(objective, n_trials=trials, catch=(Exception,))
    except KeyboardInterrupt:      # Ctrl-C: keep what finished (as Tune does)
        print("dynosim: interrupted; writing the finished trials", file=sys.stderr)
    return records


#: ``--jobs N`` locally: trials asked ahead of the oldest one not yet told, per process
#: (:func:`search_pool`). Larger keeps the processes busy behind a long replay; smaller
#: lets the sampler see results sooner.
POOL_LAG_PER_JOB = 2

_POOL: dict[str, Any] = {}       # in a --jobs worker process: the search's Setup


def _pool_init(setup: Setup) -> None:
    _POOL["setup"] = setup


def _pool_trial(params: dict[str, Any], front: tuple[tuple[float, float], ...]
                ) -> tuple[dict[str, Any] | None, str | None]:
    """One candidate in a ``--jobs`` worker process: ``(result, None)`` or ``(None,
    error)``. ``front``: the complete feasible candidates told before this one was asked."""
    setup = _POOL["setup"]
    try:
        return run_candidate(setup, params, lambda step, values, score: bound_stop(
            setup.objective, values, front) if setup.early_stop == "bound" else None), None
    except Exception as exc:               # noqa: BLE001 - recorded as a failed trial
        return None, _one_line(exc)


def search_pool(setup: Setup, trials: int, jobs: int, *,
                progress: Callable[[dict], None]) -> tuple[list[dict[str, Any]], float]:
    """An Optuna study in this process, its candidates replayed by ``jobs`` worker
    processes (``--executor local --jobs N``): ``(records, worker CPU seconds)``.

    Deterministic (same seed, same bytes): trial ``n`` is asked once trials ``0 .. n - L``
    have been told, in trial order (``L = POOL_LAG_PER_JOB x jobs``; results that come
    back sooner wait), so the sampler's state at each ask (told trials, and ``L - 1``
    running ones: TPE's ``constant_liar`` treats those as bad, so concurrent asks spread
    out), the front each candidate is checked against (the complete feasible candidates
    among the told ones) and the reuse of a repeated candidate (when its first draw is
    told) do not depend on which replay finishes first. The bound rule stays exact: any
    set of complete feasible candidates proves domination. ``--early-stop asha`` needs
    Optuna's pruner in the process that replays: one process only.
    """
    import concurrent.futures as cf
    import resource

    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(direction="minimize",
                                sampler=_optuna_sampler(setup, constant_liar=True))
    lag = POOL_LAG_PER_JOB * jobs
    records: list[dict[str, Any]] = []
    front: list[tuple[float, float]] = []
    seen: dict[str, int] = {}
    asked: list[tuple[Any, dict[str, Any], Any]] = []     # (trial, params, future or record)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    ex = cf.ProcessPoolExecutor(max_workers=jobs, initializer=_pool_init, initargs=(setup,))

    def ask() -> None:
        trial = study.ask()
        params = setup.space.suggest(trial)
        first = seen.setdefault(json.dumps(params, sort_keys=True, default=str), trial.number)
        if first != trial.number and first < len(records) \
                and records[first]["status"] != "failed":
            # Told already: the same replay, against a front that has only grown since.
            res = {k: v for k, v in records[first].items()
                   if k not in ("trial", "params", "error")}
            asked.append((trial, params, {**res, "reason": f"same candidate as trial {first}",
                                          "requests": 0, "cpu_s": 0}))
        else:
            asked.append((trial, params, ex.submit(_pool_trial, params, tuple(front))))

    interrupted = False
    try:
        for _ in range(min(lag, trials)):
            ask()
        while len(records) < len(asked):
            trial, params, job = asked[len(records)]
            res, error = (job.result() if isinstance(job, cf.Future) else (job, None))
            rec = _record(trial.number, params, res, error)
            records.append(rec)
            for step, score in enumerate(rec["rung_scores"], start=1):
                trial.report(score, step)
            state = {"complete": optuna.trial.TrialState.COMPLETE,
                     "pruned": optuna.trial.TrialState.PRUNED,
                     "failed": optuna.trial.TrialState.FAIL}[rec["status"]]
            study.tell(trial, rec["score"] if rec["status"] == "complete" else None,
                       state=state)
            point = _front_point(setup.objective, rec)
            if point is not None:
                front.append(point)
            progress(rec)
            if len(asked) < trials:
                ask()
    except KeyboardInterrupt:
        interrupted = True
        print("dynosim: interrupted; writing the finished trials", file=sys.stderr)
    finally:
        ex.shutdown(wait=not interrupted, cancel_futures=True)
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return records, (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)


def _tune_trial(config: dict[str, Any], setup: Setup) -> None:
    """Ray Tune function trainable: one candidate, a report per checkpoint, a final one.
    A candidate proven infeasible stops itself at any check; dominance needs the other
    trials' results and is the scheduler's (:class:`_BoundScheduler`), which hears the
    bounds every ``TUNE_REPORT_S`` simulated seconds (each report costs the Tune driver
    CPU; the checks themselves are cheap)."""
    from ray import tune
    params = dict(config)
    bound = setup.early_stop == "bound"
    every = max(1, round(TUNE_REPORT_S / setup.check_s)) if bound else 1
    cpu0 = time.process_time()
    scores: list[float] = []

    def report(step, values, score):
        scores.append(score)
        reason = bound_stop(setup.objective, values, ()) if bound else None
        if reason or step % every == 0:
            tune.report({"score": score, "step": step, "status": "pruned" if reason else
                         "running", "sim_s": step * setup.check_s if bound
                         else setup.rungs_s[step - 1], "values": values,
                         "rung_scores": list(scores), "reason": reason,
                         "cpu_s": time.process_time() - cpu0})
        return reason         # ASHA/the scheduler stop the trial (the next report never returns)
    res = run_candidate(setup, params, report)
    if res["status"] == "complete":
        tune.report({"score": res["score"], "step": res["step"], "status": "complete",
                     "sim_s": res["sim_s"], "values": res["values"],
                     "violation": res.get("violation", 0.0), "requests": res["requests"],
                     "rung_scores": res["rung_scores"], "reason": None,
                     "cpu_s": time.process_time() - cpu0})


def _bound_scheduler(obj: Objective):
    """A Tune scheduler that stops a trial whose reported lower bounds are dominated by a
    complete feasible trial (:func:`bound_stop`): the bound rule's cross-trial half."""
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class _BoundScheduler(FIFOScheduler):
        def __init__(self):
            super().__init__()
            self.front: list[tuple[float, float]] = []

        def on_trial_result(self, tune_controller, trial, result):
            # Tune hands schedulers the result flattened: {"values/FIELD": ...}.
            values = {k.split("/", 1)[1]: v for k, v in result.items()
                      if k.startswith("values/")}
            if result.get("status") == "complete":
                point = _front_point(obj, {"status": "complete", "values": values,
                                           "violation": result.get("violation")})
                if point is not None:
                    self.front.append(point)
                return TrialScheduler.CONTINUE
            if result.get("status") == "running" and bound_stop(obj, values, self.front):
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE
    return _BoundScheduler()


def search_ray(setup: Setup, trials: int, *, reduction_factor: int,
               progress: Callable[[dict], None], address: str | None, cpus: int | None,
               storage: Path) -> tuple[list[dict[str, Any]], int]:
    """Ray Tune: OptunaSearch (TPE or random, seeded) + the bound scheduler, ASHA or FIFO;
    one trial per Ray CPU."""
    from .. import executors
    ray = executors.connect(address, num_cpus=cpus)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch
    optuna.logging.set_verbosity(optuna.logging.ERROR)   # failures: ours
    n_cpus = executors.cluster_cpus(ray)
    searcher = ConcurrencyLimiter(
        OptunaSearch(space=setup.space.suggest, metric="score", mode="min",
                     sampler=_optuna_sampler(setup)),
        max_concurrent=n_cpus)
    if setup.early_stop == "asha":
        scheduler = ASHAScheduler(time_attr="training_iteration", metric="score", mode="min",
                                  max_t=len(setup.rungs_s) + 1, grace_period=1,
                                  reduction_factor=reduction_factor)
    elif setup.early_stop == "bound":
        scheduler = _bound_scheduler(setup.objective)
    else:
        scheduler = FIFOScheduler()

    class _Progress(tune.Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            progress({"status": "done"})

        def on_trial_error(self, iteration, trials, trial, **info):
            progress({"status": "failed"})

    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(_tune_trial, setup=setup), {"cpu": 1}),
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler,
                                    num_samples=trials, reuse_actors=True),
        run_config=tune.RunConfig(name="search", storage_path=str(storage.resolve()),
                                  verbose=0, callbacks=[_Progress()],
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  checkpoint_config=tune.CheckpointConfig(
                                      num_to_keep=None, checkpoint_at_end=False)))
    tune_log = logging.getLogger("ray.tune")
    level = tune_log.level
    tune_log.setLevel(logging.CRITICAL)    # failed trials are reported by us, one line each
    try:
        grid = tuner.fit()
    finally:
        tune_log.setLevel(level)
    records = []
    final_front = [p for p in (_front_point(setup.objective, {
        "status": (q.metrics or {}).get("status"), "violation": (q.metrics or {}).get(
            "violation"), "values": (q.metrics or {}).get("values", {})}) for q in grid)
        if p is not None]
    for i, r in enumerate(grid):
        params = {k: v for k, v in (r.config or {}).items()}
        m = r.metrics or {}
        if r.error is not None:      # a RayTaskError wraps the trial's own exception
            cause = getattr(r.error, "cause", None)
            records.append(_record(i, params, None, _one_line(
                cause if isinstance(cause, BaseException) else r.error)))
            continue
        status = m.get("status", "pruned")
        reason = m.get("reason")
        if status == "running":        # stopped by the scheduler
            status = "pruned"
            reason = (bound_stop(setup.objective, m.get("values", {}), final_front)
                      if setup.early_stop == "bound" else "asha")
        records.append(_record(i, params, {
            "status": status, "step": m.get("step", 0), "sim_s": m.get("sim_s", 0.0),
            "values": m.get("values", {}), "score": m.get("score", math.nan),
            "violation": m.get("violation", math.nan), "rung_scores": m.get("rung_scores", []),
            "requests": m.get("requests") or _arrived_by(setup, m.get("values", {})),
            "reason": reason, "cpu_s": m.get("cpu_s", 0.0)}))
    return records, n_cpus


def _arrived_by(setup: Setup, values: dict[str, float]) -> int:
    return int(values.get("totals.num_requests", 0) or 0)


def replay_closest(setup: Setup, records: list[dict[str, Any]], n: int = 3) -> None:
    """When no complete candidate is feasible, replay in full (in this process) the ``n``
    stopped candidates with the lowest score at their stop, so that the closest candidate
    reported is a full replay too. Their records become ``complete`` in place."""
    if any(r["status"] == "complete" and r["violation"] == 0 for r in records):
        return
    stopped = sorted((r for r in records if r["status"] == "pruned"
                      and math.isfinite(r["score"])), key=lambda r: (r["score"], r["trial"]))
    for rec in stopped[:n]:
        res = run_candidate(setup, rec["params"])
        res["cpu_s"] += rec.get("cpu_s") or 0.0       # the stopped replay's too
        rec.update(res, reason=f"replayed in full (closest; stopped at {rec['sim_s']:g} s: "
                   f"{rec.get('reason')})")


# -- outputs ---------------------------------------------------------------------------------

def pareto_mask(xs: Sequence[float], ys: Sequence[float]) -> list[bool]:
    """Points not dominated when minimising both coordinates (non-finite: never)."""
    out = []
    for i, (x, y) in enumerate(zip(xs, ys)):
        if not (math.isfinite(x) and math.isfinite(y)):
            out.append(False)
            continue
        out.append(not any(j != i and math.isfinite(a) and math.isfinite(b) and a <= x
                           and b <= y and (a < x or b < y) for j, (a, b) in enumerate(zip(xs, ys))))
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.6g}"
    return str(v)


def write_trials(records: list[dict[str, Any]], setup: Setup, path: Path) -> None:
    keys = [k for k in SPACE_KEYS if k in setup.space.dims]
    fields = setup.objective.fields()
    cols = ["trial", "status", "sim_s", *keys, *fields, "score", "rung_scores", "stopped_because",
            "error"]
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(cols)
        for r in records:
            w.writerow([r["trial"], r["status"], _fmt(r["sim_s"]),
                        *(_fmt(r["params"].get(k)) for k in keys),
                        *(_fmt(r["values"].get(f)) for f in fields), _fmt(r["score"]),
                        ";".join(_fmt(float(x)) for x in r.get("rung_scores") or []),
                        r.get("reason") or "", r.get("error") or ""])


def front_axes(obj: Objective) -> tuple[str, str, bool]:
    """(x field, y field, y is minimised) of the front plot."""
    y = obj.constraints[0][0] if obj.constraints else "latency_ms.ttft.p90"
    if y == obj.field:
        y = "latency_ms.e2e_latency.p90"
    lower_better = not obj.constraints or obj.constraints[0][1] in ("<=", "<")
    return obj.field, y, lower_better


def distinct_complete(records) -> list[dict[str, Any]]:
    """The complete candidates, one per distinct configuration (the sampler may draw one
    several times; it replays to the same numbers): the first trial's record, with
    ``hits``, the number of complete trials that drew it."""
    first: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["status"] == "complete":
            key = json.dumps(r["params"], sort_keys=True, default=str)
            if key in first:
                first[key]["hits"] += 1
            else:
                first[key] = {**r, "hits": 1}
    return list(first.values())


def front_rows(records, obj: Objective) -> list[dict[str, Any]]:
    """The Pareto front (:func:`front_axes`) of the complete feasible candidates (of all
    complete ones when none is feasible), one row per distinct configuration
    (:func:`distinct_complete`), by objective."""
    x, y, ylow = front_axes(obj)
    done = distinct_complete(records)
    done = [r for r in done if r["violation"] == 0] or done    # else: the closest ones
    sx = -1.0 if obj.maximise else 1.0
    sy = 1.0 if ylow else -1.0
    mask = pareto_mask([sx * r["values"].get(x, math.nan) for r in done],
                       [sy * r["values"].get(y, math.nan) for r in done])
    return sorted((r for r, m in zip(done, mask) if m), key=lambda r: r["values"][x])


COMPARE_KINDS = ("static", "load", "throughput")


def read_compare(path: str) -> list[dict[str, Any]]:
    """The ``--compare`` overlay: a ``dynosim sweep pareto`` CSV (columns ``kind``,
    ``gpu_hours``, ``p90_ttft_ms``; rows of kind static/load/throughput). Checked before the
    search starts, so a wrong file is a one-line error, not a missing overlay at the end."""
    if not Path(path).is_file():
        raise InputError("file not found", file=CMDLINE, field="--compare")
    try:
        from .sweeps import read_csv
        rows = read_csv(path)
    except (UnicodeDecodeError, ValueError, csv.Error) as exc:
        raise InputError(f"not a `dynosim sweep pareto` CSV ({exc})", file=path,
                         field="--compare") from None
    need = ("kind", "gpu_hours", "p90_ttft_ms")
    missing = [c for c in need if not rows or c not in rows[0]]
    if missing:
        raise InputError(f"not a `dynosim sweep pareto` CSV: no {', '.join(missing)} column"
                         f"{'s' if len(missing) > 1 else ''}", file=path, field="--compare")
    rows = [r for r in rows if r.get("kind") in COMPARE_KINDS
            and isinstance(r.get("gpu_hours"), float) and isinstance(r.get("p90_ttft_ms"), float)]
    if not rows:
        raise InputError(f"no rows of kind {'/'.join(COMPARE_KINDS)} with gpu_hours and "
                         "p90_ttft_ms to overlay", file=path, field="--compare")
    return rows


def plot_front(records, obj: Objective, path: Path, title: str,
               compare: list[dict[str, Any]] | None = None) -> None:
    """``front.png``: every complete candidate, the search's Pareto front, the ``--compare``
    sweep's points and the best candidate. With a ``<=`` constraint on the y field the axis
    is clipped at 4x its limit (overloaded deployments, p90 in minutes, would squash the
    feasible band); a point above the clip is drawn at the clip with an up arrow."""
    from matplotlib.figure import Figure
    x, y, _ = front_axes(obj)
    fig = Figure(figsize=(7.2, 4.8), layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    done = distinct_complete(records)
    n_complete = sum(r["hits"] for r in done)
    ceiling = next((4.0 * limit for f, op, limit in obj.constraints
                    if f == y and op in ("<=", "<") and limit > 0), None)
    above: list[tuple[float, float]] = []        # (x, drawn y) of points above the clip

    def pos(v):
        return v if math.isfinite(v) and v > 0 else math.nan

    def ys(xs, vals) -> list[float]:
        out = []
        for xv, v in zip(xs, vals):
            v = pos(v)
            if ceiling is not None and math.isfinite(v) and v > ceiling:
                v = ceiling / 1.25                   # inside the axes, marker whole
                above.append((xv, v))
            out.append(v)
        return out

    def scatter(xs, vals, **kw):
        ax.scatter(xs, ys(xs, vals), **kw)
    xs = [r["values"].get(x, math.nan) for r in done]
    scatter(xs, [r["values"].get(y, math.nan) for r in done], s=9, color="0.65",
            alpha=0.6, label=f"complete candidates ({len(done)} distinct of "
            f"{plural(n_complete, 'trial')})", zorder=1)
    fr = front_rows(records, obj)
    if fr:
        xs = [r["values"][x] for r in fr]
        vals = [r["values"][y] for r in fr]
        ax.step(xs, [min(pos(v), ceiling / 1.25) if ceiling else pos(v) for v in vals],
                where="post", color="C0", lw=1.4, zorder=2)
        scatter(xs, vals, s=28, color="C0", label=f"search Pareto front ({len(fr)})", zorder=3)
    if compare:
        from .sweeps import pareto_front
        static = [r for r in compare if r.get("kind") == "static"]
        mask = pareto_front(static)
        cf = sorted((r for r, m in zip(static, mask) if m), key=lambda r: r["gpu_hours"])
        scatter([r["gpu_hours"] for r in static], [r["p90_ttft_ms"] for r in static],
                marker="s", facecolors="none", edgecolors="C1", s=30,
                label="sweep pareto: static grid", zorder=2)
        if cf:
            ax.step([r["gpu_hours"] for r in cf],
                    [min(pos(r["p90_ttft_ms"]), ceiling / 1.25) if ceiling else
                     pos(r["p90_ttft_ms"]) for r in cf],
                    where="post", color="C1", ls="--", lw=1.2, label="sweep pareto front")
        for kind, marker in (("load", "*"), ("throughput", "X")):
            sel = [r for r in compare if r.get("kind") == kind]
            if sel:
                scatter([r["gpu_hours"] for r in sel], [r["p90_ttft_ms"] for r in sel],
                        marker=marker, s=120, color="C3" if kind == "load" else "C5",
                        label=f"sweep: {kind} planner", zorder=4)
    best = best_record(records, obj)
    if best is not None and best["violation"] == 0:
        scatter([best["values"][x]], [best["values"][y]], marker="*", s=260,
                color="C2", edgecolors="k", label="best (best.yaml)", zorder=5)
    clip = ""
    for f, op, limit in obj.constraints:
        if f == y:
            ax.axhline(limit, color="gray", ls=":", lw=1, label=f"{f} {op} {limit:g}")
    if ceiling is not None:
        lows = [pos(r["values"].get(y, math.nan)) for r in done]
        lows += [pos(r["p90_ttft_ms"]) for r in compare or []]
        lows = [v for v in lows if math.isfinite(v)]
        ax.set_ylim(0.8 * min(lows + [ceiling / 4]), ceiling)
        clip = f", clipped at {ceiling:g}"
        if above:
            ax.scatter([a for a, _ in above], [b * 1.13 for _, b in above], marker=r"$\uparrow$",
                       s=70, color="k", zorder=6, label=f"above {ceiling:g} (drawn at the clip)")
    ax.set_yscale("log")
    ax.set_xlabel(f"{x} ({_unit(x)})")
    ax.set_ylabel(f"{y} ({_unit(y)}, log{clip})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_title(title, fontsize=8)
    fig.savefig(path, dpi=110)


def _unit(f: str) -> str:
    if f.startswith("latency_ms."):
        return "ms"
    if "gpu_hours" in f:
        return "GPU-h"
    if f.endswith("_tok_s"):
        return "tok/s"
    if f.endswith("_rps"):
        return "req/s"
    return "report units"


def best_record(records, obj: Objective) -> dict[str, Any] | None:
    """The complete candidate with the lowest score (feasible first; else the closest)."""
    done = [r for r in records if r["status"] == "complete" and math.isfinite(r["score"])]
    return min(done, key=lambda r: (r["score"], r["trial"])) if done else None


def write_best(setup: Setup, rec: dict[str, Any], path: Path, feasible: bool) -> str:
    """``best.yaml``: the candidate's full config; returns the command that runs it from
    the file's directory (as its header says; recorded in ``search.json``)."""
    import yaml
    cfg, kind, flags = candidate_config(setup, rec["params"])
    cmd = " ".join(["dynosim simulate --config", path.name, *flags])
    vals = ", ".join(f"{f} = {rec['values'].get(f, math.nan):.6g}"
                     for f in setup.objective.fields())
    head = [f"# dynosim search: {'best' if feasible else 'closest (no candidate is feasible)'}"
            f" candidate, trial {rec['trial']}: {vals}",
            f"# objective: {setup.objective.text}",
            f"# parameters: {json.dumps(rec['params'], sort_keys=True)}",
            f"# run it: {cmd}"]
    data = cfg.to_dict()
    if setup.trace.startswith("bundled:"):
        # The config resolves the name to this machine's file; the name runs anywhere.
        data["workload"]["path"] = setup.trace
    path.write_text("\n".join(head) + "\n" + yaml.safe_dump(data, sort_keys=False),
                    encoding="utf-8")
    return cmd


# -- CLI -------------------------------------------------------------------------------------

def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``search`` to ``dynosim``'s subcommands."""
    from .. import executors
    from ..options import positive_int
    from .sweeps import _positive_float
    s = subparsers.add_parser(
        "search", help="deployment search (Optuna TPE; Ray Tune + ASHA with --executor ray)",
        description="Search a space of deployments (workers, TP, router, KV block size, "
        "batch budget, planner knobs) for the best one under constraints, with early "
        "stopping on time-truncated replays. Writes OUT/trials.csv, front.csv, front.png, "
        "best.yaml and search.json.")
    g = s.add_argument_group("search")
    g.add_argument("--trace", default=DEFAULT_TRACE, metavar="PATH",
                   help=f"trace: Mooncake .jsonl, Azure .csv or bundled:NAME (default "
                   f"{DEFAULT_TRACE}); replayed in full")
    g.add_argument("--space", required=True, metavar="SPACE.yaml",
                   help="the search space (see envs_configs/search/deployment_space.yaml)")
    g.add_argument("--objective", required=True, metavar="TEXT",
                   help="e.g. 'minimise totals.gpu_hours subject to latency_ms.ttft.p90 <= "
                   "1500' (report field names, see `dynosim simulate --json`)")
    g.add_argument("--trials", type=positive_int, required=True, metavar="N",
                   help="candidates to sample")
    g.add_argument("--out", required=True, metavar="DIR", help="output directory (created)")
    g.add_argument("--seed", type=arg_type(SEED, int), default=0, help="sampler and run seed (default 0)")
    g.add_argument("--early-stop", choices=EARLY_STOPS, default="bound",
                   help="bound (default): stop a candidate once proven infeasible or "
                   "dominated, exact; asha: successive halving on the truncated score, a "
                   "heuristic screen; none: replay every candidate in full")
    g.add_argument("--no-early-stop", action="store_const", dest="early_stop", const="none",
                   help="the same as --early-stop none (default: off)")
    g.add_argument("--check-s", type=_positive_float, default=DEFAULT_CHECK_S, metavar="S",
                   help=f"--early-stop bound: simulated seconds between checks (default "
                   f"{DEFAULT_CHECK_S:g})")
    g.add_argument("--rungs", default=",".join(f"{r:g}" for r in DEFAULT_RUNGS_S),
                   metavar="S,S,...", help="--early-stop asha: checkpoints in simulated "
                   "seconds (default 600,1200,2400; with none they are only recorded)")
    g.add_argument("--reduction-factor", type=positive_int, default=3, metavar="N",
                   help="--early-stop asha: keep 1/N of the candidates at each rung "
                   "(default 3)")
    g.add_argument("--sampler", choices=SAMPLERS, default="tpe",
                   help="Optuna's TPE (default) or random sampling (independent of the "
                   "results: the same candidates whatever the early stopping)")
    g.add_argument("--arrival-speedup-ratio", type=_positive_float, default=None, metavar="X",
                   help="divide trace inter-arrival times by X (default 1)")
    g.add_argument("--jobs", type=positive_int, default=None, metavar="N",
                   help="with --executor ray and no --ray-address: CPUs of the local Ray "
                   "(default: all cores); with --executor local: processes replaying "
                   "candidates (default 1: the study and its replays in this process)")
    g.add_argument("--compare", metavar="PARETO.csv",
                   help="overlay a `dynosim sweep pareto` CSV on front.png (default: none)")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    executors.add_args(g, ray_help="Ray Tune, one trial per Ray CPU")
    return s


def _rungs(text: str) -> tuple[float, ...]:
    try:
        r = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"expected seconds like 900,1800,2700, got {text!r}", file=CMDLINE,
                         field="--rungs") from None
    if any(not (math.isfinite(x) and x > 0) for x in r) or list(r) != sorted(set(r)):
        raise InputError(f"rungs must be increasing positive seconds, got {text!r}",
                         file=CMDLINE, field="--rungs")
    return r


def _known_fields(trace: str, speed: float | None) -> list[str]:
    """The report's numeric fields, from a replay of the trace's first second (this also
    checks the trace)."""
    from sim.config import build_simulation

    from ..options import config_from_args, simulate_parser
    argv = ["--trace", trace, "--max-sim-time-s", "1", "--quiet",
            "--sla-ttft-ms", "1", "--sla-itl-ms", "1"]
    if speed is not None:
        argv += ["--arrival-speedup-ratio", f"{speed:g}"]
    summary = build_simulation(config_from_args(simulate_parser().parse_args(argv))).run().summary
    return sorted(report_fields(summary))


def run(args: argparse.Namespace) -> int:
    """``dynosim search``; bad input raises :class:`InputError` (one line, exit 2). Exit 2
    too, after writing the outputs, when no candidate meets the constraints."""
    from .. import executors
    from .sweeps import _check_out
    executors.check_args(args)
    if args.executor == "local" and (args.jobs or 1) > 1 and args.early_stop == "asha":
        raise InputError("--early-stop asha runs in one process locally (Optuna's pruner "
                         "decides in the process that replays); use --jobs 1 or --executor "
                         "ray", file=CMDLINE, field="--jobs")
    space = load_space(args.space)
    rungs = _rungs(args.rungs)
    objective = parse_objective(args.objective, _known_fields(args.trace,
                                                              args.arrival_speedup_ratio))
    compare = None
    if args.compare is not None:
        compare = read_compare(args.compare)
    out = _check_out(args.out)
    # Absolute, as the trials may run elsewhere: Ray Tune runs each in its own working dir.
    trace = args.trace if args.trace.startswith("bundled:") else \
        str(Path(args.trace).resolve())
    setup = Setup(trace, space, objective, rungs, args.arrival_speedup_ratio, args.seed,
                  early_stop=args.early_stop, check_s=args.check_s, sampler=args.sampler)
    bar = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=args.trials, desc="search", unit="trial", file=sys.stderr,
                   dynamic_ncols=True, leave=False)
    counts = {"failed": 0, "done": 0, "said": 0.0}
    # Without a terminal (a log file), one line per 5 % of the trials or per minute.
    lines = not args.quiet and bar is None
    every = max(1, args.trials // 20)

    def progress(rec: dict) -> None:
        counts["done"] += 1
        if rec.get("status") == "failed":
            counts["failed"] += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(failed=counts["failed"], refresh=False)
        elif lines:
            wall = time.perf_counter() - t0
            n = counts["done"]
            if n % every == 0 or n == args.trials or wall - counts["said"] >= 60.0:
                counts["said"] = wall
                print(f"search: {n}/{args.trials} trials, {counts['failed']} failed, "
                      f"{wall / 60:.1f} min, ~{wall / n * (args.trials - n) / 60:.1f} min "
                      "to go", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    cpu0 = time.process_time()      # this process's CPU: all the work locally, the driver on Ray
    workers_cpu = None              # CPU of the --jobs worker processes (local, --jobs > 1)
    try:
        if args.executor == "ray":
            records, cpus = search_ray(setup, args.trials,
                                       reduction_factor=args.reduction_factor,
                                       progress=progress, address=args.ray_address,
                                       cpus=args.jobs, storage=out / "tune")
        elif (args.jobs or 1) > 1:
            records, workers_cpu = search_pool(setup, args.trials, args.jobs,
                                               progress=progress)
            cpus = args.jobs
        else:
            records = search_local(setup, args.trials,
                                   reduction_factor=args.reduction_factor, progress=progress)
            cpus = 1
        replay_closest(setup, records)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    return _finish(args, setup, records, out, wall, time.process_time() - cpu0, cpus, compare,
                   workers_cpu)


def _finish(args, setup: Setup, records, out: Path, wall: float, cpu_s: float, cpus: int,
            compare, workers_cpu: float | None = None) -> int:
    obj = setup.objective
    write_trials(records, setup, out / "trials.csv")
    x, y, _ = front_axes(obj)
    fr = front_rows(records, obj)
    with open(out / "front.csv", "w", encoding="utf-8", newline="") as fh:
        keys = [k for k in SPACE_KEYS if k in setup.space.dims]
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["trial", "trials", x, y, *keys])   # trials: how many drew it
        for r in fr:
            w.writerow([r["trial"], r["hits"], _fmt(r["values"][x]), _fmt(r["values"][y]),
                        *(_fmt(r["params"].get(k)) for k in keys)])
    by = {s: sum(r["status"] == s for r in records) for s in STATUSES}
    requests = sum(int(r.get("requests") or 0) for r in records)
    reused = sum(str(r.get("reason") or "").startswith("same candidate") for r in records)
    best = best_record(records, obj)
    feasible = best is not None and best["violation"] == 0
    trials_cpu = sum(r.get("cpu_s") or 0.0 for r in records)
    title = (f"dynosim search: {plural(len(records), 'candidate')} ({by['complete']} complete, "
             f"{by['pruned']} stopped early, {by['failed']} failed), {setup.space.model} on "
             f"{setup.space.gpu}\n{obj.text}")
    plot_front(records, obj, out / "front.png", title, compare)
    cmd = write_best(setup, best, out / "best.yaml", feasible) if best is not None else None
    info = {"trace": setup.trace, "space": setup.space.as_dict(), "objective": obj.text,
            "early_stop": setup.early_stop, "check_s": setup.check_s,
            "rungs_s": list(setup.rungs_s), "reduction_factor": args.reduction_factor,
            "sampler": setup.sampler, "seed": setup.seed,
            "trials": len(records), **{f"{s}_trials": n for s, n in by.items()},
            "repeated_trials": reused,
            "run_info": {"executor": args.executor, "ray_address": args.ray_address,
                         "cpus": cpus, "wall_s": round(wall, 2),
                         "process_cpu_s": round(cpu_s, 2),
                         # CPU of the replays themselves (on Ray: in the trial workers)
                         "trials_cpu_s": round(trials_cpu, 2),
                         # all of it: the search process, plus Ray's trial workers or
                         # the --jobs worker processes (all their CPU, not only replays)
                         **({} if workers_cpu is None else
                            {"workers_cpu_s": round(workers_cpu, 2)}),
                         "cpu_s_per_trial": round((cpu_s + (
                             trials_cpu if args.executor == "ray" else workers_cpu or 0.0))
                                                  / max(1, len(records)), 3),
                         "trials_per_s": round(len(records) / wall, 3) if wall else None,
                         "simulated_requests": requests,
                         "simulated_requests_per_s": round(requests / wall) if wall else None},
            "best": None if best is None else {"trial": best["trial"], "feasible": feasible,
                                               "params": best["params"],
                                               "values": {f: best["values"].get(f)
                                                          for f in obj.fields()},
                                               "command": cmd}}
    (out / "search.json").write_text(json.dumps(info, indent=1, default=str,
                                                allow_nan=True) + "\n")
    repeats = (f" ({plural(reused, 'repeat')} of an earlier candidate, not replayed)"
               if reused else "")
    print(f"dynosim search: {plural(len(records), 'candidate')} in {wall:.1f} s on "
          f"{plural(cpus, 'CPU')} ({args.executor}): {by['complete']} complete, "
          f"{by['pruned']} stopped early, {by['failed']} failed"
          f"{repeats}; "
          f"{requests:,} simulated requests ({requests / wall:,.0f}/s)")
    for r in [r for r in records if r["status"] == "failed"][:3]:
        print(f"  failed trial {r['trial']} {json.dumps(r['params'], sort_keys=True)}: "
              f"{r['error']}")
    hits = sum(r["hits"] for r in fr)
    drawn = f" (drawn by {plural(hits, 'trial')})" if hits != len(fr) else ""
    print(f"  Pareto front ({x} vs {y}): {plural(len(fr), 'distinct candidate')}"
          f"{drawn} -> {out / 'front.csv'}, "
          f"{out / 'front.png'}")
    if best is None:
        print("dynosim: error: no candidate completed (all failed or stopped); see "
              f"{out / 'trials.csv'}", file=sys.stderr)
        return 2
    vals = ", ".join(f"{f} = {best['values'].get(f, math.nan):.6g}" for f in obj.fields())
    if not feasible:
        cons = " and ".join(f"{f} {op} {v:g}" for f, op, v in obj.constraints)
        print(f"dynosim: error: no candidate meets {cons}; closest: trial {best['trial']} "
              f"({vals}), written to {out / 'best.yaml'}", file=sys.stderr)
        return 2
    here = cmd.replace("--config best.yaml", f"--config {out / 'best.yaml'}", 1)
    if cmd.startswith("dynosim ") and env_script("dynosim"):     # runs as written here
        here = env_script("dynosim") + here[len("dynosim"):]
    print(f"  best: trial {best['trial']} ({vals}) -> {out / 'best.yaml'}; run it: {here}")
    return 0
