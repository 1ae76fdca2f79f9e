"""Run one dynosim replay and print JSON: summary, replay wall time, peak RSS.

Used by ``peer_side_by_side.py`` as a separate process so peak RSS is per run.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--num-workers", type=int, required=True)
    ap.add_argument("--router-mode", default="round_robin")
    ap.add_argument("--backend", default="vllm", choices=("vllm", "sglang", "trtllm"))
    ap.add_argument("--block-size", type=int, default=None, help="default: the backend's")
    ap.add_argument("--num-gpu-blocks", type=int, default=16384)
    ap.add_argument("--arrival-speedup-ratio", type=float, default=1.0)
    ap.add_argument("--exact-steps", action="store_true")
    # disaggregated pools (sim.disagg): both sizes given = disaggregated
    ap.add_argument("--num-prefill-workers", type=int, default=None)
    ap.add_argument("--num-decode-workers", type=int, default=None)
    ap.add_argument("--kv-transfer-bandwidth", type=float, default=64.0)
    ap.add_argument("--kv-bytes-per-token", type=int, default=None)
    a = ap.parse_args()
    t_import = time.perf_counter()
    from sim.disagg import DisaggConfig
    from sim.engine import EngineConfig
    from sim.simulator import ClusterConfig, Simulation
    from sim.timing import PolynomialTiming
    from sim.workloads import load_mooncake
    t0 = time.perf_counter()
    wl = load_mooncake(a.trace, arrival_speedup_ratio=a.arrival_speedup_ratio)
    eng = EngineConfig(backend=a.backend, block_size=a.block_size,
                       num_gpu_blocks=a.num_gpu_blocks)
    disagg = None
    if a.num_prefill_workers is not None:
        disagg = DisaggConfig(num_prefill_workers=a.num_prefill_workers,
                              num_decode_workers=a.num_decode_workers, prefill_engine=eng,
                              decode_engine=eng, prefill_router=a.router_mode,
                              decode_router=a.router_mode,
                              kv_transfer_bandwidth=a.kv_transfer_bandwidth,
                              kv_bytes_per_token=a.kv_bytes_per_token)
    sim = Simulation(wl, engine=eng, timing=PolynomialTiming(),
                     cluster=ClusterConfig(num_workers=a.num_workers), router=a.router_mode,
                     seed=0, exact=a.exact_steps, disagg=disagg)
    res = sim.run()
    wall = time.perf_counter() - t0
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    json.dump({"summary": res.summary, "replay_wall_s": wall, "import_s": t0 - t_import,
               "peak_rss_mb": rss_kb / 1024.0}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
