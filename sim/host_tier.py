"""G2 host (CPU) KV tier of one DP rank, beside the GPU block pool (vLLM flavour).

Dynamo's mocker models vLLM's ``OffloadingConnector`` over a host pool of
``num_host_blocks`` blocks (``native_host_offload``; semantics §3 "Lower tiers";
aisimulate-core ``engine/host_offload`` and ``scheduler/vllm/host_offload``). Only metadata
moves; transfer times come from the block size in bytes (``block_size x
kv_cache_bytes_per_token``) and a per-direction link:

* **stores (device to host)**: write-through of prompt blocks. When a scheduled request has
  computed full prompt blocks past its store cursor, the ones the host lacks form one store
  cohort: host space is taken at once (evicting the least recently used unpinned resident
  blocks; if that is not enough the cohort is retried at the request's next pass) and the
  copy is queued on the D2H lane at the pass end. The blocks are *pending* until the copy
  ends, then resident (one recency epoch per completed cohort).
* **lookups and loads (host to device)**: when a waiting request is considered for
  admission, the prompt blocks past its GPU prefix hit are looked up in the host tier; every
  lookup touches the request's resident prompt blocks, last first (vLLM's LRU touch). A hit
  reserves GPU blocks for the loaded prefix (the GPU hits pinned, fresh blocks for the host
  blocks) and queues one copy on the H2D lane; the request is parked until the copy has
  ended at a pass boundary, then its blocks join the GPU cache, held by it, and it goes back
  to the front of the waiting queue, where it is admitted with the loaded prefix cached.
* **lanes**: each direction is a FIFO lane of ``gbps`` decimal GB/s (0 = instantaneous); a
  copy starts when the lane is free and ends ``bytes / bandwidth`` later.

Counters for the report: host lookups that hit (loads) and their blocks, blocks offloaded
(stores queued) and evicted from the host. Transfers and recency are deterministic.
"""
from __future__ import annotations

import os
from collections import OrderedDict, deque
from collections.abc import Sequence

#: Dynamo's default bandwidth of either direction (decimal GB/s).
DEFAULT_HOST_GBPS = 32.0

_PENDING, _RESIDENT = 1, 2          # (0: absent)
_STORE, _LOAD = 0, 1        # same-timestamp completion order: stores first


class Lane:
    """One direction's FIFO link: copies run one after another at ``gbps`` GB/s."""

    __slots__ = ("bytes_per_ms", "tail_ms")

    def __init__(self, gbps: float) -> None:
        self.bytes_per_ms = gbps * 1e6 if gbps > 0 else 0.0     # 0: instantaneous
        self.tail_ms = 0.0

    def submit(self, not_before_ms: float, nbytes: int) -> float:
        """Queue a copy of ``nbytes`` that may start at ``not_before_ms``; its end (ms)."""
        start = self.tail_ms if self.tail_ms > not_before_ms else not_before_ms
        dur = nbytes / self.bytes_per_ms if self.bytes_per_ms else 0.0
        self.tail_ms = start + dur
        return self.tail_ms


class PyHostIndex:
    """Residency, recency and pins of a host pool of ``capacity`` blocks (the reference of
    the native ``sim._kvpool.HostIndex``, which has the same API and results).

    A present block is pending (its device-to-host copy runs) or resident; resident blocks
    are in an LRU list, oldest first; loads pin blocks (a pinned or pending block is never
    evicted)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.st: dict[int, int] = {}                   # key -> _PENDING | _RESIDENT
        self.pins: dict[int, int] = {}                 # key -> loads reading it
        self.lru: OrderedDict[int, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self.st)

    def match(self, keys: Sequence[int], start: int = 0) -> tuple[int, bool]:
        """(leading keys of ``keys[start:]`` present, any of them pending or pinned)."""
        n = 0
        deferred = False
        st, pins = self.st, self.pins
        for i in range(start, len(keys)):
            k = keys[i]
            s = st.get(k)
            if s is None:
                break
            n += 1
            if s == _PENDING or k in pins:
                deferred = True
        return n, deferred

    def resident_prefix(self, keys: Sequence[int], start: int = 0) -> int:
        """Leading keys of ``keys[start:]`` resident (their copy to the host has ended)."""
        n = 0
        st = self.st
        for i in range(start, len(keys)):
            if st.get(keys[i]) != _RESIDENT:
                break
            n += 1
        return n

    def touch_reversed(self, keys: Sequence[int]) -> None:
        """vLLM's LRU touch: resident keys become most recent, last key first."""
        lru = self.lru
        move = lru.move_to_end
        for k in reversed(keys):
            if k in lru:
                move(k)

    def prepare(self, keys: Sequence[int]):
        """Room for a store cohort: evict the least recently used resident blocks that are
        unpinned and not in the cohort, as many as the absent keys (repeats counted) exceed
        the free room, and add the absent keys as pending. Returns them (cohort order,
        once each), None if none is absent, False if there is not enough to evict (then
        nothing changes)."""
        st = self.st
        missing = 0
        for k in keys:
            if k not in st:
                missing += 1
        if not missing:
            return None
        short = missing - (self.capacity - len(st))
        if short > 0:
            lru, pins = self.lru, self.pins
            seen = set(keys)
            victims = []
            for k in lru:
                if k not in pins and k not in seen:
                    victims.append(k)
                    if len(victims) == short:
                        break
            if len(victims) < short:
                return False
            for k in victims:
                del lru[k]
                del st[k]
        out = []
        for k in keys:
            if k not in st:
                st[k] = _PENDING
                out.append(k)
        return out

    def complete(self, keys: Sequence[int]) -> None:
        """A store ended: its pending keys become resident, most recent, in order."""
        st, lru = self.st, self.lru
        for k in keys:
            if st.get(k) == _PENDING:
                st[k] = _RESIDENT
                lru[k] = None

    def pin(self, keys: Sequence[int]) -> None:
        pins = self.pins
        for k in keys:
            if k not in self.st:
                raise KeyError("pin of an absent host block")
            pins[k] = pins.get(k, 0) + 1

    def unpin(self, keys: Sequence[int]) -> None:
        pins = self.pins
        for k in keys:
            c = pins.get(k, 0) - 1
            if c < 0:
                raise KeyError("pin of an absent host block")
            if c:
                pins[k] = c
            else:
                del pins[k]

    def state(self, key: int) -> int:
        """0 absent, 1 pending, 2 resident."""
        return self.st.get(key, 0)

    def lru_keys(self) -> list[int]:
        return list(self.lru)

    def num_pinned(self) -> int:
        return len(self.pins)

    def check(self) -> None:
        assert len(self.st) <= self.capacity, "host tier over capacity"
        resident = {k for k, s in self.st.items() if s == _RESIDENT}
        assert set(self.lru) == resident, "host LRU drifted"
        assert all(k in self.st and c > 0 for k, c in self.pins.items()), "bad host pin"


