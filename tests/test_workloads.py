"""Workload loaders and generators: real traces, every bad-input path, synthetic statistics."""
from __future__ import annotations

import heapq
import json
import math
import time
from pathlib import Path

import numpy as np
import pytest

from sim.errors import InputError
from sim.request import Request
from sim.workloads import (Workload, closed_loop, constant, diurnal, fixed, from_config, gamma,
                           load_azure, load_mooncake, lognormal, nhpp, poisson, ramp, synthetic,
                           uniform)

from sim.config import BUNDLED_TRACES, DATA_DIR

# The bundled copies of the Mooncake conversation and Azure conversation traces.
CONVERSATION = DATA_DIR / BUNDLED_TRACES["mooncake_conversation"]
AZURE_CONV = DATA_DIR / BUNDLED_TRACES["azure_conversation"]
AZURE_HEADER = "TIMESTAMP,ContextTokens,GeneratedTokens"
GOOD = {"timestamp": 0, "input_length": 600, "output_length": 10, "hash_ids": [1, 2]}


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def jsonl(*rows: dict | str) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


def row(**changes: object) -> dict:
    out = dict(GOOD)
    for key, value in changes.items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


DROP = object()


def fields(r: Request) -> tuple:
    return (r.index, r.arrival_ms, r.input_length, r.output_length, r.hash_ids, r.session_id,
            r.delay_ms)


def assert_prefix_chained(reqs: list[Request]) -> None:
    """Every hash_id sits at one position after one predecessor (equal id = equal prefix)."""
    seen: dict[int, tuple[int, int | None]] = {}
    for r in reqs:
        for k, h in enumerate(r.hash_ids or ()):
            where = (k, r.hash_ids[k - 1] if k else None)
            assert seen.setdefault(h, where) == where, (r.index, k, h)


# -- real traces ----------------------------------------------------------------------------

@pytest.mark.skipif(not CONVERSATION.exists(), reason="shared trace data not present")
def test_conversation_trace_loads_consistently() -> None:
    w = load_mooncake(CONVERSATION)
    reqs = list(w)
    assert len(reqs) == 12031 and w.describe()["num_requests"] == 12031
    assert reqs[0].arrival_ms == 0.0 and reqs[0].line == 1 and reqs[-1].line == 12031
    assert [r.index for r in reqs] == list(range(12031))
    arrivals = [r.arrival_ms for r in reqs]
    assert arrivals == sorted(arrivals) and arrivals[-1] == pytest.approx(3_536_999.0)
    assert w.describe()["mean_input_length"] == pytest.approx(12035, abs=1)
    for r in reqs:
        assert isinstance(r.hash_ids, tuple) and r.trace_block_size == 512
        assert len(r.hash_ids) == math.ceil(r.input_length / 512)
    assert_prefix_chained(reqs)
    assert w.on_complete(reqs[0], 5.0) == []   # no sessions in this trace


@pytest.mark.skipif(not AZURE_CONV.exists(), reason="shared trace data not present")
def test_azure_trace_loads() -> None:
    w = load_azure(AZURE_CONV)
    reqs = list(w)
    assert len(reqs) == 19366
    assert reqs[0].arrival_ms == 0.0 and reqs[0].line == 2 and reqs[-1].line == 19367
    # 18:15:50.9951690 - 18:15:46.6805900 = 4.3145790 s
    assert reqs[1].arrival_ms == pytest.approx(4314.579, abs=1e-9)
    assert (reqs[1].input_length, reqs[1].output_length) == (396, 109)
    assert all(r.hash_ids is None for r in reqs)
    arrivals = [r.arrival_ms for r in reqs]
    assert arrivals == sorted(arrivals) and 3.4e6 < arrivals[-1] < 3.6e6


def test_azure_fractional_digits_are_exact(tmp_path: Path) -> None:
    path = write(tmp_path, "a.csv", "\n".join([
        AZURE_HEADER,
        "2023-11-16 23:59:59.9999999,10,5",
        "2023-11-17 00:00:00.0000000,10,5",     # 100 ns later, across midnight
        "2023-11-17 00:00:00.0000001,10,5",
        "2023-11-17 00:00:01.5,10,5",
    ]))
    got = [r.arrival_ms for r in load_azure(path)]
    assert got == [0.0, 1e-4, 2e-4, 1500.0001]


