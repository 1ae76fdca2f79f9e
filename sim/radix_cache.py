"""Token radix cache with pages and LRU eviction of unreferenced leaves (SGLang's KV manager).

The model of Dynamo's mocker (``lib/mocker/src/cache/radix_cache.rs`` and
``kv_manager/sglang_backend.rs``, after SGLang's ``mem_cache/radix_cache.py``):

* a pool of ``total_tokens`` token slots in pages of ``page_size`` tokens; only whole
  pages are allocated, cached or freed;
* a radix tree of cached token sequences. Each node's edge holds whole pages; children are
  keyed by the content of their first page. A node is *protected* while a running request
  holds its path (``lock`` > 0) and *evictable* otherwise;
* ``available_tokens`` = free slots; ``evictable_size`` = tokens in unlocked nodes;
* eviction removes the least recently used unlocked *leaf* (last access: a logical clock
  bumped by every look-up and insert), truncating it to the pages still needed;
* a request holds the pages of its cached prefix (a locked path) plus private pages; as its
  page-aligned prefix is computed it is inserted into the tree (the lock moves to the new
  deepest node). A completed request inserts ``floor(len / page) * page`` tokens and
  releases its lock, so its pages stay cached until evicted.

Tokens are those of Dynamo's trace replay: prompt token t of a request is its
``hash_ids[t // trace_block_size]``; output tokens are unique to their request. Edges are
stored as page ranges of the request that inserted them, never as token lists, so a
100k-token prompt costs a few nodes (comparisons walk trace blocks, not tokens).

KV events for a KV router (when enabled) are the prompt pages stored and removed, as runs
of pages per trace block keyed by the block's chained hash (``RunIndex``: equivalent to
per-page keys, at a trace block's cost instead of a page's), drained at each pass end.
"""
from __future__ import annotations

import heapq

from .kv_cache import _M64, _MIX_A, _MIX_B, _mix64


