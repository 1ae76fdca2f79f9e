"""Scheduler parity on a silicon replay (issue 4): given the same timing data, our engine and
Dynamo's offline replay (ai-dynamo 1.6.1) agree on a measured static-concurrency run.

``bench/silicon_side_by_side.py`` tabulates our GPU table into the NPZ format of Dynamo's
``dynamo_profile`` timing provider. Our engine with a timing model that looks the NPZ up the
way Dynamo does must reproduce Dynamo's mean TTFT and TPOT on a silicon row to round-off; the
bench reports what remains between the table and the NPZ format. Skips without the peer.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import silicon_side_by_side as sbs  # noqa: E402

pytestmark = pytest.mark.peer


@pytest.mark.parametrize("concurrency", [16])
def test_same_npz_timing_gives_dynamos_means(tmp_path: Path, concurrency: int) -> None:
    t = sbs.load_gpu_timing(*sbs.DYNAMO_GROUP)
    peer = sbs.Peer(sbs.default_peer_python(), sbs.DEFAULT_PEER_SCRIPT, tmp_path / "t.npz",
                    t.num_gpu_blocks)
    why = peer.runnable()
    if why:
        pytest.skip(why)
    row = next(r for r in sbs.load_rows() if sbs.group_key(r) == sbs.DYNAMO_GROUP
               and r["isl"] == r["osl"] == 1024 and int(r["concurrency"]) == concurrency)
    grid = sbs.npz_grid(1024, 1024, sbs.REPLAY["max_num_batched_tokens"],
                        t.num_gpu_blocks * t.block_size, 256)
    sbs.build_npz(t, peer.npz, grid)
    ours = sbs.run_ours_with(row, sbs.NpzTiming(sbs.NpzLookup.load(peer.npz)))
    theirs = sbs.run_peer_row(peer, row)
    assert ours["completed"] == theirs["completed"] == concurrency * sbs.REPLAY["requests_per_concurrency"]
    for k in ("ttft", "tpot"):
        assert ours[k] == pytest.approx(theirs[k], rel=1e-9), k
    # and the NPZ is a faithful copy of our table: the table's own replay is within 1 %
    table = sbs.run_ours(row)
    for k in ("ttft", "tpot"):
        assert table[k] == pytest.approx(theirs[k], rel=0.01), k
