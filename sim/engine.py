"""The engine's public face: its configuration and the factory of the flavour cores.

Each worker runs one scheduler core, the *flavour* of the engine it models
(``EngineConfig.backend``, Dynamo's ``--backend``/``engine_type``):

* ``vllm`` - :mod:`sim.engines.vllm` over the block pool (:mod:`sim.kv_cache`);
* ``trtllm`` - :mod:`sim.engines.trtllm`, the vLLM core with TRT-LLM's
  ``GUARANTEED_NO_EVICT`` capacity scheduler;
* ``sglang`` - :mod:`sim.engines.sglang` over a token radix cache
  (:mod:`sim.radix_cache`).

The mechanics they share (pass loop, token stamping, records, forward-pass metrics, bulk
decode stretches) live in :mod:`sim.engines.base`. The timing model is chosen separately.
"""
from __future__ import annotations

from dataclasses import dataclass

from .engines.base import (REASON_BATCH_BUDGET, REASON_DECODE_KV_DEADLOCK, REASON_KV_CAPACITY,
                           REASON_KV_DEADLOCK, REASON_MAX_MODEL_LEN, REASON_SEQ_KV_CAPACITY,
                           EngineBase, FpmTotals, Seq)

__all__ = ["BACKENDS", "DEFAULT_BLOCK_SIZE", "SGLANG_KNOBS", "VLLM_KNOBS", "EngineConfig", "EngineBase", "FpmTotals", "Seq",
           "make_engine", "REASON_KV_CAPACITY", "REASON_MAX_MODEL_LEN", "REASON_BATCH_BUDGET",
           "REASON_SEQ_KV_CAPACITY", "REASON_DECODE_KV_DEADLOCK", "REASON_KV_DEADLOCK"]

BACKENDS = ("vllm", "sglang", "trtllm")
#: Dynamo's default KV block (SGLang: page) size per flavour (docs/dynosim/modeling.md).
DEFAULT_BLOCK_SIZE = {"vllm": 64, "sglang": 1, "trtllm": 32}
#: Knobs only the SGLang core has (Dynamo's names).
SGLANG_KNOBS = ("schedule_policy", "max_prefill_tokens", "chunked_prefill_size",
                "clip_max_new_tokens", "schedule_conservativeness")
#: Knobs of the vLLM-style cores, with the flavours that have them: SGLang batches under
#: ``max_prefill_tokens``/``chunked_prefill_size`` and retracts instead of preempting, and
#: TRT-LLM's GUARANTEED_NO_EVICT never preempts.
VLLM_KNOBS = {"max_num_batched_tokens": ("vllm", "trtllm"),
              "enable_chunked_prefill": ("vllm", "trtllm"),
              "preemption_mode": ("vllm",)}


@dataclass
class EngineConfig:
    block_size: int | None = None        # tokens per KV block (SGLang: page); None = flavour default
    num_gpu_blocks: int = 16384          # KV capacity per worker, in blocks
    max_num_seqs: int = 256              # running sequences per worker
    max_num_batched_tokens: int = 8192   # token budget per pass
    max_model_len: int | None = None     # reject prompts at least this long
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    preemption_mode: str = "lifo"        # victim when blocks run out: lifo (newest) | fifo
    backend: str = "vllm"                # scheduler core: vllm | sglang | trtllm
    # SGLang core only (Dynamo's names and defaults, lib/mocker/src/scheduler/sglang/config.rs)
    schedule_policy: str = "fifo"        # fifo (= fcfs) | lpm (longest prefix match)
    max_prefill_tokens: int = 16384      # prompt tokens admitted per extend pass
    chunked_prefill_size: int = 8192     # prompt tokens per chunk
    clip_max_new_tokens: int = 4096      # output tokens reserved per request, at most
    schedule_conservativeness: float = 1.0   # scales the new-token ratio
    # G2 host KV tier (vLLM core only; Dynamo's native_host_offload, sim/host_tier.py)
    num_host_blocks: int | None = None   # host blocks per DP rank; None = no host tier
    host_d2h_gbps: float = 32.0          # device -> host bandwidth, decimal GB/s (0 = instant)
    host_h2d_gbps: float = 32.0          # host -> device bandwidth, decimal GB/s (0 = instant)
    kv_cache_bytes_per_token: int | None = None   # KV bytes of one token (sizes host copies)

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown engine backend {self.backend!r} "
                             f"(one of {', '.join(BACKENDS)})")
        if self.block_size is None:
            self.block_size = DEFAULT_BLOCK_SIZE[self.backend]


def make_engine(worker_id: int, cfg: EngineConfig, timing, metrics, **kw) -> EngineBase:
    """The scheduler core of ``cfg.backend`` for one worker (keyword arguments: see
    :class:`sim.engines.base.EngineBase`)."""
    if cfg.backend == "vllm":
        from .engines.vllm import VllmEngine as cls
    elif cfg.backend == "trtllm":
        from .engines.trtllm import TrtllmEngine as cls
    else:
        from .engines.sglang import SglangEngine as cls
    return cls(worker_id, cfg, timing, metrics, **kw)
