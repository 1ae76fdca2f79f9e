"""Traces that Dynamo's replay accepts are accepted here too (issue 12), with one note:
rows out of timestamp order (replayed in time order, ties in file order), negative
timestamps (shifted so the earliest arrival is 0), ``output_length: 0`` (completes at the end
of its prefill pass, no TTFT/E2E sample) and, beyond Dynamo, gzip-compressed files.

The ``peer`` tests replay the same tiny traces in ai-dynamo 1.6.1 and compare request by
request; they skip without it (``make peer``).
"""
from __future__ import annotations

import gzip
import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ms, run_peer, simulate
from dynosim.cli import main
from sim.errors import InputError
from sim.timing import FixedTiming
from sim.workloads import load_azure, load_mooncake

AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"

# Unsorted, a tie at 50 (file order: line 2 then line 4), a negative timestamp and an
# output_length 0. Input lengths are distinct so requests can be matched across simulators.
MIXED = [
    {"timestamp": 100, "input_length": 300, "output_length": 3, "hash_ids": [0]},
    {"timestamp": 50, "input_length": 200, "output_length": 0, "hash_ids": [1]},
    {"timestamp": -20, "input_length": 100, "output_length": 2, "hash_ids": [2]},
    {"timestamp": 50, "input_length": 150, "output_length": 4, "hash_ids": [3]},
    {"timestamp": 51, "input_length": 7000, "output_length": 0, "hash_ids": [4] * 14},
]


def write_rows(path: Path, rows: list[dict], *, gz: bool = False) -> Path:
    text = "".join(json.dumps(r) + "\n" for r in rows).encode()
    path.write_bytes(gzip.compress(text, mtime=0) if gz else text)
    return path


def fixed() -> FixedTiming:
    return FixedTiming(10.0, 5.0)


# -- loading ------------------------------------------------------------------------------

def test_unsorted_negative_and_zero_output_load(tmp_path: Path) -> None:
    w = load_mooncake(write_rows(tmp_path / "m.jsonl", MIXED))
    reqs = list(w)
    assert [r.index for r in reqs] == [2, 1, 3, 4, 0]         # time order, ties file order
    assert [r.arrival_ms for r in reqs] == [0.0, 70.0, 70.0, 71.0, 120.0]
    assert w.describe()["span_ms"] == 120.0
    notes = " ".join(w.notes)
    assert "-20 ms" in notes and "4 rows earlier" in notes and "2 requests with output_length 0" \
        in notes


def test_sorted_trace_has_no_notes(tmp_path: Path) -> None:
    rows = [dict(MIXED[0], timestamp=t, output_length=1) for t in (5, 5, 9)]
    w = load_mooncake(write_rows(tmp_path / "s.jsonl", rows))
    assert w.notes == [] and "notes" not in w.describe()
    assert [r.arrival_ms for r in w] == [0.0, 0.0, 4.0]


def test_speedup_applies_after_the_shift(tmp_path: Path) -> None:
    rows = [dict(MIXED[0], timestamp=t) for t in (1100, -1000, 1003)]
    w = load_mooncake(write_rows(tmp_path / "s.jsonl", rows), arrival_speedup_ratio=2)
    assert [r.arrival_ms for r in w] == [0.0, 1001.5, 1050.0]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-5, 5), st.integers(0, 3)), min_size=1, max_size=30))
def test_any_row_order_replays_sorted_ties_in_file_order(tmp_path_factory, stamps) -> None:
    """Property: whatever the file order, arrivals are non-decreasing from 0, ties keep file
    order, every row arrives exactly once, and each arrival is its timestamp minus the min."""
    path = tmp_path_factory.mktemp("p") / "t.jsonl"
    rows = [{"timestamp": ts, "input_length": 10, "output_length": out, "hash_ids": [i]}
            for i, (ts, out) in enumerate(stamps)]
    reqs = list(load_mooncake(write_rows(path, rows)))
    lo = min(ts for ts, _ in stamps)
    assert sorted(r.index for r in reqs) == list(range(len(stamps)))
    assert [(r.arrival_ms, r.index) for r in reqs] == sorted((float(ts - lo), i)
                                                              for i, (ts, _) in enumerate(stamps))