class TokenSource:
    """The token sequence of one request: its prompt (from trace hash ids) then its own
    output tokens. ``page_key(p)`` identifies page p's content; ``first_diff(o, lo, hi)``
    is the first page in [lo, hi) where two sources differ (hi if none)."""

    __slots__ = ("idx", "plen", "hids", "tbs", "P", "chain")

    def __init__(self, idx: int, plen: int, hids, tbs: int, page_size: int) -> None:
        self.idx = idx
        self.plen = plen
        self.hids = hids          # tuple of trace hash ids, or None (prompt shares nothing)
        self.tbs = tbs
        self.P = page_size
        self.chain = None         # chained hashes of the trace blocks (router keys, lazily)

    def page_key(self, p: int):
        P = self.P
        t0 = p * P
        t1 = t0 + P - 1
        h = self.hids
        if h is not None and t1 < self.plen:
            tbs = self.tbs
            j = t0 // tbs
            if j == t1 // tbs:
                return h[j]
            return tuple(h[t // tbs] for t in range(t0, t1 + 1))
        return (self.idx, p)      # holds an output (or private prompt) token: unique

    def router_runs(self, lo: int, hi: int) -> list:
        """The prompt pages among pages [lo, hi) as KV-router runs ``(chain, a, b)``: pages
        [a, b) whose last token lies in the same trace block, ``chain`` being that block's
        chained hash (``sim.kv_cache.py_block_keys``'s chain). A run stands for the per-page
        keys ``(chain, page)`` of that range, so the router's index keeps one entry per trace
        block instead of one per page; pages holding output tokens have none."""
        P = self.P
        full = self.plen // P
        if hi > full:
            hi = full
        if lo >= hi or self.hids is None:
            return []
        chain = self.chain
        if chain is None:
            chain = self.chain = _chain(self.hids, ((full * P) - 1) // self.tbs + 1)
        return page_runs(chain, self.tbs, P, lo, hi)

    def first_diff(self, o: "TokenSource", lo: int, hi: int) -> int:
        if o.idx == self.idx:
            return hi
        P = self.P
        a, b = self.hids, o.hids
        t = lo * P
        if a is None or b is None:
            d = t
        else:
            m = self.plen if self.plen < o.plen else o.plen
            tbs = self.tbs
            stop = min(m, hi * P)
            j = t // tbs
            d = m
            while j * tbs < stop:
                if a[j] != b[j]:
                    d = j * tbs
                    break
                j += 1
            if d < t:
                d = t
        p = d // P
        if p < lo:
            return lo
        return p if p < hi else hi


def _chain(hids, n: int) -> list:
    """Chained hashes of the first n trace blocks (as in ``sim.kv_cache.py_block_keys``)."""
    out = []
    c = 0
    for i in range(n):
        c = _mix64(c ^ (((hids[i] & _M64) * _MIX_A + _MIX_B) & _M64))
        out.append(c)
    return out


def page_runs(chain: list, tbs: int, P: int, lo: int, hi: int) -> list:
    """Split pages [lo, hi) into runs ``(chain[j], a, b)`` of pages whose last token is in
    trace block j (page p's is ``((p + 1) * P - 1) // tbs``; block j's pages end before
    ``(j + 1) * tbs // P``)."""
    out = []
    j = ((lo + 1) * P - 1) // tbs
    while lo < hi:
        e = (j + 1) * tbs // P
        if e > hi:
            e = hi
        if e > lo:
            out.append((chain[j], lo, e))
            lo = e
        j += 1
    return out


class RunIndex:
    """A multiset of KV-router page keys ``(chain, page)`` kept as runs: per chain, sorted
    disjoint segments ``(a, b, count)`` of pages held ``count`` > 0 times. The KV router's
    view of one SGLang worker's resident prompt pages (counting copies, like the radix
    cache's events) and of its active requests' prompt pages.

    Equivalent to a per-page key counter: ``prefix_len(runs)`` is how many leading pages of
    ``runs`` (a prompt's pages from 0, as from ``page_runs``) are held; ``len`` is how many
    distinct pages are held. At page size 1 a page is a token, so per page keys cost one
    entry per prompt token; runs cost one per trace block."""

    __slots__ = ("segs", "size")

    def __init__(self) -> None:
        self.segs: dict = {}
        self.size = 0

    def __len__(self) -> int:
        return self.size

    def __bool__(self) -> bool:
        return self.size > 0

    def add_all(self, runs) -> None:
        for c, a, b in runs:
            self._apply(c, a, b, 1)

    def remove_all(self, runs) -> None:
        for c, a, b in runs:
            self._apply(c, a, b, -1)

    def _apply(self, c, a: int, b: int, delta: int) -> None:
        segs = self.segs.get(c)
        if segs is None:
            if delta > 0:
                self.segs[c] = [(a, b, delta)]
                self.size += b - a
            return
        out = []
        pos = a                      # first page of [a, b) not handled yet
        size = self.size
        for seg in segs:
            s0, s1, n = seg
            if s1 <= a or s0 >= b:
                if s0 >= b and pos < b:
                    if delta > 0:
                        _push(out, pos, b, delta)
                        size += b - pos
                    pos = b
                _push(out, s0, s1, n)
                continue
            if s0 < a:
                _push(out, s0, a, n)
            lo = s0 if s0 > a else a
            hi = s1 if s1 < b else b
            if pos < lo and delta > 0:
                _push(out, pos, lo, delta)
                size += lo - pos
            m = n + delta
            if m:
                _push(out, lo, hi, m)
            else:
                size -= hi - lo
            pos = hi
            if s1 > b:
                _push(out, b, s1, n)
        if pos < b and delta > 0:
            _push(out, pos, b, delta)
            size += b - pos
        self.size = size
        if out:
            self.segs[c] = out
        else:
            del self.segs[c]

    def prefix_len(self, runs) -> int:
        """Leading pages of ``runs`` held (the runs tile the prompt's pages in order)."""
        n = 0
        segs_of = self.segs
        for c, a, b in runs:
            segs = segs_of.get(c)
            if segs is None:
                return n
            pos = a
            for s0, s1, _ in segs:
                if s1 <= pos:
                    continue
                if s0 > pos:
                    break
                pos = s1
                if pos >= b:
                    break
            if pos >= b:
                n += b - a
            else:
                return n + pos - a
        return n


def _push(out: list, a: int, b: int, n: int) -> None:
    """Append segment [a, b) x n, merging it into the last one when they join."""
    if out:
        last = out[-1]
        if last[1] == a and last[2] == n:
            out[-1] = (last[0], b, n)
            return
    out.append((a, b, n))


def run_prefix_len(runs, index) -> int:
    """``RunIndex.prefix_len`` with None standing for an empty index."""
    return index.prefix_len(runs) if index else 0


class Node:
    __slots__ = ("parent", "children", "src", "lo", "hi", "lock", "t", "nid", "ever")

    def __init__(self, parent, src, lo: int, hi: int, t: int, nid: int) -> None:
        self.parent = parent
        self.children: dict = {}
        self.src = src            # TokenSource whose pages [lo, hi) this edge holds
        self.lo = lo              # depth of the edge's first page
        self.hi = hi
        self.lock = 0
        self.t = t                # last access (logical clock)
        self.nid = nid
        self.ever = 0             # version of its entry in the evictable heap (0 = none)


class Lease:
    """A request's hold on the cache: its locked deepest node (None: holds nothing), the
    tokens of its sequence cached along that path (page-aligned), and the private pages it
    holds beyond them. ``src`` is its token sequence (kept across retractions)."""

    __slots__ = ("node", "cached", "pages", "src")

    def __init__(self) -> None:
        self.node: Node | None = None
        self.cached = 0
        self.pages = 0
        self.src: TokenSource | None = None

    def covered(self, page_size: int) -> int:
        """Pages covering the request's KV: its cached path plus its private pages."""
        return self.cached // page_size + self.pages

    def reset(self) -> None:
        self.node = None
        self.cached = 0
        self.pages = 0


class RadixCache:
    """Radix tree + page pool of one SGLang worker (one DP rank)."""

    #: the router index counts copies: removals drop one count (``sim.router``)
    counted_index = True

    def __init__(self, total_tokens: int, page_size: int) -> None:
        self.P = page_size
        self.total_pages = total_tokens // page_size
        self.free_pages = self.total_pages
        self.clock = 0
        self._nid = 0
        self.root = Node(None, None, 0, 0, 0, 0)
        self.evictable_size = 0       # tokens in unlocked nodes
        self.protected_size = 0       # tokens in locked nodes
        self.heap: list = []          # (t, nid, ever, node) of evictable leaves (lazy)
        self.evictions = 0            # tokens evicted
        self.last_added = 0           # pages the latest insert added to the tree
        # Prompt-page keys gained and lost this pass, for a KV router (None = no router):
        # every physical copy counts, so a key stays visible while any copy is resident.
        self.events: tuple[list, list] | None = None

    # -- accounting ---------------------------------------------------------
    @property
    def available_tokens(self) -> int:
        return self.free_pages * self.P

    @property
    def total_tokens(self) -> int:
        return self.total_pages * self.P

    def new_blocks(self) -> Lease:
        return Lease()

    # -- events for a KV router (the interface of sim.kv_cache's pools) -------------------
    def enable_events(self) -> None:
        self.events = ([], [])

    @property
    def events_enabled(self) -> bool:
        return self.events is not None

    def has_events(self) -> bool:
        return bool(self.events[0] or self.events[1])

    def new_index(self):
        """An empty router index: a multiset of page keys kept as runs per trace block."""
        return RunIndex()

    def drain_events_into(self, index) -> None:
        stored, removed = self.events
        index.add_all(stored)          # gains first: a copy lost in the pass was counted
        index.remove_all(removed)
        stored.clear()
        removed.clear()

    def stored(self, src: TokenSource, lo: int, hi: int) -> None:
        """Pages [lo, hi) of ``src`` became resident (allocated) copies."""
        if self.events is not None and lo < hi:
            self.events[0].extend(src.router_runs(lo, hi))

    def removed(self, src: TokenSource, lo: int, hi: int) -> None:
        """Copies of pages [lo, hi) of ``src`` were freed."""
        if self.events is not None and lo < hi:
            self.events[1].extend(src.router_runs(lo, hi))

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    # -- evictable-leaf index -------------------------------------------------
    def _is_evictable_leaf(self, n: Node) -> bool:
        return n is not self.root and n.lock == 0 and not n.children

    def _index(self, n: Node) -> None:
        n.ever += 1
        heapq.heappush(self.heap, (n.t, n.nid, n.ever, n))

    def _unindex(self, n: Node) -> None:
        n.ever += 1               # its heap entry goes stale

    def _touch(self, n: Node, now: int) -> None:
        if self._is_evictable_leaf(n):
            n.t = now
            self._index(n)
        else:
            n.t = now

    # -- look-ups -----------------------------------------------------------
    def match(self, src: TokenSource, npages: int) -> tuple[int, Node]:
        """Longest cached prefix of ``src``'s first ``npages`` pages: (pages, deepest node).
        Touches the matched nodes; a match ending inside an edge splits it there."""
        now = self._tick()
        self.root.t = now
        cur = self.root
        m = 0
        pending = None
        while m < npages:
            child = cur.children.get(src.page_key(m))
            if child is None:
                break
            if pending is not None:
                self._touch(pending, now)
                pending = None
            clen = child.hi - child.lo
            end = m + clen if m + clen < npages else npages
            common = child.src.first_diff(src, m, end) - m
            if common < clen:
                if common > 0:
                    cur = self._split(child, common)
                m += common
                break
            m += common
            cur = child
            pending = cur
        if pending is not None:
            self._touch(pending, now)
        return m, cur

    def match_len(self, src: TokenSource, npages: int) -> int:
        """Read-only ``match`` (no touches, no splits), in pages."""
        cur = self.root
        m = 0
        while m < npages:
            child = cur.children.get(src.page_key(m))
            if child is None:
                break
            clen = child.hi - child.lo
            end = m + clen if m + clen < npages else npages
            common = child.src.first_diff(src, m, end) - m
            m += common
            if common < clen:
                break
            cur = child
        return m

    # -- tree edits -----------------------------------------------------------
    def _new_node(self, parent, src, lo, hi, t) -> Node:
        self._nid += 1
        return Node(parent, src, lo, hi, t, self._nid)

    def _split(self, child: Node, pos: int) -> Node:
        """Cut ``child``'s edge after ``pos`` pages; the new upper node is returned (it
        inherits the lock and last access; ``child`` keeps its identity as the lower part)."""
        parent = child.parent
        key0 = child.src.page_key(child.lo)
        inter = self._new_node(parent, child.src, child.lo, child.lo + pos, child.t)
        inter.lock = child.lock
        child.lo += pos
        child.parent = inter
        inter.children[child.src.page_key(child.lo)] = child
        parent.children[key0] = inter
        return inter

    def _create_child(self, parent: Node, src: TokenSource, lo: int, hi: int) -> Node:
        n = self._new_node(parent, src, lo, hi, self._tick())
        if self._is_evictable_leaf(parent):
            self._unindex(parent)
        parent.children[src.page_key(lo)] = n
        self._index(n)
        self.evictable_size += (hi - lo) * self.P
        self.last_added = hi - lo
        return n

    def _extend_leaf(self, n: Node, src: TokenSource, hi: int, now: int) -> Node:
        n.t = now                 # _touch (n is a leaf, not the root)
        if n.lock == 0:
            self._index(n)
        self.last_added = hi - n.hi
        added = (hi - n.hi) * self.P
        n.src = src               # same tokens on [lo, old hi): the path matched src
        n.hi = hi
        if n.lock == 0:
            self.evictable_size += added
        else:
            self.protected_size += added
        return n

    def insert(self, start: Node, src: TokenSource, lo: int, hi: int, *,
               locked_tail: bool = True) -> Node:
        """Insert ``src``'s pages [lo, hi) below ``start`` (whose path holds pages [0, lo)).
        Returns the deepest node of the inserted path. A leaf may grow in place when
        unlocked, or when it is ``start`` held by this request alone (``locked_tail``)."""
        self.last_added = 0
        if lo >= hi:
            return start
        self.clock += 1
        now = self.clock
        root = self.root
        n = start
        while n is not None:           # _touch of the path, inlined (one per decode token)
            n.t = now
            if n.lock == 0 and not n.children and n is not root:
                self._index(n)
            n = n.parent
        cur = start
        off = lo
        root = self.root
        while off < hi:
            if (cur is not root and not cur.children
                    and (cur.lock == 0 or (locked_tail and cur is start and cur.lock == 1))):
                return self._extend_leaf(cur, src, hi, now)
            child = cur.children.get(src.page_key(off))
            if child is None:
                return self._create_child(cur, src, off, hi)
            clen = child.hi - child.lo
            end = off + clen if off + clen < hi else hi
            common = child.src.first_diff(src, off, end) - off
            if common == clen:
                off += common
                cur = child
                self._touch(cur, now)
            else:
                inter = self._split(child, common)
                off += common
                if off < hi:
                    return self._create_child(inter, src, off, hi)
                return inter
        return cur

    def inc_lock(self, n: Node) -> None:
        P = self.P
        root = self.root
        while n is not root:
            if n.lock == 0:
                if not n.children:
                    self._unindex(n)
                tokens = (n.hi - n.lo) * P
                self.evictable_size -= tokens
                self.protected_size += tokens
            n.lock += 1
            n = n.parent

    def dec_lock(self, n: Node) -> None:
        P = self.P
        root = self.root
        while n is not root:
            n.lock -= 1
            if n.lock == 0:
                tokens = (n.hi - n.lo) * P
                self.protected_size -= tokens
                self.evictable_size += tokens
                if not n.children:
                    self._index(n)
            n = n.parent

    def evict(self, num_tokens: int) -> int:
        """Free at least ``num_tokens`` (whole pages) from unlocked leaves, oldest first;
        returns the tokens freed (less if the cache runs out of evictable leaves)."""
        P = self.P
        heap = self.heap
        evicted = 0
        while evicted < num_tokens and heap:
            t, nid, ever, n = heapq.heappop(heap)
            if ever != n.ever:
                continue          # stale entry (touched, locked, or given a child since)
            pages = n.hi - n.lo
            need = -(-(num_tokens - evicted) // P)
            if need < pages:
                n.hi -= need      # keep the leaf's older prefix
                if self.events is not None:
                    self.removed(n.src, n.hi, n.hi + need)
                self.free_pages += need
                self.evictable_size -= need * P
                evicted += need * P
                self._index(n)
                continue
            parent = n.parent
            del parent.children[n.src.page_key(n.lo)]
            n.ever = -1
            if self.events is not None:
                self.removed(n.src, n.lo, n.hi)
            self.free_pages += pages
            self.evictable_size -= pages * P
            evicted += pages * P
            if parent is not self.root and not parent.children and parent.lock == 0:
                self._index(parent)
        self.evictions += evicted
        return evicted

    def allocate(self, pages: int) -> bool:
        if pages > self.free_pages:
            return False
        self.free_pages -= pages
        return True

    def free(self, pages: int) -> None:
        self.free_pages += pages

    # -- checks (tests) ---------------------------------------------------------
    def tree_tokens(self) -> tuple[int, int]:
        """(evictable, protected) tokens recounted from the tree."""
        ev = pr = 0
        stack = [self.root]
        while stack:
            n = stack.pop()
            stack.extend(n.children.values())
            if n is self.root:
                continue
            if n.lock:
                pr += (n.hi - n.lo) * self.P
            else:
                ev += (n.hi - n.lo) * self.P
        return ev, pr

    def check(self, held_private_pages: int = 0) -> None:
        """Invariants: counters match the tree; every page is free, in the tree, or held
        privately by a request (``held_private_pages``)."""
        ev, pr = self.tree_tokens()
        assert ev == self.evictable_size, "evictable size drifted"
        assert pr == self.protected_size, "protected size drifted"
        assert 0 <= self.free_pages <= self.total_pages, "page pool over-committed"
        assert (self.free_pages * self.P + ev + pr + held_private_pages * self.P
                == self.total_tokens), "KV tokens not conserved"

