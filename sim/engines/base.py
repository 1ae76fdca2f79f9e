"""Mechanics every engine flavour shares: one worker's pass loop around a flavour policy.

A flavour (``sim.engines.vllm``, ``.trtllm``, ``.sglang``) decides *what* a pass does:
admission, batch building, preemption or retraction, and its KV manager. This module holds
what does not depend on that choice:

* the queues and the pass protocol the simulator drives (``start_pass`` returns the pass
  end, ``finish_pass`` stamps its tokens there; ``plan_stretch``/``start_stretch``/
  ``finish_stretch`` advance a decode-only stretch of passes in bulk);
* token stamping: every token of a pass carries the pass end time (Dynamo's replay,
  ``docs/dynamo_engine_semantics.md`` R0.4), token gaps feed the ITL distribution;
* per-request records (completed, rejected with a reason, in flight at a cut-off);
* forward-pass metrics (FPM) of the latest pass and their running totals;
* bulk decode stretches: end times from the timing model in one vectorised call, cut
  short by an arrival, their token gaps and FPM sums in closed form.

A flavour implements ``start_pass`` (setting ``_ready`` to the sequences that emit at the
pass end), ``_complete`` (free a finished sequence's KV), ``plan_stretch`` and the
``_stretch_kv`` hook (the KV growth of a finished stretch).
"""
from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Sequence

import numpy as np

from ..metrics import STATUS_COMPLETED, STATUS_IN_FLIGHT, STATUS_REJECTED, MetricsCollector
from ..request import Request
from ..timing import PolynomialTiming, TimingModel, _to_ns, decode_ms_series

REASON_KV_CAPACITY, REASON_MAX_MODEL_LEN, REASON_BATCH_BUDGET, REASON_SEQ_KV_CAPACITY = 1, 2, 4, 5
#: a disaggregated decode worker's preempted request that fits the pool, blocked for good
#: by activated handoffs queued behind it (Dynamo aborts the replay; see Simulation._start)
REASON_DECODE_KV_DEADLOCK = 6
#: an aggregated worker's waiting head that fits the pool, blocked for good because requests
#: queued behind it hold its pages (SGLang's partially prefilled requests keep their pages in
#: the waiting queue; Dynamo's replay aborts with "effect-free zero-duration pass")
REASON_KV_DEADLOCK = 7


class Seq:
    """A request in flight on one worker.

    ``computed`` counts tokens whose KV is computed (vLLM/TRT-LLM: cached prefix included;
    SGLang: its *materialized* tokens). ``blocks`` is the flavour's KV handle: the block
    table of the block pool, or the radix cache's lease."""

    __slots__ = ("req", "index", "arrival_ms", "prompt_len", "max_out", "keys", "generated",
                 "computed", "blocks", "reused", "first_admit", "first_token", "second_token",
                 "last_token", "preemptions", "admitted", "gaps", "sched_pass")

    def __init__(self, req: Request, blocks) -> None:
        self.req = req
        self.index = req.index               # (copies of req's fields read in hot loops:
        self.arrival_ms = req.arrival_ms     #  C fields when compiled)
        self.prompt_len = req.input_length
        self.max_out = req.output_length
        self.keys: Sequence[int] | None = None   # full prompt-block keys, made on first look-up
        self.generated = 0                   # output tokens emitted
        self.computed = 0                    # tokens whose KV is computed (cached prefix included)
        self.blocks = blocks                 # the KV manager's handle (see the class doc)
        self.reused = 0                      # most prefix tokens found cached at an admission
        self.first_admit = float("nan")
        self.first_token = float("nan")
        self.second_token = float("nan")
        self.last_token = float("nan")
        self.preemptions = 0                 # preemptions (vLLM) or retractions (SGLang)
        self.admitted = False                # ever admitted (a fresh request can be rejected)
        self.gaps: list | None = None        # deferred token gaps (runs with a cut-off)
        self.sched_pass = 0                  # vLLM: id of the last pass that decoded it alone