def test_gzip_trace_equals_plain(tmp_path: Path) -> None:
    plain = load_mooncake(write_rows(tmp_path / "m.jsonl", MIXED))
    packed = load_mooncake(write_rows(tmp_path / "m.jsonl.gz", MIXED, gz=True))
    assert [(r.index, r.arrival_ms, r.output_length) for r in plain] == \
        [(r.index, r.arrival_ms, r.output_length) for r in packed]
    assert packed.name == "m" and packed.notes[0] == "read as gzip"


def test_broken_gzip_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"timestamp": 0}\n')[:15])
    with pytest.raises(InputError, match=r"t\.jsonl\.gz: not a readable gzip file"):
        load_mooncake(path)


def test_azure_same_leniency(tmp_path: Path) -> None:
    text = (f"{AZURE_HEADER}\n2023-11-16 18:15:46.5,10,5\n2023-11-16 18:15:46.0,20,0\n"
            "2023-11-16 18:15:46.5,30,1\n")
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress(text.encode(), mtime=0))
    w = load_azure(path)
    assert [(r.index, r.arrival_ms, r.output_length) for r in w] == \
        [(1, 0.0, 0), (0, 500.0, 5), (2, 500.0, 1)]
    assert w.name == "a" and len(w.notes) == 3     # gzip, sorted, GeneratedTokens 0


# -- simulating -----------------------------------------------------------------------------

def test_zero_output_completes_at_prefill_end(tmp_path: Path, exact: bool) -> None:
    w = load_mooncake(write_rows(tmp_path / "m.jsonl", MIXED))
    res = simulate(w, exact=exact, timing=fixed(), num_workers=2)
    t = res.summary["totals"]
    assert (t["completed_requests"], t["num_ttft_samples"], t["total_output_tokens"]) == (5, 3, 9)
    assert t["duration_ms"] == 140.0
    c = res.metrics.columns()
    zero = c["output_length"] == 0
    assert all(math.isnan(x) for x in c["first_token_ms"][zero])
    # request 1 arrives at 70 on an idle worker: its prefill pass ends at 80
    assert c["last_token_ms"][1] == 80.0


def test_zero_output_fails_ttft_and_itl_limits_but_not_e2e(tmp_path: Path) -> None:
    w = load_mooncake(write_rows(tmp_path / "m.jsonl", MIXED))
    good = {}
    for key in ("ttft_ms", "itl_ms", "e2e_ms"):
        res = simulate(w, exact=False, timing=fixed(), num_workers=2, sla={key: 1000.0})
        good[key] = res.summary["goodput"]["good_requests"]
    assert good == {"ttft_ms": 3, "itl_ms": 3, "e2e_ms": 5}


