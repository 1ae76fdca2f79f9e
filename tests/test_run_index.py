"""The KV router's per-trace-block index for SGLang workers (``sim.radix_cache.RunIndex``)
against the per-page key counter it replaces (``sim.router.PyKeyCounter`` over keys
``(chain, page)``): same held pages, same distinct count, same prefix lengths, after any
sequence of adds and removals (removals only of held pages, as the radix cache's events)."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim.radix_cache import RunIndex, page_runs, run_prefix_len
from sim.router import PyKeyCounter, _py_prefix_len

CHAINS = 4          # chain values 0..3
PAGES = 24          # pages 0..23 per chain


def expand(runs) -> list:
    return [(c, p) for c, a, b in runs for p in range(a, b)]


op = st.tuples(st.booleans(), st.integers(0, CHAINS - 1), st.integers(0, PAGES - 1),
               st.integers(1, PAGES))
query = st.lists(st.tuples(st.integers(0, CHAINS - 1), st.integers(1, 6)), min_size=1,
                 max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=60), st.lists(query, min_size=1, max_size=4))
def test_run_index_equals_per_page_key_counter(ops, queries) -> None:
    idx, ref = RunIndex(), PyKeyCounter()
    for add, c, a, n in ops:
        b = min(a + n, PAGES)
        if add:
            idx.add_all([(c, a, b)])
            ref.add_all(expand([(c, a, b)]))
        else:
            # remove the longest held range starting at a (as an eviction or a freed copy)
            e = a
            while e < b and ref[(c, e)] > 0:
                e += 1
            if e == a:
                continue
            idx.remove_all([(c, a, e)])
            ref.remove_all(expand([(c, a, e)]))
        assert len(idx) == len(ref)
        assert bool(idx) == bool(ref)
    for q in queries:
        runs, pos = [], 0
        for c, n in q:                  # consecutive runs from page 0, as a prompt's
            runs.append((c, pos, min(pos + n, PAGES)))
            pos = min(pos + n, PAGES)
        runs = [r for r in runs if r[1] < r[2]]
        assert run_prefix_len(runs, idx) == _py_prefix_len(expand(runs), ref)
    assert run_prefix_len([(0, 0, 3)], None) == 0


@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 60), st.integers(0, 60))
def test_page_runs_tile_pages_by_the_trace_block_of_their_last_token(tbs, P, lo, n) -> None:
    hi = lo + n
    chain = list(range(1000, 1000 + ((hi + 1) * P) // tbs + 2))
    runs = page_runs(chain, tbs, P, lo, hi)
    assert expand(runs) == [(chain[((p + 1) * P - 1) // tbs], p) for p in range(lo, hi)]
    assert all(a < b for _, a, b in runs)
