"""SGLang flavour: Dynamo's mocker SGLang scheduler over a token radix cache.

Rules of Dynamo 1.6.1's replay (``lib/mocker/src/scheduler/sglang/{config,policy,prefill,
decode,core}.rs``), checked against the
binary with ``tests/test_flavour_parity.py``:

* **Schedule policy** (each pass, first): ``fifo`` keeps arrival order; ``lpm`` sorts the
  waiting queue by cached prefix, longest first (skipped above 128 waiting), putting last
  a request whose cached prefix is at most 32 tokens and whose first 32 tokens repeat an
  earlier waiting request's (in-batch prefix caching).
* **Admission** (``get_new_batch_prefill``): while running slots remain, the queue head
  is matched against the radix cache (at most ``len - 1`` tokens, so one is computed) and
  takes a chunk of its uncached remainder: all of it up to ``chunked_prefill_size``, else
  what is left of the chunk budget, page-aligned. It stops at the first request whose
  chunk (plus its output reserve ``min(remaining output, clip_max_new_tokens)`` on the
  last chunk) does not fit ``available + evictable - Σ_running min(remaining output,
  clip) * new_token_ratio``, or exceeds what is left of ``max_prefill_tokens`` or of the
  chunk budget. Pages come from free slots, then from evicting unlocked leaves.
* **Prefill first**: a pass that admits anything is an *extend* pass: it costs the
  prefill of its chunks only, and only the requests whose prompt completed emit their
  first token; running requests wait. A partially prefilled request caches its
  page-aligned prefix and returns to the head of the queue.
* Otherwise the pass is a **decode** step of every running request, timed like vLLM's
  (context tokens of the batch). If the pages for the next tokens are not there
  (free + evictable), the running request with the fewest output tokens (the first such)
  is **retracted** (its private pages are freed, its cached prefix stays) and joins the
  back of the queue, until they are or one request is left. If even then the pages are
  not there, the pass emits nothing.
* **New-token ratio**: starts at ``0.7 * schedule_conservativeness``, decays linearly to
  14% of that over 600 decode passes (extend passes leave it). A retraction sets it to
  SGLang's estimate over the requests left running, ``min(1, (Σ outputs so far + 20 *
  n) / Σ output lengths)`` (``ScheduleBatch.retract_decode``), not back to the start
  value as the stored mocker sources do.

Where the stored mocker sources disagree with the 1.6.1 binary, the binary wins (checked
request by request on the Mooncake conversation trace): an extend pass costs its prefill
only; the chunk is the whole uncached remainder when it fits the chunk budget left;
retracted requests go to the back of the queue; the ratio decays on decode passes only
and a retraction sets it to SGLang's estimate.
* A request's materialized prefix is inserted into the radix cache as its pages fill; a
  completed request inserts ``floor(len / page) * page`` tokens and unlocks its path.

Requests that can never complete in the pool (prompt plus output larger than it) are
rejected with a reason instead of stalling the worker (Dynamo aborts the replay there).
"""
from __future__ import annotations

from collections import deque

import numpy as np

from ..metrics import MetricsCollector
from ..radix_cache import RadixCache, TokenSource
from ..timing import TimingModel
from .base import REASON_KV_CAPACITY, REASON_MAX_MODEL_LEN, REASON_SEQ_KV_CAPACITY, EngineBase, Seq

# Dynamo's constants (lib/mocker/src/scheduler/sglang/config.rs).
INIT_NEW_TOKEN_RATIO = 0.7
MIN_NEW_TOKEN_RATIO_FACTOR = 0.14
NEW_TOKEN_RATIO_DECAY_STEPS = 600.0
LPM_FALLBACK_THRESHOLD = 128
IN_BATCH_PREFIX_CACHING_CHECK_THRESHOLD = 32
IN_BATCH_PREFIX_CACHING_DEPRIORITIZE_THRESHOLD = 32
RETRACT_DECODE_STEPS = 20          # SGLang's global_config.retract_decode_steps


