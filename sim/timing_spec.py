"""Timing models from their spec strings (``timing.model`` in a run config).

Kept apart from :mod:`sim.timing` so the models (``sim.timing``) and the GPU tables
(``sim.gpu_timing``, built on them) import in one direction only.
"""
from __future__ import annotations

import math

from .errors import InputError
from .gpu_timing import load_gpu_timing
from .schema import PASS_MS
from .timing import FixedTiming, PolynomialTiming, TableTiming, TimingModel


def make_timing(spec: str, *, speedup_ratio: float = 1.0, decode_speedup_ratio: float = 1.0,
                source: str | None = None) -> TimingModel:
    """Build a timing model from ``polynomial``, ``fixed:P,D``, ``table:PATH`` or
    ``gpu:MODEL:GPU:BACKEND:TP`` (a shipped GPU table, see ``sim.gpu_timing``)."""
    if speedup_ratio <= 0 or decode_speedup_ratio <= 0 or not math.isfinite(speedup_ratio):
        raise InputError("speed-up ratios must be positive", file=source, field="speedup_ratio")
    if spec == "polynomial":
        return PolynomialTiming(speedup_ratio, decode_speedup_ratio)
    if spec.startswith("fixed:"):
        parts = spec[len("fixed:"):].split(",")
        try:
            p, d = (float(x) for x in parts)
        except ValueError:
            raise InputError(f"expected fixed:PREFILL_MS,DECODE_MS, got {spec!r}", file=source,
                             field="timing") from None
        if p < 0 or d <= 0 or not (math.isfinite(p) and math.isfinite(d)) \
                or max(p, d) > PASS_MS.hi:
            raise InputError(f"fixed times must be finite, prefill >= 0 and decode > 0, each "
                             f"<= {PASS_MS.hi} ms (one pass; allowed {PASS_MS.text()}): "
                             f"{spec!r}",
                             file=source, field="timing")
        return FixedTiming(p, d, speedup_ratio, decode_speedup_ratio)
    if spec.startswith("table:"):
        return TableTiming(spec[len("table:"):], speedup_ratio, decode_speedup_ratio)
    if spec.startswith("gpu:"):
        parts = spec[len("gpu:"):].split(":")
        if len(parts) != 4:
            raise InputError(f"expected gpu:MODEL:GPU:BACKEND:TP, got {spec!r} "
                             "(see `dynosim models`)", file=source, field="timing")
        model, gpu, backend, tp = parts
        try:
            tp_n = int(tp.lower().removeprefix("tp"))
        except ValueError:
            raise InputError(f"TP must be an integer in {spec!r}", file=source,
                             field="timing") from None
        return load_gpu_timing(model, gpu, backend, tp_n, speedup_ratio=speedup_ratio,
                               decode_speedup_ratio=decode_speedup_ratio)
    raise InputError(f"unknown timing model {spec!r} (polynomial | fixed:P,D | table:PATH | "
                     "gpu:MODEL:GPU:BACKEND:TP)", file=source, field="timing")
