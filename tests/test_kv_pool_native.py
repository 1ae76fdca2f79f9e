"""The native KV pool (sim/_kvpool.c) against the reference ``PyKvCache``.

The engine uses the native pool when it was built; these tests require it to be built
(unless DYNOSIM_PURE_PYTHON is set) and to behave exactly like the reference, operation by
operation and over whole replays, preemption-heavy ones included.
"""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.kv_cache as kvmod
from sim.engine import EngineConfig
from sim.kv_cache import PRIVATE, KvEvents, NativeKvPool, PyKvCache, private_key
from sim.simulator import ClusterConfig, Simulation
from sim.timing import PolynomialTiming
from sim.workloads import lognormal, poisson, synthetic

pytestmark = pytest.mark.skipif(NativeKvPool is None and bool(os.environ.get("DYNOSIM_PURE_PYTHON")),
                                reason="pure-Python pool forced")


def test_native_pool_is_built() -> None:
    assert NativeKvPool is not None, "sim/_kvpool.c was not compiled (see setup.py)"
    assert kvmod.KvCache is NativeKvPool


OWNERS = (0, 1, 2, 3, 10**6 + 7)     # request indices; private keys: private_key(owner, block)


def _state(p) -> tuple:
    return (p.num_active, p.free_blocks(), p.inactive_count(), p.num_hashed, p.num_private,
            p.evictions, [p.match_prefix([k]) for k in range(-6, 16)],
            [p.match_prefix([private_key(o, b)]) for o in OWNERS for b in range(40)],
            p.evicted_keys_ahead(0, 64), list(p.events.stored), list(p.events.removed),
            list(p.events.late))


@pytest.mark.parametrize("seed", range(40))
def test_same_state_after_every_operation(seed: int) -> None:
    """Reference pool, native pool with list block tables, and native pool with its own
    ``Blocks`` tables (what the engine uses) agree after every operation; a fourth pool
    (``Blocks`` tables) is given its keys packed (``sim._kvpool.Keys``, what ``block_keys``
    makes) instead of as lists."""
    from sim._kvpool import Keys

    rnd = random.Random(seed)
    nb = rnd.randint(3, 40)
    a, b, c, d = (PyKvCache(nb, 16), NativeKvPool(nb, 16), NativeKvPool(nb, 16),
                  NativeKvPool(nb, 16))
    a.events, b.events, c.events, d.events = KvEvents(), KvEvents(), KvEvents(), KvEvents()
    held_a: list[list[int]] = []
    held_b: list[list[int]] = []
    held_c: list = []                       # sim._kvpool.Blocks
    held_d: list = []
    for _ in range(1500):
        if rnd.random() < 0.5:
            resident = [k for k in range(-6, 16) if a.resident(k)]
            assert resident == [k for k in range(-6, 16) if b.resident(k)]
            hits = rnd.sample(resident, min(len(resident), rnd.randint(0, 3)))
            fresh = rnd.randint(0, 4)
            ra, rb = a.reserve(list(hits), fresh), b.reserve(list(hits), fresh)
            bc, bd = c.new_blocks(), d.new_blocks()
            assert (ra is None) == (rb is None) == (not c.reserve_into(bc, list(hits), fresh)) \
                == (not d.reserve_into(bd, Keys(hits), fresh))
            if ra is not None:
                ba, bb = list(ra) + [PRIVATE] * fresh, list(rb) + [PRIVATE] * fresh
                assert bc.tolist() == bb and len(bc) == len(bb)
                keys = [rnd.randint(-6, 15) for _ in ba]      # duplicates and collisions
                n = rnd.randint(0, len(ba))
                owner = rnd.choice(OWNERS)
                a.register_range(ba, 0, n, keys[: n - 1], owner)
                b.register_range(bb, 0, n, keys[: n - 1], owner)
                c.register_range(bc, 0, n, keys[: n - 1], owner)
                d.register_range(bd, 0, n, Keys(keys)[: n - 1], owner)
                assert bc.tolist() == bb == bd.tolist()
                held_a.append(ba)
                held_b.append(bb)
                held_c.append(bc)
                held_d.append(bd)
            else:
                assert len(bc) == len(bd) == 0
        elif held_a:
            j = rnd.randrange(len(held_a))
            a.release(held_a.pop(j))
            b.release(held_b.pop(j))
            c.release(held_c.pop(j))
            d.release(held_d.pop(j))
        assert _state(a) == _state(b) == _state(c) == _state(d)
        probe = [rnd.randint(-6, 15) for _ in range(rnd.randint(0, 6))]
        assert d.match_prefix(Keys(probe)) == a.match_prefix(probe)
        a.check()
        b.check()
        c.check()
        d.check()
        if rnd.random() < 0.1:
            a.events.clear()
            b.events.clear()
            c.events.clear()
            d.events.clear()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nb=st.integers(2, 9), ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 2**16)),
                                          min_size=20, max_size=400))
