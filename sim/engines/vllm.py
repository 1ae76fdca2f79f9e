"""vLLM flavour: Dynamo's mocker vLLM scheduler over the block pool (``sim.kv_cache``).

The rules reproduce Dynamo's mocker vLLM core (aisimulate-core 0.13.0, inside
ai-dynamo-runtime 1.6.1), checked request by request against that binary
(``docs/dynamo_engine_semantics.md``):

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

The admission test and the preemption rule are the two seams TRT-LLM's flavour
(``sim.engines.trtllm``) overrides. Decode-only stretches (nothing to admit, no prefill,
no block allocation, no completion before the last pass) are advanced in bulk:
``plan_stretch``/``start_stretch``. Passing ``exact=True`` steps pass by pass; that is the
reference the bulk path is tested against.
"""
from __future__ import annotations

from collections.abc import Sequence

from .. import kv_cache as _kv
from ..kv_cache import block_keys, private_key
from ..metrics import MetricsCollector
from ..timing import TimingModel
from .base import (REASON_BATCH_BUDGET, REASON_KV_CAPACITY, REASON_MAX_MODEL_LEN,
                   REASON_SEQ_KV_CAPACITY, EngineBase, Seq)

_BLOCKED, _SELF = -1, -2
_HOST_MISS, _HOST_SKIP = 0, 2     # connector look-up outcomes


