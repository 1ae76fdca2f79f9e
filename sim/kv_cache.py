"""KV block pool with prefix caching, as in vLLM and Dynamo's mocker.

Physical blocks are *copies*. A copy is private (being filled, no content hash yet) or
hashed. A hashed copy is *active* while sequences hold it (reference count > 0) and
*inactive* when none do: still resident and reusable, and evictable in LRU order (oldest
release first). Two sequences that compute the same block concurrently hold two copies;
lookups use the first. A prefix hit is the longest run of leading block hashes with a
resident copy.

Only hashed copies get ids; private blocks are a count, which keeps decode growth cheap.
Keys (content hashes) are ints from ``block_keys``/``private_key``; the native build's
``block_keys`` packs a prompt's keys as int64 (``sim._kvpool.Keys``, a read-only sequence of
ints that the native pool, router and host tier read without unboxing). Nothing iterates in
hash order, so runs are deterministic.
"""
from __future__ import annotations

import os
from collections import OrderedDict
from itertools import islice

import numpy as np

_MASK62 = (1 << 62) - 1
PRIVATE = -1     # block id of a private (unhashed) block held by a sequence


_M64 = (1 << 64) - 1
_MIX_A, _MIX_B = 0x9E3779B97F4A7C15, 0x632BE59BD9B4E019


def _mix64(x: int) -> int:
    """splitmix64's finaliser (bit-identical to the native module's)."""
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & _M64
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def py_block_keys(hash_ids: tuple[int, ...], trace_block_size: int, block_size: int,
                  num_full_blocks: int) -> list[int]:
    """Engine-block keys for the first ``num_full_blocks`` full blocks of a trace prompt.

    Token t of the prompt is hash_ids[t // trace_block_size] (Dynamo's token synthesis), so
    two prompts agree on their first (b+1)*block_size tokens exactly when they agree on
    hash_ids[0 .. j] with j = ((b+1)*block_size - 1) // trace_block_size. The key of engine
    block b mixes a chained hash of hash_ids[0 .. j] with b: equal keys mean equal token
    prefixes (up to 64-bit collisions, as with Dynamo's XXH3 keys). Keys are >= 0.
    The native ``sim._kvpool.block_keys`` computes the same values, packed as a
    ``sim._kvpool.Keys`` (equal to this list under ``==``).
    """
    if num_full_blocks <= 0:
        return []
    last = (num_full_blocks * block_size - 1) // trace_block_size
    if last >= len(hash_ids):
        raise IndexError("too few hash_ids")
    chain = []
    c = 0
    for h in hash_ids[: last + 1]:
        c = _mix64(c ^ (((h & _M64) * _MIX_A + _MIX_B) & _M64))
        chain.append(c)
    b = np.arange(num_full_blocks, dtype=np.uint64)
    j = ((b.astype(np.int64) + 1) * block_size - 1) // trace_block_size
    keys = np.asarray(chain, dtype=np.uint64)[j] * np.uint64(_MIX_A) + b
    return (keys & np.uint64(_MASK62)).tolist()


class BlockList(list):
    """A sequence's held blocks for the reference pool: copy ids, PRIVATE for a block still
    being filled. The native pool's twin is ``sim._kvpool.Blocks`` (an int32 array)."""

    __slots__ = ()

    def add_private(self, n: int) -> None:
        self.extend([PRIVATE] * n)


class KvEvents:
    """Prompt-block keys stored and removed during one pass, published to a KV router at
    the pass end. Removals normally precede stores within a pass (a freshly stored block
    is held and cannot be evicted), so they are applied in bulk; a removal that follows
    stores (a sequence preempted later in the same pass) is logged with its position; once
    a pass has stored anything every later removal is such a one, so they are the tail of
    ``removed``."""

    __slots__ = ("stored", "removed", "late")

    def __init__(self) -> None:
        self.stored: list[int] = []
        self.removed: list[int] = []
        self.late: list[tuple[int, int]] = []   # (stores before it, key)

    def __bool__(self) -> bool:
        return bool(self.stored or self.removed)

    def apply(self, index: set[int]) -> None:
        """Bring a router's view of the worker's cache up to date, in event order."""
        if not self.late:
            index.difference_update(self.removed)
            index.update(self.stored)
        else:
            n_late = len(self.late)
            index.difference_update(self.removed[: len(self.removed) - n_late])
            done = 0
            for pos, key in self.late:
                index.update(self.stored[done:pos])
                index.discard(key)
                done = pos
            index.update(self.stored[done:])
        self.clear()

    def clear(self) -> None:
        self.stored.clear()
        self.removed.clear()
        self.late.clear()


