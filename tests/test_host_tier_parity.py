"""G2 host KV tier side by side with Dynamo 1.6.1's replay, issue 15 case (c): 4 round-robin
workers, 64-token blocks, ``--num-gpu-blocks 4096 --num-host-blocks 16384``, 262,144 B/token
(Qwen3-32B bf16 KV), Dynamo's default 32 GB/s each way, on the Mooncake conversation trace.

Asserted: the issue's 2% on TTFT, ITL and E2E mean/p50/p90/p99, the same completed count,
prefix reuse and host-hit requests within 2%, and every request matching Dynamo's request by
request (worker, prefix reuse, first admission, first and last token): Dynamo's round-robin
runs are deterministic. Skips without the peer.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from conftest import SHARED, latency_mismatches, load_mooncake, replay_beside_peer
from sim.config import BUNDLED_TRACES, DATA_DIR
from sim.engine import EngineConfig
from sim.simulator import ClusterConfig, Simulation
from sim.timing import PolynomialTiming

PEER_SCRIPT = SHARED / "peer" / "dynosim_peer.py"
CONVERSATION_TRACE = DATA_DIR / BUNDLED_TRACES["mooncake_conversation"]
TOL = 0.02


def _ours(d2h_gbps: float = 32.0):
    eng = EngineConfig(block_size=64, num_gpu_blocks=4096, num_host_blocks=16384,
                       kv_cache_bytes_per_token=262144, host_d2h_gbps=d2h_gbps)
    sim = Simulation(load_mooncake(CONVERSATION_TRACE), engine=eng, timing=PolynomialTiming(),
                     cluster=ClusterConfig(num_workers=4), router="round_robin", seed=0)
    return sim.run()


def _peer_cmd(peer_python: Path, reqs: Path, *extra: str) -> list[str]:
    """Dynamo's replay of case (c), writing its per-request records to ``reqs``."""
    return [str(peer_python), str(PEER_SCRIPT), "trace", str(CONVERSATION_TRACE),
            "--num-workers", "4", "--router-mode", "round_robin", "--block-size", "64",
            "--num-gpu-blocks", "4096", "--num-host-blocks", "16384",
            "--kv-bytes-per-token", "262144", *extra, "--per-request-jsonl", str(reqs)]


@pytest.mark.peer
def test_host_tier_within_tolerance_of_dynamo(peer_python: Path) -> None:
    if not PEER_SCRIPT.is_file():
        pytest.skip("Dynamo's replay driver peer/dynosim_peer.py not found (set DYNOSIM_SHARED)")
    with tempfile.TemporaryDirectory() as tmp:
        reqs = Path(tmp) / "c.requests.jsonl"
        cmd = _peer_cmd(peer_python, reqs)
        result, peer = replay_beside_peer(cmd, _ours, Path(tmp))
        records = [json.loads(x) for x in open(reqs)]
    o_tot, p_tot = result.summary["totals"], peer["totals"]
    assert o_tot["completed_requests"] == p_tot["completed_requests"] == 12031
    bad = latency_mismatches(result.summary, peer, TOL)
    assert not bad, "; ".join(bad)
    assert o_tot["prefix_cache_reused_ratio"] == pytest.approx(
        p_tot["prefix_cache_reused_ratio"], rel=TOL)
    peer_hits = sum(1 for r in records
                    if (r["admission_history"][0].get("host_reused_input_tokens") or 0) > 0)
    ours_hits = result.summary["kv_host_tier"]["host_hit_requests"]
    assert peer_hits > 0 and ours_hits == pytest.approx(peer_hits, rel=TOL)
    assert _matching_requests(result.metrics.columns(), records) == len(records) == 12031


@pytest.mark.peer
def test_instant_d2h_lane_matches_dynamo_request_by_request(peer_python: Path) -> None:
    """``--host-d2h-gbps 0`` (stores complete at once, ``Lane``'s 0 = instantaneous) on case
    (c): every request equal to Dynamo's, as at the default 32 GB/s. (s8-fixE: a reported
    0.06-0.3 % gap with d2h 0 did not reproduce with round robin; the KV router's runs differ
    by that much at any bandwidth, from Dynamo's random cost ties.)"""
    if not PEER_SCRIPT.is_file():
        pytest.skip("Dynamo's replay driver peer/dynosim_peer.py not found (set DYNOSIM_SHARED)")
    with tempfile.TemporaryDirectory() as tmp:
        reqs = Path(tmp) / "c.requests.jsonl"
        cmd = _peer_cmd(peer_python, reqs, "--host-d2h-gbps", "0")
        result, peer = replay_beside_peer(cmd, lambda: _ours(d2h_gbps=0.0), Path(tmp))
        records = [json.loads(x) for x in open(reqs)]
    assert not latency_mismatches(result.summary, peer, 1e-9)
    assert _matching_requests(result.metrics.columns(), records) == len(records) == 12031


