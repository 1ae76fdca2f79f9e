"""Routers: which worker gets an arriving request.

``round_robin``, ``random`` and ``least_loaded`` look only at worker counts. ``kv`` is
Dynamo's KV-aware cost (Dynamo's ``docs/router/kv_cache_routing.md`` and
``kv-router/scheduling/selector``; ``docs/dynamo_replay_semantics.md`` §3):

    cost(w) = prefill_load_scale * max(prefill_blocks(w) - credit * overlap(w), 0)
              + decode_blocks(w)

with prefill_blocks = (prompt tokens routed to w that have not produced a first token,
plus this prompt) / block_size, overlap = this prompt's leading blocks resident on w, and
decode_blocks = distinct full prompt blocks of the requests routed to w and not finished,
plus this prompt's blocks beyond its longest prefix already active on w (rules checked
against ai-dynamo 1.6.1's replay). Temperature 0 takes the argmin (ties drawn at random);
temperature T > 0 samples softmax(-(c - c_min) / ((c_max - c_min) * T)).
All randomness comes from the generator handed in (one stream per run).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .engine import EngineBase as Engine, Seq
from .kv_cache import NativeKvPool, block_keys, private_key
from .radix_cache import RunIndex, _chain, page_runs, run_prefix_len
from .request import Request

ROUTER_MODES = ("round_robin", "random", "least_loaded", "kv")


@dataclass
class KvRouterConfig:
    overlap_score_credit: float = 1.0     # blocks of prefill credited per cached block
    prefill_load_scale: float = 1.0       # weight of the prefill term
    temperature: float = 0.0              # 0 = argmin; > 0 = softmax sampling
    assume_kv_reuse: bool = True          # count blocks shared with active requests once
    # Disaggregated stages (router-disaggregated-serving.md): the prefill router drops the
    # decode-load term, the decode router the pending-prefill term.
    track_active_blocks: bool = True
    track_prefill_tokens: bool = True
    # G2 host tier (vLLM workers with --num-host-blocks): prefill blocks credited per
    # block of the prompt found in the worker's host tier past its GPU overlap (Dynamo's
    # KvRouterConfig.host_cache_hit_weight, default 0.75).
    host_cache_hit_weight: float = 0.75


class Router:
    name = "base"
    wants_kv_events = False     # True: the driver forwards each pass's KV events at its end

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def select(self, req: Request, workers: list[Engine], now: float) -> Engine:
        raise NotImplementedError

    # Lifecycle hooks (used by routers that keep their own load view).
    def on_routed(self, w: Engine, req: Request) -> None: ...
    def on_first_token(self, w: Engine, s: Seq, now: float) -> None: ...
    def on_finished(self, w: Engine, s: Seq, now: float) -> None: ...
    def apply_kv_events(self, w: Engine) -> None: ...
    def publish_removed(self, w: Engine, keys: list[int]) -> None: ...

    def take_keys(self) -> Sequence[int] | None:
        """Prompt-block keys computed while routing the last request (shared with the
        engine so they are hashed once), or None."""
        return None

    def _pick_min(self, values: list[float], workers: list[Engine]) -> Engine:
        best = min(values)
        # (the common single minimum found by C list methods; ``count`` also matches by
        # identity, the same as ``==`` unless best is NaN)
        if best == best and values.count(best) == 1:
            return workers[values.index(best)]
        ties = [i for i, v in enumerate(values) if v == best]
        if len(ties) == 1:
            return workers[ties[0]]
        return workers[ties[int(self.rng.integers(len(ties)))]]


class RoundRobinRouter(Router):
    name = "round_robin"

    def __init__(self, rng: np.random.Generator, dp_size: int = 1) -> None:
        super().__init__(rng)
        self.last = -1       # position of the last pick in the active-worker list
        self.dp_size = dp_size
        self.next_rank: dict[int, int] = {}   # worker (its first rank's id) -> next DP rank

    def select(self, req, workers, now):
        # The position after the last pick, in the current active list (ascending id):
        # Dynamo's replay continues from there when workers join or leave (measured on its
        # planner replay: after a scale-up from 4 to 5 workers the pick after position 3 is
        # the new position 4). With a fixed pool this is plain request-count modulo.
        dp = self.dp_size
        if dp == 1:
            i = (self.last + 1) % len(workers)
            self.last = i
            return workers[i]
        # DP ranks (``workers`` holds each active worker's ranks, consecutive): workers in
        # turn as above, and within a worker its ranks in turn (Dynamo 1.6.1's aggregated
        # round robin keeps one rank cursor per worker).
        i = (self.last + 1) % (len(workers) // dp)
        self.last = i
        head = workers[i * dp].id
        rank = self.next_rank.get(head, 0)
        self.next_rank[head] = (rank + 1) % dp
        return workers[i * dp + rank]


class RandomRouter(Router):
    name = "random"

    def select(self, req, workers, now):
        return workers[int(self.rng.integers(len(workers)))]


class LeastLoadedRouter(Router):
    """Fewest requests in flight (running + waiting); ties at random."""
    name = "least_loaded"

    def select(self, req, workers, now):
        return self._pick_min([w.num_in_flight() for w in workers], workers)


class KvRouter(Router):
    """Dynamo's KV-aware router with its own view of each worker.

    * ``overlap``: leading blocks of the prompt in the worker's cache *as published*: KV
      store/evict events of a pass become visible when the pass ends;
    * ``prefill``: prompt tokens routed to the worker and not yet past their first token,
      net of what was cached at routing;
    * ``active``: distinct full prompt blocks of the worker's unfinished requests; the
      prompt's own blocks count only past its longest prefix already active there.
    """
    name = "kv"

    def __init__(self, rng: np.random.Generator, block_size: int,
                 cfg: KvRouterConfig | None = None, *, run_keys: bool = False) -> None:
        super().__init__(rng)
        self.cfg = cfg or KvRouterConfig()
        self.block_size = block_size
        # run_keys, for SGLang workers (radix cache, page size 1 by default): blocks are runs
        # of pages per trace block (``sim.radix_cache.RunIndex``), scored exactly as per-page
        # keys would be, at a trace block's cost instead of a token's.
        self.run_keys = run_keys
        self._prefix_len = run_prefix_len if run_keys else _prefix_len
        self.index: dict[int, object] = {}                   # worker -> published block keys
        self.prefill_tokens: dict[int, int] = {}             # worker -> pending prompt tokens
        self.active: dict[int, object] = {}      # worker -> block key -> users (KeyCounter/RunIndex)
        self.active_total: dict[int, int] = {}               # worker -> blocks with repeats
        # request -> (worker, its keys as the active counter took them, pending prefill tokens)
        self.routed: dict[int, tuple[int, object, int]] = {}
        self._last: tuple[list[int], int] | None = None
        self._keys_out: Sequence[int] | None = None

    wants_kv_events = True

    def _index(self, w: Engine):
        idx = self.index.get(w.id)
        if idx is None:
            idx = self.index[w.id] = w.kv.new_index()   # a set, or the native pool's view
        return idx

    def apply_kv_events(self, w: Engine) -> None:
        w.kv.drain_events_into(self._index(w))

    def publish_removed(self, w: Engine, keys: list[int]) -> None:
        if getattr(w.kv, "counted_index", False):
            self._index(w).remove_all(keys)          # one copy each (SGLang radix cache)
        else:
            self._index(w).difference_update(keys)

    def take_keys(self) -> Sequence[int] | None:
        keys, self._keys_out = self._keys_out, None
        return keys

    def _keys(self, req: Request) -> Sequence:
        """The prompt's full blocks: their keys, or with ``page_runs`` their runs."""
        bs = self.block_size
        full = req.input_length // bs
        if self.run_keys:
            if full == 0:
                return []
            if req.hash_ids is None:
                return [(("private", req.index), 0, full)]
            tbs = req.trace_block_size
            return page_runs(_chain(req.hash_ids, ((full * bs) - 1) // tbs + 1), tbs, bs, 0, full)
        if req.hash_ids is not None:
            return block_keys(req.hash_ids, req.trace_block_size, bs, full)
        return [private_key(req.index, b) for b in range(full)]

    def overlap(self, keys: Sequence, wid: int) -> int:
        """Leading blocks of ``keys`` (from ``_keys``) in worker ``wid``'s published cache."""
        return self._prefix_len(keys, self.index.get(wid))

    def select(self, req, workers, now):
        cfg = self.cfg
        bs = self.block_size
        keys = self._keys(req)
        isl = req.input_length
        nkeys = isl // bs
        prefix_len = self._prefix_len
        # (config and tables read once per request, not once per worker)
        track_prefill, credit = cfg.track_prefill_tokens, cfg.overlap_score_credit
        track_active, reuse, scale = (cfg.track_active_blocks, cfg.assume_kv_reuse,
                                      cfg.prefill_load_scale)
        index, actives, prefill_tokens = self.index, self.active, self.prefill_tokens
        costs = []
        overlaps = []
        host_w = cfg.host_cache_hit_weight
        for w in workers:
            wid = w.id
            ov = prefix_len(keys, index.get(wid))
            active = actives.get(wid)
            ov_active = prefix_len(keys, active)
            pending = prefill_tokens.get(wid, 0) if track_prefill else 0
            prefill = (pending + isl) / bs - credit * ov
            host = getattr(w, "host", None)
            if host is not None and ov < len(keys):
                # Host-tier overlap: the prompt's blocks past the GPU overlap whose copy
                # to the worker's host tier has ended, weighted (Dynamo's tiered match:
                # stores are published when their copy ends, evictions when they happen).
                prefill -= host_w * host.index.resident_prefix(keys, ov)
            if prefill < 0:
                prefill = 0.0
            if not track_active:
                decode = 0
            elif reuse:
                decode = (len(active) if active else 0) + nkeys - ov_active
            else:
                decode = self.active_total.get(wid, 0) + nkeys
            costs.append(scale * prefill + decode)
            overlaps.append(ov)
        if cfg.temperature <= 0:
            chosen = self._pick_min(costs, workers)
        else:
            chosen = workers[self._softmax_pick(costs)]
        self._last = (keys, overlaps[workers.index(chosen)])
        return chosen

    def _softmax_pick(self, costs: list[float]) -> int:
        c = np.asarray(costs, dtype=float)
        lo, hi = c.min(), c.max()
        if hi == lo:
            return int(self.rng.integers(len(c)))
        # min-max normalised first, then / T ((hi - lo) * T can underflow to 0)
        logits = -((c - lo) / (hi - lo)) / self.cfg.temperature
        p = np.exp(logits - logits.max())
        p /= p.sum()
        return int(self.rng.choice(len(c), p=p))

    def on_routed(self, w, req):
        if self._last is None:          # routed without select (e.g. to a starting worker)
            keys, ov = self._keys(req), 0
        else:
            keys, ov = self._last
        self._last = None
        wid = w.id
        pending = max(0, req.input_length - min(ov * self.block_size, req.input_length))
        self.prefill_tokens[wid] = self.prefill_tokens.get(wid, 0) + pending
        active = self.active.get(wid)
        if active is None:
            active = self.active[wid] = RunIndex() if self.run_keys else KeyCounter()
        if self.run_keys:
            active.add_all(keys)
            held = keys
        else:       # what on_finished removes: the packed keys (native), or the keys themselves
            held = active.add_all_packed(keys)
        self.active_total[wid] = self.active_total.get(wid, 0) + req.input_length // self.block_size
        self.routed[req.index] = (wid, held, pending)
        self._keys_out = keys

    def on_first_token(self, w, s, now):
        info = self.routed.get(s.req.index)
        if info is None or info[2] == 0:
            return
        wid, held, pending = info
        self.prefill_tokens[wid] -= pending
        self.routed[s.req.index] = (wid, held, 0)

    def on_finished(self, w, s, now):
        info = self.routed.pop(s.req.index, None)
        if info is None:
            return
        wid, held, pending = info
        if pending:
            self.prefill_tokens[wid] -= pending
        self.active[wid].remove_all(held)
        self.active_total[wid] -= s.req.input_length // self.block_size


def _py_prefix_len(keys: list[int], present) -> int:
    """How many leading ``keys`` are in ``present`` (a set or counter; None = empty)."""
    n = 0
    if present:
        for k in keys:
            if k not in present:
                break
            n += 1
    return n


class PyKeyCounter(Counter):
    """Multiset of keys; ``len`` = distinct keys (twin of the native ``KeyCounter``)."""

    def add_all(self, keys: list[int]) -> None:
        self.update(keys)

    def add_all_packed(self, keys: list[int]) -> list[int]:
        """``add_all``; returns what ``remove_all`` takes back (the native twin returns the
        keys as a packed ``sim._kvpool.Keys``: the same object when given one)."""
        self.update(keys)
        return keys

    def remove_all(self, keys: list[int]) -> None:
        delete = dict.__delitem__          # Counter's own __delitem__ is pure Python
        for k in keys:
            c = self[k] - 1
            if c:
                self[k] = c
            else:
                delete(self, k)


if NativeKvPool is not None:
    from ._kvpool import KeyCounter
    from ._kvpool import prefix_len as _prefix_len
else:
    KeyCounter = PyKeyCounter
    _prefix_len = _py_prefix_len


def make_router(mode: str, rng: np.random.Generator, block_size: int,
                kv_cfg: KvRouterConfig | None = None, dp_size: int = 1, *,
                run_keys: bool = False) -> Router:
    """``dp_size``: DP ranks per worker; every router but round robin scores the (worker,
    rank) pairs as they come (each rank is an engine), round robin turns over workers and
    then over each worker's ranks. ``run_keys``: the workers are SGLang's (their radix
    caches publish page runs)."""
    if mode == "round_robin":
        return RoundRobinRouter(rng, dp_size)
    if mode == "random":
        return RandomRouter(rng)
    if mode == "least_loaded":
        return LeastLoadedRouter(rng)
    if mode == "kv":
        return KvRouter(rng, block_size, kv_cfg, run_keys=run_keys)
    raise ValueError(f"unknown router mode {mode!r}")
