"""Forward-pass timing models: how long one engine pass takes.

A pass costs ``prefill_time + decode_time``; every token of the pass is stamped at its end.
Three models, selected by a spec string (``polynomial``, ``fixed:P,D``, ``table:PATH``):

* ``PolynomialTiming`` -- Dynamo's default "uncalibrated synthetic baseline"
  (aisimulate ``engine/common/perf_model.rs``; coefficients as there, checked against the
  replay):
  prefill from the uncached prompt tokens computed in the pass; decode from utilisation
  u = (context tokens of the decode batch) / (pool capacity in tokens), batch-size blind.
* ``FixedTiming`` -- constant prefill and decode step times, for parity tests.
* ``TableTiming`` -- interpolation in a measured table (prefill by new x cached tokens;
  decode by batch size x total KV tokens), loaded from ``.npz`` or ``.json``.

Like Dynamo, every modelled duration passes through a nanosecond clock: the raw
milliseconds are converted to whole nanoseconds (nearest), divided by the speed-up the same
way, and read back as ``secs + nanos / 1e9`` (``modeled_ms``). This is why Dynamo's token
times have six decimals in milliseconds; reproducing it keeps our times bit-equal.

The decode cost of a batch is kept separate from prefill so the engine can advance
stretches of decode-only passes in bulk: for the polynomial model the decode time is a
function of the active KV blocks only, so it is constant between block-boundary changes.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import InputError

# Dynamo polynomial coefficients (milliseconds).
_PF_A, _PF_B, _PF_C = 4.209989e-7, 1.518344e-2, 16.50142
_DC_A, _DC_B, _DC_C = -25.74, 54.01, 5.74


def _to_ns(secs: float) -> int:
    """Nearest whole nanoseconds of ``secs`` (exact near ties, like Rust's Duration)."""
    x = secs * 1e9
    r = round(x)
    if abs(abs(x - math.floor(x)) - 0.5) < 1e-6:
        r = round(Fraction(secs) * 1_000_000_000)
    return r


def _ns_to_ms(ns: int) -> float:
    s, n = divmod(ns, 1_000_000_000)
    return (float(s) + float(n) / 1e9) * 1000.0


def modeled_ms(raw_ms: float, speedup: float = 1.0) -> float:
    """A model's raw milliseconds as Dynamo's engine clock sees them."""
    if raw_ms <= 0.0:
        return 0.0
    ns = _to_ns(raw_ms / 1000.0)
    if speedup != 1.0 and ns > 0:
        s, n = divmod(ns, 1_000_000_000)
        ns = _to_ns((float(s) + float(n) / 1e9) / speedup)
    return _ns_to_ms(ns)


def modeled_ms_array(raw_ms: np.ndarray, speedup: float = 1.0) -> np.ndarray:
    """``modeled_ms`` over an array (same float operations, so the same bits)."""
    out = np.array([modeled_ms(float(x), speedup) for x in raw_ms]) if speedup != 1.0 else None
    if out is not None:
        return out
    x = (raw_ms / 1000.0) * 1e9
    ns = np.rint(x)
    frac = x - np.floor(x)
    near = np.abs(frac - 0.5) < 1e-6
    if near.any():
        for i in np.flatnonzero(near):
            ns[i] = _to_ns(float(raw_ms[i]) / 1000.0)
    s = np.floor(ns / 1e9)
    n = ns - s * 1e9
    out = (s + n / 1e9) * 1000.0
    out[raw_ms <= 0.0] = 0.0
    return out


class TimingModel:
    """Interface: durations in milliseconds, already divided by the speed-up ratios."""

    #: True when ``decode_ms`` depends only on ``active_kv_tokens`` (not on batch size or
    #: context), which lets the engine treat a decode stretch as piecewise constant.
    decode_depends_on_kv_only: bool = True

    def prefill_ms(self, new_tokens: int, cached_tokens: int, num_seqs: int) -> float:
        raise NotImplementedError

    def decode_ms(self, batch_size: int, active_kv_tokens: int, total_kv_tokens: int,
                  capacity_tokens: int) -> float:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass
class PolynomialTiming(TimingModel):
    speedup_ratio: float = 1.0
    decode_speedup_ratio: float = 1.0

    def prefill_ms(self, new_tokens: int, cached_tokens: int = 0, num_seqs: int = 1) -> float:
        if new_tokens <= 0:
            return 0.0
        t = float(new_tokens)
        return modeled_ms(_PF_A * t * t + _PF_B * t + _PF_C, self.speedup_ratio)

    def decode_ms(self, batch_size: int, active_kv_tokens: int, total_kv_tokens: int = 0,
                  capacity_tokens: int = 1) -> float:
        u = min(1.0, active_kv_tokens / capacity_tokens)
        ms = max(1.0, _DC_A * u * u + _DC_B * u + _DC_C)
        return modeled_ms(ms, self.speedup_ratio * self.decode_speedup_ratio)

    def describe(self) -> str:
        return "polynomial"


@dataclass
class FixedTiming(TimingModel):
    prefill: float
    decode: float
    speedup_ratio: float = 1.0
    decode_speedup_ratio: float = 1.0

    def prefill_ms(self, new_tokens: int, cached_tokens: int = 0, num_seqs: int = 1) -> float:
        return modeled_ms(self.prefill, self.speedup_ratio) if new_tokens > 0 else 0.0

    def decode_ms(self, batch_size: int, active_kv_tokens: int, total_kv_tokens: int = 0,
                  capacity_tokens: int = 1) -> float:
        return modeled_ms(self.decode, self.speedup_ratio * self.decode_speedup_ratio)

    def describe(self) -> str:
        return f"fixed:{self.prefill:g},{self.decode:g}"


class TableTiming(TimingModel):
    """Bilinear interpolation in measured tables (clamped at the grid edges).

    File keys (``.npz`` arrays or a ``.json`` object of lists):
    ``prefill_new_tokens`` (n), ``prefill_cached_tokens`` (m), ``prefill_ms`` (n x m);
    ``decode_batch_size`` (p), ``decode_kv_tokens`` (q), ``decode_ms`` (p x q).
    A 1-D ``prefill_ms`` with no cached axis is accepted too.
    """

    decode_depends_on_kv_only = False

    def __init__(self, path: str | Path, speedup_ratio: float = 1.0,
                 decode_speedup_ratio: float = 1.0) -> None:
        self.path = str(path)
        self.speedup_ratio = speedup_ratio
        self.decode_speedup_ratio = decode_speedup_ratio
        data = _load_table(self.path)
        self.p_new = _axis(data, "prefill_new_tokens", self.path)
        self.p_cached = (np.asarray(data["prefill_cached_tokens"], dtype=float)
                         if "prefill_cached_tokens" in data else np.zeros(1))
        self.p_ms = np.asarray(data["prefill_ms"], dtype=float).reshape(len(self.p_new), -1)
        self.d_bs = _axis(data, "decode_batch_size", self.path)
        self.d_kv = _axis(data, "decode_kv_tokens", self.path)
        self.d_ms = np.asarray(data["decode_ms"], dtype=float).reshape(len(self.d_bs), len(self.d_kv))
        if self.p_ms.shape[1] != len(self.p_cached):
            raise InputError("prefill_ms shape does not match the axes", file=self.path,
                             field="prefill_ms")

    def prefill_ms(self, new_tokens: int, cached_tokens: int = 0, num_seqs: int = 1) -> float:
        if new_tokens <= 0:
            return 0.0
        return modeled_ms(_bilinear(self.p_new, self.p_cached, self.p_ms, new_tokens, cached_tokens),
                          self.speedup_ratio)

    def decode_ms(self, batch_size: int, active_kv_tokens: int, total_kv_tokens: int = 0,
                  capacity_tokens: int = 1) -> float:
        ms = _bilinear(self.d_bs, self.d_kv, self.d_ms, batch_size, total_kv_tokens)
        return modeled_ms(ms, self.speedup_ratio * self.decode_speedup_ratio)

    def describe(self) -> str:
        return f"table:{self.path}"


def _load_table(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise InputError("timing table not found", file=path, field="timing")
    try:
        if p.suffix == ".json":
            return json.loads(p.read_text())
        with np.load(p) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read timing table ({exc})", file=path, field="timing") from None


def _axis(data: dict, key: str, path: str) -> np.ndarray:
    if key not in data:
        raise InputError("missing array", file=path, field=key)
    a = np.asarray(data[key], dtype=float)
    if a.ndim != 1 or len(a) == 0 or np.any(np.diff(a) <= 0):
        raise InputError("axis must be a non-empty increasing 1-D array", file=path, field=key)
    return a


def _interp_index(axis: np.ndarray, x: float) -> tuple[int, float]:
    if len(axis) == 1 or x <= axis[0]:
        return 0, 0.0
    if x >= axis[-1]:
        return len(axis) - 2, 1.0
    i = int(np.searchsorted(axis, x, side="right")) - 1
    return i, (x - axis[i]) / (axis[i + 1] - axis[i])


def _bilinear(xa: np.ndarray, ya: np.ndarray, z: np.ndarray, x: float, y: float) -> float:
    i, fx = _interp_index(xa, x)
    j, fy = _interp_index(ya, y)
    i1 = min(i + 1, len(xa) - 1)
    j1 = min(j + 1, len(ya) - 1)
    top = z[i, j] * (1 - fy) + z[i, j1] * fy
    bot = z[i1, j] * (1 - fy) + z[i1, j1] * fy
    return float(top * (1 - fx) + bot * fx)


def decode_ms_series(model: TimingModel, batch_size: int, context_tokens: "np.ndarray",
                     capacity_tokens: int) -> "np.ndarray":
    """Decode time of consecutive passes whose batch context totals are ``context_tokens``.

    Bit-identical to calling ``decode_ms`` pass by pass (same float operations in the same
    order), so bulk advance and pass-by-pass stepping agree exactly.
    """
    if isinstance(model, PolynomialTiming):
        u = np.minimum(1.0, context_tokens / capacity_tokens)
        ms = np.maximum(1.0, _DC_A * u * u + _DC_B * u + _DC_C)
        return modeled_ms_array(ms, model.speedup_ratio * model.decode_speedup_ratio)
    if isinstance(model, FixedTiming):
        return np.full(len(context_tokens), model.decode_ms(0, 0, 0, 1))
    vectorised = getattr(model, "decode_ms_array", None)   # duck-typed (GpuTableTiming)
    if vectorised is not None:
        return vectorised(batch_size, context_tokens, capacity_tokens)
    return np.array([model.decode_ms(batch_size, int(a), int(a), capacity_tokens)
                     for a in context_tokens])