def _matching_requests(c: dict, peer: list[dict]) -> int:
    """Requests whose worker, prefix reuse, first admission, first and last token equal the
    peer's (within 1e-9 relative); records pair on (arrival, isl, osl), then the worker."""
    by_key: dict[tuple, list[dict]] = {}
    for r in peer:
        by_key.setdefault((r["arrival_time_ms"], r["input_length"],
                           r["requested_output_length"]), []).append(r)
    n = 0
    for i in range(len(c["request_index"])):
        cands = by_key[(float(c["arrival_time_ms"][i]), int(c["input_length"][i]),
                        int(c["requested_output_length"][i]))]
        cands = [r for r in cands if r["decode_worker_idx"] == int(c["worker"][i])]
        if (len(cands) == 1 and int(c["reused_input_tokens"][i]) == cands[0]["reused_input_tokens"]
                and all(float(c[col][i]) == pytest.approx(cands[0][col], rel=1e-9, abs=1e-6)
                        for col in ("first_admit_ms", "first_token_ms", "last_token_ms"))):
            n += 1
    return n


@pytest.mark.peer
def test_kv_router_sees_host_tier_hits_as_dynamo(peer_python: Path) -> None:
    """Case (c)'s deployment with the KV router (issue 15: KV-routed runs within 3%): Dynamo's
    router credits host-tier hits (host_cache_hit_weight 0.75; with 0 its prefix reuse drops
    from 12.7% to 8.7% of input tokens and TTFT rises 3-6%), and so does ours."""
    if not PEER_SCRIPT.is_file():
        pytest.skip("Dynamo's replay driver peer/dynosim_peer.py not found (set DYNOSIM_SHARED)")

    def ours(seed: int = 0):
        eng = EngineConfig(block_size=64, num_gpu_blocks=4096, num_host_blocks=16384,
                           kv_cache_bytes_per_token=262144)
        return Simulation(load_mooncake(CONVERSATION_TRACE), engine=eng,
                          timing=PolynomialTiming(), cluster=ClusterConfig(num_workers=4),
                          router="kv", seed=seed).run()

    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(peer_python), str(PEER_SCRIPT), "trace", str(CONVERSATION_TRACE),
               "--num-workers", "4", "--router-mode", "kv_router", "--block-size", "64",
               "--num-gpu-blocks", "4096", "--num-host-blocks", "16384",
               "--kv-bytes-per-token", "262144"]
        result, peer = replay_beside_peer(cmd, ours, Path(tmp))
        peers = [peer]
        for k in (1, 2):        # Dynamo's KV router breaks ties at random: three of its runs
            (Path(tmp) / f"r{k}").mkdir()
            peers.append(replay_beside_peer(cmd, lambda: None, Path(tmp) / f"r{k}")[1])
    tol = 0.03
    # Both routers break ties at random: Dynamo's unseeded (its runs differ by up to ~4 % on
    # p99 TTFT and ~5 % on prefix reuse here: p99 2,332-2,438 ms over the runs seen, reuse
    # 12.4-13.0 %), ours from the run seed (seeds 0-4: p99 2,311-2,386 ms, reuse 12.3-12.5 %).
    # So three runs of each are compared, and a statistic is a miss only when no pair of
    # runs is within 3 % (with one run of ours, all three of Dynamo's landing above ours + 3 %
    # failed now and then).
    mine = [result.summary] + [ours(seed).summary for seed in (1, 2)]
    for p in peers:
        for o in mine:
            assert o["totals"]["completed_requests"] == p["totals"]["completed_requests"] \
                == 12031
    misses = [latency_mismatches(o, p, tol) for o in mine for p in peers]
    common = set.intersection(*({m.split(":")[0] for m in ms} for ms in misses))
    assert not common, "; ".join(m for ms in misses for m in ms if m.split(":")[0] in common)
    assert any(o["totals"]["prefix_cache_reused_ratio"]
               == pytest.approx(p["totals"]["prefix_cache_reused_ratio"], rel=tol)
               for o in mine for p in peers), \
        ([o["totals"]["prefix_cache_reused_ratio"] for o in mine],
         [p["totals"]["prefix_cache_reused_ratio"] for p in peers])
