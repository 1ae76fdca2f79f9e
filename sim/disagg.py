"""Disaggregated prefill/decode: the pools' configuration and the KV handoff's timing.

Dynamo's offline disaggregated replay (Dynamo's ``docs/dynosim/modeling.md``) runs two
pools of workers, each with its own router and engine configuration.
:class:`sim.simulator.Simulation` drives the request flow when given a :class:`DisaggConfig`:

1. arrival -> prefill router -> a prefill worker runs a copy of the request with one
   output token; when that token is emitted the source *holds* the prompt's KV;
2. the decode router picks a decode worker, which *reserves* blocks for the prompt at its
   next pass boundary (at once when idle; before that boundary's activations) - Dynamo's
   WaitingForRemoteKv; a head that failed is retried only after the worker's capacity
   changed (a request left it or was preempted: Dynamo's capacity generation). The
   leading full prompt blocks resident there (active or cached) are pinned, the rest
   taken fresh;
3. the KV transfer takes :func:`transfer_ms` from the reservation (``full_prompt``: the
   prompt's tokens; ``destination_missing``: the fresh blocks' tokens); at the first pass
   boundary of the decode worker at or after its end the request is *activated* (those
   of one boundary in reservation order; a zero-time transfer in the reservation's own
   step, as Dynamo 1.6.1 does): its fresh
   full prompt blocks join the worker's prefix cache (both modes; the mocker's
   ``activate_destination_lease``), it joins the waiting queue with its prompt computed, is
   charged no prefill, and emits all its output tokens (the first one is the
   client-visible first token). A decode worker's passes cost no prefill time (a preempted
   request's recompute there included: ``predict_prefill_duration`` of a decode worker);
4. the prefill worker *releases* the held KV at its first pass boundary at or after the
   activation (at once when idle).

Concurrent transfers do not contend (line rate per request, as in Dynamo).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .engine import EngineConfig

TRANSFER_TIMING_MODES = ("full_prompt", "destination_missing")
ROLES = ("prefill", "decode")


def transfer_ms(tokens: int, kv_bytes_per_token: int | None,
                bandwidth_gbps: float | None) -> float:
    """KV handoff delay in ms: ``tokens * kv_bytes_per_token`` bytes at ``bandwidth_gbps``
    decimal GB/s (Dynamo's ``HandoffTransferTiming``). No bytes-per-token, no bandwidth
    (None: unset, the AISimulate engine default of Dynamo 1.6.1's mocker) or a bandwidth
    of 0 means no delay. Example: 128 tokens x 1e6 B at 1 GB/s = 128 ms."""
    if kv_bytes_per_token is None or bandwidth_gbps is None or bandwidth_gbps <= 0:
        return 0.0
    return tokens * float(kv_bytes_per_token) / (bandwidth_gbps * 1e9) * 1000.0


@dataclass
class DisaggConfig:
    """Two pools and their handoff (Dynamo's names; units in the comments)."""

    num_prefill_workers: int = 1
    num_decode_workers: int = 1
    prefill_engine: EngineConfig = field(default_factory=EngineConfig)
    decode_engine: EngineConfig = field(default_factory=EngineConfig)
    prefill_router: str = "round_robin"      # a sim.router mode, per pool
    decode_router: str = "round_robin"
    # GB/s (decimal); None (unset, Dynamo's default) or 0 = no transfer delay
    kv_transfer_bandwidth: float | None = None
    kv_bytes_per_token: int | None = None    # bytes of KV per prompt token; None = no delay
    kv_transfer_timing_mode: str = "full_prompt"   # or destination_missing
    prefill_gpus_per_worker: int = 1         # for per-role GPU-hours
    decode_gpus_per_worker: int = 1
    # per-role timing (a sim.timing.TimingModel, e.g. another TP's GPU table); None = the
    # run's timing model
    prefill_timing: Any = None
    decode_timing: Any = None

    def __post_init__(self) -> None:
        if self.num_prefill_workers < 1 or self.num_decode_workers < 1:
            raise ValueError("a disaggregated cluster needs at least one prefill and one "
                             "decode worker")
        if self.kv_transfer_bandwidth is not None and self.kv_transfer_bandwidth < 0:
            raise ValueError(f"kv_transfer_bandwidth must be >= 0 GB/s, got "
                             f"{self.kv_transfer_bandwidth}")
        if self.kv_transfer_timing_mode not in TRANSFER_TIMING_MODES:
            raise ValueError(f"unknown kv_transfer_timing_mode {self.kv_transfer_timing_mode!r}"
                             f" (one of {', '.join(TRANSFER_TIMING_MODES)})")
        if self.prefill_engine.block_size != self.decode_engine.block_size:
            raise ValueError(f"prefill and decode pools need the same block_size (got "
                             f"{self.prefill_engine.block_size} and "
                             f"{self.decode_engine.block_size})")
        for role in ROLES:
            backend = getattr(self, f"{role}_engine").backend
            if backend != "vllm":
                raise ValueError(f"disaggregated serving is modelled for the vllm backend "
                                 f"only ({role} engine backend is {backend})")

    def delay_ms(self, prompt_tokens: int, missing_tokens: int) -> float:
        """The transfer time of one handoff (see :func:`transfer_ms`); ``missing_tokens``:
        the destination's fresh prompt blocks x block size (Dynamo's
        ``transferable_prompt_tokens``)."""
        tokens = (prompt_tokens if self.kv_transfer_timing_mode == "full_prompt"
                  else missing_tokens)
        return transfer_ms(tokens, self.kv_bytes_per_token, self.kv_transfer_bandwidth)


class Handoff:
    """One request's prefill-to-decode handoff and its lifecycle times (ms, Dynamo's
    per-request field names: ``source_held_ms`` ... ``source_released_ms``)."""

    __slots__ = ("req", "src", "src_seq", "dst", "dst_seq", "keys", "source_held_ms",
                 "destination_reserved_ms", "destination_activated_ms", "source_released_ms",
                 "ready_ms", "reservation_order", "attempted_gen")

    def __init__(self, req, src, src_seq, held_ms: float) -> None:
        self.req = req                   # the original request (full output length)
        self.src = src                   # prefill Worker
        self.src_seq = src_seq           # the prefill copy (holds the KV until released)
        self.dst = None                  # decode Worker
        self.dst_seq = None              # the decode copy, once reserved
        self.keys = None                 # prompt-block keys from the decode router
        self.source_held_ms = held_ms
        self.destination_reserved_ms = float("nan")
        self.destination_activated_ms = float("nan")
        self.source_released_ms = float("nan")
        self.ready_ms = float("nan")     # transfer end
        self.reservation_order = -1      # the run's count of reservations before this one
        self.attempted_gen = -1          # decode capacity generation of its last failed try
