"""Synthetic workloads: arrival processes, length distributions, prefix groups, sessions.

Everything is lazy (random numbers are drawn in chunks as requests are pulled), so a
10M-request workload costs nothing until iterated. Randomness comes from the Generator
given at construction: one integer is drawn from it and seeds independent child streams
(arrivals, input lengths, output lengths, prefix groups), so every ``iter()`` replays the
same sequence and changing e.g. the ISL distribution leaves arrival times unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, is_dataclass
from itertools import count
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from ..errors import InputError
from ..request import Request
from ..schema import (COUNT, COUNT0, RATE, RATE0, RATIO, TIME_MS, TIME_S_POS, TOKENS,
                      WORKLOAD_FIELDS)
from .base import Workload, check_int, check_number

_CHUNK = 1024   # random draws per refill: amortises numpy call overhead, keeps memory flat


def _draws(fn: Callable[[int], np.ndarray]) -> Iterator[Any]:
    """Endless stream of scalars from a vectorised sampler."""
    while True:
        yield from fn(_CHUNK).tolist()


# -- length distributions -------------------------------------------------------------------

class LengthDist(Protocol):
    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray: ...


@dataclass(frozen=True)
class Fixed:
    value: int

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, self.value, dtype=np.int64)


@dataclass(frozen=True)
class Uniform:
    lo: int
    hi: int

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return rng.integers(self.lo, self.hi + 1, size=n)


@dataclass(frozen=True)
class LogNormal:
    mean: float                 # arithmetic mean of the (unclipped) distribution, in tokens
    sigma: float                # standard deviation of log(length)
    max_value: int | None = None

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        mu = math.log(self.mean) - self.sigma ** 2 / 2
        x = np.rint(rng.lognormal(mu, self.sigma, size=n))
        return np.clip(x, 1, self.max_value).astype(np.int64)


def fixed(value: int) -> Fixed:
    """Every request has exactly ``value`` tokens."""
    return Fixed(check_int(value, "value", allowed=TOKENS))


def uniform(lo: int, hi: int) -> Uniform:
    """Integer uniform on ``[lo, hi]`` (both inclusive)."""
    lo = check_int(lo, "lo", allowed=TOKENS)
    hi = check_int(hi, "hi", min_value=lo, allowed=TOKENS)
    return Uniform(lo, hi)


def lognormal(mean: float, sigma: float, max_value: int | None = None) -> LogNormal:
    """Heavy-tailed lengths with arithmetic mean ``mean``; rounded, clipped to [1, max]."""
    mean = check_number(mean, "mean", allowed=TOKENS)
    sigma = check_number(sigma, "sigma", allowed=WORKLOAD_FIELDS["isl|osl.sigma"])
    if max_value is not None:
        max_value = check_int(max_value, "max_value", allowed=TOKENS)
    return LogNormal(mean, sigma, max_value)


# -- arrival processes ----------------------------------------------------------------------

class ArrivalProcess(Protocol):
    def times_ms(self, rng: np.random.Generator) -> Iterator[float]: ...


@dataclass(frozen=True)
class Poisson:
    rate: float   # requests per second

    def times_ms(self, rng: np.random.Generator) -> Iterator[float]:
        return _renewal(lambda n: rng.exponential(1000.0 / self.rate, size=n))


@dataclass(frozen=True)
class Gamma:
    rate: float
    cv: float     # coefficient of variation of the gaps: 1 = Poisson, > 1 bursty

    def times_ms(self, rng: np.random.Generator) -> Iterator[float]:
        shape = 1.0 / self.cv ** 2
        return _renewal(lambda n: rng.gamma(shape, 1000.0 / (self.rate * shape), size=n))


@dataclass(frozen=True)
class Constant:
    rate: float

    def times_ms(self, rng: np.random.Generator) -> Iterator[float]:
        period = 1000.0 / self.rate
        return (i * period for i in count())   # multiply, not accumulate: no drift


@dataclass(frozen=True)
class ClosedLoop:
    concurrency: int

    def times_ms(self, rng: np.random.Generator) -> Iterator[float]:
        return (0.0 for _ in count())   # ignored: the workload dispatches on completion


@dataclass(frozen=True)
class NHPP:
    """Non-homogeneous Poisson by thinning (Lewis-Shedler): needs ``rate_fn <= rate_max``."""
    rate_fn: Callable[[float], float]   # t in seconds -> requests per second
    rate_max: float

    def times_ms(self, rng: np.random.Generator) -> Iterator[float]:
        t = 0.0
        scale = 1000.0 / self.rate_max
        while True:
            gaps = rng.exponential(scale, size=_CHUNK).tolist()
            marks = (rng.random(size=_CHUNK) * self.rate_max).tolist()
            for gap, mark in zip(gaps, marks):
                t += gap
                rate = self.rate_fn(t / 1000.0)
                if rate > self.rate_max * (1 + 1e-9):
                    raise InputError(f"rate_fn({t / 1000.0:.3f}) = {rate} exceeds rate_max "
                                     f"{self.rate_max}", field="rate_max")
                if mark < rate:
                    yield t


def _renewal(gaps: Callable[[int], np.ndarray]) -> Iterator[float]:
    """First arrival at t=0 (as Dynamo), then cumulative gaps."""
    t = 0.0
    yield t
    while True:
        for t in (t + np.cumsum(gaps(_CHUNK))).tolist():
            yield t


def poisson(rate: float) -> Poisson:
    """Open-loop Poisson arrivals at ``rate`` req/s, first at t=0."""
    return Poisson(check_number(rate, "rate", allowed=RATE))


def gamma(rate: float, cv: float) -> Gamma:
    """Gamma-renewal arrivals: mean ``rate`` req/s, gap CV ``cv`` (> 1 is burstier)."""
    return Gamma(check_number(rate, "rate", allowed=RATE),
                 check_number(cv, "cv", allowed=RATIO))


def constant(rate: float) -> Constant:
    """Evenly spaced arrivals every ``1/rate`` s, first at t=0."""
    return Constant(check_number(rate, "rate", allowed=RATE))


def closed_loop(concurrency: int) -> ClosedLoop:
    """Keep ``concurrency`` requests (sessions) in flight; each completion dispatches the next."""
    return ClosedLoop(check_int(concurrency, "concurrency", allowed=WORKLOAD_FIELDS["concurrency"]))


def nhpp(rate_fn: Callable[[float], float], rate_max: float | None = None) -> NHPP:
    """Time-varying Poisson; ``rate_max`` defaults to ``rate_fn.max_rate`` (ramp, diurnal)."""
    if rate_max is None:
        rate_max = getattr(rate_fn, "max_rate", None)
        if rate_max is None:
            raise InputError("needed when rate_fn has no max_rate attribute", field="rate_max")
    return NHPP(rate_fn, check_number(rate_max, "rate_max", allowed=RATE))


@dataclass(frozen=True)
class Ramp:
    """Linear rate from ``start_rate`` to ``end_rate`` over ``duration_s``, then held."""
    start_rate: float
    end_rate: float
    duration_s: float

    @property
    def max_rate(self) -> float:
        return max(self.start_rate, self.end_rate)

    def __call__(self, t_s: float) -> float:
        f = min(max(t_s / self.duration_s, 0.0), 1.0)
        return self.start_rate + (self.end_rate - self.start_rate) * f


@dataclass(frozen=True)
class Diurnal:
    """``mean_rate * (1 + amplitude * sin(2 pi (t + phase_s) / period_s))``."""
    mean_rate: float
    amplitude: float
    period_s: float
    phase_s: float = 0.0

    @property
    def max_rate(self) -> float:
        return self.mean_rate * (1 + self.amplitude)

    def __call__(self, t_s: float) -> float:
        return self.mean_rate * (1 + self.amplitude
                                 * math.sin(2 * math.pi * (t_s + self.phase_s) / self.period_s))


def ramp(start_rate: float, end_rate: float, duration_s: float) -> Ramp:
    """Rate function for load ramps (picklable, so Gym vector envs can ship it)."""
    start = check_number(start_rate, "start_rate", allowed=RATE0)
    end = check_number(end_rate, "end_rate", allowed=RATE0)
    if start == end == 0:
        raise InputError("start_rate and end_rate are both 0", field="end_rate")
    return Ramp(start, end, check_number(duration_s, "duration_s", allowed=TIME_S_POS))


def diurnal(mean_rate: float, amplitude: float, period_s: float,
            phase_s: float = 0.0) -> Diurnal:
    """Sinusoidal day/night rate function; amplitude in [0, 1) keeps the rate positive."""
    amp = check_number(amplitude, "amplitude", allowed=WORKLOAD_FIELDS["arrival.amplitude"])
    return Diurnal(check_number(mean_rate, "mean_rate", allowed=RATE), amp,
                   check_number(period_s, "period_s", allowed=TIME_S_POS),
                   check_number(phase_s, "phase_s", allowed=WORKLOAD_FIELDS["arrival.phase_s"]))


# -- the workload ---------------------------------------------------------------------------

class SyntheticWorkload(Workload):
    """Generated requests; see :func:`synthetic` for the parameters."""

    def __init__(self, rng: np.random.Generator, *, arrival: ArrivalProcess,
                 isl: LengthDist, osl: LengthDist, num_requests: int | None,
                 duration_s: float | None, num_prefix_groups: int,
                 shared_prefix_ratio: float | None, shared_prefix_blocks: int | None,
                 trace_block_size: int, turns_per_session: int, inter_turn_delay_ms: float,
                 name: str) -> None:
        self.name = name
        self.arrival, self.isl, self.osl = arrival, isl, osl
        self.num_requests, self.duration_s = num_requests, duration_s
        self.num_prefix_groups = num_prefix_groups
        self.shared_prefix_ratio = shared_prefix_ratio
        self.shared_prefix_blocks = shared_prefix_blocks
        self.trace_block_size = trace_block_size
        self.turns_per_session = turns_per_session
        self.inter_turn_delay_ms = inter_turn_delay_ms
        if isinstance(arrival, ClosedLoop):
            self.concurrency = arrival.concurrency
            if duration_s is not None:
                self.dispatch_until_ms = duration_s * 1000.0
        self._entropy = int(rng.integers(0, 2 ** 63))
        self._pending: dict[int, list[Request]] = {}

    def describe(self) -> dict[str, Any]:
        sessions = self.num_requests
        return {
            "name": self.name, "kind": "synthetic",
            "arrival": _params(self.arrival), "isl": _params(self.isl),
            "osl": _params(self.osl),
            "num_sessions": sessions,
            "num_requests": None if sessions is None else sessions * self.turns_per_session,
            "duration_s": self.duration_s, "concurrency": self.concurrency,
            "num_prefix_groups": self.num_prefix_groups,
            "shared_prefix_ratio": self.shared_prefix_ratio,
            "shared_prefix_blocks": self.shared_prefix_blocks,
            "trace_block_size": self.trace_block_size,
            "turns_per_session": self.turns_per_session,
            "inter_turn_delay_ms": self.inter_turn_delay_ms,
        }

    def _reset(self) -> None:
        self._pending = {}

    def _next_turn(self, request: Request) -> Request | None:
        rest = self._pending.pop(request.index, None)
        if not rest:
            return None
        if len(rest) > 1:
            self._pending[rest[0].index] = rest[1:]
        return rest[0]

    def _first_turns(self) -> Iterator[Request]:
        g_arr, g_isl, g_osl, g_grp = (np.random.default_rng(s) for s in
                                      np.random.SeedSequence(self._entropy).spawn(4))
        times = self.arrival.times_ms(g_arr)
        isl = _draws(lambda n: self.isl.sample(g_isl, n))
        osl = _draws(lambda n: self.osl.sample(g_osl, n))
        groups = self.num_prefix_groups
        group_of = _draws(lambda n: g_grp.integers(0, groups, size=n)) if groups else None
        bs, turns = self.trace_block_size, self.turns_per_session
        horizon = math.inf if self.duration_s is None else self.duration_s * 1000.0
        limit = math.inf if self.num_requests is None else self.num_requests
        unique = 0              # next unique id is 2 * unique + 1
        # Id spaces never collide: shared ids are even (one per group x position, so each id
        # sits at a single position like a prefix-chained hash), unique ids are odd.

        s = 0
        while s < limit:
            t = next(times)
            if t >= horizon:
                return
            ids: list[int] = []
            context = 0          # tokens of the session so far (prompts + outputs)
            session: list[Request] = []
            for k in range(turns):
                new, out = next(isl), next(osl)
                inp = context + new
                need = -(-inp // bs)
                if k == 0 and group_of is not None:
                    g = next(group_of)
                    if self.shared_prefix_blocks is not None:
                        shared = self.shared_prefix_blocks
                    else:
                        shared = int(self.shared_prefix_ratio * new) // bs
                    ids = [2 * (j * groups + g) for j in range(min(shared, need))]
                m = need - len(ids)
                if m > 0:
                    ids.extend(range(2 * unique + 1, 2 * (unique + m) + 1, 2))
                    unique += m
                session.append(Request(
                    index=s * turns + k, arrival_ms=t, input_length=inp, output_length=out,
                    hash_ids=tuple(ids), trace_block_size=bs,
                    session_id=f"s{s}" if turns > 1 else None,
                    delay_ms=self.inter_turn_delay_ms if k else 0.0))
                context = inp + out
                # the output fills the partial last block and more: keep its id, add new ones
                m = -(-context // bs) - len(ids)
                if m > 0:
                    ids.extend(range(2 * unique + 1, 2 * (unique + m) + 1, 2))
                    unique += m
            if turns > 1:
                self._pending[session[0].index] = session[1:]
            yield session[0]
            s += 1


def synthetic(rng: np.random.Generator, *, arrival: ArrivalProcess, isl: LengthDist,
              osl: LengthDist, num_requests: int | None = None, duration_s: float | None = None,
              num_prefix_groups: int = 0, shared_prefix_ratio: float | None = None,
              shared_prefix_blocks: int | None = None, trace_block_size: int = 512,
              turns_per_session: int = 1, inter_turn_delay_ms: float = 0.0,
              name: str = "synthetic") -> SyntheticWorkload:
    """A lazy synthetic workload (Dynamo's synthetic loadgen, plus gamma/NHPP arrivals).

    ``num_requests`` counts sessions (= requests when ``turns_per_session == 1``, as in
    Dynamo); ``duration_s`` stops new sessions at that time; give at least one. With
    ``num_prefix_groups > 0`` each session picks a group uniformly and its first prompt
    starts with the group's leading hash_ids: ``shared_prefix_blocks`` blocks, or
    ``floor(shared_prefix_ratio * isl / trace_block_size)``. Turn k+1's prompt is turn
    k's prompt + output + a fresh ISL draw, released ``inter_turn_delay_ms`` after turn k
    completes.
    """
    if num_requests is None and duration_s is None:
        raise InputError("give num_requests or duration_s (or both)", field="num_requests")
    if num_requests is not None:
        num_requests = check_int(num_requests, "num_requests", allowed=COUNT)
    if duration_s is not None:
        duration_s = check_number(duration_s, "duration_s", allowed=TIME_S_POS)
    groups = check_int(num_prefix_groups, "num_prefix_groups", allowed=COUNT0)
    if shared_prefix_ratio is not None and shared_prefix_blocks is not None:
        raise InputError("give shared_prefix_ratio or shared_prefix_blocks, not both",
                         field="shared_prefix_blocks")
    if shared_prefix_ratio is not None:
        shared_prefix_ratio = check_number(shared_prefix_ratio, "shared_prefix_ratio",
                                           min_value=0, maximum=1)
    if shared_prefix_blocks is not None:
        shared_prefix_blocks = check_int(shared_prefix_blocks, "shared_prefix_blocks",
                                         allowed=WORKLOAD_FIELDS["shared_prefix_blocks"])
    has_share = shared_prefix_ratio is not None or shared_prefix_blocks is not None
    if groups and not has_share:
        raise InputError("num_prefix_groups needs shared_prefix_ratio or "
                         "shared_prefix_blocks", field="num_prefix_groups")
    if has_share and not groups:
        raise InputError("a shared prefix needs num_prefix_groups >= 1",
                         field="num_prefix_groups")
    for value, field, method in ((arrival, "arrival", "times_ms"), (isl, "isl", "sample"),
                                 (osl, "osl", "sample")):
        if not callable(getattr(value, method, None)):
            raise InputError(f"expected an object with .{method}(), got {value!r}", field=field)
    if (duration_s is None and isinstance(arrival, NHPP) and isinstance(arrival.rate_fn, Ramp)
            and arrival.rate_fn.end_rate == 0):
        raise InputError("a ramp ending at rate 0 needs duration_s (it would never produce "
                         "the remaining requests)", field="duration_s")
    return SyntheticWorkload(
        rng, arrival=arrival, isl=isl, osl=osl, num_requests=num_requests,
        duration_s=duration_s, num_prefix_groups=groups,
        shared_prefix_ratio=shared_prefix_ratio, shared_prefix_blocks=shared_prefix_blocks,
        trace_block_size=check_int(trace_block_size, "trace_block_size",
                                   allowed=WORKLOAD_FIELDS["trace_block_size"]),
        turns_per_session=check_int(turns_per_session, "turns_per_session", allowed=COUNT),
        inter_turn_delay_ms=check_number(inter_turn_delay_ms, "inter_turn_delay_ms",
                                         allowed=TIME_MS),
        name=name)


def _params(obj: Any) -> Any:
    """JSON-friendly description of a distribution / process / rate function."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return {"type": type(obj).__name__.lower(),
                **{f.name: _params(getattr(obj, f.name)) for f in fields(obj)}}
    if hasattr(obj, "to_dict"):            # e.g. PiecewiseRate
        return obj.to_dict()
    if callable(obj):
        return getattr(obj, "__qualname__", repr(obj))
    return obj