def private_key(request_index: int, block: int) -> int:
    """Key of a block whose tokens no other request has (its own output, or an opaque
    prompt). Negative, so it never equals a prompt key; stable across preemption so a
    recomputed request can hit its own still-resident blocks."""
    return -1 - (hash((request_index, block)) & _MASK62)


class PyKvCache:
    """Block accounting for one worker (one DP rank); the reference implementation.

    Copy ids are slots ``0 .. num_blocks-1`` (a physical pool never holds more hashed
    copies than it has blocks), so per-copy state lives in preallocated lists; ``by_key``
    maps a key to its first copy, and the rare extra copies of a key wait in ``dups``.
    """

    __slots__ = ("num_blocks", "block_size", "prefix_caching", "key_of", "refs", "by_key",
                 "dups", "lru", "free_ids", "num_private", "num_hashed", "evictions", "events")

    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True) -> None:
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.key_of: list[int] = [0] * num_blocks     # copy id -> key
        self.refs: list[int] = [0] * num_blocks       # copy id -> holders (0 = inactive)
        self.by_key: dict[int, int] = {}              # key -> first resident copy
        self.dups: dict[int, list[int]] = {}          # key -> further copies (rare)
        # Inactive copies, oldest first. OrderedDict: O(1) pop of the oldest even after
        # millions of deletions (a plain dict's first-item lookup degrades).
        self.lru: OrderedDict[int, None] = OrderedDict()
        self.free_ids: list[int] = list(range(num_blocks - 1, -1, -1))
        self.num_private = 0
        self.num_hashed = 0                    # resident hashed copies (active + inactive)
        self.evictions = 0
        # Prompt-key events for a KV router, drained at each pass end; None = no router.
        self.events: KvEvents | None = None

    # -- queries ----------------------------------------------------------
    @property
    def num_active(self) -> int:
        return self.num_hashed - len(self.lru) + self.num_private

    def free_blocks(self) -> int:
        return self.num_blocks - self.num_hashed - self.num_private

    def inactive_count(self) -> int:
        return len(self.lru)

    # -- events for a KV router (same interface as the native pool) -------------------
    def enable_events(self) -> None:
        self.events = KvEvents()

    @property
    def events_enabled(self) -> bool:
        return self.events is not None

    def has_events(self) -> bool:
        return bool(self.events)

    def new_index(self) -> set[int]:
        """An empty router index this pool's events can be drained into."""
        return set()

    def drain_events_into(self, index: set[int]) -> None:
        self.events.apply(index)

    def evicted_keys_ahead(self, start: int, stop: int) -> list[int]:
        """Keys that evicting the LRU's positions [start, stop) would remove from the cache
        (prompt keys whose last copy goes): the router's view of a stretch's evictions."""
        out = []
        for c in islice(self.lru, start, stop):
            key = self.key_of[c]
            if key >= 0 and self.by_key.get(key) == c and key not in self.dups:
                out.append(key)
        return out

    def match_prefix(self, keys: list[int]) -> tuple[int, int]:
        """(leading resident blocks, of which active) for a sequence's full-block keys."""
        if not self.prefix_caching:
            return 0, 0
        get, refs = self.by_key.get, self.refs
        n = n_active = 0
        for k in keys:
            c = get(k)
            if c is None:
                break
            n += 1
            if refs[c]:
                n_active += 1
        return n, n_active

    def resident(self, key: int) -> bool:
        return key in self.by_key

    # -- mutations ----------------------------------------------------------
    def reserve(self, hit_keys: list[int], fresh: int) -> list[int] | None:
        """Atomically pin the first copies of ``hit_keys`` and take ``fresh`` private blocks,
        evicting inactive copies (oldest first) if free space is short. Returns the pinned
        copy ids, or None (and changes nothing) when it cannot fit."""
        lru = self.lru
        by_key = self.by_key
        short = fresh - self.free_blocks()
        if short > 0:
            inactive_hits = len({by_key[k] for k in hit_keys if by_key[k] in lru})
            if short > len(lru) - inactive_hits:
                return None
        refs = self.refs
        ids = []
        for k in hit_keys:
            c = by_key[k]
            if refs[c] == 0:
                del lru[c]
            refs[c] += 1
            ids.append(c)
        if short > 0:
            self._evict(short)
        self.num_private += fresh
        return ids

    def reserve_into(self, blocks: list[int], hit_keys: list[int], fresh: int) -> bool:
        """``reserve``, appending the pinned copies and then ``fresh`` PRIVATE blocks to a
        sequence's ``blocks``; False (nothing changed) when it cannot fit."""
        ids = self.reserve(hit_keys, fresh)
        if ids is None:
            return False
        blocks.extend(ids)
        blocks.extend([PRIVATE] * fresh)
        return True

    def new_blocks(self) -> BlockList:
        """An empty block table for a sequence."""
        return BlockList()

    def _evict(self, n: int) -> None:
        """Evict the ``n`` oldest inactive copies (one loop: this is the hot path of
        small-pool replays)."""
        popitem = self.lru.popitem
        key_of, by_key, dups, events = self.key_of, self.by_key, self.dups, self.events
        free_ids = self.free_ids
        if events is not None:
            removed, stored, late = events.removed, events.stored, events.late
        for _ in range(n):
            c = popitem(False)[0]
            k = key_of[c]
            if by_key[k] == c:
                extra = dups.get(k) if dups else None
                if extra:
                    by_key[k] = extra.pop(0)
                    if not extra:
                        del dups[k]
                else:
                    del by_key[k]
                    if events is not None and k >= 0:
                        if stored:        # see KvEvents: a removal after stores
                            late.append((len(stored), k))
                        removed.append(k)
            else:
                extra = dups[k]
                extra.remove(c)
                if not extra:
                    del dups[k]
            free_ids.append(c)
        self.num_hashed -= n
        self.evictions += n

    def register(self, key: int) -> int:
        """A held private block has filled: it becomes a hashed copy of ``key``."""
        c = self.free_ids.pop()
        self.num_private -= 1
        self.num_hashed += 1
        self.key_of[c] = key
        self.refs[c] = 1
        if key in self.by_key:
            self.dups.setdefault(key, []).append(c)
        else:
            self.by_key[key] = c
            if self.events is not None and key >= 0:
                self.events.stored.append(key)
        return c

    def register_range(self, blocks: list[int], start: int, stop: int, keys: list[int],
                       owner: int) -> None:
        """``register`` every still-private block in ``blocks[start:stop]``; block b's key is
        ``keys[b]`` for prompt blocks, else ``private_key(owner, b)`` (owner: request index)."""
        by_key, refs, key_of, free_ids = self.by_key, self.refs, self.key_of, self.free_ids
        events = self.events
        nk = len(keys)
        n = 0
        for b in range(start, stop):
            if blocks[b] != PRIVATE:
                continue
            key = keys[b] if b < nk else private_key(owner, b)
            c = free_ids.pop()
            key_of[c] = key
            refs[c] = 1
            if key in by_key:
                self.dups.setdefault(key, []).append(c)
            else:
                by_key[key] = c
                if events is not None and key >= 0:
                    events.stored.append(key)
            blocks[b] = c
            n += 1
        self.num_private -= n
        self.num_hashed += n

    def release(self, blocks: list[int]) -> None:
        """Drop one hold on each block, last block first, so a sequence's suffix is evicted
        before its prefix. Private blocks are freed; hashed copies with no holder become
        inactive. (With prefix caching off the engine never hashes, so all are private.)"""
        refs, lru = self.refs, self.lru
        for c in reversed(blocks):
            if c == PRIVATE:
                self.num_private -= 1
                continue
            r = refs[c] - 1
            refs[c] = r
            if r == 0:
                lru[c] = None

    def check(self) -> None:
        """Invariant check used by tests: blocks are conserved."""
        used = set(range(self.num_blocks)) - set(self.free_ids)
        assert len(used) == self.num_hashed == self.num_blocks - len(self.free_ids), "copies drifted"
        resident = set(self.by_key.values()) | {c for v in self.dups.values() for c in v}
        assert resident == used, "index drifted"
        assert all(self.refs[c] >= 0 for c in used), "negative refcount"
        assert all(self.refs[c] == 0 for c in self.lru), "held block in the LRU"
        assert sum(1 for c in used if self.refs[c] == 0) == len(self.lru), "LRU drifted"
        assert all(self.key_of[c] == k for k, c in self.by_key.items()), "key index drifted"
        assert self.num_private >= 0, "negative private count"
        assert 0 <= self.num_hashed + self.num_private <= self.num_blocks, "pool over-committed"


def _native_pool():
    if os.environ.get("DYNOSIM_PURE_PYTHON"):
        return None
    try:
        from ._kvpool import KvPool
    except ImportError:
        return None
    return KvPool


#: The pool the engine uses: the native one when it was built (same semantics, tested
#: against ``PyKvCache`` operation by operation), else the reference implementation.
NativeKvPool = _native_pool()
KvCache = NativeKvPool if NativeKvPool is not None else PyKvCache
if NativeKvPool is not None:
    from ._kvpool import block_keys
else:
    block_keys = py_block_keys
