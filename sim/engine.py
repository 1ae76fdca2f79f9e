"""vLLM-style engine core: one worker's scheduler, KV pool and pass timing.

The rules reproduce Dynamo's mocker vLLM core (aisimulate-core 0.13.0, inside
ai-dynamo-runtime 1.6.1), checked request by request against that binary:

* a *pass* spends ``max_num_batched_tokens`` on running sequences first, in order (a
  decode costs one token; a prompt takes what is left, in chunks), then - unless something
  was preempted in this pass - admits waiting sequences head first while ``max_num_seqs``
  and the free blocks allow. A fresh request that can never fit the pool is rejected
  without blocking the queue; a head that does not fit now blocks the queue;
* blocks are allocated when tokens are scheduled (lazily for decode). When none are free
  the newest running sequence is preempted (recompute): it keeps its output, frees its
  blocks and goes to the front of ``waiting``;
* blocks that fill are registered in the prefix cache at once, so a sequence admitted later
  in the same pass can hit them;
* a sequence that has computed its whole known sequence emits one token; every token of a
  pass is stamped at ``start + prefill_ms + decode_ms``. Prefill is charged on the prompt
  tokens computed in the pass; decode on the context of the sequences that already had a
  token.

Decode-only stretches (nothing to admit, no prefill, no block allocation, no completion
before the last pass) are advanced in bulk: ``plan_stretch``/``start_stretch``. Passing
``exact=True`` steps pass by pass; that is the reference the bulk path is tested against.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from . import kv_cache as _kv
from .kv_cache import BlockList, block_keys, private_key
from .metrics import STATUS_COMPLETED, STATUS_IN_FLIGHT, STATUS_REJECTED, MetricsCollector
from .request import Request
from .timing import PolynomialTiming, TimingModel, _to_ns, decode_ms_series

REASON_KV_CAPACITY, REASON_MAX_MODEL_LEN, REASON_BATCH_BUDGET, REASON_SEQ_KV_CAPACITY = 1, 2, 4, 5
_BLOCKED, _SELF = -1, -2


@dataclass
class EngineConfig:
    block_size: int = 64                 # tokens per KV block
    num_gpu_blocks: int = 16384          # KV capacity per worker, in blocks
    max_num_seqs: int = 256              # running sequences per worker
    max_num_batched_tokens: int = 8192   # token budget per pass
    max_model_len: int | None = None     # reject prompts at least this long
    enable_prefix_caching: bool = True
    enable_chunked_prefill: bool = True
    preemption_mode: str = "lifo"        # victim when blocks run out: lifo (newest) | fifo


class Seq:
    """A request in flight on one worker."""

    __slots__ = ("req", "prompt_len", "max_out", "keys", "generated", "computed", "blocks",
                 "reused", "first_admit", "first_token", "second_token", "last_token",
                 "preemptions", "admitted", "gaps")

    def __init__(self, req: Request, blocks: "BlockList") -> None:
        self.req = req
        self.prompt_len = req.input_length
        self.max_out = req.output_length
        self.keys: list[int] | None = None   # full prompt-block keys, made on first look-up
        self.generated = 0                   # output tokens emitted
        self.computed = 0                    # tokens whose KV is computed (cached prefix included)
        self.blocks = blocks                 # copy ids of held blocks (PRIVATE = unhashed)
        self.reused = 0                      # most prefix tokens found cached at an admission
        self.first_admit = float("nan")
        self.first_token = float("nan")
        self.second_token = float("nan")
        self.last_token = float("nan")
        self.preemptions = 0
        self.admitted = False                # ever admitted (a fresh request can be rejected)
        self.gaps: list | None = None        # deferred token gaps (runs with a cut-off)


class Engine:
    """One aggregated worker (one DP rank)."""

    def __init__(self, worker_id: int, cfg: EngineConfig, timing: TimingModel,
                 metrics: MetricsCollector, *, exact: bool = False,
                 defer_gaps: bool = False, token_gaps: bool = True) -> None:
        self.id = worker_id
        # With a cut-off, token gaps count only once their request completes (Dynamo's
        # distributions cover completed requests): each sequence holds its own until then.
        self.defer_gaps = defer_gaps and token_gaps
        self.token_gaps = token_gaps     # False: no token-gap distribution (see Simulation)
        self.cfg = cfg
        self.timing = timing
        self.metrics = metrics
        self.exact = exact
        self.bs = cfg.block_size
        # Decode stretches (polynomial or GPU-table timing) computed in C when possible,
        # bit-identical to the Python path.
        self._native_ends = None
        if _kv.NativeKvPool is not None and not exact:
            if (type(timing) is PolynomialTiming
                    and timing.speedup_ratio * timing.decode_speedup_ratio == 1.0):
                from ._kvpool import poly_decode_ends
                cap = float(cfg.num_gpu_blocks * cfg.block_size)
                self._native_ends = (lambda now, ctx0, n, k, to_ns:
                                     poly_decode_ends(now, ctx0, n, k, cap, to_ns))
            elif hasattr(timing, "native_stretch_ends"):      # GPU tables
                self._native_ends = timing.native_stretch_ends()
        self.kv = _kv.KvCache(cfg.num_gpu_blocks, cfg.block_size, cfg.enable_prefix_caching)
        self.capacity_tokens = cfg.num_gpu_blocks * cfg.block_size
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []
        self.busy = False
        self.pass_start = 0.0
        self.pass_end = 0.0
        self.stretch_ends: np.ndarray | None = None   # end times of a bulk stretch's passes
        self._ready: list[Seq] = []                    # sequences emitting at the pass end
        self._phases: list[int] = []                   # stretch: passes until each needs a block
        self._evict_cum: np.ndarray | None = None      # stretch: evictions done by each pass
        self._evict_published = 0
        self._rejected: list[Seq] = []
        self.num_passes = 0
        self.num_preemptions = 0
        self.num_stretches = 0           # bulk decode stretches started (0 in exact mode)
        self.num_stretch_cuts = 0        # stretches cut short by an arrival
        self.num_stretch_passes = 0      # passes advanced inside stretches (of num_passes)
        # Forward-pass metrics (FPM) of the latest pass, for planners and environments.
        self.fpm_prefill_tokens = 0      # uncached prompt tokens scheduled
        self.fpm_prefill_seqs = 0
        self.fpm_decode_seqs = 0
        self.fpm_decode_kv_tokens = 0    # context tokens of the decode batch
        # Dynamo's FPM queue fields (build_fpm_snapshot): tokens (prompt + generated) of the
        # waiting sequences, kept as a running sum; frozen when a pass is scheduled, and the
        # latest *finished* pass's snapshot (what Dynamo's planner sees at a tick).
        self.waiting_tokens = 0
        self.fpm_queued_tokens = 0
        self.last_fpm_decode_kv = 0
        self.last_fpm_queued = 0
        # Cumulative FPM over all finished passes (interval figures are differences).
        # A bulk stretch adds its closed-form sums, so totals equal pass-by-pass sums.
        self.tot = FpmTotals()
        self.on_first_token = None       # callbacks (router bookkeeping, workload sessions)
        self.on_finished = None

    # -- queries -------------------------------------------------------------
    def num_in_flight(self) -> int:
        return len(self.running) + len(self.waiting)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def queued_prefill_tokens(self) -> int:
        return sum(s.prompt_len + s.generated - s.computed for s in self.waiting)

    def add_request(self, req: Request, keys: list[int] | None = None) -> None:
        """Queue ``req``; ``keys`` are its full prompt-block keys if already computed."""
        s = Seq(req, self.kv.new_blocks())
        s.keys = keys
        if self.defer_gaps:
            s.gaps = []
        self.waiting.append(s)
        self.waiting_tokens += s.prompt_len

    # -- blocks ----------------------------------------------------------------
    def _prompt_keys(self, s: Seq) -> list[int]:
        keys = s.keys
        if keys is None:
            r = s.req
            keys = s.keys = (block_keys(r.hash_ids, r.trace_block_size, self.bs,
                                        s.prompt_len // self.bs)
                             if r.hash_ids is not None else [])
        return keys

    def _key(self, s: Seq, b: int) -> int:
        keys = s.keys
        return keys[b] if b < len(keys) else private_key(s.req.index, b)

    def _lookup(self, s: Seq) -> tuple[int, int]:
        """(cached, active cached) tokens of the known sequence, after the recompute rule."""
        bs = self.bs
        known = s.prompt_len + s.generated
        keys = self._prompt_keys(s)
        full = known // bs
        if full > len(keys):
            keys = keys + [private_key(s.req.index, b) for b in range(len(keys), full)]
        hit, hit_active = self.kv.match_prefix(keys)
        cached = min(hit * bs, known)
        active = min(hit_active * bs, known)
        cap = (known - 1) // bs * bs      # vLLM computes at least one prompt token
        if cached > cap:
            cached = cap
            active = min(active, cap)
        return cached, active

    def _allocate(self, s: Seq, upto: int, reusable_blocks: int) -> bool:
        """Hold blocks for ``upto`` tokens; the first ``reusable_blocks`` are prefix hits."""
        bs = self.bs
        prev = len(s.blocks)
        target = (upto + bs - 1) // bs
        if target <= prev:
            return True
        n_hit = reusable_blocks - prev if reusable_blocks > prev else 0
        fresh = target - prev - n_hit
        if not n_hit:
            hit_keys = []
        elif s.keys is not None and prev + n_hit <= len(s.keys):
            hit_keys = s.keys[prev:prev + n_hit]
        else:
            hit_keys = [self._key(s, b) for b in range(prev, prev + n_hit)]
        return self.kv.reserve_into(s.blocks, hit_keys, fresh)

    def _register(self, s: Seq, before: int, after: int) -> None:
        """Blocks that became full while computing tokens [before, after) join the cache."""
        if not self.cfg.enable_prefix_caching:
            return
        bs = self.bs
        lo, hi = before // bs, after // bs
        if lo < hi:
            self.kv.register_range(s.blocks, lo, hi, s.keys, s.req.index)

    def _release(self, s: Seq) -> None:
        self.kv.release(s.blocks)
        s.blocks.clear()

    # -- one pass ----------------------------------------------------------------
    def start_pass(self, now: float) -> float:
        """Schedule one pass starting at ``now``; returns its end time."""
        s: Seq                # typed loop variable when compiled (sim/engine.pxd)
        cfg = self.cfg
        bs = self.bs
        kv = self.kv
        running = self.running
        waiting = self.waiting
        st = _PassState(cfg.max_num_batched_tokens)
        scheduled = st.scheduled
        i = 0
        while i < len(running) and st.budget > 0:
            s = running[i]
            c = s.computed
            if c % bs and c == s.prompt_len + s.generated - 1 and c >= s.prompt_len:
                # Decode with room in its tail block: one token, no allocation.
                s.computed = c + 1
                if not (c + 1) % bs:
                    self._register(s, c, c + 1)
                scheduled[s] = (1, 0, s.prompt_len)
                st.budget -= 1
                i += 1
                continue
            o = self._schedule(s, False, 0, st, now)
            if o == _BLOCKED:
                break
            if o != _SELF:
                i += 1
        rejected = self._rejected
        while not st.preempted and len(running) < cfg.max_num_seqs and waiting:
            s = waiting[0]
            if not s.admitted:
                reason = self._reject_reason(s)
                if reason:
                    waiting.popleft()
                    self.waiting_tokens -= s.prompt_len + s.generated
                    rejected.append((s, reason))
                    continue
            cached, active_cached = self._lookup(s)
            needed = (s.prompt_len + s.generated + bs - 1) // bs - active_cached // bs
            if needed > cfg.num_gpu_blocks - kv.num_active:
                break
            o = self._schedule(s, True, cached, st, now)
            if o < 0 or (o == 0 and st.budget == 0):
                break
        # Pass duration.
        prefill_ms = 0.0
        T = 0
        if st.n_prefill:
            n = st.n_prefill
            T = n * (st.isl_sum // n - st.prefix_sum // n)
            if T > 0:
                prefill_ms = self.timing.prefill_ms(T, st.prefix_sum, n)
        ready = []
        n_decode = 0
        ctx = 0
        for s in running:
            known = s.prompt_len + s.generated
            # (output_length 0: ready once its prompt is computed, to end with no token)
            if s.computed >= known and (s.generated < s.max_out or not s.max_out):
                ready.append(s)
                if s.generated:
                    n_decode += 1
                    ctx += known
        decode_ms = (self.timing.decode_ms(n_decode, ctx, ctx, self.capacity_tokens)
                     if n_decode else 0.0)
        self._ready = ready
        self.fpm_prefill_tokens = T
        self.fpm_prefill_seqs = st.n_prefill
        self.fpm_decode_seqs = n_decode
        self.fpm_decode_kv_tokens = ctx
        self.fpm_queued_tokens = self.waiting_tokens
        self.num_passes += 1
        self.busy = True
        self.pass_start = now
        self.pass_end = now + (prefill_ms + decode_ms)
        self._did_work = bool(st.scheduled) or bool(ready) or bool(rejected)
        return self.pass_end

    def _reject_reason(self, s: Seq) -> int:
        """Why a fresh request can never run here (0 if it can)."""
        cfg = self.cfg
        if (s.prompt_len + s.generated + self.bs - 1) // self.bs > cfg.num_gpu_blocks:
            return REASON_KV_CAPACITY
        if (s.prompt_len + s.max_out - 1 + self.bs - 1) // self.bs > cfg.num_gpu_blocks:
            # Its full sequence can never be resident: it would end up preempting itself
            # for good (Dynamo aborts the replay there). Reject it before it runs.
            return REASON_SEQ_KV_CAPACITY
        if cfg.max_model_len is not None and s.prompt_len >= cfg.max_model_len:
            return REASON_MAX_MODEL_LEN
        if not cfg.enable_chunked_prefill and s.prompt_len > cfg.max_num_batched_tokens:
            return REASON_BATCH_BUDGET       # unchunked, it can never be scheduled
        return 0

    def _schedule(self, s: Seq, from_wait: bool, cached: int, st: "_PassState", now: float) -> int:
        """Schedule ``s`` in this pass; returns tokens scheduled, _BLOCKED or _SELF."""
        bs = self.bs
        before = s.computed + cached if from_wait else s.computed
        plen = s.prompt_len
        known = plen + s.generated
        pb = before if before < plen else plen
        rem = known - before
        want = rem if rem <= st.budget else st.budget
        if want == 0 and rem > 0:
            return _BLOCKED
        if not self.cfg.enable_chunked_prefill and before < plen and want < rem:
            return _BLOCKED
        after = before + want
        reusable = cached // bs if from_wait else 0
        while not self._allocate(s, after, reusable):
            v = self._preempt()
            if v is None:
                return _BLOCKED
            st.preempted = True
            u = st.scheduled.pop(v, None)
            if u is not None:
                used, pt, vpb = u
                st.budget += used
                if pt > 0:
                    st.n_prefill -= 1
                    st.isl_sum -= vpb + pt
                    st.prefix_sum -= vpb
            if v is s:
                return _SELF
        s.computed = after
        used = after - before
        if used == 0 and after < known:
            return _BLOCKED
        self._register(s, before, after)
        pt = (after if after < plen else plen) - pb
        st.scheduled[s] = (used, pt, pb)
        if pt > 0:
            st.n_prefill += 1
            st.isl_sum += pb + pt
            st.prefix_sum += pb
        if from_wait:
            if self.waiting[0] is s:
                self.waiting.popleft()
            else:
                self.waiting.remove(s)
            self.waiting_tokens -= s.prompt_len + s.generated
            self.running.append(s)
            if cached > s.reused:
                s.reused = cached     # Dynamo reports the largest hit over admissions
            if not s.admitted:
                s.admitted = True
                s.first_admit = now
        st.budget -= used
        return used

    def _preempt(self) -> Seq | None:
        running = self.running
        if not running:
            return None
        v = running.pop() if self.cfg.preemption_mode == "lifo" else running.pop(0)
        v.computed = 0
        v.preemptions += 1
        self.num_preemptions += 1
        self._release(v)
        self.waiting.appendleft(v)
        self.waiting_tokens += v.prompt_len + v.generated
        return v

    def finish_pass(self, end: float) -> None:
        """Emit the tokens of the pass ending at ``end``; complete and reject."""
        s: Seq                # typed loop variable when compiled (sim/engine.pxd)
        self.busy = False
        tot = self.tot
        tot.passes += 1
        tot.busy_ms += end - self.pass_start
        tot.prefill_tokens += self.fpm_prefill_tokens
        tot.prefill_seqs += self.fpm_prefill_seqs
        tot.decode_tokens += self.fpm_decode_seqs
        tot.decode_kv_tokens += self.fpm_decode_kv_tokens
        self.last_fpm_decode_kv = self.fpm_decode_kv_tokens
        self.last_fpm_queued = self.fpm_queued_tokens
        ready = self._ready
        self._ready = []
        metrics = self.metrics
        gap_prev = -1.0
        gap_count = 0
        done = []
        for s in ready:
            g = s.generated
            if g == 0:
                if not s.max_out:
                    # output_length 0 (Dynamo accepts it): the request completes at the end
                    # of its prefill pass without a token; its terminal time is kept as its
                    # last_token (docs/dynamo_replay_semantics.md rule 17).
                    s.last_token = end
                    done.append(s)
                    continue
                s.first_token = end
                if self.on_first_token is not None:
                    self.on_first_token(self, s, end)
            else:
                if g == 1:
                    s.second_token = end
                gap = end - s.last_token
                if s.gaps is not None:
                    s.gaps.append(gap)
                elif not self.token_gaps:
                    pass
                elif gap == gap_prev:
                    gap_count += 1
                else:
                    if gap_count:
                        metrics.add_gap(gap_prev, gap_count)
                    gap_prev, gap_count = gap, 1
            s.generated = g + 1
            s.last_token = end
            if g + 1 >= s.max_out:
                done.append(s)
        if gap_count:
            metrics.add_gap(gap_prev, gap_count)
        for s in done:
            self.running.remove(s)
            self._release(s)
            self._record(s, STATUS_COMPLETED, 0)
        if self._rejected:
            rejected = self._rejected
            self._rejected = []
            for s, reason in rejected:
                self._record(s, STATUS_REJECTED, reason)

    def _record(self, s: Seq, status: int, reason: int) -> None:
        if s.gaps and status == STATUS_COMPLETED:
            scalars = [g for g in s.gaps if isinstance(g, float)]
            if scalars:
                self.metrics.add_gap_array(np.array(scalars), 1)
            for g in s.gaps:
                if not isinstance(g, float):
                    self.metrics.add_gap_array(g, 1)
        r = s.req
        self.metrics.record(r.index, r.arrival_ms, s.first_admit, s.first_token, s.second_token,
                            s.last_token, s.prompt_len, s.generated, s.max_out, s.reused, self.id,
                            status, s.preemptions, reason)
        if self.on_finished is not None and status != STATUS_IN_FLIGHT:
            self.on_finished(self, s, status)

    # -- bulk advance -------------------------------------------------------------
    def plan_stretch(self) -> int:
        """Passes that can run as one decode-only stretch from now (0 if not possible).

        Holds while every running sequence decodes, nobody completes before the last pass,
        the waiting queue cannot change, and every block the stretch needs can be had
        without preemption. Decode time depends on context tokens only, so the pass
        durations do not depend on allocations; the blocks are taken when the stretch
        ends. Evicting inactive blocks is deterministic (LRU head, which no stretch event
        reorders), but with a KV router each eviction must become visible at its own pass
        end, so then only allocations from free blocks are absorbed.
        """
        s: Seq                # typed loop variable when compiled (sim/engine.pxd)
        running = self.running
        if not running or len(running) > self.cfg.max_num_batched_tokens:
            return 0
        bs = self.bs
        k = 1 << 62
        phases = self._phases
        phases.clear()
        for s in running:
            c = s.computed
            if c != s.prompt_len + s.generated - 1 or c < s.prompt_len:
                return 0
            left = s.max_out - s.generated
            if left < k:
                k = left
            phases.append(-c % bs)
        if k <= 1:
            return 0
        if self.waiting and self._admission_possible():
            return 0
        kv = self.kv
        avail = kv.free_blocks() + kv.inactive_count()
        if _allocations(phases, k, bs) > avail:
            lo, hi = 0, k - 1           # largest k' with allocations(k') <= avail
            while lo < hi:
                mid = (lo + hi + 1) // 2
                if _allocations(phases, mid, bs) <= avail:
                    lo = mid
                else:
                    hi = mid - 1
            k = lo
        return k if k > 1 else 0

    def _admission_possible(self) -> bool:
        cfg = self.cfg
        if len(self.running) >= cfg.max_num_seqs:
            return False
        s = self.waiting[0]
        if not s.admitted and self._reject_reason(s):
            return True      # a rejection is a state change: leave it to a full pass
        cached, active_cached = self._lookup(s)
        needed = (s.prompt_len + s.generated + self.bs - 1) // self.bs - active_cached // self.bs
        return needed <= cfg.num_gpu_blocks - self.kv.num_active

    def start_stretch(self, now: float, k: int) -> float:
        """Begin k decode passes; returns the end time of the last one."""
        s: Seq                # typed loop variable when compiled (sim/engine.pxd)
        running = self.running
        n = len(running)
        ctx0 = 0
        for s in running:
            ctx0 += s.prompt_len + s.generated
        self._stretch_ctx0 = ctx0
        self.num_stretches += 1
        if self._native_ends is not None:
            ends = np.frombuffer(self._native_ends(now, ctx0, n, k, _to_ns))
            ctx_last = ctx0 + n * (k - 1)
        else:
            ctx = ctx0 + n * np.arange(k, dtype=np.int64)
            steps = np.empty(k + 1)
            steps[0] = now
            steps[1:] = decode_ms_series(self.timing, n, ctx, self.capacity_tokens)
            ends = np.cumsum(steps)[1:]
            ctx_last = int(ctx[-1])
        self.stretch_ends = ends
        self._evict_cum = None
        kv = self.kv
        if kv.events_enabled:
            free0 = kv.free_blocks()
            if _allocations(self._phases, k, self.bs) > free0:
                # Evictions per pass, for publishing to the KV router at each pass end.
                bs = self.bs
                idx = np.concatenate([np.arange(a, k, bs) for a in self._phases if a < k])
                cum = np.cumsum(np.bincount(idx, minlength=k))
                self._evict_cum = np.maximum(cum - free0, 0)
                self._evict_published = 0
        self.busy = True
        self.pass_start = now
        self.pass_end = float(ends[-1])
        self.fpm_prefill_tokens = 0
        self.fpm_prefill_seqs = 0
        self.fpm_decode_seqs = n
        self.fpm_decode_kv_tokens = ctx_last
        self.fpm_queued_tokens = self.waiting_tokens
        return self.pass_end

    def truncate_stretch(self, t: float) -> float:
        """A request arriving at ``t`` joins the pass that starts at the first pass end at
        or after ``t``: the stretch stops there."""
        ends = self.stretch_ends
        j = int(ends.searchsorted(t, "left"))
        if j < len(ends) - 1:
            self.num_stretch_cuts += 1
            # A copy, not a view: the metrics buffer keeps these end times for a while and
            # must not pin the whole planned stretch.
            self.stretch_ends = ends[: j + 1].copy()
            self.pass_end = float(ends[j])
        return self.pass_end

    def stretch_evictions_until(self, t: float) -> list[int]:
        """Keys removed from the cache by the passes of the running stretch that ended by ``t``.

        The stretch takes its blocks when it ends; the copies it evicts are the oldest
        inactive ones, in order, so the first n evictions are known in advance."""
        cum = self._evict_cum
        if cum is None or self.stretch_ends is None:
            return []
        j = int(self.stretch_ends.searchsorted(t, "right"))
        if j == 0:
            return []
        upto = int(cum[min(j, len(cum)) - 1])
        start = self._evict_published
        if upto <= start:
            return []
        self._evict_published = upto
        return self.kv.evicted_keys_ahead(start, upto)

    def finish_stretch(self, end: float) -> None:
        s: Seq                # typed loop variable when compiled (sim/engine.pxd)
        ends = self.stretch_ends
        self.stretch_ends = None
        self.busy = False
        k = len(ends)
        self.num_passes += k
        self.num_stretch_passes += k
        self.tot.add_stretch(k, len(self.running), self._stretch_ctx0, end - self.pass_start)
        self.last_fpm_decode_kv = self._stretch_ctx0 + len(self.running) * (k - 1)
        self.last_fpm_queued = self.fpm_queued_tokens
        running = self.running
        metrics = self.metrics
        first_end = float(ends[0])
        if self.defer_gaps:
            rest = np.diff(ends) if k > 1 else None
            for s in running:
                s.gaps.append(first_end - s.last_token)
                if rest is not None:
                    s.gaps.append(rest)
        elif self.token_gaps:
            metrics.add_gaps([first_end - s.last_token for s in running])
            metrics.add_pass_ends(ends, len(running))
        bs = self.bs
        new_blocks = [0 if k <= a else 1 + (k - 1 - a) // bs for a in self._phases]
        total = sum(new_blocks)
        if total:
            if self.kv.reserve([], total) is None:      # plan_stretch guaranteed room
                raise AssertionError("stretch allocation failed")
            for s, n in zip(running, new_blocks, strict=True):
                if n:
                    s.blocks.add_private(n)
        done = []
        register = self.kv.register_range if self.cfg.enable_prefix_caching else None
        for s in running:
            before = s.computed
            if s.generated == 1:
                s.second_token = first_end
            s.generated += k
            after = s.computed = before + k
            s.last_token = end
            if register is not None and before // bs < after // bs:
                register(s.blocks, before // bs, after // bs, s.keys, s.req.index)
            if s.generated >= s.max_out:
                done.append(s)
        for s in done:
            running.remove(s)
            self._release(s)
            self._record(s, STATUS_COMPLETED, 0)

    def fpm_totals(self, now: float) -> "FpmTotals":
        """Cumulative FPM of every pass that has ended by ``now`` (a stretch in progress
        contributes the passes it has completed)."""
        ends = self.stretch_ends
        if ends is None:
            return self.tot
        j = int(ends.searchsorted(now, "right"))
        if j == 0:
            return self.tot
        t = self.tot.copy()
        t.add_stretch(j, len(self.running), self._stretch_ctx0, float(ends[j - 1]) - self.pass_start)
        return t

    def reject_head(self) -> None:
        """Reject the waiting head that can never be admitted again (see ``Simulation._start``)."""
        s = self.waiting.popleft()
        self.waiting_tokens -= s.prompt_len + s.generated
        self._record(s, STATUS_REJECTED, REASON_KV_CAPACITY)

    # -- cut-off -----------------------------------------------------------------
    def stop_at(self, t: float) -> None:
        """The run is cut off at ``t``: emit the passes of a running stretch that ended by
        then (as pass-by-pass stepping would have), then record what is left."""
        ends = self.stretch_ends
        if ends is not None:
            j = int(ends.searchsorted(t, "right"))
            if j:
                self.stretch_ends = ends[:j].copy()
                self.finish_stretch(float(ends[j - 1]))
            self.stretch_ends = None
        self.busy = False
        # Rejections decided in a pass still running at the cut-off are final: record them.
        rejected, self._rejected = self._rejected, []
        for s, reason in rejected:
            self._record(s, STATUS_REJECTED, reason)
        self.flush_in_flight()

    def flush_in_flight(self) -> None:
        """Record every sequence still here as in flight (the run stopped at a cut-off)."""
        for s in self.running + list(self.waiting):
            self._record(s, STATUS_IN_FLIGHT, 0)
        self.running = []
        self.waiting.clear()
        self.waiting_tokens = 0


def _allocations(phases: list[int], k: int, bs: int) -> int:
    """New blocks needed by k decode passes; a sequence whose next block is due in ``a``
    passes needs one at passes a, a + bs, a + 2 bs, ..."""
    n = 0
    for a in phases:
        if k > a:
            n += 1 + (k - 1 - a) // bs
    return n


class FpmTotals:
    """Sums of per-pass metrics: passes, busy time, scheduled prefill/decode work."""

    __slots__ = ("passes", "busy_ms", "prefill_tokens", "prefill_seqs", "decode_tokens",
                 "decode_kv_tokens")

    def __init__(self) -> None:
        self.passes = 0
        self.busy_ms = 0.0
        self.prefill_tokens = 0
        self.prefill_seqs = 0
        self.decode_tokens = 0        # one per decoding sequence per pass
        self.decode_kv_tokens = 0     # context tokens of the decode batch, summed over passes

    def add_stretch(self, k: int, n: int, ctx0: int, busy_ms: float) -> None:
        """k decode passes of n sequences whose context total starts at ctx0 and grows by n."""
        self.passes += k
        self.busy_ms += busy_ms
        self.decode_tokens += k * n
        self.decode_kv_tokens += k * ctx0 + n * k * (k - 1) // 2

    def copy(self) -> "FpmTotals":
        t = FpmTotals()
        for f in self.__slots__:
            setattr(t, f, getattr(self, f))
        return t

    def as_dict(self) -> dict:
        return {f: getattr(self, f) for f in self.__slots__}


class _PassState:
    __slots__ = ("budget", "scheduled", "n_prefill", "isl_sum", "prefix_sum", "preempted")

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.scheduled: dict[Seq, tuple[int, int, int]] = {}
        self.n_prefill = 0
        self.isl_sum = 0
        self.prefix_sum = 0
        self.preempted = False
