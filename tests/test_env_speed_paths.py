"""Issue 11 (env speed): the fast paths of the env layer give the figures of the plain ones.

* the monitor's queue scan (``monitor._scan``, typed when compiled) against the engine's own
  ``queued_prefill_tokens`` and a direct computation over the sequences, on an overloaded
  pool with queues in the hundreds;
* the monitor's count of new request records (``monitor._decided``, typed buffers when
  compiled) against a direct computation over the same columns (Hypothesis);
* the observation's clamp before the float32 conversion against ``np.clip`` after it;
* trace configs share one parsed trace per process, and episodes on the shared trace equal
  those on a fresh parse.

Byte-identity of whole episodes, compiled vs plain Python, is ``tests/test_compiled.py``.
"""
from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import dynosim_gym  # noqa: F401  (registers the ids)
from dynosim_gym import episodes
from dynosim_gym.monitor import Interval, _decided, _scan
from dynosim_gym.observations import LOG_MAX, _clamp
from sim.metrics import MetricsCollector
from sim.simulator import REMOVED


def _direct(eng, now: float, timeout: float) -> tuple[int, float, set]:
    """Queued prefill tokens, oldest wait and requests past the timeout, computed directly."""
    qp = sum(s.prompt_len + s.generated - s.computed for s in eng.waiting)
    qp += sum(max(0, s.prompt_len - s.computed) for s in eng.running
              if math.isnan(s.first_token))
    waits = [now - s.req.arrival_ms for s in list(eng.waiting) + eng.running
             if math.isnan(s.first_token)]
    late = {s.req.index for s in list(eng.waiting) + eng.running
            if math.isnan(s.first_token) and now - s.req.arrival_ms > timeout}
    return qp, max(waits, default=0.0), late


def test_queue_scan_matches_a_direct_computation() -> None:
    env = gym.make("DynoSim-v0", **{"env.episode_steps": 80}).unwrapped
    env.reset(seed=1, options={"scenario": "rate_steps", "rate_rps": 9.0, "swing": 5.0})
    checked = 0
    for _ in range(80):
        env.step(env.hold_action())          # 2 workers against up to 9 req/s: queues grow
        sim = env.sim
        for w in sim.workers:
            if w.state == REMOVED:
                continue
            eng = w.engine
            qp_w, oldest_w, late_w = _scan(eng.waiting, True, sim.now, 10_000.0, set(), 0.0,
                                           [])
            qp_r, oldest, late_r = _scan(eng.running, False, sim.now, 10_000.0, set(),
                                         oldest_w, [])
            assert qp_w == eng.queued_prefill_tokens()
            qp, oldest_direct, late = _direct(eng, sim.now, 10_000.0)
            assert (qp_w + qp_r, oldest, late_w + late_r) == (qp, oldest_direct, len(late))
            checked += len(eng.waiting)
    assert checked > 1000, "the episode never queued much: the check proves little"


def test_queue_scan_counts_each_late_request_once() -> None:
    env = gym.make("DynoSim-v0", **{"env.episode_steps": 80}).unwrapped
    env.reset(seed=1, options={"scenario": "rate_steps", "rate_rps": 9.0, "swing": 5.0})
    for _ in range(80):
        env.step(env.hold_action())
    eng = max((w.engine for w in env.sim.workers), key=lambda e: len(e.waiting))
    gone: set[int] = set()
    outcomes: list[tuple[int, bool]] = []
    _, _, first = _scan(eng.waiting, True, env.sim.now, 1_000.0, gone, 0.0, outcomes)
    _, _, again = _scan(eng.waiting, True, env.sim.now, 1_000.0, gone, 0.0, outcomes)
    assert first > 0 and first == len(gone) and again == 0
    assert outcomes == [(s.req.index, False) for s in eng.waiting
                        if s.req.index in gone]        # one failed outcome per late request


_RECORD = st.tuples(
    st.integers(0, 1),                                   # status: completed / rejected
    st.floats(0, 1e6, allow_nan=False),                  # arrival
    st.floats(0, 5e3, allow_nan=False),                  # TTFT
    st.floats(0, 1e5, allow_nan=False),                  # last token - first token
    st.integers(0, 5), st.integers(0, 3000), st.integers(0, 3000))   # OSL, reused, ISL


@settings(max_examples=200, deadline=None)
@given(st.lists(_RECORD, max_size=30), st.integers(0, 30), st.sets(st.integers(0, 40)),
       st.sampled_from([(1500.0, 50.0), (200.0, 5.0), (1500, 50)]))