# -- Mooncake bad input ---------------------------------------------------------------------

BAD_MOONCAKE = [
    ('{"timestamp": 1,', None, "invalid JSON"),
    ("[1, 2]", None, "JSON object"),
    ("42", None, "JSON object"),
    (row(timestamp=DROP), "timestamp", "missing"),
    (row(input_length=DROP, hash_ids=[]), "input_length", "no hash_ids"),
    (row(output_length=DROP), "output_length", "missing"),
    (row(hash_ids=DROP), "hash_ids", "missing"),
    (row(timestamp="5"), "timestamp", "number"),
    (row(timestamp=True), "timestamp", "number"),
    (row(input_length="600"), "input_length", "integer"),
    (row(input_length=True), "input_length", "integer"),
    (row(input_length=600.0), "input_length", "integer"),
    (row(input_length=0), "input_length", ">= 1"),
    (row(output_length=-3), "output_length", ">= 0"),
    (row(output_length=None), "output_length", "integer"),
    (row(hash_ids="1,2"), "hash_ids", "list"),
    (row(hash_ids=[1, -2]), "hash_ids", "hash_ids[1]"),
    (row(hash_ids=[1, True]), "hash_ids", "hash_ids[1]"),
    (row(hash_ids=[1.0, 2]), "hash_ids", "hash_ids[0]"),
    (row(hash_ids=[]), "input_length", "exceeds hash_ids capacity 0"),
    (row(input_length=2048), "input_length", "input_length 2048 exceeds hash_ids capacity 1024"),
    (row(session_id=[1]), "session_id", "string or integer"),
    (row(delay=-1), "delay", ">= 0"),
    (row(delay_ms="x"), "delay_ms", ">= 0"),
    (row(created_time=0), "timestamp", "alias"),
    (row(input_tokens=600), "input_length", "alias"),
]