def _new_index(capacity: int):
    """The native index (sim._kvpool.HostIndex) unless the reference is forced or absent."""
    if not os.environ.get("DYNOSIM_PURE_PYTHON"):
        try:
            from ._kvpool import HostIndex
            return HostIndex(capacity)
        except ImportError:
            pass
    return PyHostIndex(capacity)


class HostTier:
    """The host pool of one rank: residency, recency, pins and the two lanes.

    Keys are the engine's prompt-block keys (``sim.kv_cache.block_keys``), so a host block
    and a GPU block of the same prefix agree."""

    def __init__(self, num_blocks: int, block_bytes: int, d2h_gbps: float = DEFAULT_HOST_GBPS,
                 h2d_gbps: float = DEFAULT_HOST_GBPS) -> None:
        if num_blocks <= 0 or block_bytes <= 0:
            raise ValueError("host tier needs a positive capacity and block size")
        self.capacity = num_blocks
        self.block_bytes = block_bytes
        self.d2h = Lane(d2h_gbps)
        self.h2d = Lane(h2d_gbps)
        self.index = _new_index(num_blocks)        # residency, recency, pins
        self.prepared: list[tuple[int, list[int]]] = []     # stores awaiting the pass end
        # Copies in flight per lane, in submission order = end order (FIFO lanes):
        # (end ms, kind, id, keys, owner).
        self.stores: deque = deque()
        self.loads: deque = deque()
        self.version = 0          # bumps whenever residency or pins change (match cache)
        self._match_keys: Sequence[int] | None = None
        self._match_key: tuple | None = None
        self._match_val: tuple[int, bool] = (0, False)
        self._next_id = 0
        self.last_store_id = 0    # id of the latest cohort prepare_store prepared
        self._store_done = 0      # id of the latest store completed (stores end in id order)
        self.progressed = False   # a copy completed since the engine last looked (advance)
        self._touched: list[int] | None = None    # see touch_reversed
        self.fence_ms = 0.0       # the pass being scheduled starts computing at or after this
        # report counters
        self.stored_blocks = 0
        self.evicted_blocks = 0
        self.loaded_blocks = 0
        self.load_hits = 0

    # -- queries ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index)

    def has_transfers(self) -> bool:
        return bool(self.stores or self.loads or self.prepared)

    def next_deadline(self) -> float | None:
        ends = [q[0][0] for q in (self.stores, self.loads) if q]
        return min(ends) if ends else None

    def pending_load(self) -> bool:
        return bool(self.loads)

    def store_live(self, tid: int) -> bool:
        """Is store cohort ``tid`` prepared or in flight? (Stores run on one FIFO lane, so
        they complete in id order.)"""
        return tid > self._store_done

    def match(self, keys: Sequence[int], start: int = 0) -> tuple[int, bool]:
        """(leading keys of ``keys[start:]`` present, pending or being loaded among
        them). Repeated look-ups of one request on an unchanged tier are answered from a
        one-entry cache."""
        if keys is self._match_keys and (start, len(keys), self.version) == self._match_key:
            return self._match_val
        val = self.index.match(keys, start)
        self._match_keys = keys             # held, so its identity cannot be reused
        self._match_key = (start, len(keys), self.version)
        self._match_val = val
        return val

    # -- recency ----------------------------------------------------------------------------
    def touch_reversed(self, keys: Sequence[int]) -> None:
        """vLLM's LRU touch of a request's prompt blocks: last block first, so the first
        block ends up most recent."""
        if keys is self._touched:
            return     # the latest touch was this list and nothing joined the LRU since
        self.index.touch_reversed(keys)
        self._touched = keys

    # -- stores -----------------------------------------------------------------------------
    def prepare_store(self, keys: Sequence[int]) -> bool | None:
        """Take host space for the blocks of ``keys`` the host lacks (one cohort).
        True: prepared (sent at the pass end); None: nothing missing; False: no room
        (retry later)."""
        index = self.index
        before = len(index)
        missing = index.prepare(keys)
        if missing is None or missing is False:
            return missing
        self.evicted_blocks += before + len(missing) - len(index)
        self.stored_blocks += len(missing)
        self.version += 1
        self._next_id += 1
        self.last_store_id = self._next_id
        self.prepared.append((self._next_id, missing))
        return True

    def submit_stores(self, now: float) -> None:
        """Pass end: queue the prepared store cohorts on the D2H lane, in order."""
        for tid, keys in self.prepared:
            end = self.d2h.submit(now, len(keys) * self.block_bytes)
            self.stores.append((end, _STORE, tid, keys, None))
        self.prepared.clear()

    # -- source fences (Dynamo's StoreFence::SourceReuseOrPreemption) -----------------------
    # A GPU block being read by a device-to-host copy cannot be overwritten or freed until
    # the copy ends: a pass that evicts such a block for new KV, or preempts a request that
    # holds one, starts its compute when those copies end (``fence_ms``, set per pass).
    def fence_store(self, tid: int) -> None:
        """A request whose latest store cohort is ``tid`` is preempted: vLLM flushes that
        store before releasing the request's blocks, so the pass computes only once the
        copy has ended (Dynamo's ``preempt_request``; a cohort not yet submitted has no
        end and sets no fence)."""
        for end, _, t, _, _ in self.stores:
            if t == tid:
                if end > self.fence_ms:
                    self.fence_ms = end
                return

    def pass_fence(self, kv, evicted: bool) -> float:
        """When the pass scheduled from ``fence_ms`` (its start, or a preemption fence) may
        start computing: after every store still reading a GPU block the pass evicted
        (``evicted``: it evicted anything). A stored block leaves the GPU cache only by
        eviction, and an earlier pass that evicted it already waited for its copy, so a
        block of a store in flight that is no longer resident was evicted by this pass.
        Stores end in submission order: the latest affected one sets the fence."""
        fence = self.fence_ms
        if evicted:
            stores = self.stores
            for i in range(len(stores) - 1, -1, -1):
                end, _, _, ks, _ = stores[i]
                if end <= fence:
                    break
                if kv.match_prefix(ks)[0] < len(ks):     # one of its blocks is gone
                    return end
        return fence

    # -- loads ------------------------------------------------------------------------------
    def start_load(self, keys: Sequence[int], owner, now: float) -> float:
        """Pin ``keys`` and queue their copy to the device; returns its end (ms)."""
        self.index.pin(keys)
        self._next_id += 1
        self.version += 1
        end = self.h2d.submit(now, len(keys) * self.block_bytes)
        self.loads.append((end, _LOAD, self._next_id, keys, owner))
        self.load_hits += 1
        self.loaded_blocks += len(keys)
        return end

    # -- completion -------------------------------------------------------------------------
    def advance(self, now: float) -> list:
        """Complete every copy that has ended by ``now`` (by end, stores first, then in
        submission order); returns the owners of the completed loads in that order."""
        stores, loads = self.stores, self.loads
        if not ((stores and stores[0][0] <= now) or (loads and loads[0][0] <= now)):
            return []
        due = []
        while stores and stores[0][0] <= now:
            due.append(stores.popleft())
        while loads and loads[0][0] <= now:
            due.append(loads.popleft())
        due.sort(key=lambda t: (t[0], t[1], t[2]))
        self.version += 1
        self.progressed = True
        owners = []
        index = self.index
        for _, kind, tid, keys, owner in due:
            if kind == _STORE:
                # (a pending block stays until its copy ends: only resident ones are evicted)
                self._store_done = tid
                index.complete(keys)
                self._touched = None
            else:
                index.unpin(keys)
                owners.append(owner)
        return owners

    def check(self) -> None:
        """Tests: the tier's invariants (capacity, recency list = resident blocks, pins on
        present blocks)."""
        self.index.check()
        assert len(self.index) <= self.capacity, "host tier over capacity"

    @property
    def pins(self) -> int:
        """Present blocks some load pins."""
        return self.index.num_pinned()

    def counters(self) -> dict[str, int]:
        return {"host_load_hits": self.load_hits, "host_loaded_blocks": self.loaded_blocks,
                "host_stored_blocks": self.stored_blocks,
                "host_evicted_blocks": self.evicted_blocks}