def test_lru_order_under_pin_churn(nb: int, ops: list[tuple[int, int]]) -> None:
    """The native LRU (a ring of slot ids with stale entries, compacted when full) keeps the
    reference's order through pins of inactive copies, releases and evictions. Ops: 0-1 pin
    a few resident keys and release them at once (each leaves a stale ring entry and appends
    a new one: with no evictions in between the ring fills and is compacted), 2 take one
    block under a key and hold it (evicting when the pool is full), 3 release a held one."""
    a, b = PyKvCache(nb, 16), NativeKvPool(nb, 16)
    held_a: list[list[int]] = []
    held_b: list = []
    for kind, x in ops:
        if kind == 3 and held_a:
            j = x % len(held_a)
            a.release(held_a.pop(j))
            b.release(held_b.pop(j))
        else:
            resident = [k for k in range(8) if a.resident(k)]
            hits = [k for i, k in enumerate(resident) if x >> i & 1][:3]
            fresh = 1 if kind == 2 else 0
            ra = a.reserve(list(hits), fresh)
            bb = b.new_blocks()
            assert (ra is None) == (not b.reserve_into(bb, list(hits), fresh))
            if ra is not None:
                ba = list(ra) + [PRIVATE] * fresh
                keys = hits + [x % 8] * fresh
                a.register_range(ba, 0, len(ba), keys, 0)
                b.register_range(bb, 0, len(ba), keys, 0)
                if fresh:
                    held_a.append(ba)
                    held_b.append(bb)
                else:
                    a.release(ba)
                    b.release(bb)
        assert a.evicted_keys_ahead(0, nb + 1) == b.evicted_keys_ahead(0, nb + 1)
        assert (a.inactive_count(), a.num_active, a.evictions) == \
            (b.inactive_count(), b.num_active, b.evictions)
        b.check()


def test_blocks_table_appends_and_releases_last_first() -> None:
    """``reserve_into`` appends to what a table holds (hits, then private blocks), exactly
    as the reference ``BlockList``; ``release`` drops them last first; bad input is an error."""
    a, c = PyKvCache(8, 16), NativeKvPool(8, 16)
    ta, tc = a.new_blocks(), c.new_blocks()
    for pool, t in ((a, ta), (c, tc)):
        assert pool.reserve_into(t, [], 3)
        pool.register_range(t, 0, 2, [5, 6], 0)
        assert pool.reserve_into(t, [], 1)
        assert not pool.reserve_into(t, [], 99)          # does not fit: nothing changes
    assert list(ta) == tc.tolist() == [tc[i] for i in range(len(tc))] and len(tc) == 4
    tb, tbc = a.new_blocks(), c.new_blocks()
    assert a.reserve_into(tb, [5, 6], 1) and c.reserve_into(tbc, [5, 6], 1)
    assert list(tb) == tbc.tolist()
    for pool, t in ((a, ta), (c, tc)):
        pool.release(t)
        t.clear()
    assert _state_plain(a) == _state_plain(c)
    c.release(tbc)
    a.release(tb)
    assert _state_plain(a) == _state_plain(c) and a.evicted_keys_ahead(0, 8) == c.evicted_keys_ahead(0, 8)
    with pytest.raises(IndexError):
        c.register_range(tc, 0, 5, [], 0)                # beyond the table
    with pytest.raises(TypeError):
        c.release((1, 2))
    with pytest.raises(ValueError):
        tc.add_private(-1)