@pytest.mark.parametrize("bad,field,words", BAD_MOONCAKE)
def test_mooncake_bad_line_names_file_line_field(tmp_path: Path, bad, field, words) -> None:
    # line 1 good, line 2 blank (skipped but counted), line 3 bad
    path = write(tmp_path, "bad_trace.jsonl", jsonl(GOOD, "", bad))
    with pytest.raises(InputError) as info:
        load_mooncake(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:3") and "bad_trace.jsonl" in msg
    assert info.value.line == 3 and info.value.field == field
    if field is not None:
        assert f"field '{field}'" in msg
    assert words in msg
    assert "\n" not in msg


def test_mooncake_session_turn_earlier_than_its_predecessor(tmp_path: Path) -> None:
    # Dynamo: "trace line 3 has invalid delay -1" (turns replay in file order)
    path = write(tmp_path, "t.jsonl", jsonl(row(timestamp=100, session_id="s"),
                                            row(timestamp=100),
                                            row(timestamp=99, session_id="s")))
    with pytest.raises(InputError, match=r"t\.jsonl:3, field 'timestamp': invalid delay -1 ms"):
        load_mooncake(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_mooncake_empty_file(tmp_path: Path, content: str) -> None:
    path = write(tmp_path, "empty.jsonl", content)
    with pytest.raises(InputError, match=r"empty\.jsonl: no requests"):
        load_mooncake(path)


def test_mooncake_bad_utf8_gives_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bin.jsonl", json.dumps(GOOD).encode() + b'\n{"x": "\xff"}\n')
    with pytest.raises(InputError, match=r"bin\.jsonl:2: not valid UTF-8"):
        load_mooncake(path)


def test_missing_file_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="nope.jsonl"):
        load_mooncake(tmp_path / "nope.jsonl")
    with pytest.raises(InputError, match="nope.csv"):
        load_azure(tmp_path / "nope.csv")


def test_mooncake_bad_parameters() -> None:
    with pytest.raises(InputError, match="trace_block_size"):
        load_mooncake(CONVERSATION, trace_block_size=0)
    with pytest.raises(InputError, match="arrival_speedup_ratio"):
        load_mooncake(CONVERSATION, arrival_speedup_ratio=0)


def test_mooncake_aliases_extras_and_truncation(tmp_path: Path) -> None:
    path = write(tmp_path, "alias.jsonl", "\ufeff" + jsonl(
        {"created_time": 1000, "input_tokens": 513, "output_tokens": 7, "hash_ids": [4, 5, 6],
         "request_id": "abc", "whatever": {"nested": 1}},
        {"timestamp": 1500.5, "input_length": 512, "output_length": 1, "hash_ids": [4]}))
    a, b = list(load_mooncake(path))
    assert (a.arrival_ms, a.input_length, a.output_length, a.hash_ids) == (0.0, 513, 7, (4, 5))
    assert (b.arrival_ms, b.hash_ids, b.index, b.line) == (500.5, (4,), 1, 2)


def test_mooncake_custom_block_size_capacity(tmp_path: Path) -> None:
    path = write(tmp_path, "bs.jsonl", jsonl(row(input_length=129, hash_ids=[1, 2])))
    with pytest.raises(InputError, match="exceeds hash_ids capacity 128"):
        load_mooncake(path, trace_block_size=64)
    assert list(load_mooncake(path, trace_block_size=65))[0].hash_ids == (1, 2)


def test_speedup_halves_arrivals(tmp_path: Path) -> None:
    moon = write(tmp_path, "m.jsonl", jsonl(row(timestamp=1000), row(timestamp=1300),
                                            row(timestamp=5000)))
    assert [r.arrival_ms for r in load_mooncake(moon)] == [0.0, 300.0, 4000.0]
    assert [r.arrival_ms for r in load_mooncake(moon, arrival_speedup_ratio=2.0)] == \
        [0.0, 150.0, 2000.0]
    az = write(tmp_path, "a.csv", f"{AZURE_HEADER}\n2023-11-16 18:00:00.0,5,5\n"
                                  "2023-11-16 18:00:03.0,5,5\n")
    assert [r.arrival_ms for r in load_azure(az, arrival_speedup_ratio=2.0)] == [0.0, 1500.0]


# -- Mooncake sessions and closed loop ------------------------------------------------------

def test_trace_sessions_release_next_turn_after_delay(tmp_path: Path) -> None:
    path = write(tmp_path, "s.jsonl", jsonl(
        row(timestamp=0, session_id="a"),
        row(timestamp=100, session_id=7),
        row(timestamp=500, session_id="a"),              # no delay: timestamp delta 500
        row(timestamp=900, session_id="a", delay=50),     # explicit delay wins
        row(timestamp=950),
    ))
    for ratio in (1.0, 2.0):
        w = load_mooncake(path, arrival_speedup_ratio=ratio)
        first = list(w)
        assert [r.index for r in first] == [0, 1, 4]
        assert first[1].session_id == "7"
        (t2,) = w.on_complete(first[0], 1000.0)
        assert (t2.index, t2.arrival_ms) == (2, 1000.0 + 500 / ratio)
        (t3,) = w.on_complete(t2, 2000.0)
        assert (t3.index, t3.arrival_ms, t3.delay_ms) == (3, 2050.0, 50.0)
        assert w.on_complete(t3, 3000.0) == []
        assert w.on_complete(first[1], 10.0) == []
        assert w.on_complete(first[2], 10.0) == []
    assert load_mooncake(path).describe()["num_sessions"] == 2


def test_trace_closed_loop_replay(tmp_path: Path) -> None:
    path = write(tmp_path, "c.jsonl", jsonl(*(row(timestamp=100 * i) for i in range(5))))
    w = load_mooncake(path, concurrency=2)
    start = list(w)
    assert [(r.index, r.arrival_ms) for r in start] == [(0, 0.0), (1, 0.0)]
    (nxt,) = w.on_complete(start[0], 42.0)
    assert (nxt.index, nxt.arrival_ms) == (2, 42.0)
    assert [r.index for r in w.on_complete(start[1], 50.0)] == [3]
    assert [r.index for r in w.on_complete(nxt, 60.0)] == [4]
    assert w.on_complete(nxt, 70.0) == []
    assert [r.index for r in w] == [0, 1]      # re-iterating restarts the run


# -- Azure bad input ------------------------------------------------------------------------

BAD_AZURE = [
    ("2023-11-16 18:15:46,10", None, "columns"),
    ("2023-11-16T18:15:46.1,10,5,extra", None, "columns"),
    ("18:15:46.6805900,10,5", "TIMESTAMP", "YYYY-MM-DD"),
    ("2023-11-16 18:15:46.6805900Z,10,5", "TIMESTAMP", "YYYY-MM-DD"),
    ("2023-02-30 18:15:46.1,10,5", "TIMESTAMP", "invalid date"),
    ("2023-11-16 24:15:46.1,10,5", "TIMESTAMP", "time of day"),
    ("2023-11-16 18:15:46.1,-3,5", "ContextTokens", "non-negative integer"),
    ("2023-11-16 18:15:46.1,0,5", "ContextTokens", ">= 1"),
    ("2023-11-16 18:15:46.1,1.5,5", "ContextTokens", "non-negative integer"),
    ("2023-11-16 18:15:46.1,10,", "GeneratedTokens", "non-negative integer"),
    ("2023-11-16 18:15:46.1,10,-1", "GeneratedTokens", "non-negative integer"),
    ("2023-11-16 18:15:46.1,10,abc", "GeneratedTokens", "non-negative integer"),
]


@pytest.mark.parametrize("bad,field,words", BAD_AZURE)
def test_azure_bad_row_names_file_line_field(tmp_path: Path, bad, field, words) -> None:
    path = write(tmp_path, "bad_azure.csv",
                 f"{AZURE_HEADER}\n2023-11-16 18:15:46.0,10,5\n\n{bad}\n")
    with pytest.raises(InputError) as info:
        load_azure(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:4") and info.value.line == 4
    assert info.value.field == field
    if field is not None:
        assert f"field '{field}'" in msg
    assert words in msg


@pytest.mark.parametrize("content,line", [
    ("", 1), ("time,ContextTokens,GeneratedTokens\n", 1), (f"{AZURE_HEADER}\n", None),
])
def test_azure_bad_header_or_empty(tmp_path: Path, content: str, line: int | None) -> None:
    path = write(tmp_path, "h.csv", content)
    with pytest.raises(InputError) as info:
        load_azure(path)
    assert "h.csv" in str(info.value) and info.value.line == line


def test_azure_bad_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "u.csv", f"{AZURE_HEADER}\n2023-11-16 18:00:00.0,5,5\n".encode()
                 + b"2023-11-16 18:00:01.0,\xe9,5\n")
    with pytest.raises(InputError, match=r"u\.csv:3: not valid UTF-8"):
        load_azure(path)


def test_azure_column_order_from_header(tmp_path: Path) -> None:
    path = write(tmp_path, "o.csv", "GeneratedTokens,Extra,ContextTokens,TIMESTAMP\r\n"
                                    "7,x,300,2023-11-16 18:00:00.25\r\n")
    (r,) = list(load_azure(path))
    assert (r.input_length, r.output_length, r.arrival_ms, r.line) == (300, 7, 0.0, 2)


# -- synthetic ------------------------------------------------------------------------------

def make(seed: int, **kw: object) -> Workload:
    args: dict = dict(arrival=poisson(20.0), isl=uniform(100, 3000), osl=lognormal(200, 0.8),
                      num_requests=500, num_prefix_groups=3, shared_prefix_ratio=0.5)
    args.update(kw)
    return synthetic(np.random.default_rng(seed), **args)


def test_synthetic_deterministic_per_seed() -> None:
    a = [fields(r) for r in make(1)]
    assert len(a) == 500
    assert a == [fields(r) for r in make(1)]
    w = make(1)
    assert [fields(r) for r in w] == [fields(r) for r in w]      # re-iteration replays
    b = [fields(r) for r in make(2)]
    assert [x[1] for x in a] != [x[1] for x in b] and [x[2] for x in a] != [x[2] for x in b]


def test_synthetic_streams_are_independent() -> None:
    # changing the ISL distribution must not move arrival times (common random numbers)
    a = [r.arrival_ms for r in make(3)]
    b = [r.arrival_ms for r in make(3, isl=fixed(64))]
    assert a == b


def test_poisson_mean_rate_and_cv() -> None:
    reqs = list(make(5, arrival=poisson(50.0), num_requests=40_000))
    t = np.array([r.arrival_ms for r in reqs])
    assert t[0] == 0.0 and np.all(np.diff(t) >= 0)
    rate = (len(t) - 1) / (t[-1] / 1000.0)
    assert rate == pytest.approx(50.0, rel=0.03)
    gaps = np.diff(t)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)


