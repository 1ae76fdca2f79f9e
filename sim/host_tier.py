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

from collections import OrderedDict, deque

#: Dynamo's default bandwidth of either direction (decimal GB/s).
DEFAULT_HOST_GBPS = 32.0

_PENDING, _RESIDENT = 0, 1
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
        self.state: dict[int, int] = {}            # key -> _PENDING | _RESIDENT
        self.pins: dict[int, int] = {}             # key -> loads reading it
        self.lru: OrderedDict[int, None] = OrderedDict()   # resident keys, oldest first
        self.prepared: list[tuple[int, list[int]]] = []     # stores awaiting the pass end
        # Copies in flight per lane, in submission order = end order (FIFO lanes):
        # (end ms, kind, id, keys, owner).
        self.stores: deque = deque()
        self.loads: deque = deque()
        self.version = 0          # bumps whenever residency or pins change (match cache)
        self._match_keys: list[int] | None = None
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
        return len(self.state)

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

    def match(self, keys: list[int], start: int = 0) -> tuple[int, bool]:
        """(leading keys of ``keys[start:]`` present, pending or being loaded among
        them). Repeated look-ups of one request on an unchanged tier are answered from a
        one-entry cache."""
        if keys is self._match_keys and (start, len(keys), self.version) == self._match_key:
            return self._match_val
        val = self._match(keys[start:] if start else keys)
        self._match_keys = keys             # held, so its identity cannot be reused
        self._match_key = (start, len(keys), self.version)
        self._match_val = val
        return val

    def _match(self, keys: list[int]) -> tuple[int, bool]:
        n = 0
        deferred = False
        state, pins = self.state, self.pins
        for k in keys:
            s = state.get(k)
            if s is None:
                break
            n += 1
            if s == _PENDING or k in pins:
                deferred = True
        return n, deferred

    # -- recency ----------------------------------------------------------------------------
    def touch_reversed(self, keys: list[int]) -> None:
        """vLLM's LRU touch of a request's prompt blocks: last block first, so the first
        block ends up most recent."""
        if keys is self._touched:
            return     # the latest touch was this list and nothing joined the LRU since
        lru = self.lru
        move = lru.move_to_end
        for k in reversed(keys):
            if k in lru:
                move(k)
        self._touched = keys

    # -- stores -----------------------------------------------------------------------------
    def prepare_store(self, keys: list[int]) -> bool | None:
        """Take host space for the blocks of ``keys`` the host lacks (one cohort).
        True: prepared (sent at the pass end); None: nothing missing; False: no room
        (retry later)."""
        state = self.state
        missing = [k for k in dict.fromkeys(keys) if k not in state]
        if not missing:
            return None
        seen = set(keys)
        short = len(missing) - (self.capacity - len(state))
        if short > 0:
            pins = self.pins
            victims = []
            for k in self.lru:
                if k not in pins and k not in seen:
                    victims.append(k)
                    if len(victims) == short:
                        break
            if len(victims) < short:
                return False
            for k in victims:
                del self.lru[k]
                del state[k]
            self.evicted_blocks += short
        for k in missing:
            state[k] = _PENDING
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
        block of a store in flight that is no longer resident was evicted by this pass."""
        fence = self.fence_ms
        if evicted:
            resident = kv.resident
            for end, _, _, ks, _ in self.stores:
                if end > fence:
                    for k in ks:
                        if not resident(k):
                            fence = end
                            break
        return fence

    # -- loads ------------------------------------------------------------------------------
    def start_load(self, keys: list[int], owner, now: float) -> float:
        """Pin ``keys`` and queue their copy to the device; returns its end (ms)."""
        pins = self.pins
        for k in keys:
            pins[k] = pins.get(k, 0) + 1
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
        state, lru, pins = self.state, self.lru, self.pins
        for _, kind, tid, keys, owner in due:
            if kind == _STORE:
                self._store_done = tid
                for k in keys:
                    if state.get(k) == _PENDING:
                        state[k] = _RESIDENT
                        lru[k] = None
                self._touched = None
            else:
                for k in keys:
                    c = pins[k] - 1
                    if c:
                        pins[k] = c
                    else:
                        del pins[k]
                owners.append(owner)
        return owners

    def check(self) -> None:
        """Tests: the tier's invariants (capacity, recency list = resident blocks, pins on
        present blocks)."""
        assert len(self.state) <= self.capacity, "host tier over capacity"
        resident = {k for k, s in self.state.items() if s == _RESIDENT}
        assert set(self.lru) == resident, "host LRU drifted"
        assert all(k in self.state and c > 0 for k, c in self.pins.items()), "bad host pin"

    def counters(self) -> dict[str, int]:
        return {"host_load_hits": self.load_hits, "host_loaded_blocks": self.loaded_blocks,
                "host_stored_blocks": self.stored_blocks,
                "host_evicted_blocks": self.evicted_blocks}
