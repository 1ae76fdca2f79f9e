"""A time window of a trace, rebased to t = 0: the episodes of a trace-driven environment.

Open-loop rows and first turns arriving in ``[start_s, end_s)`` are kept (arrival minus
``start_s``); later session turns follow their predecessors as in the full trace. Windows
share the parsed trace, so cutting one costs a binary search, not a re-parse.
"""
from __future__ import annotations

import bisect
from typing import Any, Iterator

from ..errors import InputError
from ..request import Request
from .base import Workload
from .traces import TraceWorkload


class TraceWindow(Workload):
    def __init__(self, trace: TraceWorkload, start_s: float, end_s: float) -> None:
        if not end_s > start_s:
            raise InputError(f"empty window [{start_s}, {end_s}) s", field="window")
        self.trace = trace
        self.name = f"{trace.name}[{start_s:g}s,{end_s:g}s)"
        self.concurrency = trace.concurrency
        self.start_ms, self.end_ms = start_s * 1000.0, end_s * 1000.0
        arrivals = getattr(trace, "_arrivals_ms", None)
        if arrivals is None:
            arrivals = [r.arrival_ms for r in trace._firsts]
            trace._arrivals_ms = arrivals     # cached on the shared trace
        self._lo = bisect.bisect_left(arrivals, self.start_ms)
        self._hi = bisect.bisect_left(arrivals, self.end_ms)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": "window", "trace": self.trace.path,
                "start_s": self.start_ms / 1000.0, "end_s": self.end_ms / 1000.0,
                "num_requests": self._hi - self._lo}

    def _first_turns(self) -> Iterator[Request]:
        off = self.start_ms
        for r in self.trace._firsts[self._lo:self._hi]:
            yield r.arriving_at(r.arrival_ms - off)

    def _next_turn(self, request: Request) -> Request | None:
        return self.trace._next_turn(request)


def trace_duration_s(trace: TraceWorkload) -> float:
    """Time of the trace's last open-loop arrival (first arrival is t = 0)."""
    return trace._firsts[-1].arrival_ms / 1000.0 if trace._firsts else 0.0