def test_gamma_burstiness_and_constant() -> None:
    t = np.array([r.arrival_ms for r in make(6, arrival=gamma(20.0, 3.0),
                                             num_requests=60_000)])
    gaps = np.diff(t)
    assert 1000.0 / gaps.mean() == pytest.approx(20.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.12)
    t = [r.arrival_ms for r in make(6, arrival=constant(4.0), num_requests=5)]
    assert t == [0.0, 250.0, 500.0, 750.0, 1000.0]


def test_nhpp_ramp_follows_rate() -> None:
    w = make(7, arrival=nhpp(ramp(2.0, 38.0, 100.0)), duration_s=100.0, num_requests=None)
    t = np.array([r.arrival_ms for r in w]) / 1000.0
    assert t.max() < 100.0 and np.all(np.diff(t) >= 0)
    assert len(t) == pytest.approx(2000, rel=0.08)            # integral of the rate
    early, late = np.sum(t < 10), np.sum(t >= 90)            # expected ~38 and ~362
    assert 15 < early < 65 and 300 < late < 430
    d = diurnal(10.0, 0.5, 60.0)
    assert d.max_rate == 15.0 and d(15.0) == pytest.approx(15.0)
    with pytest.raises(InputError, match="rate_max"):
        list(make(7, arrival=nhpp(lambda s: 5.0, rate_max=1.0), num_requests=10))