class EngineBase:
    """One aggregated worker (one DP rank): the flavour-independent half."""

    def __init__(self, worker_id: int, cfg, timing: TimingModel,
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
        self.capacity_tokens = cfg.num_gpu_blocks * cfg.block_size
        # Decode stretches (polynomial or GPU-table timing) computed in C when possible,
        # bit-identical to the Python path.
        self._native_ends = None
        if not exact:
            self._native_ends = native_stretch_ends(timing, float(self.capacity_tokens))
        self.waiting: deque[Seq] = deque()
        self.running: list[Seq] = []
        self.busy = False
        self.pass_start = 0.0
        self.pass_end = 0.0
        self.stretch_ends: np.ndarray | None = None   # end times of a bulk stretch's passes
        self._ready: list[Seq] = []                    # sequences emitting at the pass end
        self._rejected: list = []                      # (seq, reason) decided in this pass
        self._did_work = False
        self._stretch_ctx0 = 0
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
        # waiting sequences, kept as a running sum by the flavours that use it (vLLM,
        # TRT-LLM; see ``_queued_tokens``); frozen when a pass is scheduled, and the latest
        # *finished* pass's snapshot (what Dynamo's planner sees at a tick).
        self.waiting_tokens = 0
        self.fpm_queued_tokens = 0
        self.last_fpm_decode_kv = 0
        self.last_fpm_queued = 0
        # Cumulative FPM over all finished passes (interval figures are differences).
        # A bulk stretch adds its closed-form sums, so totals equal pass-by-pass sums.
        self.tot = FpmTotals()
        self.on_first_token = None       # callbacks (router bookkeeping, workload sessions)
        self.on_finished = None
        # Disaggregated prefill worker (sim.disagg): a finished prefill copy is handed off
        # instead of completing; its KV stays held until ``release_source``.
        self.on_handoff = None
        # Disaggregated decode worker: handoffs routed here still wait for a reservation
        # (set by the simulation before each pass; Dynamo's PendingDestinationHead stage).
        self.dest_pending = False
        # Disaggregated decode worker: its passes charge no prefill time (Dynamo's
        # predict_prefill_duration is zero for WorkerType::Decode), so a preempted request's
        # recompute there costs only its pass's decode time.
        self.decode_role = False

    # -- queries -------------------------------------------------------------
    def num_in_flight(self) -> int:
        return len(self.running) + len(self.waiting)

    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    def queued_prefill_tokens(self) -> int:
        return sum(s.prompt_len + s.generated - s.computed for s in self.waiting)

    def add_request(self, req: Request, keys: Sequence[int] | None = None) -> None:
        """Queue ``req``; ``keys`` are its full prompt-block keys if already computed."""
        s = Seq(req, self.kv.new_blocks())
        s.keys = keys
        if self.defer_gaps:
            s.gaps = []
        self.waiting.append(s)
        self.waiting_tokens += s.prompt_len

    # -- flavour hooks ---------------------------------------------------------
    def start_pass(self, now: float) -> float:
        """Schedule one pass starting at ``now``; returns its end time."""
        raise NotImplementedError

    def _complete(self, s: Seq) -> None:
        """``s`` emitted its last token: release (or cache) its KV."""
        raise NotImplementedError

    def plan_stretch(self) -> int:
        """Passes that can run as one decode-only stretch from now (0 if not possible)."""
        return 0

    def _stretch_kv(self, k: int) -> None:
        """KV growth of the k decode passes of the stretch that just ended: every running
        sequence computed k more tokens (called before their counts move)."""
        raise NotImplementedError

    def check_invariants(self) -> None:
        """Tests: assert the KV manager's and the sequences' invariants."""

    # -- disaggregated handoff (sim.disagg; flavours that support it override) -------
    def reserve_remote(self, req: Request, keys: Sequence[int] | None) -> tuple[Seq, int] | None:
        """Decode worker: reserve KV for ``req``'s prompt, computed remotely (Dynamo's
        WaitingForRemoteKv, destination reserved). The longest run of leading full prompt
        blocks resident here (active or cached) is pinned and the rest reserved fresh, in
        both transfer-timing modes (the mocker's ``reserve_destination_lease``). Returns the
        sequence and the prompt tokens missing here (the transfer's charge in
        ``destination_missing`` mode), or None when the blocks are not free now."""
        raise NotImplementedError(f"{type(self).__name__} has no disaggregated decode")

    def activate_remote(self, s: Seq) -> None:
        """Decode worker: the prompt's KV has arrived; ``s`` joins the waiting queue with
        its prompt computed (it is charged no prefill). Its fresh full prompt blocks join
        the prefix cache, as the mocker's ``activate_destination_lease`` commits them
        (with prefix caching on), so later reservations and a preempted request's
        recompute here hit them."""
        raise NotImplementedError(f"{type(self).__name__} has no disaggregated decode")

    def release_source(self, s: Seq) -> None:
        """Prefill worker: the handoff of ``s`` is done; free its held KV."""
        self._complete(s)

    # -- pass end ----------------------------------------------------------------
    def finish_pass(self, end: float) -> None:
        """Emit the tokens of the pass ending at ``end``; complete and reject."""
        s: Seq                # typed loop variable when compiled (sim/engines/base.pxd)
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
            if self.on_handoff is not None:
                self.on_handoff(self, s, end)
                continue
            self._complete(s)
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
        # requested = the request's own output length: TRT-LLM clamps max_out to the pool and
        # Dynamo's record keeps the request's (a prefill copy at a cut-off has max_out restored)
        self.metrics.record(r.index, r.arrival_ms, s.first_admit, s.first_token, s.second_token,
                            s.last_token, s.prompt_len, s.generated,
                            max(r.output_length, s.max_out), s.reused, self.id,
                            status, s.preemptions, reason)
        if self.on_finished is not None and status != STATUS_IN_FLIGHT:
            self.on_finished(self, s, status)

    # -- bulk advance -------------------------------------------------------------
    def start_stretch(self, now: float, k: int) -> float:
        """Begin k decode passes of every running sequence; returns the end time of the last."""
        s: Seq                # typed loop variable when compiled (sim/engines/base.pxd)
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
        self._start_stretch_kv(k)
        self.busy = True
        self.pass_start = now
        self.pass_end = float(ends[-1])
        self.fpm_prefill_tokens = 0
        self.fpm_prefill_seqs = 0
        self.fpm_decode_seqs = n
        self.fpm_decode_kv_tokens = ctx_last
        self.fpm_queued_tokens = self._queued_tokens()
        return self.pass_end

    def _queued_tokens(self) -> int:
        """Tokens (prompt + generated) of the waiting sequences (Dynamo's FPM queue field);
        the running sum, which a flavour that does not keep it overrides."""
        return self.waiting_tokens

    def _start_stretch_kv(self, k: int) -> None:
        """Flavour hook at the start of a k-pass stretch (e.g. plan its evictions)."""

    def truncate_stretch(self, t: float) -> float:
        """A request arriving at ``t`` joins the pass that starts at the first pass end at
        or after ``t``: the stretch stops there."""
        ends = self.stretch_ends
        # (bisect over a memoryview: searchsorted's "left" side on the sorted end times,
        # without a numpy call per arrival)
        view = memoryview(ends)
        j = bisect_left(view, t)
        if j < len(view) - 1:
            self.num_stretch_cuts += 1
            # A copy, not a view: the metrics buffer keeps these end times for a while and
            # must not pin the whole planned stretch.
            self.stretch_ends = ends[: j + 1].copy()
            self.pass_end = view[j]
        return self.pass_end

    def stretch_evictions_until(self, t: float) -> list[int]:
        """Keys removed from the cache by the passes of the running stretch that ended by
        ``t`` (for a KV router); none unless the flavour plans evictions in stretches."""
        return []

    def finish_stretch(self, end: float) -> None:
        s: Seq                # typed loop variable when compiled (sim/engines/base.pxd)
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
        self._stretch_kv(k)
        done = []
        for s in running:
            if s.generated == 1:
                s.second_token = first_end
            s.generated += k
            s.computed += k
            s.last_token = end
            if s.generated >= s.max_out:
                done.append(s)
        for s in done:
            running.remove(s)
            self._complete(s)
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

    def reject_head(self, reason: int = REASON_KV_CAPACITY) -> None:
        """Reject the waiting head that can never be admitted again (see ``Simulation._start``)."""
        s = self.waiting.popleft()
        self.waiting_tokens -= s.prompt_len + s.generated
        self._record(s, STATUS_REJECTED, reason)

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


def native_stretch_ends(timing: TimingModel, capacity_tokens: float):
    """The C function computing a decode stretch's pass end times for ``timing``
    (polynomial without speed-ups, or a GPU table), or None (numpy fallback)."""
    from .. import kv_cache as _kv
    if _kv.NativeKvPool is None:
        return None
    if type(timing) is PolynomialTiming and timing.speedup_ratio * timing.decode_speedup_ratio == 1.0:
        from .._kvpool import poly_decode_ends
        return (lambda now, ctx0, n, k, to_ns:
                poly_decode_ends(now, ctx0, n, k, capacity_tokens, to_ns))
    if hasattr(timing, "native_stretch_ends"):      # GPU tables
        return timing.native_stretch_ends()
    return None


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
