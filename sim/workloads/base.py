"""The workload protocol shared by trace replay and synthetic generators.

A workload is a lazy stream of requests plus a completion hook: open-loop arrivals come out
of ``iter()``; requests that depend on a completion (later turns of a session, the next
request of a closed loop) come out of ``on_complete``. The core merges both into its event
queue, so a million-request run never holds more than the requests in flight.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from itertools import islice
from numbers import Integral, Real
from typing import Any, Iterator

from ..errors import InputError
from ..request import Request
from ..schema import Range


class Workload(ABC):
    """Template for every workload; subclasses supply first turns and session successors.

    One iteration is one run: ``iter(w)`` resets the run state (pending sessions, closed-loop
    cursor), so iterate once per simulation and call ``on_complete`` on the same object.
    """

    name: str = "workload"
    #: ``None`` = open loop (arrivals at their timestamps); N = closed loop with N in flight.
    concurrency: int | None = None
    #: Closed loop only: no new request is dispatched at or after this virtual time.
    dispatch_until_ms: float = math.inf
    _source: Iterator[Request] = iter(())

    def __iter__(self) -> Iterator[Request]:
        """Requests eligible at their own timestamp, in arrival order (ties keep file order)."""
        self._reset()
        self._source = self._first_turns()
        if self.concurrency is None:
            return self._source
        # Closed loop ignores source timestamps: N start at t=0, TTFT counts from dispatch.
        return (r.arriving_at(0.0) for r in islice(self._source, self.concurrency))

    def on_complete(self, request: Request, now_ms: float) -> list[Request]:
        """Requests released because ``request`` finished (or was dropped) at ``now_ms``.

        Call it exactly once per request, for every terminal outcome, or sessions and the
        closed loop stall. Released requests have ``arrival_ms >= now_ms``.
        """
        nxt = self._next_turn(request)
        if nxt is not None:
            return [nxt.arriving_at(now_ms + nxt.delay_ms)]
        if self.concurrency is not None and now_ms < self.dispatch_until_ms:
            new = next(self._source, None)
            if new is not None:
                return [new.arriving_at(now_ms)]
        return []

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """Name, counts and parameters, JSON-serialisable, for run records."""

    @abstractmethod
    def _first_turns(self) -> Iterator[Request]:
        """Fresh stream of open-loop requests and first turns of sessions, in arrival order."""

    @abstractmethod
    def _next_turn(self, request: Request) -> Request | None:
        """The session turn that follows ``request`` (its ``arrival_ms`` is overwritten)."""

    def _reset(self) -> None:
        """Clear per-run state before a new iteration."""


# -- argument checks shared by loaders, generators and from_config ---------------------------

def check_number(value: Any, field: str, *, min_value: float | None = None,
                 positive: bool = False, maximum: float | None = None,
                 allowed: Range | None = None) -> float:
    """A finite real (bool excluded; numpy scalars fine), optionally bounded (``allowed``:
    its documented :mod:`sim.schema` range)."""
    if not isinstance(value, Real) or isinstance(value, bool) or not math.isfinite(value):
        raise InputError(f"expected a finite number, got {_show(value)}", field=field)
    msg = allowed.violation(value) if allowed is not None else None
    if msg:
        raise InputError(msg, field=field)
    if positive and value <= 0:
        raise InputError(f"must be > 0, got {value}", field=field)
    if min_value is not None and value < min_value:
        raise InputError(f"must be >= {min_value}, got {value}", field=field)
    if maximum is not None and value > maximum:
        raise InputError(f"must be <= {maximum}, got {value}", field=field)
    return float(value)


def check_int(value: Any, field: str, *, min_value: int | None = None,
              allowed: Range | None = None) -> int:
    """An integer (integral floats from YAML such as ``1.0e+6`` accepted, bool rejected),
    optionally within ``allowed`` (its documented :mod:`sim.schema` range)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, Integral) and not isinstance(value, bool):
        value = int(value)
    if type(value) is not int:
        raise InputError(f"expected an integer, got {_show(value)}", field=field)
    if min_value is not None and value < min_value:
        raise InputError(f"must be >= {min_value}, got {value}", field=field)
    msg = allowed.violation(value) if allowed is not None else None
    if msg:
        raise InputError(msg, field=field)
    return value


def _show(value: Any) -> str:
    """Type and a short repr of a bad value, for messages."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} {text}"