def test_numpy_scalars_accepted() -> None:
    assert poisson(np.float64(2.5)).rate == 2.5
    assert closed_loop(np.int64(3)).concurrency == 3
    assert type(closed_loop(np.int64(3)).concurrency) is int


def test_length_distributions() -> None:
    rng = np.random.default_rng(0)
    x = lognormal(300, 1.5, max_value=5000).sample(rng, 100_000)
    assert x.min() >= 1 and x.max() <= 5000 and x.dtype.kind == "i"
    y = lognormal(300, 0.3).sample(rng, 100_000)
    assert y.mean() == pytest.approx(300, rel=0.02)
    u = uniform(3, 5).sample(rng, 10_000)
    assert set(u.tolist()) == {3, 4, 5}
    assert fixed(7).sample(rng, 3).tolist() == [7, 7, 7]


def test_prefix_groups_share_leading_ids_without_collisions() -> None:
    reqs = list(make(8, isl=uniform(2000, 6000), num_requests=400, num_prefix_groups=4,
                     shared_prefix_ratio=None, shared_prefix_blocks=3))
    heads = {r.hash_ids[:3] for r in reqs}
    assert len(heads) == 4                                  # one shared head per group
    assert len({h[0] for h in heads}) == 4                  # groups differ from block 0
    tails = [h for r in reqs for h in r.hash_ids[3:]]
    assert len(tails) == len(set(tails))                    # unique ids never repeat
    assert not set(tails) & {h for head in heads for h in head}
    assert_prefix_chained(reqs)
    for r in reqs:
        assert len(r.hash_ids) == math.ceil(r.input_length / 512)


def test_shared_prefix_ratio_block_count() -> None:
    reqs = list(make(9, isl=fixed(4096), num_prefix_groups=1, shared_prefix_ratio=0.5,
                     num_requests=20))
    assert len({r.hash_ids[:4] for r in reqs}) == 1         # 0.5 * 4096 / 512 = 4 blocks
    assert len({r.hash_ids[4] for r in reqs}) == 20


def run_closed_loop(w: Workload, service_ms, total: int) -> tuple[int, int, list[Request]]:
    """Tiny event loop: checks N stay in flight; returns (peak, completions, dispatched)."""
    events: list[tuple[float, int, Request]] = []
    dispatched: list[Request] = []
    in_flight = peak = done = 0
    seq = 0

    def start(r: Request) -> None:
        nonlocal in_flight, peak, seq
        in_flight += 1
        peak = max(peak, in_flight)
        dispatched.append(r)
        seq += 1
        heapq.heappush(events, (r.arrival_ms + service_ms(r), seq, r))

    n = w.concurrency
    assert n is not None
    for r in w:
        start(r)
    assert in_flight == n
    while events:
        now, _, r = heapq.heappop(events)
        in_flight -= 1
        done += 1
        for nxt in w.on_complete(r, now):
            assert nxt.arrival_ms == now
            start(nxt)
        assert in_flight == min(n, total - done)
    return peak, done, dispatched