class VllmEngine(EngineBase):
    """One aggregated vLLM worker (one DP rank)."""

    def __init__(self, worker_id: int, cfg, timing: TimingModel,
                 metrics: MetricsCollector, *, exact: bool = False,
                 defer_gaps: bool = False, token_gaps: bool = True) -> None:
        super().__init__(worker_id, cfg, timing, metrics, exact=exact, defer_gaps=defer_gaps,
                         token_gaps=token_gaps)
        self.kv = _kv.KvCache(cfg.num_gpu_blocks, cfg.block_size, cfg.enable_prefix_caching)
        self._phases: list[int] = []                   # stretch: passes until each needs a block
        # Stretch evictions (KV router): allocations of passes 0..j are a prefix sum of the
        # phase histogram, ``_evict_pre[r]`` = sequences due at a phase < r (None: no
        # evictions); the pool's free blocks at the start absorb the first ``_evict_free0``.
        self._evict_pre: list[int] | None = None
        self._evict_free0 = 0
        self._evict_k = 0
        self._evict_published = 0
        # The end time of the first pass whose allocations evict past ``_evict_published``
        # (inf: none left): earlier look-ups publish nothing and skip the search.
        self._evict_next_t = 0.0
        # G2 host tier (sim.host_tier) beside the block pool, when configured: the
        # connector queue (requests the connector deferred, see _host_next) and each
        # request's connector state (_HostReq).
        self.host = None
        self.connector: list[Seq] = []
        self._host_req: dict = {}
        self._host_obs: list[Seq] = []   # scheduled with prompt tokens in the current pass
        self._host_retry: set = set()    # running, with a store cohort waiting for host room
        self.host_hit_requests = 0       # first admissions that reused host blocks
        self.host_reused_tokens = 0      # prompt tokens those admissions took from the host
        self._pass_id = 0                # start_pass count (marks single-token decodes)
        # cfg fields read at every pass (typed attributes when compiled; cfg is not changed
        # after the engine is made)
        self._max_seqs = cfg.max_num_seqs
        self._max_batched = cfg.max_num_batched_tokens
        self._num_blocks = cfg.num_gpu_blocks
        self._caching = bool(cfg.enable_prefix_caching)
        self._chunked = bool(cfg.enable_chunked_prefill)
        self._lifo = cfg.preemption_mode == "lifo"
        if getattr(cfg, "num_host_blocks", None):
            from ..host_tier import HostTier
            self.host = HostTier(cfg.num_host_blocks,
                                 cfg.block_size * cfg.kv_cache_bytes_per_token,
                                 cfg.host_d2h_gbps, cfg.host_h2d_gbps)

    # -- blocks ----------------------------------------------------------------
    def _prompt_keys(self, s: Seq) -> Sequence[int]:
        keys = s.keys
        if keys is None:
            r = s.req
            keys = s.keys = (block_keys(r.hash_ids, r.trace_block_size, self.bs,
                                        s.prompt_len // self.bs)
                             if r.hash_ids is not None else [])
        return keys

    def _key(self, s: Seq, b: int) -> int:
        keys = s.keys
        return keys[b] if b < len(keys) else private_key(s.index, b)

    def _prefix_hits(self, s: Seq) -> tuple[int, int]:
        """(cached, active cached) tokens of the known sequence's full blocks in the pool."""
        bs = self.bs
        known = s.prompt_len + s.generated
        keys = self._prompt_keys(s)
        full = known // bs
        if full > len(keys):
            keys = keys + [private_key(s.index, b) for b in range(len(keys), full)]
        hit, hit_active = self.kv.match_prefix(keys)
        return min(hit * bs, known), min(hit_active * bs, known)

    def _lookup(self, s: Seq) -> tuple[int, int]:
        """(cached, active cached) tokens of the known sequence, after the recompute rule."""
        bs = self.bs
        known = s.prompt_len + s.generated
        cached, active = self._prefix_hits(s)
        cap = (known - 1) // bs * bs      # vLLM computes at least one prompt token
        if cached > cap:
            cached = cap
            active = min(active, cap)
        return cached, active

    def _allocate(self, s: Seq, upto, reusable_blocks) -> bool:
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
        if not self._caching:
            return
        bs = self.bs
        lo, hi = before // bs, after // bs
        if lo < hi:
            self.kv.register_range(s.blocks, lo, hi, s.keys, s.index)

    def _release(self, s: Seq) -> None:
        self.kv.release(s.blocks)
        s.blocks.clear()

    def _complete(self, s: Seq) -> None:
        self._release(s)
        if self.host is not None:
            self._host_req.pop(s, None)
            self._host_retry.discard(s)

    # -- G2 host tier (see sim/host_tier.py) -------------------------------------------------
    # Dynamo's vLLM core (aisimulate-core 0.13.0, ``scheduler/vllm/core.rs`` and
    # ``host_offload.rs``) keeps the requests the connector deferred - a load in flight, a
    # copy they depend on in flight - in a connector queue beside the waiting queue (vLLM's
    # ``skipped_waiting``): in the order they joined it, ahead of the waiting queue once
    # awake, asleep from their deferral until a copy completes.
    def _host_state(self, s: Seq) -> _HostReq:
        hs = self._host_req.get(s)
        if hs is None:
            hs = self._host_req[s] = _HostReq()
        return hs

    def _host_next(self) -> Seq | None:
        """The request the waiting loop considers next: the first awake connector waiter,
        else the waiting head (None if neither)."""
        o: Seq
        hs: _HostReq
        for o in self.connector:
            hs = self._host_req[o]
            if not hs.asleep:
                return o
        return self.waiting[0] if self.waiting else None

    def _host_defer(self, s: Seq) -> None:
        """The connector deferred ``s``: it joins the back of the connector queue (or keeps
        its place there) and sleeps until a copy completes."""
        hs = self._host_state(s)
        if not hs.in_conn:
            self.waiting.popleft()          # s was the waiting head
            self.connector.append(s)
            hs.in_conn = True
        hs.asleep = True

    def _host_wake(self) -> None:
        """A copy completed: every connector waiter is awake again."""
        o: Seq
        hs: _HostReq
        self.host.progressed = False
        for o in self.connector:
            hs = self._host_req[o]
            hs.asleep = False

    def _host_lookup(self, s: Seq, raw_cached: int, cached: int, now: float) -> int:
        """The connector's look-up for the request ``s`` the waiting loop considers, whose
        GPU prefix hit is ``raw_cached`` tokens (``cached`` after the recompute rule):
        _HOST_MISS (admit it from the GPU cache alone), _HOST_SKIP (deferred: its load or
        its latest store is in flight, or a copy of its host prefix is; its host prefix
        started loading) or _BLOCKED (no GPU headroom or room for the load: the loop
        stops). Dynamo's ``lookup`` and ``start_load``."""
        hs = self._host_state(s)
        if hs.loaded >= 0:
            return _HOST_MISS                   # loaded already: admitted from the GPU
        if hs.loading:
            return _HOST_SKIP
        host = self.host
        if hs.store_id:
            if host.store_live(hs.store_id):
                return _HOST_SKIP               # its own blocks are still being stored
            hs.store_id = 0
        keys = s.keys
        base = raw_cached // self.bs            # the lookup starts past the raw GPU hit
        if base >= len(keys):
            host.touch_reversed(keys)
            return _HOST_MISS
        n, deferred = host.match(keys, base)
        host.touch_reversed(keys)
        if n == 0:
            return _HOST_MISS
        if deferred:
            return _HOST_SKIP
        if not self._host_load_headroom(s, base):
            return _BLOCKED
        if not self.kv.reserve_into(s.blocks, keys[:base], n):
            return _BLOCKED
        host.start_load(keys[base:base + n], s, now)
        hs.g1_tokens = cached
        hs.loading = True
        hs.foot = -(-(s.prompt_len + s.generated) // self.bs)
        return _HOST_SKIP

    def _host_load_headroom(self, s: Seq, base: int) -> bool:
        """Dynamo's load-admission headroom for the host tier (its vLLM connector policy's
        ``LoadAdmissionHeadroom::InflightPrefillRemainders``, ``lib/mocker/src/host_offload/
        policy.rs``): a load is non-preemptible, so it starts only if the request's whole
        footprint (the blocks of its known tokens past its GPU prefix hit of ``base``
        blocks) fits the blocks no running sequence holds, less the unfinished blocks of
        every prefill in flight: running sequences mid-prompt (their known blocks not yet
        allocated) and connector waiters whose host prefix is loading or loaded (their
        footprint past the loaded prefix). Otherwise the waiting loop stops and a later
        pass retries it."""
        o: Seq
        hs: _HostReq
        bs = self.bs
        unfinished = 0
        for o in self.running:
            if o.computed < o.prompt_len:
                unfinished += -(-(o.prompt_len + o.generated) // bs) - len(o.blocks)
        for o in self.connector:
            hs = self._host_req[o]
            if hs.loading or hs.loaded >= 0:
                unfinished += hs.foot - len(o.blocks)
        need = -(-(s.prompt_len + s.generated) // bs) - base
        return need <= self.cfg.num_gpu_blocks - self.kv.num_active - unfinished

    def _host_store(self, s: Seq) -> None:
        """Write-through: queue the full prompt blocks ``s`` has computed past its store
        cursor that the host lacks (one cohort, sent at the pass end)."""
        if not s.blocks:
            return          # preempted later in the pass: nothing to copy from
        hs = self._host_state(s)
        keys = s.keys
        end = min(min(s.computed, s.prompt_len) // self.bs, len(keys))
        if end <= hs.cursor:
            return
        out = self.host.prepare_store(keys[hs.cursor:end])
        if out is None:
            hs.cursor = end
        elif out:
            hs.cursor = end
            hs.store_id = self.host.last_store_id
            self.host.touch_reversed(keys)
        else:
            self._host_retry.add(s)         # retried at each pass that schedules it
            return
        if self._host_retry:
            self._host_retry.discard(s)

    def _host_boundary(self, t: float) -> None:
        """Pass boundary at ``t``: finish the copies that have ended, send the prepared
        stores, put the blocks of every finished load in the GPU cache (held by its
        request, which stays in the connector queue) and wake the connector waiters if a
        copy completed."""
        host = self.host
        owners = host.advance(t)
        host.submit_stores(t)
        owners += host.advance(t)
        self._host_activate(owners)

    def _host_activate(self, owners: list) -> None:
        s: Seq
        hs: _HostReq
        bs = self.bs
        for s in owners:
            hs = self._host_req[s]
            n = len(s.blocks)
            self.kv.register_range(s.blocks, hs.g1_tokens // bs, n, s.keys, s.index)
            hs.loaded = n
            hs.loading = False
        if self.host.progressed:
            self._host_wake()

    def finish_pass(self, end: float) -> None:
        if self.host is not None and (self._host_obs or self._host_retry):
            # Blocks completed by the pass join the host as store cohorts when the pass
            # completes (before its requests are released), and the boundary sends them;
            # this order reproduces Dynamo's host hits on the conversation trace. Dynamo
            # observes every request the pass scheduled, in running order, so a cohort
            # that found no host room is retried at each pass of its request.
            obs = self._host_obs
            if self._host_retry:
                cand = set(obs)
                for s in self._ready:
                    if s in self._host_retry:
                        cand.add(s)
                obs = [s for s in self.running if s in cand]
            for s in obs:
                self._host_store(s)
            self._host_obs = []
        EngineBase.finish_pass(self, end)
        if self.host is not None:
            self._host_boundary(end)

    def finish_stretch(self, end: float) -> None:
        EngineBase.finish_stretch(self, end)
        if self.host is not None:
            self._host_boundary(end)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting or self.connector)

    def num_in_flight(self) -> int:
        return len(self.running) + len(self.waiting) + len(self.connector)

    def flush_connector(self) -> None:
        """Put the connector waiters back at the front of the waiting queue, in order (no
        copy is in flight that could wake them)."""
        hs: _HostReq
        for s in reversed(self.connector):
            hs = self._host_req[s]
            hs.in_conn = False
            hs.asleep = False
            self.waiting.appendleft(s)
        self.connector = []

    def flush_in_flight(self) -> None:
        for s in self.connector:
            self.waiting.append(s)
        self.connector = []
        EngineBase.flush_in_flight(self)

    # -- one pass ----------------------------------------------------------------
    def start_pass(self, now: float) -> float:
        """Schedule one pass starting at ``now``; returns its end time."""
        s: Seq                # typed loop variable when compiled (sim/engines/vllm.pxd)
        bs = self.bs
        running = self.running
        waiting = self.waiting
        self._pass_id += 1
        st = _PassState(self._max_batched, self._pass_id)
        scheduled = st.scheduled
        pass_id = st.pass_id
        fence = now
        evictions0 = 0
        if self.host is not None:
            # copies that ended while the engine was idle (Dynamo wakes for them)
            self._host_activate(self.host.advance(now))
            self.host.fence_ms = now
            evictions0 = self.kv.evictions
        i = 0
        while i < len(running) and st.budget > 0:
            s = running[i]
            c = s.computed
            if c % bs and c == s.prompt_len + s.generated - 1 and c >= s.prompt_len:
                # Decode with room in its tail block: one token, no allocation. Marked on
                # the sequence rather than in ``scheduled`` (no tuple per sequence per pass).
                s.computed = c + 1
                if not (c + 1) % bs:
                    self._register(s, c, c + 1)
                s.sched_pass = pass_id
                st.n_decodes += 1
                st.budget -= 1
                i += 1
                continue
            o = self._schedule(s, False, 0, st, now)
            if o == _BLOCKED:
                break
            if o != _SELF:
                i += 1
        rejected = self._rejected
        host = self.host
        connector = self.connector
        while not st.preempted and len(running) < self._max_seqs:
            if connector:
                s = self._host_next()       # (host tier) awake connector waiters first
                if s is None:
                    break
            elif waiting:
                s = waiting[0]
            else:
                break
            if self.dest_pending and not s.computed:
                # While handoffs wait for a reservation on this decode worker, Dynamo admits
                # only copies whose prompt KV has arrived (the first in queue order, past a
                # preempted head), and nothing that would compute a prompt here
                # (AdmissionStage::PendingDestinationHead in the mocker's vLLM core).
                s = _first_activated(waiting)
                if s is None:
                    break
            if not s.admitted:
                reason = self._reject_reason(s)
                if reason:
                    waiting.popleft()
                    self.waiting_tokens -= s.prompt_len + s.generated
                    rejected.append((s, reason))
                    continue
            if s.computed:
                # A disaggregated decode copy whose prompt KV arrived (activate_remote):
                # its blocks are held, nothing to look up or compute.
                cached, active_cached = 0, len(s.blocks) * bs
            else:
                if host is None:
                    cached, active_cached = self._lookup(s)
                else:
                    if st.budget <= 0:
                        break                     # vLLM asks the connector only with budget left
                    # the connector looks past the raw GPU hit; admission uses it capped
                    raw, active_cached = self._prefix_hits(s)
                    cap = (s.prompt_len + s.generated - 1) // bs * bs
                    cached = raw
                    if raw > cap:
                        cached = cap
                        if active_cached > cap:
                            active_cached = cap
                    h = self._host_lookup(s, raw, cached, now)
                    if h == _BLOCKED:
                        break
                    if h == _HOST_SKIP:
                        self._host_defer(s)
                        continue
                    loaded = self._host_state(s).loaded
                    if loaded >= 0:
                        # The first admission after a load takes exactly the loaded prefix
                        # (recompute rule applied unless there is no output, as in Dynamo's
                        # own host-tier test); the blocks it holds already are not needed anew.
                        active_cached = loaded * bs
                        cap = (s.prompt_len + s.generated - 1) // bs * bs
                        cached = active_cached if not s.max_out else min(active_cached, cap)
            if not self._fits(s, active_cached):
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
            if T > 0 and not self.decode_role:
                prefill_ms = self.timing.prefill_ms(T, st.prefix_sum, n)
        ready = []
        n_decode = 0
        ctx = 0
        for s in running:
            known = s.prompt_len + s.generated
            # (output_length 0: ready once its prompt is computed, to end with no token)
            if s.computed >= known and (s.generated < s.max_out or not s.max_out):
                ready.append(s)
                if s.generated or not scheduled[s][1]:
                    # (generated == 0 with no prompt token this pass: a disaggregated decode
                    # copy's first token, a decode step over its remotely computed prompt)
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
        if self.host is not None:
            fence = self.host.pass_fence(self.kv, self.kv.evictions > evictions0)
        self.pass_end = fence + (prefill_ms + decode_ms)
        self._did_work = bool(st.scheduled) or st.n_decodes > 0 or bool(ready) or bool(rejected)
        if not self._did_work and self.connector:
            # Nothing can run until a copy ends and wakes the connector waiters: wait for
            # it (an empty pass).
            deadline = self.host.next_deadline()
            if deadline is not None:
                self.pass_end = max(now, deadline)
                self._did_work = True
            else:       # (nothing in flight to wake them: they rejoin the waiting queue)
                self.flush_connector()
        return self.pass_end

    # -- disaggregated decode (Dynamo: ReserveDestination / ActivateDestination) -----
    def reserve_remote(self, req, keys):
        s = Seq(req, self.kv.new_blocks())
        s.keys = keys
        if self.defer_gaps:
            s.gaps = []
        bs = self.bs
        need = (s.prompt_len + bs - 1) // bs
        full_keys = self._prompt_keys(s)
        hit = 0
        if self._caching:
            hit = min(self.kv.match_prefix(full_keys)[0], need)
        hit_keys = full_keys[:hit] if hit else []
        if not self.kv.reserve_into(s.blocks, hit_keys, need - hit):
            return None
        s.admitted = True                 # admission history lives on the prefill side
        return s, (need - hit) * bs       # whole fresh blocks (transferable_prompt_tokens)

    def activate_remote(self, s):
        s.computed = s.prompt_len
        self._register(s, 0, s.prompt_len)
        self.waiting.append(s)
        self.waiting_tokens += s.prompt_len

    def _fits(self, s: Seq, active_cached: int) -> bool:
        """Admission test of the waiting head: its whole known sequence, net of the prefix
        blocks already active, fits the blocks no running sequence holds."""
        bs = self.bs
        needed = (s.prompt_len + s.generated + bs - 1) // bs - active_cached // bs
        return needed <= self._num_blocks - self.kv.num_active

    def _reject_reason(self, s: Seq) -> int:
        """Why a fresh request can never run here (0 if it can)."""
        if (s.prompt_len + s.generated + self.bs - 1) // self.bs > self._num_blocks:
            return REASON_KV_CAPACITY
        if (s.prompt_len + s.max_out - 1 + self.bs - 1) // self.bs > self._num_blocks:
            # Its full sequence can never be resident: it would end up preempting itself
            # for good (Dynamo aborts the replay there). Reject it before it runs.
            return REASON_SEQ_KV_CAPACITY
        max_model_len = self.cfg.max_model_len
        if max_model_len is not None and s.prompt_len >= max_model_len:
            return REASON_MAX_MODEL_LEN
        if not self._chunked and s.prompt_len > self._max_batched:
            return REASON_BATCH_BUDGET       # unchunked, it can never be scheduled
        return 0

    def _schedule(self, s: Seq, from_wait, cached, st, now: float) -> int:
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
        if not self._chunked and before < plen and want < rem:
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
            elif v.sched_pass == st.pass_id:      # a single-token decode of this pass
                v.sched_pass = 0
                st.n_decodes -= 1
                st.budget += 1
            if v is s:
                return _SELF
        s.computed = after
        used = after - before
        if used == 0 and after < known:
            return _BLOCKED
        self._register(s, before, after)
        if self.host is not None and before < plen:
            self._host_obs.append(s)      # its completed prompt blocks: stored at pass end
        pt = (after if after < plen else plen) - pb
        st.scheduled[s] = (used, pt, pb)
        if pt > 0:
            st.n_prefill += 1
            st.isl_sum += pb + pt
            st.prefix_sum += pb
        if from_wait:
            if self.waiting and self.waiting[0] is s:
                self.waiting.popleft()
            elif self.connector and s in self.connector:
                self.connector.remove(s)      # (its flag is cleared by _host_admitted)
            else:
                self.waiting.remove(s)
            self.waiting_tokens -= s.prompt_len + s.generated
            self.running.append(s)
            if cached > s.reused and not self.decode_role:
                # Dynamo reports the largest hit over admissions; of a disaggregated
                # request, over its prefill admissions (a decode worker's readmission hit is
                # its separate decode_reused_input_tokens)
                s.reused = cached
            if self.host is not None:
                self._host_admitted(s, cached)
            if not s.admitted:
                s.admitted = True
                s.first_admit = now
        st.budget -= used
        return used

    def _host_admitted(self, s: Seq, cached: int) -> None:
        """Tier attribution of an admission: after a load, the store cursor moves past
        the reused prefix and the first admission counts its host-reused tokens."""
        hs = self._host_state(s)
        hs.in_conn = False
        host_tokens = 0
        if hs.loaded >= 0:
            host_tokens = cached - min(hs.g1_tokens, cached)
            hs.cursor = cached // self.bs
            hs.loaded = -1
        if not hs.recorded:
            hs.recorded = True
            if host_tokens > 0:
                self.host_hit_requests += 1
                self.host_reused_tokens += host_tokens

    def _preempt(self) -> Seq | None:
        """Free blocks by preempting a running sequence (recompute mode); None if none can go."""
        running = self.running
        if not running:
            return None
        v = running.pop() if self._lifo else running.pop(0)
        if self.host is not None:
            hs = self._host_req.get(v)
            if hs is not None and hs.store_id:
                self.host.fence_store(hs.store_id)
            self._host_retry.discard(v)
        v.computed = 0
        v.preemptions += 1
        self.num_preemptions += 1
        self._release(v)
        self.waiting.appendleft(v)
        self.waiting_tokens += v.prompt_len + v.generated
        return v

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
        s: Seq                # typed loop variable when compiled (sim/engines/vllm.pxd)
        running = self.running
        if (not running or len(running) > self._max_batched or self.connector
                or self._host_retry):
            return 0
        bs = self.bs
        k = 1 << 62
        phases = self._phases
        phases.clear()
        # Newest first: a sequence still in its prefill is usually among the last admitted,
        # so a pass that cannot be a stretch is found without walking the whole batch.
        for i in range(len(running) - 1, -1, -1):
            s = running[i]
            c = s.computed
            if c != s.prompt_len + s.generated - 1 or c < s.prompt_len:
                return 0
            left = s.max_out - s.generated
            if left < k:
                k = left
            phases.append(-c % bs)
        phases.reverse()                # in batch order
        if k <= 1:
            return 0
        kv = self.kv
        avail = kv.free_blocks() + kv.inactive_count()
        if self.waiting:
            if self._admission_possible():
                return 0
            if self.host is not None:
                # Every pass looks the head up in the host tier: a stretch only while that
                # look-up cannot change (no copy in flight, no host hit, and no GPU eviction
                # that could shorten the head's GPU prefix).
                if not self._host_quiet():
                    return 0
                avail = kv.free_blocks()
        if self.host is not None and self.host.stores:
            avail = kv.free_blocks()        # no eviction of a block whose copy is in flight
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

    def _host_quiet(self) -> bool:
        """Would every pass of a stretch find the waiting head's host look-up unchanged (a
        miss, its touch repeated on an unchanged LRU)? Does that first touch now."""
        host = self.host
        if host.has_transfers():
            return False
        n = len(self.running)
        if n >= self.cfg.max_num_seqs or n >= self.cfg.max_num_batched_tokens:
            return True                       # no pass reaches the head
        s = self.waiting[0]
        cached, _ = self._prefix_hits(s)
        keys = s.keys
        base = cached // self.bs
        if base < len(keys) and host.match(keys, base)[0]:
            return False
        host.touch_reversed(keys)             # what the stretch's first pass does
        return True

    def _admission_possible(self) -> bool:
        if len(self.running) >= self._max_seqs:
            return False
        s = self.waiting[0]
        if s.computed:
            return True      # an activated disaggregated decode copy: its blocks are held
        if not s.admitted and self._reject_reason(s):
            return True      # a rejection is a state change: leave it to a full pass
        cached, active_cached = self._lookup(s)
        return self._fits(s, active_cached)

    def _start_stretch_kv(self, k: int) -> None:
        self._evict_pre = None
        kv = self.kv
        if kv.events_enabled:
            free0 = kv.free_blocks()
            if _allocations(self._phases, k, self.bs) > free0:
                # Evictions per pass, for publishing to the KV router at each pass end: a
                # sequence with phase a (0 <= a < bs) allocates at the passes j with
                # j % bs == a, so allocations by pass j are a prefix sum over phases.
                self._evict_pre = _phase_prefix(self._phases, self.bs)
                self._evict_free0 = free0
                self._evict_k = k
                self._evict_published = 0
                self._evict_next_t = self._next_eviction_end()

    def _next_eviction_end(self) -> float:
        """End time of the first pass of the running stretch after which more than
        ``_evict_published`` of its blocks come from evictions (inf if none does).

        Allocations by pass m, ``_allocations_from_prefix``, do not decrease with m, so
        the first such pass is found by bisection over 1..``_evict_k``."""
        pre = self._evict_pre
        bs = self.bs
        need = self._evict_free0 + self._evict_published    # allocations must exceed this
        ends = self.stretch_ends
        hi = self._evict_k if self._evict_k < len(ends) else len(ends)   # (truncated)
        if _allocations_from_prefix(pre, hi, bs) <= need:
            return float("inf")
        lo = 1
        while lo < hi:
            mid = (lo + hi) // 2
            if _allocations_from_prefix(pre, mid, bs) > need:
                hi = mid
            else:
                lo = mid + 1
        return float(ends[lo - 1])

    def stretch_evictions_until(self, t: float) -> list[int]:
        """Keys removed from the cache by the passes of the running stretch that ended by ``t``.

        The stretch takes its blocks when it ends; the copies it evicts are the oldest
        inactive ones, in order, so the first n evictions are known in advance."""
        pre = self._evict_pre
        if pre is None or self.stretch_ends is None or t < self._evict_next_t:
            return []
        j = int(self.stretch_ends.searchsorted(t, "right"))
        if j == 0:
            return []
        # passes 0 .. m-1 have ended; the free blocks at the start absorb the first ones
        m = min(j, self._evict_k)
        upto = _allocations_from_prefix(pre, m, self.bs) - self._evict_free0
        start = self._evict_published
        if upto <= start:
            return []
        self._evict_published = upto
        self._evict_next_t = self._next_eviction_end()
        return self.kv.evicted_keys_ahead(start, upto)

    def _stretch_kv(self, k) -> None:
        s: Seq                # typed loop variable when compiled (sim/engines/vllm.pxd)
        running = self.running
        phases = self._phases
        bs = self.bs
        kv = self.kv
        if len(phases) != len(running):
            raise AssertionError("stretch planned for another batch")
        total = _allocations(phases, k, bs)
        if total and kv.reserve([], total) is None:      # plan_stretch guaranteed room
            raise AssertionError("stretch allocation failed")
        caching = self._caching
        for i in range(len(running)):
            s = running[i]
            a = phases[i]
            if k > a:
                # a new block at passes a, a + bs, ... (the pool took them all above); the
                # ones that fill join the cache, sequence by sequence as before
                s.blocks.add_private(1 + (k - 1 - a) // bs)
            if caching:
                before = s.computed
                after = before + k
                if before // bs < after // bs:
                    kv.register_range(s.blocks, before // bs, after // bs, s.keys, s.index)

    def check_invariants(self) -> None:
        s: Seq
        self.kv.check()
        for s in self.running:
            assert s.computed <= s.prompt_len + s.generated, "computed past the sequence"
            assert len(s.blocks) == (s.computed + self.bs - 1) // self.bs, "blocks != computed"
        for s in self.waiting:
            # a disaggregated decode copy waits with its remotely computed prompt's blocks
            # (with the host tier, the loaded blocks are held in the connector queue)
            assert (not s.blocks or len(s.blocks) == (s.computed + self.bs - 1) // self.bs > 0
                    ), "waiting sequence holds blocks"
        if self.host is not None:
            self.host.check()
            for s in self.connector:
                hs = self._host_req[s]
                assert hs.in_conn and s not in self.waiting, "connector waiter"
                assert bool(s.blocks) == (hs.loading or hs.loaded >= 0), \
                    "connector waiter holds blocks without a load"


def _first_activated(waiting) -> Seq | None:
    """The first waiting disaggregated decode copy whose prompt KV arrived, or None."""
    s: Seq
    for s in waiting:
        if s.computed:
            return s
    return None


def _allocations(phases, k, bs):
    """New blocks needed by k decode passes; a sequence whose next block is due in ``a``
    passes needs one at passes a, a + bs, a + 2 bs, ..."""
    n = 0
    for a in phases:
        if k > a:
            n += 1 + (k - 1 - a) // bs
    return n


def _phase_prefix(phases, bs):
    """``pre[r]`` = sequences whose next block is due in fewer than ``r`` passes
    (``0 <= phase < bs``); length ``bs + 1``."""
    pre = [0] * (bs + 1)
    for a in phases:
        pre[a + 1] += 1
    for r in range(bs):
        pre[r + 1] += pre[r]
    return pre


def _allocations_from_prefix(pre, k, bs):
    """``_allocations(phases, k, bs)`` from ``_phase_prefix(phases, bs)`` in O(1): a sequence
    with phase a allocates at the passes j with j % bs == a, so k passes hold k // bs
    full cycles (one block each) and a remainder reaching the phases below k % bs."""
    return (k // bs) * pre[bs] + pre[k % bs]


class _HostReq:
    """A request's connector state (Dynamo's ``VllmHostRequestState`` with its place in
    the connector queue): ``cursor`` prompt blocks past which its completed blocks are
    stored; ``store_id`` its latest store cohort (0: none); ``loading`` while its host
    prefix loads, then ``loaded`` = the blocks it holds (-1: none) until it is admitted;
    ``g1_tokens`` its GPU hit when the load started and ``foot`` its known blocks then;
    ``recorded`` once its first admission is counted; ``in_conn`` / ``asleep`` its
    connector-queue membership and sleep (deferred until a copy completes)."""
    __slots__ = ("cursor", "store_id", "loading", "loaded", "g1_tokens", "foot", "recorded",
                 "in_conn", "asleep")

    def __init__(self) -> None:
        self.cursor = 0
        self.store_id = 0
        self.loading = False
        self.loaded = -1
        self.g1_tokens = 0
        self.foot = 0
        self.recorded = False
        self.in_conn = False
        self.asleep = False


class _PassState:
    """One pass being scheduled. ``scheduled`` maps a sequence to (tokens, prompt tokens,
    prompt tokens computed before) for everything but single-token decodes with room in
    their tail block, which carry ``Seq.sched_pass == pass_id`` instead and are counted in
    ``n_decodes`` (each is (1, 0, prompt_len))."""
    __slots__ = ("budget", "scheduled", "n_prefill", "isl_sum", "prefix_sum", "preempted",
                 "pass_id", "n_decodes")

    def __init__(self, budget: int, pass_id: int) -> None:
        self.budget = budget
        self.scheduled: dict[Seq, tuple[int, int, int]] = {}
        self.n_prefill = 0
        self.isl_sum = 0
        self.prefix_sum = 0
        self.preempted = False
        self.pass_id = pass_id
        self.n_decodes = 0