def _state_plain(p) -> tuple:
    return (p.num_active, p.free_blocks(), p.inactive_count(), p.num_hashed, p.num_private)


def test_private_keys_in_c_match_python() -> None:
    """The C twin of CPython's tuple hash passed its start-up self-check, so private keys are
    made without building tuples; a pool registers them as ``private_key`` does."""
    from sim import _kvpool
    assert _kvpool.NATIVE_PRIVATE_KEYS == 1
    c = NativeKvPool(600, 16)
    for owner in (0, 17, 2**40 + 3):
        t = c.new_blocks()
        assert c.reserve_into(t, [], 200)
        c.register_range(t, 0, 200, [], owner)
        assert c.match_prefix([private_key(owner, b) for b in range(200)]) == (200, 200)
        c.release(t)


@pytest.mark.parametrize("router", ["round_robin", "kv"])
@pytest.mark.parametrize("blocks", [300, 2000])
def test_whole_replays_identical(monkeypatch, router: str, blocks: int) -> None:
    def run(pool):
        monkeypatch.setattr(kvmod, "KvCache", pool)
        wl = synthetic(np.random.default_rng(3), arrival=poisson(6.0),
                       isl=lognormal(1500, 0.8, max_value=4000), osl=lognormal(120, 0.7),
                       num_requests=250, num_prefix_groups=8, shared_prefix_blocks=2)
        sim = Simulation(wl, engine=EngineConfig(block_size=16, num_gpu_blocks=blocks),
                         timing=PolynomialTiming(), cluster=ClusterConfig(num_workers=3),
                         router=router, seed=1, check_invariants=True)
        res = sim.run()
        return res.summary, res.metrics.columns()

    s_py, c_py = run(PyKvCache)
    s_c, c_c = run(NativeKvPool)
    assert s_py["engine"] == s_c["engine"]
    if blocks == 300:
        assert s_c["engine"]["preemptions"] > 0 and s_c["engine"]["evictions"] > 0
    for k in c_py:
        np.testing.assert_array_equal(c_py[k], c_c[k], err_msg=k)