def test_record_count_matches_a_direct_computation(records, start, gone, slas) -> None:
    """``_decided`` over ``MetricsCollector`` columns (indices 0..n-1, some already counted
    as timed out) gives the counts, samples and outcomes of a direct loop over the rows."""
    ttft_sla, itl_sla = slas
    m = MetricsCollector()
    for i, (status, arr, ttft, span, osl, reused, isl) in enumerate(records):
        m.record(i, arr, arr, arr + ttft, math.nan, arr + ttft + span, isl, osl, osl, reused,
                 0, status)
    start = min(start, len(records))
    c = m.cols
    want = Interval(0.0, 1.0)
    w_gone, w_reused, w_prompt = set(gone), 0, 0
    for i in range(start, len(records)):
        status, osl, reused, isl = c["status"][i], c["output_length"][i], \
            c["reused_input_tokens"][i], c["input_length"][i]
        if i in w_gone:
            w_gone.discard(i)
            continue
        if status != 0:
            want.rejected += 1
            want.outcomes.append((i, False))
            continue
        want.completed += 1
        w_reused += reused
        w_prompt += isl
        if osl == 0:
            want.outcomes.append((i, False))
            continue
        ttft = c["first_token_ms"][i] - c["arrival_time_ms"][i]
        tpot = (c["last_token_ms"][i] - c["first_token_ms"][i]) / (osl - 1) if osl > 1 else 0.0
        want.ttfts.append(ttft)
        want.tpots.append(tpot)
        ok = ttft <= ttft_sla and tpot <= itl_sla
        want.met += ok
        want.outcomes.append((i, ok))
    got = Interval(0.0, 1.0)
    got_gone = set(gone)
    if start < len(records):        # (the monitor calls it only with new records)
        assert _decided(c["request_index"], c["status"], c["arrival_time_ms"],
                        c["first_token_ms"], c["last_token_ms"], c["output_length"],
                        c["reused_input_tokens"], c["input_length"], start, len(records),
                        got_gone, ttft_sla, itl_sla, got) == (w_reused, w_prompt)
    assert got == want and got_gone == w_gone
    assert [type(x) for o in got.outcomes for x in o] == \
        [type(x) for o in want.outcomes for x in o]


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True, width=64))
def test_clamp_then_float32_equals_clip_after_float32(x: float) -> None:
    ours = np.array([_clamp(x)], dtype=np.float32)
    with np.errstate(over="ignore"):          # huge doubles overflow to inf in float32
        ref = np.clip(np.asarray([x], dtype=np.float32), -LOG_MAX, LOG_MAX)
    assert ours.tobytes() == ref.tobytes()


def test_trace_configs_share_one_parse_and_replay_the_same() -> None:
    a = gym.make("DynoSim-v0", config="autoscale_mooncake", **{"env.episode_steps": 6}).unwrapped
    b = gym.make("DynoSim-v0", config="autoscale_mooncake", **{"env.episode_steps": 6}).unwrapped
    a.reset(seed=0)
    b.reset(seed=0)
    assert a.episodes.trace is b.episodes.trace
    shared = [a.step(a.hold_action())[0].tobytes() for _ in range(6)]
    episodes._CONFIG_TRACES.clear()                  # a fresh parse for a third env
    c = gym.make("DynoSim-v0", config="autoscale_mooncake", **{"env.episode_steps": 6}).unwrapped
    c.reset(seed=0)
    assert c.episodes.trace is not a.episodes.trace
    assert [c.step(c.hold_action())[0].tobytes() for _ in range(6)] == shared


def test_speed_table_gives_ratios_to_the_yardstick_row() -> None:
    from dynosim_gym.speed import YARDSTICK, markdown
    row = {"steps_per_s_min": 1.0, "steps_per_s_max": 2.0, "requests_per_step": 3.0}
    rows = [{**row, "case": "DynoSim-v0 default, hold", "steps_per_s_median": 450.0},
            {**row, "case": f"DynoSim-v0 {YARDSTICK}, hold", "steps_per_s_median": 600.0}]
    table = markdown(rows, 1, 1).splitlines()
    assert table[0].endswith(f"× {YARDSTICK} |")
    assert table[2].endswith("| 0.75 |") and table[3].endswith("| 1.00 |")
    assert "×" not in markdown(rows[:1], 1, 1)