class SglangEngine(EngineBase):
    """One aggregated SGLang worker (one DP rank). ``cfg.block_size`` is the page size and
    ``cfg.num_gpu_blocks`` counts pages (tokens at the default page size of 1)."""

    def __init__(self, worker_id: int, cfg, timing: TimingModel,
                 metrics: MetricsCollector, *, exact: bool = False,
                 defer_gaps: bool = False, token_gaps: bool = True) -> None:
        super().__init__(worker_id, cfg, timing, metrics, exact=exact, defer_gaps=defer_gaps,
                         token_gaps=token_gaps)
        self.kv = RadixCache(self.capacity_tokens, cfg.block_size)
        init = INIT_NEW_TOKEN_RATIO * cfg.schedule_conservativeness
        self.min_ratio = init * MIN_NEW_TOKEN_RATIO_FACTOR
        self.ratio_step = (init - self.min_ratio) / NEW_TOKEN_RATIO_DECAY_STEPS
        self.new_token_ratio = init
        self.num_retractions = 0
        self._stretch_free0 = 0           # stretch: free pages at its start
        self._stretch_evicted = 0         # stretch: pages evicted for passes already ended

    # -- requests and leases ----------------------------------------------------------
    def _src(self, s: Seq) -> TokenSource:
        lease = s.blocks
        src = lease.src
        if src is None:
            r = s.req
            src = lease.src = TokenSource(r.index, s.prompt_len, r.hash_ids, r.trace_block_size,
                                          self.bs)
        return src

    def _page_ceil(self, n: int) -> int:
        P = self.bs
        return -(-n // P) * P

    def _reject_reason(self, s: Seq) -> int:
        """Why a fresh request can never complete here (0 if it can)."""
        cfg = self.cfg
        total = self.capacity_tokens
        prompt = self._page_ceil(s.prompt_len)
        if prompt >= total:
            return REASON_KV_CAPACITY
        if (prompt + min(s.max_out, cfg.clip_max_new_tokens) >= total
                or self._page_ceil(s.prompt_len + s.max_out) > total):
            return REASON_SEQ_KV_CAPACITY      # its last chunk or its decode never fits
        if cfg.max_model_len is not None and s.prompt_len >= cfg.max_model_len:
            return REASON_MAX_MODEL_LEN
        return 0

    def _cache_prefix(self, s: Seq) -> None:
        """Insert the page-aligned materialized prefix of a running or partially prefilled
        request into the tree; its lock moves to the new deepest node."""
        kv = self.kv
        P = self.bs
        lease = s.blocks
        aligned = s.computed // P
        lo = lease.cached // P
        if aligned <= lo:
            return
        old = lease.node
        node = kv.insert(old, self._src(s), lo, aligned)
        # Its private pages for [lo, aligned) join the tree; where another request inserted
        # the same pages meanwhile, the request switches to those and frees its own.
        lease.pages -= aligned - lo
        dup = aligned - lo - kv.last_added
        if dup:
            kv.free(dup)
            kv.removed(lease.src, lo, lo + dup)      # the matched part comes first
        if node is not old:
            kv.inc_lock(node)
            kv.dec_lock(old)
        lease.node = node
        lease.cached = aligned * P

    def _retract(self, s: Seq) -> None:
        """Free ``s``'s private pages, unlock its cached path; it restarts from the tree."""
        kv = self.kv
        lease = s.blocks
        kv.free(lease.pages)
        lo = lease.cached // self.bs
        kv.removed(lease.src, lo, lo + lease.pages)
        kv.dec_lock(lease.node)
        lease.reset()
        s.computed = 0
        s.preemptions += 1
        self.num_retractions += 1

    def _complete(self, s: Seq) -> None:
        """A completed request caches ``floor(len / page) * page`` tokens and unlocks."""
        kv = self.kv
        P = self.bs
        lease = s.blocks
        old = lease.node
        if old is None:
            return
        complete = min(s.prompt_len + s.generated, s.computed) // P
        lo = lease.cached // P
        tail = lo + lease.pages - complete          # pages past the last full page
        if tail > 0:
            kv.free(tail)
        if complete > lo:
            kv.insert(old, self._src(s), lo, complete)
            dup = complete - lo - kv.last_added
            if dup:
                kv.free(dup)
                kv.removed(lease.src, lo, lo + dup)
        kv.dec_lock(old)
        lease.reset()

    # -- one pass ----------------------------------------------------------------
    def start_pass(self, now: float) -> float:
        """Schedule one pass starting at ``now``; returns its end time."""
        s: Seq
        cfg = self.cfg
        kv = self.kv
        P = self.bs
        running = self.running
        waiting = self.waiting
        rejected = self._rejected
        # Requests that can never complete here leave before the policy sees them.
        if waiting:
            keep = deque()
            for s in waiting:
                if not s.admitted and s.computed == 0:
                    reason = self._reject_reason(s)
                    if reason:
                        rejected.append((s, reason))
                        continue
                keep.append(s)
            if len(keep) != len(waiting):
                self.waiting = waiting = keep
        if cfg.schedule_policy == "lpm" and waiting:
            self._apply_lpm()
            waiting = self.waiting
        # -- admission (get_new_batch_prefill) --
        can_run = []
        total_isl = 0
        total_prefix = 0
        if waiting and len(running) < cfg.max_num_seqs:
            clip = cfg.clip_max_new_tokens
            ratio = self.new_token_ratio
            reserved = 0.0
            for s in running:
                left = s.max_out - s.generated
                reserved += (left if left < clip else clip) * ratio
            rem_total = float(kv.available_tokens + kv.evictable_size) - reserved
            rem_input = float(cfg.max_prefill_tokens)
            rem_chunk = float(cfg.chunked_prefill_size)
            slots = cfg.max_num_seqs - len(running)
            while len(can_run) < slots and waiting:
                s = waiting[0]
                lease = s.blocks
                seq_len = s.prompt_len + s.generated
                mat = s.computed
                cached = 0
                if mat == 0 and cfg.enable_prefix_caching:
                    match_len = seq_len - 1 if s.max_out > 0 else seq_len
                    cached = kv.match_len(self._src(s), match_len // P) * P
                start = mat if mat > cached else cached
                extend = seq_len - start
                if extend == 0 and mat > 0:
                    break
                if extend <= rem_chunk:
                    chunk = extend
                else:
                    chunk = int(rem_chunk) // P * P
                    if chunk == 0:
                        break
                    if chunk > extend:
                        chunk = extend
                charged = float(-(-chunk // P) * P)
                if chunk < extend:
                    reserve = 0
                else:
                    left = s.max_out - s.generated
                    reserve = left if left < clip else clip
                if charged + reserve >= rem_total:
                    break
                if charged > rem_input or charged > rem_chunk:
                    break
                chunk_end = start + chunk
                first = mat == 0
                if first:
                    prefix = self._allocate_first(s, chunk_end, start)
                else:
                    prefix = self._extend_allocation(s, chunk_end)
                if prefix < 0:
                    break
                waiting.popleft()
                s.computed = chunk_end
                if first:
                    if prefix > s.reused:
                        s.reused = prefix
                    if not s.admitted:
                        s.admitted = True
                        s.first_admit = now
                total_isl += chunk_end
                total_prefix += prefix
                rem_total -= charged + reserve
                rem_input -= charged
                rem_chunk -= charged
                can_run.append(s)
                if rem_chunk <= 0.0:
                    break
        n = len(can_run)
        prefill_ms = 0.0
        T = 0
        ready = []
        n_decode = 0
        ctx = 0
        decode_ms = 0.0
        retracted = []
        if n:
            # Extend pass: prefill only; finished prompts emit their first token.
            T = n * (total_isl // n - total_prefix // n)
            if T > 0:
                prefill_ms = self.timing.prefill_ms(T, total_prefix, n)
            partial = []
            for s in can_run:
                if s.computed < s.prompt_len + s.generated:
                    self._cache_prefix(s)
                    partial.append(s)
                else:
                    ready.append(s)
            for s in partial:
                waiting.appendleft(s)
            if ready:
                retracted, ok = self._decode_memory(ready)
                running.extend(ready)
                if ok:
                    for s in ready:
                        self._decode_kv(s)
                else:
                    ready = []      # no pages for their first tokens: they wait in running
        elif running:
            retracted, ok = self._decode_memory(running)
            if ok:
                for s in running:
                    ctx += s.prompt_len + s.generated
                    self._decode_kv(s)
                n_decode = len(running)
                ready = list(running)
                decode_ms = self.timing.decode_ms(n_decode, ctx, ctx, self.capacity_tokens)
        if retracted:
            waiting.extend(retracted)
            self.new_token_ratio = self._retract_ratio()
        elif not n:
            r = self.new_token_ratio - self.ratio_step     # decays on decode passes only
            self.new_token_ratio = r if r > self.min_ratio else self.min_ratio
        self._ready = ready
        self.fpm_prefill_tokens = T
        self.fpm_prefill_seqs = n
        self.fpm_decode_seqs = n_decode
        self.fpm_decode_kv_tokens = ctx
        self.fpm_queued_tokens = self._queued_tokens()
        self.num_passes += 1
        self.busy = True
        self.pass_start = now
        self.pass_end = (now + prefill_ms) + decode_ms
        self._did_work = bool(n) or bool(ready) or bool(rejected) or bool(retracted)
        return self.pass_end

    def _allocate_first(self, s: Seq, chunk_end: int, cap: int) -> int:
        """Match (at most ``cap`` tokens) and lock the cached prefix, then take pages for the
        rest of ``chunk_end``; returns the prefix length, or -1 if the pool cannot hold it."""
        kv = self.kv
        P = self.bs
        lease = s.blocks
        src = self._src(s)
        pages, node = kv.match(src, cap // P) if self.cfg.enable_prefix_caching else (0, kv.root)
        required = -(-chunk_end // P) - pages
        kv.inc_lock(node)
        if required * P > kv.available_tokens + kv.evictable_size:
            kv.dec_lock(node)
            return -1
        short = required - kv.free_pages
        if short > 0:
            kv.evict(short * P)
        if not kv.allocate(required):
            kv.dec_lock(node)
            return -1
        lease.node = node
        lease.cached = pages * P
        lease.pages = required
        kv.stored(src, pages, pages + required)
        return pages * P

    def _extend_allocation(self, s: Seq, chunk_end: int) -> int:
        """A chunked prefill continues on the request's own pages (no new match)."""
        kv = self.kv
        P = self.bs
        lease = s.blocks
        new = -(-chunk_end // P) - lease.covered(P)
        if new > 0:
            short = new - kv.free_pages
            if short > 0:
                kv.evict(short * P)
            if not kv.allocate(new):
                return -1
            old = lease.covered(P)
            lease.pages += new
            kv.stored(lease.src, old, old + new)
        return s.computed

    def _retract_ratio(self) -> float:
        """New-token ratio after a retraction: SGLang's estimate from the requests left
        running (``ScheduleBatch.retract_decode``), (outputs so far + 20 per request) / their
        output lengths, capped at 1."""
        s: Seq
        decoded = 0
        max_new = 0
        for s in self.running:
            decoded += s.generated
            max_new += s.max_out
        if max_new <= 0:
            return 1.0
        r = (decoded + RETRACT_DECODE_STEPS * len(self.running)) / max_new
        return r if r < 1.0 else 1.0

    def _decode_memory(self, batch: list) -> tuple[list, bool]:
        """Make room for one more token of each request in ``batch``: while free +
        evictable tokens fall short and more than one request is left, retract the one with
        the fewest output tokens (the first such); then evict. Returns the retracted and
        whether the pages are there (if not, Dynamo's pass emits no token)."""
        kv = self.kv
        P = self.bs
        out = []
        while True:
            need = 0
            for s in batch:
                lease = s.blocks
                need += (-(-(s.prompt_len + s.generated + 1) // P) * P
                         - (lease.cached // P + lease.pages) * P)
            if kv.available_tokens + kv.evictable_size >= need or len(batch) <= 1:
                break
            victim = batch[0]
            for s in batch:
                if s.generated < victim.generated:
                    victim = s
            batch.remove(victim)
            self._retract(victim)
            out.append(victim)
        short = need - kv.available_tokens
        if short > 0:
            kv.evict(short)
        return out, need <= kv.available_tokens

    def _decode_kv(self, s: Seq) -> None:
        """KV of one decode step of ``s``: a page when its last one is full, then the
        page-aligned prefix joins the tree (a completing request caches at the end)."""
        lease = s.blocks
        P = self.bs
        if s.computed % P == 0:
            if not self.kv.allocate(1):
                raise AssertionError("decode page allocation failed after the memory check")
            lease.pages += 1
        s.computed += 1
        if s.generated + 1 < s.max_out:
            self._cache_prefix(s)

    # -- bulk advance -------------------------------------------------------------
    def _new_pages(self, s: Seq, k: int) -> int:
        """Pages ``s`` takes over its next k decode tokens (one whenever its last is full)."""
        P = self.bs
        a = -s.computed % P
        return 1 + (k - 1 - a) // P if k > a else 0

    def plan_stretch(self) -> int:
        """Decode passes that can run as one stretch from now (0 if not possible): nothing
        can be admitted in any of them (nothing waits, or the waiting head provably stays
        shut out, see ``_admission_shut``), nobody completes before the last pass, and
        the pages of every pass can be had from free and evictable tokens (so nothing is
        retracted). Evictions take unlocked leaves oldest first, which no decode step
        reorders, so taking them all when the stretch ends changes nothing."""
        s: Seq
        running = self.running
        if not running or len(running) > self.cfg.max_num_seqs:
            return 0
        k = 1 << 62
        for s in running:
            left = s.max_out - s.generated
            if left < k:
                k = left
        if k <= 1:
            return 0
        kv = self.kv
        room = (kv.available_tokens + kv.evictable_size) // self.bs
        if self._pages_for(k) > room:
            lo, hi = 0, k - 1           # largest k' whose pages fit
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if self._pages_for(mid) <= room:
                    lo = mid
                else:
                    hi = mid - 1
            k = lo
        if k > 1 and self.waiting:
            k = self._admission_shut(k)
        return k if k > 1 else 0

    def _admission_shut(self, k: int) -> int:
        """How many of the next k decode passes (all of them decode-only, none retracting)
        provably admit nothing although requests wait: 0 if the first pass might admit.

        Only with the ``fifo`` policy (``lpm`` re-sorts the queue on match lengths that
        evictions can change) and when no waiting request is due for rejection (the next
        pass would reject it). Admission stops at the head, so only the head counts:

        * running slots: the running set is fixed over the stretch, so a full batch stays
          full;
        * a partially prefilled head needs exactly ``charged + reserve`` tokens of the
          budget; a fresh head's cached prefix can only shrink meanwhile (decode steps
          insert output tokens, which no prompt shares; evictions may cut it), which never
          lowers its need below ``min(need now, the chunk-capped charge)``;
        * the budget at pass j, ``available + evictable - Σ_running min(left, clip) *
          ratio``, is computed exactly as ``start_pass`` would (same float operations in
          the same order): free + evictable tokens fall by the pages the first j passes
          take, each request's remaining output by j, and the ratio decays once per pass.

        The stretch ends before the first pass whose budget exceeds that lower bound."""
        s: Seq
        cfg = self.cfg
        if cfg.schedule_policy != "fifo":
            return 0
        running = self.running
        need = self._head_need() if len(running) < cfg.max_num_seqs else -1.0
        kv = self.kv
        if need >= 0 and need < self._budget(0, self.new_token_ratio,
                                             kv.available_tokens + kv.evictable_size):
            return 0                            # the head fits now (after an extend pass)
        for s in self.waiting:
            if not s.admitted and s.computed == 0 and self._reject_reason(s):
                return 0
        if need < 0:
            return k                            # no pass of the stretch reaches the head
        # The budget of passes 1..k-1: first in closed form over all of them (sorted remaining
        # outputs; the reserve is ratio * Σ min(left - j, clip) up to float rounding), then
        # exactly, as start_pass computes it, at each pass the closed form cannot rule out.
        P = self.bs
        n = len(running)
        js = np.arange(k, dtype=np.int64)
        steps = np.full(k, -self.ratio_step)
        steps[0] = self.new_token_ratio
        ratios = np.maximum(np.cumsum(steps), self.min_ratio)   # r -= step; floored
        clip = cfg.clip_max_new_tokens
        lefts = np.sort(np.array([s.max_out - s.generated for s in running], dtype=np.int64))
        csum = np.concatenate(([0], np.cumsum(lefts)))
        below = np.searchsorted(lefts, clip + js)          # requests with left - j < clip
        total = csum[below] - below * js + (n - below) * clip
        if P == 1:
            taken = js * n
        else:
            phases = np.bincount(np.array([-s.computed % P for s in running]), minlength=P)
            taken = np.zeros(k, dtype=np.int64)
            for a in np.flatnonzero(phases):
                taken += phases[a] * np.where(js > a, 1 + (js - 1 - a) // P, 0)
        avail = (kv.available_tokens + kv.evictable_size) - taken * P
        approx = avail.astype(np.float64) - ratios * total
        tol = 1e-9 * float(kv.total_tokens + n * clip) + 1e-6
        for j in np.flatnonzero(need < approx[1:] + tol).tolist():
            if need < self._budget(j + 1, float(ratios[j + 1]), int(avail[j + 1])):
                return j + 1
        return k

    def _head_need(self) -> float:
        """A lower bound of the budget the waiting head needs at any pass of a decode stretch
        from now (-1.0: start_pass never admits it while the stretch lasts)."""
        cfg = self.cfg
        P = self.bs
        s = self.waiting[0]
        seq_len = s.prompt_len + s.generated
        mat = s.computed
        cached = 0
        if mat == 0 and cfg.enable_prefix_caching:
            match_len = seq_len - 1 if s.max_out > 0 else seq_len
            cached = self.kv.match_len(self._src(s), match_len // P) * P
        start = mat if mat > cached else cached
        extend = seq_len - start
        if extend == 0 and mat > 0:
            return -1.0                         # start_pass stops at this head
        chunk_cap = cfg.chunked_prefill_size // P * P
        if extend <= cfg.chunked_prefill_size:
            chunk = extend
        else:
            if chunk_cap == 0:
                return -1.0
            chunk = chunk_cap if chunk_cap < extend else extend
        charged = float(-(-chunk // P) * P)
        if chunk < extend:
            reserve = 0
        else:
            left = s.max_out - s.generated
            reserve = left if left < cfg.clip_max_new_tokens else cfg.clip_max_new_tokens
        need = charged + reserve
        if mat > 0:
            if charged > cfg.max_prefill_tokens or charged > cfg.chunked_prefill_size:
                return -1.0                     # never admitted while it heads the queue
        elif cached > 0 and seq_len > cfg.chunked_prefill_size and chunk_cap < need:
            need = float(chunk_cap)             # an evicted prefix makes it a capped chunk
        return need

    def _budget(self, j: int, ratio: float, avail: int) -> float:
        """``start_pass``'s admission budget ``rem_total`` at the j-th decode pass from now
        (same float operations in the same order), given that pass's ratio and free +
        evictable tokens."""
        s: Seq
        clip = self.cfg.clip_max_new_tokens
        reserved = 0.0
        for s in self.running:
            left = s.max_out - s.generated - j
            reserved += (left if left < clip else clip) * ratio
        return float(avail) - reserved

    def _pages_for(self, k: int) -> int:
        s: Seq
        if self.bs == 1:
            return k * len(self.running)
        n = 0
        for s in self.running:
            n += self._new_pages(s, k)
        return n

    def _start_stretch_kv(self, k: int) -> None:
        self._stretch_free0 = self.kv.free_pages
        self._stretch_evicted = 0

    def stretch_evictions_until(self, t: float) -> list[int]:
        """Router keys removed by the evictions of the stretch's passes that ended by ``t``.

        A pass evicts what its pages need beyond the free ones, oldest unlocked leaf first;
        decode steps touch only locked paths, so evicting now what those passes evicted is
        what pass-by-pass stepping does. The stretch end evicts the rest."""
        kv = self.kv
        if kv.events is None or self.stretch_ends is None:
            return []
        j = int(self.stretch_ends.searchsorted(t, "right"))
        due = self._pages_for(j) - self._stretch_free0 if j else 0
        if due <= self._stretch_evicted:
            return []
        kv.evict((due - self._stretch_evicted) * self.bs)
        self._stretch_evicted = due
        removed = kv.events[1]
        out = removed[:]
        removed.clear()
        return out

    def _stretch_kv(self, k: int) -> None:
        """The KV of k decode passes: their pages (evicting as the passes would have), the
        page-aligned prefixes in the tree, and k decays of the new-token ratio."""
        s: Seq
        kv = self.kv
        P = self.bs
        running = self.running
        total = self._pages_for(k)
        short = total - kv.free_pages
        if short > 0:
            kv.evict(short * P)
        if not kv.allocate(total):                  # plan_stretch guaranteed room
            raise AssertionError("stretch allocation failed")
        for s in running:
            s.blocks.pages += k if P == 1 else self._new_pages(s, k)
        for s in self._insert_order(k):
            c = s.computed
            # the last pass of a completing request leaves its insert to the completion
            s.computed = c + k if s.generated + k < s.max_out else c + k - 1
            self._cache_prefix(s)
            s.computed = c                          # the base class counts the k tokens
        r = self.new_token_ratio
        lo, step = self.min_ratio, self.ratio_step
        for _ in range(k):
            r -= step
            if r < lo:
                r = lo
        self.new_token_ratio = r

    def _insert_order(self, k: int) -> list:
        """The running requests in the order pass-by-pass stepping last inserts their pages
        over k decode passes. A pass inserts a request's page once its tokens fill it, in
        running order; the last such insert stamps the request's path with the tree's LRU
        clock, which decides eviction order once the path is unlocked (retraction,
        completion). Inserting in running order at the stretch's end instead gave a
        request whose last page filled early a later stamp than one filled at the last pass
        (a hypothesis-found bulk vs ``--exact-steps`` mismatch in reused tokens)."""
        s: Seq
        running = self.running
        if len(running) < 2:
            return running
        P = self.bs
        keyed = []
        for pos, s in enumerate(running):
            last = k - 1 if s.generated + k < s.max_out else k - 2
            keyed.append((last - (s.computed + last + 1) % P, pos))   # < 0: no insert
        keyed.sort()
        return [running[pos] for _, pos in keyed]

    def _apply_lpm(self) -> None:
        """Longest-prefix-match order with in-batch prefix deprioritisation."""
        waiting = self.waiting
        if len(waiting) > LPM_FALLBACK_THRESHOLD:
            return
        kv = self.kv
        P = self.bs
        dup_len = -(-IN_BATCH_PREFIX_CACHING_DEPRIORITIZE_THRESHOLD // P) * P
        seen = set()
        scored = []
        for i, s in enumerate(waiting):
            src = self._src(s)
            seq_len = s.prompt_len + s.generated
            plen = kv.match_len(src, seq_len // P) * P
            dep = False
            if plen <= IN_BATCH_PREFIX_CACHING_CHECK_THRESHOLD and seq_len >= dup_len:
                key = tuple(src.page_key(p) for p in range(dup_len // P))
                if key in seen:
                    dep = True
                else:
                    seen.add(key)
            scored.append((dep, -plen, i, s))
        scored.sort(key=lambda x: x[:3])
        self.waiting = deque(x[3] for x in scored)

    def _queued_tokens(self) -> int:
        """The SGLang queue is rebuilt and reordered in place (LPM, retraction), so its
        token total is summed when a pass is scheduled instead of kept as a running sum."""
        s: Seq
        n = 0
        for s in self.waiting:
            n += s.prompt_len + s.generated
        return n

    def reject_head(self, reason: int = REASON_KV_CAPACITY) -> None:
        s = self.waiting[0]
        if s.blocks.node is not None:
            self._retract(s)
            s.preemptions -= 1
            self.num_retractions -= 1
        super().reject_head(reason)

    def check_invariants(self) -> None:
        s: Seq
        held = 0
        for s in list(self.running) + list(self.waiting):
            lease = s.blocks
            held += lease.pages
            # (a pass in flight has materialized the token it will emit at its end)
            assert s.computed <= s.prompt_len + s.generated + 1, "materialized past the sequence"
            assert lease.covered(self.bs) * self.bs >= s.computed, "pages < materialized"
        self.kv.check(held)