@pytest.mark.parametrize("seed", range(5))
def test_block_keys_twins_agree(seed: int) -> None:
    from sim._kvpool import block_keys as native_block_keys
    from sim.kv_cache import py_block_keys

    rnd = random.Random(seed)
    for _ in range(200):
        n = rnd.randint(1, 40)
        ids = tuple(rnd.choice([rnd.randint(0, 50), rnd.randint(0, 2**64 - 1)]) for _ in range(n))
        tbs, bs = rnd.choice([16, 64, 100, 512]), rnd.choice([1, 16, 64, 512, 700])
        nfull = rnd.randint(0, n * tbs // bs)
        keys = native_block_keys(ids, tbs, bs, nfull)
        assert keys == py_block_keys(ids, tbs, bs, nfull)
        assert all(0 <= k < 2**62 for k in keys)
    # equal prefixes share keys, a different id changes every key from its block on
    a = py_block_keys((1, 2, 3), 512, 64, 24)
    b = py_block_keys((1, 2, 9), 512, 64, 24)
    assert a[:16] == b[:16] and all(x != y for x, y in zip(a[16:], b[16:], strict=True))


def test_key_counter_and_prefix_len_twins_agree() -> None:
    """The native multiset (keys given as lists or packed) and ``prefix_len`` against the
    reference ``PyKeyCounter`` and ``_py_prefix_len``."""
    from sim._kvpool import KeyCounter, Keys
    from sim._kvpool import prefix_len as native_prefix_len
    from sim.router import PyKeyCounter, _py_prefix_len

    rnd = random.Random(7)
    a, b = PyKeyCounter(), KeyCounter()
    held: list[tuple] = []
    for _ in range(3000):
        if held and rnd.random() < 0.45:
            ka, kb = held.pop(rnd.randrange(len(held)))
            a.remove_all(ka)
            b.remove_all(kb)             # the keys, or their packed copy (add_all_packed)
        else:
            keys = [rnd.randint(-50, 500) for _ in range(rnd.randint(0, 30))]
            r = rnd.random()
            if r < 0.3:
                a.add_all(keys)
                b.add_all(keys)
                held.append((keys, keys))
            elif r < 0.45:
                a.add_all(keys)
                b.add_all(Keys(keys))
                held.append((keys, Keys(keys)))
            else:       # a list is packed; a Keys is returned as is
                given = Keys(keys) if r < 0.7 else keys
                ka, kb = a.add_all_packed(keys), b.add_all_packed(given)
                assert ka == keys and np.frombuffer(kb, dtype=np.int64).tolist() == keys
                assert isinstance(kb, Keys) and (kb is given or given is keys)
                held.append((ka, kb))
        assert len(a) == len(b)
        probe = [rnd.randint(-50, 500) for _ in range(10)]
        assert [k in a for k in probe] == [k in b for k in probe]
        assert _py_prefix_len(probe, a) == native_prefix_len(probe, b) \
            == native_prefix_len(Keys(probe), b)
        assert native_prefix_len(probe, set(a)) == _py_prefix_len(probe, set(a))
    assert native_prefix_len([1, 2], None) == 0


def test_polynomial_stretch_end_times_match_reference() -> None:
    """The native stretch path (sim._kvpool.poly_decode_ends) equals decode_ms_series + cumsum
    bit for bit, including durations near a half-nanosecond tie."""
    from sim._kvpool import poly_decode_ends
    from sim.timing import PolynomialTiming, _to_ns, decode_ms_series

    t = PolynomialTiming()
    rnd = random.Random(11)
    for _ in range(1000):
        t0 = rnd.uniform(0, 4e6)
        ctx0, n, k = rnd.randint(1, 3_000_000), rnd.randint(1, 256), rnd.randint(1, 400)
        cap = rnd.choice([4096 * 64, 16384 * 512, 1000])
        ctx = ctx0 + n * np.arange(k, dtype=np.int64)
        steps = np.empty(k + 1)
        steps[0] = t0
        steps[1:] = decode_ms_series(t, n, ctx, cap)
        ref = np.cumsum(steps)[1:]
        got = np.frombuffer(poly_decode_ends(t0, ctx0, n, k, float(cap), _to_ns))
        np.testing.assert_array_equal(ref, got)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1))
def test_published_view_equals_the_event_fed_index(seed: int) -> None:
    """A KV router's index of a native pool (``KvPool.new_index``: a view read from the pool,
    ``sim._kvpool.PubIndex``) answers every look-up as the reference pool's index does: a
    set that each pass's events are applied to at the drain, with a decode stretch's
    evictions published ahead (``difference_update``) and then made before the drain. Checked
    after every operation: membership, ``prefix_len`` and the whole key set."""
    from sim._kvpool import Keys
    from sim._kvpool import prefix_len as native_prefix_len
    from sim.router import _py_prefix_len

    rnd = random.Random(seed)
    nb = rnd.randint(3, 40)
    a, b = PyKvCache(nb, 16), NativeKvPool(nb, 16)
    a.enable_events()
    b.enable_events()
    ia, ib = a.new_index(), b.new_index()
    held_a: list[list[int]] = []
    held_b: list = []
    universe = list(range(-6, 16))
    for _ in range(600):
        r = rnd.random()
        if r < 0.45:
            resident = [k for k in universe if a.resident(k)]
            hits = rnd.sample(resident, min(len(resident), rnd.randint(0, 3)))
            fresh = rnd.randint(0, 4)
            ba, bb = a.new_blocks(), b.new_blocks()
            assert a.reserve_into(ba, list(hits), fresh) == b.reserve_into(bb, list(hits), fresh)
            if len(ba):
                keys = [rnd.randint(-6, 15) for _ in range(len(ba))]
                n = rnd.randint(0, len(ba))
                owner = rnd.choice(OWNERS)
                a.register_range(ba, 0, n, keys[: n - 1], owner)
                b.register_range(bb, 0, n, keys[: n - 1], owner)
                held_a.append(ba)
                held_b.append(bb)
        elif r < 0.75 and held_a:
            j = rnd.randrange(len(held_a))
            a.release(held_a.pop(j))
            b.release(held_b.pop(j))
        elif r < 0.9:
            a.drain_events_into(ia)
            b.drain_events_into(ib)
        elif a.inactive_count():
            # a stretch: its first n evictions are published ahead, made, then drained
            n = rnd.randint(1, a.inactive_count())
            gone = a.evicted_keys_ahead(0, n)
            assert gone == b.evicted_keys_ahead(0, n)
            ia.difference_update(gone)
            ib.difference_update(gone)
            assert [k in ia for k in universe] == [k in ib for k in universe]
            fresh = a.free_blocks() + n
            ba, bb = a.new_blocks(), b.new_blocks()
            assert a.reserve_into(ba, [], fresh) and b.reserve_into(bb, [], fresh)
            held_a.append(ba)
            held_b.append(bb)
        assert [k in ia for k in universe] == [k in ib for k in universe]
        assert ib.tolist() == sorted(ia)
        probe = [rnd.randint(-2, 15) for _ in range(rnd.randint(0, 6))]
        assert native_prefix_len(probe, ib) == _py_prefix_len(probe, ia) \
            == native_prefix_len(Keys(probe), ib)
        a.check()
        b.check()


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(-(2**31), 2**31)
                     | st.sampled_from([0, 1, -1, 2**30, 2**30 - 1, 2**60, 2**60 - 1, 2**62 - 1,
                                        -(2**62), 2**63 - 1, -(2**63)]), max_size=40))