def test_closed_loop_keeps_n_in_flight() -> None:
    w = make(10, arrival=closed_loop(4), num_requests=50)
    assert w.concurrency == 4
    peak, done, dispatched = run_closed_loop(w, lambda r: float(r.output_length), 50)
    assert peak == 4 and done == 50
    assert sorted(r.index for r in dispatched) == list(range(50))


def test_closed_loop_sessions_hold_their_slot() -> None:
    w = make(15, arrival=closed_loop(2), num_requests=6, turns_per_session=3)
    peak, done, dispatched = run_closed_loop(w, lambda r: 10.0, 18)
    assert peak == 2 and done == 18
    assert [r.index for r in dispatched[:4]] == [0, 3, 1, 4]   # a turn before a new session


def test_closed_loop_duration_stops_dispatch() -> None:
    w = make(11, arrival=closed_loop(4), num_requests=None, duration_s=1.0)
    _, done, dispatched = run_closed_loop(w, lambda r: 100.0, 40)
    assert done == len(dispatched) == 40                  # 4 slots x 10 rounds of 100 ms


def test_synthetic_sessions_release_next_turn_after_delay() -> None:
    w = make(12, num_requests=5, turns_per_session=3, inter_turn_delay_ms=250.0)
    first = list(w)
    assert [r.index for r in first] == [0, 3, 6, 9, 12]
    assert len({r.session_id for r in first}) == 5
    prev, now = first[1], 1000.0
    for turn in (1, 2):
        (nxt,) = w.on_complete(prev, now)
        assert nxt.index == prev.index + 1 and nxt.session_id == prev.session_id
        assert nxt.arrival_ms == now + 250.0 and nxt.delay_ms == 250.0
        assert nxt.input_length > prev.input_length + prev.output_length
        assert nxt.hash_ids[:len(prev.hash_ids)] == prev.hash_ids
        assert len(nxt.hash_ids) == math.ceil(nxt.input_length / 512)
        prev, now = nxt, now + 5000.0
    assert w.on_complete(prev, now) == []
    assert w.on_complete(first[0], 1.0)[0].index == 1
    assert w.describe()["num_requests"] == 15


def test_synthetic_is_lazy() -> None:
    start = time.perf_counter()
    w = make(13, num_requests=10_000_000, turns_per_session=2)
    it = iter(w)
    head = [next(it) for _ in range(10)]
    assert time.perf_counter() - start < 0.2
    assert [r.index for r in head] == list(range(0, 20, 2))


def test_synthetic_duration_bound() -> None:
    t = [r.arrival_ms for r in make(14, arrival=poisson(100.0), num_requests=None,
                                    duration_s=2.0)]
    assert max(t) < 2000.0 and 140 < len(t) < 260


@pytest.mark.parametrize("call,field", [
    (lambda: poisson(0), "rate"),
    (lambda: poisson(True), "rate"),
    (lambda: poisson("10"), "rate"),
    (lambda: gamma(1.0, 0), "cv"),
    (lambda: constant(float("inf")), "rate"),
    (lambda: closed_loop(0), "concurrency"),
    (lambda: uniform(10, 5), "hi"),
    (lambda: lognormal(0.5, 1), "mean"),
    (lambda: ramp(0, 0, 10), "end_rate"),
    (lambda: diurnal(10, 1.0, 60), "amplitude"),
    (lambda: make(0, num_requests=None), "num_requests"),
    (lambda: make(0, num_prefix_groups=0), "num_prefix_groups"),
    (lambda: make(0, shared_prefix_ratio=None), "num_prefix_groups"),
    (lambda: make(0, shared_prefix_blocks=2), "shared_prefix_blocks"),
    (lambda: make(0, shared_prefix_ratio=1.5), "shared_prefix_ratio"),
    (lambda: make(0, turns_per_session=0), "turns_per_session"),
    (lambda: make(0, arrival=nhpp(ramp(5, 0, 10)), num_requests=10), "duration_s"),
])
def test_synthetic_bad_arguments(call, field) -> None:
    with pytest.raises(InputError) as info:
        call()
    assert info.value.field == field


