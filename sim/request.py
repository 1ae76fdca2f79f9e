"""The workload's unit: one request as it arrives at the cluster.

Kept deliberately small (``__slots__``): a million-request run holds only the
requests in flight, the rest stream from the workload iterator.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Request:
    index: int                 # 0-based position in the workload (trace line order)
    arrival_ms: float          # virtual arrival time, first arrival rebased to 0, speed-up applied
    input_length: int          # prompt tokens
    output_length: int         # tokens to generate (>= 1)
    # Prefix identity of the prompt in trace blocks of ``trace_block_size`` tokens: equal
    # leading ids mean equal leading tokens. ``None`` means the prompt shares nothing.
    hash_ids: tuple[int, ...] | None = None
    trace_block_size: int = 512
    session_id: str | None = None   # closed-loop multi-turn session (later turns wait)
    delay_ms: float = 0.0           # think time after the previous turn of the session completes
    line: int = 0                   # 1-based source line, for messages

    def arriving_at(self, arrival_ms: float) -> "Request":
        """This request with another arrival time: ``dataclasses.replace(self,
        arrival_ms=...)`` without its per-call field walk (workloads make one per arrival)."""
        return Request(self.index, arrival_ms, self.input_length, self.output_length,
                       self.hash_ids, self.trace_block_size, self.session_id, self.delay_ms,
                       self.line)