def test_native_key_conversion_keeps_every_int64_distinct(keys: list[int]) -> None:
    """Keys reach the native code through a fast read of CPython's int digits (``get_key``):
    distinct ints stay distinct, equal ones match across objects, and an int outside int64
    is an OverflowError, as ``PyLong_AsLongLongAndOverflow`` gives."""
    from sim._kvpool import KeyCounter

    kc = KeyCounter()
    kc.add_all(keys)
    assert len(kc) == len(set(keys))
    assert all(int(str(k)) in kc for k in keys)           # equal value, another object
    assert not any(k in kc for k in {k ^ 1 for k in keys} - set(keys))
    with pytest.raises(OverflowError):
        kc.add_all([2**63])


INT64 = st.integers(-(2**63), 2**63 - 1)


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(INT64 | st.integers(-50, 50), max_size=40), other=st.lists(INT64, max_size=8),
       i=st.integers(-50, 50), start=st.none() | st.integers(-50, 50),
       stop=st.none() | st.integers(-50, 50), step=st.none() | st.integers(-4, 4).filter(bool))
def test_packed_keys_behave_as_the_list_they_pack(keys, other, i, start, stop, step) -> None:
    """``sim._kvpool.Keys`` (a prompt's keys packed as int64, what the native ``block_keys``
    returns) reads as the list of ints it packs: length, truth, indexing, slicing (a Keys),
    ``+`` a list or a Keys, iteration, ``reversed``, ``==``, pickling and an int64 buffer."""
    import pickle

    from sim._kvpool import Keys

    k = Keys(keys)
    assert len(k) == len(keys) and bool(k) == bool(keys)
    assert list(k) == keys and k.tolist() == keys and list(reversed(k)) == keys[::-1]
    assert k == keys and k == tuple(keys) and k == Keys(keys) and not (k != keys)
    assert (k == keys + [0]) is False and (k == other) == (keys == other)
    if -len(keys) <= i < len(keys):
        assert k[i] == keys[i]
    else:
        with pytest.raises(IndexError):
            k[i]
    sl = k[start:stop:step]
    assert isinstance(sl, Keys) and sl == keys[start:stop:step]
    assert k + other == keys + other and k + Keys(other) == keys + other
    assert isinstance(k + other, Keys)
    assert pickle.loads(pickle.dumps(k)) == keys
    assert np.frombuffer(k, dtype=np.int64).tolist() == keys
    with pytest.raises(TypeError):
        hash(k)
    with pytest.raises(TypeError):
        k + 5
    with pytest.raises(OverflowError):
        Keys([2**63])
