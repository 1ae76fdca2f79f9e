"""Side-by-side parity with Dynamo's own offline replay (ai-dynamo 1.6.1) on the full Mooncake
conversation trace (12,031 requests), for the three parity configurations:

  (a) 8 round-robin workers, 512-token blocks                      -> within 2%
  (b) 4 round-robin workers, 64-token blocks, 4096 GPU blocks       -> within 2%
  (c) 4 KV-router workers,   64-token blocks, 4096 GPU blocks       -> within 5%
      (Dynamo breaks KV-router cost ties with an unseeded RNG: run-to-run spread ~0.05%)

TTFT, ITL and E2E mean/median/p90/p99 are compared, and the completed-request counts must
be equal. Round robin is deterministic in both simulators, so (a) and (b) are also held to
the oracle tolerance: request by request (same worker, prefix reuse and output length;
admission and token times within 1e-9 relative or 1e-6 ms) and every latency statistic and
throughput total within 1e-9 relative. The peer runs through Dynamo's driver
``peer/dynosim_peer.py`` of the shared reference material ($DYNOSIM_SHARED) with the
interpreter of a venv that has ai-dynamo 1.6.1: $DYNOSIM_PEER_VENV, else ./.peer-venv
(``make peer``). Without one the tests skip. The trace is the bundled copy.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from conftest import (SHARED, compare_requests as _compare_requests, latency_mismatches,
                      load_mooncake, replay_beside_peer)
from sim.config import BUNDLED_TRACES, DATA_DIR
from sim.engine import EngineConfig
from sim.simulator import ClusterConfig, Simulation
from sim.timing import PolynomialTiming

pytestmark = pytest.mark.peer

PEER_SCRIPT = SHARED / "peer" / "dynosim_peer.py"
CONVERSATION_TRACE = DATA_DIR / BUNDLED_TRACES["mooncake_conversation"]

# name -> (workers, router (ours, peer), block size, gpu blocks or None, tolerance)
CONFIGS = {
    "a_rr8_b512": (8, ("round_robin", "round_robin"), 512, None, 0.02),
    "b_rr4_b64_nb4096": (4, ("round_robin", "round_robin"), 64, 4096, 0.02),
    "c_kv4_b64_nb4096": (4, ("kv", "kv_router"), 64, 4096, 0.05),
}


@pytest.fixture(scope="module")
def peer_python(peer_python: Path) -> Path:
    if not PEER_SCRIPT.is_file():
        pytest.skip("Dynamo's replay driver peer/dynosim_peer.py not found (set DYNOSIM_SHARED "
                    "to the shared reference material)")
    return peer_python


def _peer_command(py: Path, name: str, out_dir: Path) -> list[str]:
    workers, (_, peer_router), bs, nb, _ = CONFIGS[name]
    cmd = [str(py), str(PEER_SCRIPT), "trace", str(CONVERSATION_TRACE),
           "--num-workers", str(workers), "--router-mode", peer_router,
           "--block-size", str(bs)]
    if nb is not None:
        cmd += ["--num-gpu-blocks", str(nb)]
    if peer_router == "round_robin":
        cmd += ["--per-request-jsonl", str(out_dir / f"{name}.requests.jsonl")]
    return cmd


def _ours(name: str):
    workers, (router, _), bs, nb, _ = CONFIGS[name]
    eng = EngineConfig(block_size=bs) if nb is None else EngineConfig(block_size=bs,
                                                                      num_gpu_blocks=nb)
    sim = Simulation(load_mooncake(CONVERSATION_TRACE), engine=eng, timing=PolynomialTiming(),
                     cluster=ClusterConfig(num_workers=workers), router=router, seed=0,
                     exact=False)
    return sim.run()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_parity_with_dynamo_replay(name: str, peer_python: Path) -> None:
    tol = CONFIGS[name][4]
    with tempfile.TemporaryDirectory() as tmp:
        result, peer = replay_beside_peer(_peer_command(peer_python, name, Path(tmp)),
                                          lambda: _ours(name), Path(tmp), timeout=900)
        requests = Path(tmp) / f"{name}.requests.jsonl"
        if requests.is_file():
            _compare_requests(result.metrics.columns(),
                              [json.loads(line) for line in open(requests)])
    ours = result.summary
    p_tot, o_tot = peer["totals"], ours["totals"]
    assert o_tot["completed_requests"] == p_tot["completed_requests"]
    assert o_tot["num_requests"] == p_tot["num_requests"]
    assert o_tot["total_input_tokens"] == p_tot["total_input_tokens"]
    assert o_tot["total_output_tokens"] == p_tot["total_output_tokens"]
    bad = latency_mismatches(ours, peer, tol)
    assert not bad, "\n".join(bad)
    if requests.is_file():        # round robin: exact parity, not just distributional
        for metric in ("ttft", "ttst", "tpot", "itl", "e2e_latency"):
            for stat, want in peer["latency_ms"][metric].items():
                got = ours["latency_ms"][metric][stat]
                assert got == pytest.approx(want, rel=1e-9, abs=1e-12), (metric, stat)
        for key in ("duration_ms", "request_throughput_rps", "input_throughput_tok_s",
                    "output_throughput_tok_s", "prefix_cache_reused_ratio"):
            assert o_tot[key] == pytest.approx(p_tot[key], rel=1e-9), key