# -- from_config ----------------------------------------------------------------------------

SYN_CFG = {"kind": "synthetic", "arrival": {"process": "poisson", "rate": 10},
           "isl": {"dist": "lognormal", "mean": 1024, "sigma": 0.5, "max_value": 8000},
           "osl": 128, "num_requests": 300, "num_prefix_groups": 2, "shared_prefix_ratio": 0.5}


def test_from_config_synthetic_matches_direct() -> None:
    w = from_config(SYN_CFG, np.random.default_rng(4))
    direct = synthetic(np.random.default_rng(4), arrival=poisson(10), isl=lognormal(1024, 0.5,
                       8000), osl=fixed(128), num_requests=300, num_prefix_groups=2,
                       shared_prefix_ratio=0.5)
    assert [fields(r) for r in w] == [fields(r) for r in direct]
    assert w.describe()["arrival"] == {"type": "poisson", "rate": 10.0}
    json.dumps(w.describe())


def test_from_config_traces(tmp_path: Path) -> None:
    write(tmp_path, "m.jsonl", jsonl(row(timestamp=10), row(timestamp=30)))
    w = from_config({"kind": "mooncake", "path": "m.jsonl", "arrival_speedup_ratio": 2.0},
                    base_dir=tmp_path)
    assert [r.arrival_ms for r in w] == [0.0, 10.0] and w.name == "m"
    write(tmp_path, "a.csv", f"{AZURE_HEADER}\n2023-11-16 18:00:00.0,5,5\n")
    assert len(list(from_config({"kind": "azure", "path": str(tmp_path / "a.csv")}))) == 1
    ramp_cfg = {"kind": "synthetic", "arrival": {"process": "ramp", "start_rate": 1,
                "end_rate": 5, "duration_s": 10}, "isl": 10, "osl": 10, "duration_s": 10}
    assert len(list(from_config(ramp_cfg, np.random.default_rng(0)))) > 0


@pytest.mark.parametrize("cfg,field", [
    ({**SYN_CFG, "bogus": 1}, "workload.bogus"),
    ({**SYN_CFG, "kind": "weka"}, "workload.kind"),
    ({k: v for k, v in SYN_CFG.items() if k != "kind"}, "workload.kind"),
    ({k: v for k, v in SYN_CFG.items() if k != "osl"}, "workload.osl"),
    ({**SYN_CFG, "arrival": {"process": "poisson", "rate": 10, "burst": 2}},
     "workload.arrival.burst"),
    ({**SYN_CFG, "arrival": {"process": "poisson", "rate": -1}}, "workload.arrival.rate"),
    ({**SYN_CFG, "arrival": {"process": "gamma", "rate": 1}}, "workload.arrival.cv"),
    ({**SYN_CFG, "arrival": {"process": "zipf"}}, "workload.arrival.process"),
    ({**SYN_CFG, "isl": {"dist": "uniform", "lo": 1}}, "workload.isl.hi"),
    ({**SYN_CFG, "isl": "1024"}, "workload.isl"),
    ({**SYN_CFG, "num_requests": "many"}, "workload.num_requests"),
    ({"kind": "mooncake", "path": "x.jsonl", "trace_block_size": 512, "speedup": 2},
     "workload.speedup"),
    ({"kind": "mooncake"}, "workload.path"),
    ({"kind": "azure", "path": str(CONVERSATION), "trace_block_size": 512},
     "workload.trace_block_size"),
    ({"kind": "mooncake", "path": str(CONVERSATION), "trace_block_size": -1},
     "workload.trace_block_size"),
])
def test_from_config_errors_name_source_and_field(cfg, field) -> None:
    with pytest.raises(InputError) as info:
        from_config(cfg, np.random.default_rng(0), source="run.yaml")
    assert info.value.field == field and info.value.file == "run.yaml"
    assert str(info.value).startswith(f"run.yaml, field '{field}': ")


def test_from_config_trace_errors_keep_trace_location(tmp_path: Path) -> None:
    path = write(tmp_path, "t.jsonl", jsonl(GOOD, row(output_length=-1)))
    with pytest.raises(InputError) as info:
        from_config({"kind": "mooncake", "path": str(path)}, source="run.yaml")
    assert info.value.file == str(path) and info.value.line == 2
    assert info.value.field == "output_length"
