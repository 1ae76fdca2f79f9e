"""Workloads: what arrives at the cluster and when.

``iter(workload)`` yields the requests that arrive on their own (open-loop rows, first turns
of sessions, the first N of a closed loop) in arrival order; ``workload.on_complete(req,
now_ms)`` returns the requests a completion releases (next session turn, next closed-loop
request). ``from_config`` builds any of them from a plain dict (a YAML ``workload:`` block).
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..errors import InputError
from .base import Workload
from .synthetic import (ArrivalProcess, LengthDist, SyntheticWorkload, closed_loop, constant,
                        diurnal, fixed, gamma, lognormal, nhpp, poisson, ramp, synthetic,
                        uniform)
from .traces import TraceWorkload, load_azure, load_mooncake
from .window import TraceWindow

__all__ = [
    "Workload", "TraceWorkload", "TraceWindow", "SyntheticWorkload", "ArrivalProcess", "LengthDist",
    "load_mooncake", "load_azure", "synthetic", "from_config",
    "poisson", "gamma", "constant", "closed_loop", "nhpp", "ramp", "diurnal",
    "fixed", "uniform", "lognormal",
]

class PiecewiseRate:
    """Piecewise-linear arrival rate through ``(knots_s[i], rates_rps[i])``, flat outside
    (picklable; the workload families of ``dynosim_gym.scenarios`` as a run config)."""

    def __init__(self, knots_s: list[float], rates_rps: list[float]) -> None:
        if (not isinstance(knots_s, (list, tuple)) or not isinstance(rates_rps, (list, tuple))
                or len(knots_s) != len(rates_rps) or not knots_s):
            raise InputError("knots_s and rates_rps must be lists of the same length",
                             field="rates_rps")
        if any(b < a for a, b in zip(knots_s, knots_s[1:])):
            raise InputError("must be non-decreasing", field="knots_s")
        if any(r < 0 for r in rates_rps) or max(rates_rps) <= 0:
            raise InputError("rates must be >= 0 and not all 0", field="rates_rps")
        self.knots_s, self.rates_rps = [float(x) for x in knots_s], [float(x) for x in rates_rps]
        self.max_rate = max(self.rates_rps)

    def __call__(self, t_s: float) -> float:
        return float(np.interp(t_s, self.knots_s, self.rates_rps))

    def to_dict(self) -> dict[str, Any]:
        """As data (a workload's ``describe()``), like the dataclass rate functions."""
        return {"type": "piecewiserate", "knots_s": list(self.knots_s),
                "rates_rps": list(self.rates_rps)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PiecewiseRate":
        """Inverse of :meth:`to_dict` (``type`` optional)."""
        return cls(data["knots_s"], data["rates_rps"])


# name -> (factory, required keys, optional keys); keys are the factory's parameter names.
_Table = dict[str, tuple[Callable[..., Any], set[str], set[str]]]
_ARRIVALS: _Table = {
    "poisson": (poisson, {"rate"}, set()),
    "gamma": (gamma, {"rate", "cv"}, set()),
    "constant": (constant, {"rate"}, set()),
    "closed_loop": (closed_loop, {"concurrency"}, set()),
    "ramp": (lambda **kw: nhpp(ramp(**kw)), {"start_rate", "end_rate", "duration_s"}, set()),
    "diurnal": (lambda **kw: nhpp(diurnal(**kw)), {"mean_rate", "amplitude", "period_s"},
                {"phase_s"}),
    "piecewise": (lambda **kw: nhpp(PiecewiseRate(**kw)), {"knots_s", "rates_rps"}, set()),
}
_DISTS: _Table = {
    "fixed": (fixed, {"value"}, set()),
    "uniform": (uniform, {"lo", "hi"}, set()),
    "lognormal": (lognormal, {"mean", "sigma"}, {"max_value"}),
}
_KINDS: dict[str, set[str]] = {
    "mooncake": {"path", "trace_block_size", "arrival_speedup_ratio", "concurrency"},
    "azure": {"path", "arrival_speedup_ratio", "concurrency"},
    "synthetic": {"arrival", "isl", "osl", "num_requests", "duration_s", "num_prefix_groups",
                  "shared_prefix_ratio", "shared_prefix_blocks", "trace_block_size",
                  "turns_per_session", "inter_turn_delay_ms", "name"},
}


def from_config(cfg: dict[str, Any], rng: np.random.Generator | None = None, *,
                source: str | None = None, prefix: str = "workload",
                base_dir: str | Path | None = None) -> Workload:
    """Build a workload from a plain dict, e.g. a YAML ``workload:`` block.

    ``{"kind": "mooncake"|"azure", "path": ..., ...}`` or ``{"kind": "synthetic", "arrival":
    {"process": "poisson", "rate": 10}, "isl": {"dist": "fixed", "value": 1024}, "osl": 128,
    "num_requests": 1000, ...}`` (a bare int for isl/osl means fixed). Config errors are
    InputErrors with ``file=source`` and a dotted field under ``prefix``; trace-file errors
    keep the trace's own file and line. Relative trace paths resolve against ``base_dir``.
    """
    kind = _kind(cfg, "kind", _KINDS, prefix, source)
    _check_keys(cfg, _KINDS[kind] | {"kind"}, set(), prefix, source)
    args = {k: v for k, v in cfg.items() if k != "kind"}
    if kind in ("mooncake", "azure"):
        path = args.pop("path", None)
        if not isinstance(path, (str, Path)):
            raise InputError(f"expected a file path, got {path!r}", file=source,
                             field=_join(prefix, "path"))
        if base_dir is not None and not Path(path).is_absolute():
            path = Path(base_dir) / path
        loader = load_mooncake if kind == "mooncake" else load_azure
        with _located(source, prefix):
            return loader(path, **args)
    if not isinstance(rng, np.random.Generator):
        raise TypeError("a synthetic workload needs a numpy.random.Generator")
    for key in ("arrival", "isl", "osl"):
        if key not in args:
            raise InputError("missing required key", file=source, field=_join(prefix, key))
    args["arrival"] = _build(args["arrival"], "process", _ARRIVALS, _join(prefix, "arrival"),
                             source)
    for key in ("isl", "osl"):
        spec = args[key]
        if type(spec) is int:       # shorthand: isl: 1024
            spec = {"dist": "fixed", "value": spec}
        args[key] = _build(spec, "dist", _DISTS, _join(prefix, key), source)
    with _located(source, prefix):
        return synthetic(rng, **args)


def _join(prefix: str, key: str | None) -> str:
    return ".".join(p for p in (prefix, key) if p)


@contextmanager
def _located(source: str | None, where: str) -> Iterator[None]:
    """Give argument errors raised by factories the config file and full dotted field."""
    try:
        yield
    except InputError as exc:
        if exc.file is not None:     # already located (a trace line): keep it
            raise
        raise InputError(exc.detail, file=source, field=_join(where, exc.field)) from None


def _kind(spec: Any, key: str, table: dict[str, Any], where: str, source: str | None) -> str:
    if not isinstance(spec, dict):
        raise InputError(f"expected a mapping, got {type(spec).__name__}", file=source,
                         field=where or None)
    if key not in spec:
        raise InputError(f"missing required key; one of {', '.join(table)}", file=source,
                         field=_join(where, key))
    kind = spec[key]
    if not isinstance(kind, str) or kind not in table:
        raise InputError(f"unknown {key} {kind!r}; expected one of {', '.join(table)}",
                         file=source, field=_join(where, key))
    return kind


def _check_keys(spec: dict[str, Any], allowed: set[str], required: set[str], where: str,
                source: str | None) -> None:
    for key in spec:
        if key not in allowed:
            raise InputError(f"unknown key; expected one of {', '.join(sorted(allowed))}",
                             file=source, field=_join(where, str(key)))
    for key in sorted(required - set(spec)):
        raise InputError("missing required key", file=source, field=_join(where, key))


def _build(spec: Any, kind_key: str, table: _Table, where: str, source: str | None) -> Any:
    kind = _kind(spec, kind_key, table, where, source)
    factory, required, optional = table[kind]
    _check_keys(spec, required | optional | {kind_key}, required, where, source)
    with _located(source, where):
        return factory(**{k: v for k, v in spec.items() if k != kind_key})