def test_cli_prints_one_note_and_json_keeps_it(tmp_path: Path, capsys) -> None:
    path = write_rows(tmp_path / "m.jsonl.gz", MIXED, gz=True)
    assert main(["simulate", "--trace", str(path), "--timing", "fixed:10,5", "--json"]) == 0
    out, err = capsys.readouterr()
    notes = [x for x in err.splitlines() if "note:" in x]
    assert len(notes) == 1 and "gzip" in notes[0] and "output_length 0" in notes[0]
    assert json.loads(out)["workload"]["notes"][0] == "read as gzip"
    assert main(["simulate", "--trace", str(path), "--timing", "fixed:10,5", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


# -- against Dynamo's replay ----------------------------------------------------------------

def _by_input(records: list[dict], fields: tuple[str, ...]) -> dict[int, tuple]:
    return {r["input_length"]: tuple(r[f] for f in fields) for r in records}


@pytest.mark.peer
def test_peer_replays_unsorted_negative_and_zero_output_alike(tmp_path: Path,
                                                             peer_python: Path) -> None:
    trace = write_rows(tmp_path / "m.jsonl", MIXED)
    peer = run_peer(peer_python, trace, num_workers=2)
    assert "error" not in peer, peer
    res = simulate(load_mooncake(trace), exact=False, timing=fixed(), num_workers=2)
    ours = [json.loads(x) for x in _records(res)]
    for r in peer["per_request"]:
        r["worker"] = r["decode_worker_idx"]
    fields = ("arrival_time_ms", "first_admit_ms", "first_token_ms", "ttft_ms",
              "e2e_latency_ms", "output_length", "worker")
    assert _by_input(ours, fields) == _by_input(peer["per_request"], fields)
    # terminal time of the output_length-0 requests: ours keep it as the last token's time
    c = res.metrics.columns()
    for r in peer["per_request"]:
        i = int(next(j for j, n in enumerate(c["input_length"]) if n == r["input_length"]))
        assert c["last_token_ms"][i] == ms(r["terminal_time_ms"])
    s, t = peer["summary"], res.summary["totals"]
    for key in ("num_requests", "completed_requests", "total_input_tokens",
                "total_output_tokens", "duration_ms", "num_ttft_samples", "num_tpot_samples"):
        assert t[key] == s[key], key
    assert res.summary["latency_ms"]["e2e_latency"]["mean"] == ms(s["mean_e2e_latency_ms"])


@pytest.mark.peer
@pytest.mark.parametrize("key", ["ttft_ms", "itl_ms", "e2e_ms"])
def test_peer_goodput_with_zero_output(tmp_path: Path, peer_python: Path, key: str) -> None:
    trace = write_rows(tmp_path / "m.jsonl", MIXED)
    peer = run_peer(peer_python, trace, num_workers=2, sla={key: 1000.0})
    res = simulate(load_mooncake(trace), exact=False, timing=fixed(), num_workers=2,
                   sla={key: 1000.0})
    assert res.summary["goodput"]["good_requests"] == \
        peer["summary"]["goodput_completed_requests"]


@pytest.mark.peer
def test_peer_and_we_refuse_a_session_turn_before_its_predecessor(tmp_path: Path,
                                                                   peer_python: Path) -> None:
    rows = [dict(MIXED[0], session_id="s"), dict(MIXED[2], timestamp=50),
            dict(MIXED[3], timestamp=90, session_id="s")]
    trace = write_rows(tmp_path / "s.jsonl", rows)
    peer = run_peer(peer_python, trace)
    assert "trace line 3 has invalid delay -10" in peer.get("error", "")
    with pytest.raises(InputError, match=r"s\.jsonl:3, field 'timestamp': invalid delay -10 ms"):
        load_mooncake(trace)


@pytest.mark.peer
def test_peer_and_we_take_a_missing_input_length_from_hash_ids(tmp_path: Path,
                                                              peer_python: Path) -> None:
    trace = write_rows(tmp_path / "i.jsonl", [{"timestamp": 0, "output_length": 3,
                                              "hash_ids": [1, 2]}])
    peer = run_peer(peer_python, trace)
    w = load_mooncake(trace)
    assert [r.input_length for r in w] == [r["input_length"] for r in peer["per_request"]] \
        == [1024]
    assert "without input_length" in w.notes[0]


def test_closed_loop_needs_no_timestamps(tmp_path: Path) -> None:
    rows = [{"input_length": 10 * (i + 1), "output_length": 2, "hash_ids": [i]} for i in range(3)]
    w = load_mooncake(write_rows(tmp_path / "c.jsonl", rows), concurrency=1)
    assert [r.input_length for r in w] == [10]
    with pytest.raises(InputError, match="field 'timestamp': missing"):
        load_mooncake(tmp_path / "c.jsonl")


@pytest.mark.peer
def test_peer_refuses_gzip_we_read_it(tmp_path: Path, peer_python: Path) -> None:
    """A deliberate difference (README): Dynamo's mooncake reader takes no gzip."""
    trace = write_rows(tmp_path / "m.jsonl.gz", MIXED, gz=True)
    assert "failed to read line 1" in run_peer(peer_python, trace).get("error", "")
    assert load_mooncake(trace).describe()["num_requests"] == len(MIXED)


def _records(res) -> list[str]:
    import io
    buf = io.StringIO()
    res.metrics.write_jsonl(buf)
    return buf.getvalue().splitlines()


def test_shuffled_rows_simulate_identically(tmp_path: Path) -> None:
    """Row order in the file does not matter when timestamps are distinct."""
    rows = [{"timestamp": 7 * i, "input_length": 100 + i, "output_length": i % 4,
             "hash_ids": [i]} for i in range(40)]
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    a = simulate(load_mooncake(write_rows(tmp_path / "a.jsonl", rows)), exact=False,
                 timing=fixed(), num_workers=3)
    b = simulate(load_mooncake(write_rows(tmp_path / "b.jsonl", shuffled)), exact=False,
                 timing=fixed(), num_workers=3)
    key = ("input_length", "arrival_time_ms", "first_token_ms", "last_token_ms", "worker")
    assert _by_input([json.loads(x) for x in _records(a)], key) == \
        _by_input([json.loads(x) for x in _records(b)], key)
    assert a.summary["totals"] == b.summary["totals"]
