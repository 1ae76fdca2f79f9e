"""TRT-LLM flavour: the vLLM core with TensorRT-LLM's ``GUARANTEED_NO_EVICT`` capacity
scheduler, as in Dynamo's mocker (``engine_type=trtllm``, PR #10193; policy seams in
``lib/mocker/src/scheduler/vllm/policy.rs``):

* a request's output budget is clamped so that prompt + output fits the pool; a prompt
  that alone fills the pool is rejected;
* admission reserves the request's whole to-completion footprint,
  ``ceil((prompt + max_output) / block_size)`` blocks less its *active* cached prefix,
  against the blocks that neither running sequences hold nor their own to-completion
  footprints still claim. The head that does not fit blocks the queue (FCFS);
* no prefix recompute rule (a fully cached prompt computes nothing), and no preemption:
  the reservation guarantees every running sequence its blocks.

Block size defaults to 32 (``docs/dynosim/modeling.md``). Everything else - chunked
prefill under ``max_num_batched_tokens``, block registration, pass timing, bulk decode
stretches - is the vLLM core's.
"""
from __future__ import annotations

from .base import REASON_KV_CAPACITY, REASON_MAX_MODEL_LEN, Seq
from .vllm import VllmEngine


class TrtllmEngine(VllmEngine):
    """One aggregated TRT-LLM worker (one DP rank)."""

    def add_request(self, req, keys=None) -> None:
        super().add_request(req, keys)
        s = self.waiting[-1]
        room = self.capacity_tokens - s.prompt_len
        if 0 < room < s.max_out:
            s.max_out = room          # Dynamo clamps the output to what the pool can hold

    def _lookup(self, s: Seq) -> tuple[int, int]:
        """(cached, active cached) tokens of the known sequence (no recompute rule)."""
        return self._prefix_hits(s)

    def _to_completion(self, s: Seq) -> int:
        return (s.prompt_len + s.max_out + self.bs - 1) // self.bs

    def _fits(self, s: Seq, active_cached: int) -> bool:
        reserved = 0
        for r in self.running:
            left = self._to_completion(r) - len(r.blocks)
            if left > 0:
                reserved += left
        free = self.cfg.num_gpu_blocks - self.kv.num_active
        available = free - reserved if free > reserved else 0
        needed = self._to_completion(s) - active_cached // self.bs
        return needed <= available

    def _reject_reason(self, s: Seq) -> int:
        cfg = self.cfg
        if s.prompt_len >= self.capacity_tokens or self._to_completion(s) > cfg.num_gpu_blocks:
            return REASON_KV_CAPACITY
        if cfg.max_model_len is not None and s.prompt_len >= cfg.max_model_len:
            return REASON_MAX_MODEL_LEN
        return super()._reject_reason(s)

    def _preempt(self) -> Seq | None:
        return None               # GUARANTEED_NO_EVICT never preempts
