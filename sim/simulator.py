"""The replay driver: a virtual clock, an event heap and a cluster of engines.

Events are ``(time_ms, kind, sequence, payload)`` tuples in one heap; the kind doubles as
the priority, so ties break on kind, then on insertion order: runs are deterministic. At each timestamp all
events are handled first (pass ends, worker start-ups, arrivals, then planner ticks); only
then do idle workers with work start their next pass, so requests arriving at the same
millisecond share a batch, as in Dynamo's replay.
"""
from __future__ import annotations

import dataclasses
import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import numpy as np

from .disagg import DisaggConfig, Handoff
from .engine import (REASON_DECODE_KV_DEADLOCK, REASON_KV_CAPACITY, REASON_KV_DEADLOCK,
                     EngineBase as Engine, EngineConfig, make_engine)
from .metrics import STATUS_IN_FLIGHT, STATUS_REJECTED, MetricsCollector
from .request import Request
from .router import KvRouterConfig, Router, make_router
from .timing import TimingModel

# Event kinds, in the order they are handled at one timestamp.
EV_PASS_END, EV_WORKER_READY, EV_ARRIVAL, EV_CONTROL = 0, 1, 2, 3
EV_HANDOFF = 4     # a disaggregated KV transfer has ended (sim.disagg)

STARTING, ACTIVE, DRAINING, REMOVED = "starting", "active", "draining", "removed"
REASON_NO_WORKER = 3


class Worker:
    """One DP rank of a serving worker: its engine and its lifecycle. A plain class (an
    extension type with typed fields when compiled, ``sim/simulator.pxd``): the event loop
    reads ``engine`` and ``version`` at every event."""

    def __init__(self, engine: Engine, state: str, created_ms: float,
                 ready_ms: float | None = None, removed_ms: float | None = None,
                 version: int = 0, role: str = "agg", pool_index: int = 0,
                 dp_rank: int = 0) -> None:
        self.engine = engine
        self.state = state
        self.created_ms = created_ms
        self.ready_ms = ready_ms
        self.removed_ms = removed_ms
        self.version = version       # bumps when the pending pass-end event is replaced
        # Disaggregated pools (sim.disagg): the worker's role and index within its pool, and
        # the handoffs waiting on its next pass boundary.
        self.role = role             # agg | prefill | decode
        self.pool_index = pool_index
        self.pending: list = []      # decode: to reserve, FIFO
        self.transferred: list = []  # decode: KV arrived, to activate
        self.releases: list = []     # prefill: held KV to release
        self.kv_waits = 0     # handoffs holding its blocks: sources held, reservations in transfer
        self.dp_rank = dp_rank       # data-parallel rank within its worker (ClusterConfig.dp_size)

    @property
    def id(self) -> int:
        return self.engine.id

    def __repr__(self) -> str:
        return (f"Worker(id={self.engine.id}, state={self.state!r}, role={self.role!r}, "
                f"dp_rank={self.dp_rank}, created_ms={self.created_ms}, "
                f"ready_ms={self.ready_ms}, removed_ms={self.removed_ms})")


def _src_id(h: Handoff) -> int:
    return h.src.engine.id


def _reservation_order(h: Handoff) -> int:
    return h.reservation_order


@dataclass
class ClusterConfig:
    num_workers: int = 1            # initial active workers
    gpus_per_worker: int = 1        # GPUs of one DP rank (TP); a worker has dp_size x this
    startup_time_s: float = 0.0     # seconds a new worker spends starting
    # Data-parallel ranks per worker (Dynamo's ``dp_size``, semantics §2.3): each rank is its
    # own scheduler with its own KV pool (an entry of ``Simulation.workers``, engine id =
    # worker * dp_size + rank, Dynamo's scheduler id); the router scores (worker, rank)
    # pairs; a worker starts, drains and retires with all its ranks.
    dp_size: int = 1

    @property
    def worker_gpus(self) -> int:
        """GPUs one worker occupies: ranks x TP (what GPU-hours and budgets count)."""
        return self.gpus_per_worker * self.dp_size


@dataclass
class RunResult:
    summary: dict[str, Any]
    metrics: MetricsCollector
    workers: list[Worker] = field(default_factory=list)
    replicas: list[tuple[float, int, int, int]] = field(default_factory=list)


class Simulation:
    """Replays a workload through a cluster. Call ``run()`` once, or step with ``run_until``."""

    def __init__(self, workload, *, engine: EngineConfig, timing: TimingModel,
                 cluster: ClusterConfig | None = None, router: str = "round_robin",
                 kv_router: KvRouterConfig | None = None, seed: int = 0,
                 max_sim_time_ms: float | None = None, exact: bool = False,
                 sla: dict[str, float | None] | None = None,
                 progress: Callable[[float], None] | None = None,
                 check_invariants: bool = False, token_gaps: bool = True,
                 disagg: DisaggConfig | None = None) -> None:
        """``token_gaps=False`` skips the distribution of gaps between tokens (the summary's
        ITL percentiles and per-user throughput are then empty; per-request records, TTFT
        and TPOT are unaffected). The environments use it: they observe per-request TPOT.

        ``disagg``: run separate prefill and decode pools (:mod:`sim.disagg`); then
        ``engine``, ``cluster.num_workers`` and ``router`` are ignored for the pools (the
        pools' own engine configs and routers are in ``disagg``). A KV router of either pool
        takes ``kv_router`` with Dynamo's stage rules (router-disaggregated-serving.md): the
        prefill router without the decode-load term, the decode router without overlap
        credit, assumed reuse or pending-prefill term."""
        self.workload = workload
        self.token_gaps = token_gaps
        self.engine_cfg = engine
        self.timing = timing
        self.cluster_cfg = cluster or ClusterConfig()
        self.exact = exact
        self.sla = sla
        self.max_sim_time_ms = max_sim_time_ms
        self.progress = progress
        self.check_invariants = check_invariants   # tests: assert invariants at every timestamp
        ss = np.random.SeedSequence(seed)
        self._rng_router = np.random.default_rng(ss.spawn(1)[0])
        self.metrics = MetricsCollector()
        self.disagg = disagg
        self.disaggregated = disagg is not None
        self.decode_router = None
        self._decode_active = None
        self._handoffs = {}          # request index -> Handoff (disaggregated, in flight)
        self._orig = {}              # request index -> original request (on a prefill worker)
        self._held = []              # handoffs held at this timestamp, not yet routed
        self._reservations = 0       # destination reservations so far (their order)
        self._capacity_gen = {}      # decode engine id -> requests that left it (completed,
                                     # rejected): with its preemptions, its capacity generation
        if disagg is not None:
            # The decode router draws from its own stream: child 2 (0 = router, 1 = workload).
            rng_decode = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
            router = disagg.prefill_router
            engine = disagg.prefill_engine
            base = kv_router or KvRouterConfig()
            self.decode_router = make_router(
                disagg.decode_router, rng_decode, disagg.decode_engine.block_size,
                dataclasses.replace(base, overlap_score_credit=0.0, assume_kv_reuse=False,
                                    track_prefill_tokens=False),
                run_keys=disagg.decode_engine.backend == "sglang")
            kv_router = dataclasses.replace(base, track_active_blocks=False)
        self.router: Router = make_router(router, self._rng_router, engine.block_size, kv_router,
                                          dp_size=self.cluster_cfg.dp_size,
                                          run_keys=engine.backend == "sglang")
        self.router_mode = router
        # Read at every event (typed fields when compiled, instead of a class-attribute and
        # a dataclass look-up per pass end); neither changes after construction.
        self._kv_events = bool(self.router.wants_kv_events)
        self._grouped = self.cluster_cfg.dp_size > 1
        self.heap: list[tuple] = []
        self._seq = 0
        self.now = 0.0
        self.workers: list[Worker] = []
        self._active: tuple[list[Worker], list[Engine]] | None = None
        self._dirty: list[Worker] = []
        self.num_arrived = 0
        self.arrived_input_tokens = 0    # running sums: planners read interval differences
        self.arrived_output_tokens = 0
        self.num_unroutable = 0
        self.replicas: list[tuple[float, int, int, int]] = []
        #: disaggregated: (t_ms, active, starting, draining) per pool, on every change
        self.pool_replicas: dict[str, list[tuple[float, int, int, int]]] = (
            {"prefill": [], "decode": []} if disagg is not None else {})
        self._arrivals: Iterator[Request] = iter(workload)
        self._pending_arrival: Request | None = None
        self._done = False
        self.cut_off = False
        self.hold_arrivals = False       # see route_to (DynoSimRouting-v0)
        self.held_arrival: Request | None = None
        self._last_t = 0.0               # check_invariants: the clock never goes back
        if disagg is None:
            for _ in range(self.cluster_cfg.num_workers):
                self._new_worker(ACTIVE)
        else:
            for _ in range(disagg.num_prefill_workers):
                self._new_worker(ACTIVE, "prefill")
            for _ in range(disagg.num_decode_workers):
                self._new_worker(ACTIVE, "decode")
        self._record_replicas()
        self._pull_arrival()

    # -- event heap ------------------------------------------------------------------
    def _push(self, t: float, kind: int, payload: Any) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (t, kind, self._seq, payload))

    def _pull_arrival(self) -> None:
        """Keep exactly one not-yet-arrived workload request in the heap (streaming)."""
        req = next(self._arrivals, None)
        self._pending_arrival = req
        if req is not None:
            self._push(req.arrival_ms, EV_ARRIVAL, req)

    def call_at(self, t_ms: float, fn: Callable[["Simulation"], None]) -> None:
        """Run ``fn(sim)`` at virtual time ``t_ms``, after that timestamp's pass ends,
        worker start-ups and arrivals (planner ticks, environment steps)."""
        self._push(max(t_ms, self.now), EV_CONTROL, fn)

    def has_pending_work(self) -> bool:
        """Is anything left besides control callbacks (pass ends, arrivals, start-ups, idle
        workers about to start)? Periodic callbacks stop rescheduling when it is not."""
        return bool(self._dirty) or any(ev[1] != EV_CONTROL for ev in self.heap)

    # -- cluster -----------------------------------------------------------------------
    def _new_worker(self, state: str, role: str = "agg") -> list[Worker]:
        """A worker: its ``dp_size`` ranks, each an entry of ``workers`` (ids consecutive).
        ``role``: ``agg``, or a disaggregated pool's ``prefill`` / ``decode`` (one rank:
        the config refuses DP ranks with disaggregated pools)."""
        router = self.router
        cfg = self.engine_cfg
        timing = self.timing
        if role == "decode":
            router = self.decode_router
            cfg = self.disagg.decode_engine
        elif role == "prefill":
            cfg = self.disagg.prefill_engine
        if role != "agg":        # a pool's own timing (e.g. its TP's GPU table), if any
            timing = getattr(self.disagg, f"{role}_timing") or timing
        pool_index = sum(1 for x in self.workers if x.role == role)
        ranks = []
        for rank in range(self.cluster_cfg.dp_size if role == "agg" else 1):
            wid = len(self.workers)
            eng = make_engine(wid, cfg, timing, self.metrics, exact=self.exact,
                              defer_gaps=self.max_sim_time_ms is not None,
                              token_gaps=self.token_gaps)
            eng.on_first_token = router.on_first_token
            eng.on_finished = self._on_decode_finished if role == "decode" else self._on_finished
            if role == "prefill":
                eng.on_handoff = self._on_source_held
            eng.decode_role = role == "decode"
            if router.wants_kv_events and role != "decode":
                # (Dynamo's decode workers publish no KV events, needs_kv_publisher; the
                # decode router gives no overlap credit)
                eng.kv.enable_events()
            w = Worker(eng, state, self.now, self.now if state == ACTIVE else None, dp_rank=rank)
            w.role = role
            w.pool_index = pool_index
            self.workers.append(w)
            ranks.append(w)
        self._active = None
        self._decode_active = None
        return ranks

    def _ranks(self, w: Worker) -> list[Worker]:
        """Every rank of ``w``'s worker (``w`` itself when dp_size is 1)."""
        dp = self.cluster_cfg.dp_size
        if dp == 1:
            return [w]
        first = w.id - w.dp_rank
        return self.workers[first:first + dp]

    def _set_state(self, w: Worker, state: str) -> None:
        w.state = state
        self._active = None
        self._decode_active = None

    def _active_workers(self) -> tuple[list[Worker], list[Engine]]:
        """Active workers that take arrivals (aggregated, or the prefill pool) and their
        engines (cached: routing is per request)."""
        if self._active is None:
            ws = [w for w in self.workers if w.state == ACTIVE and w.role != "decode"]
            self._active = (ws, [w.engine for w in ws])
        return self._active

    # -- disaggregated handoff (sim.disagg) ---------------------------------------------
    def _on_source_held(self, eng: Engine, s, now: float) -> None:
        """The prefill copy of a request emitted its token at ``now``: the source holds
        its KV. The decode router sees the handoffs of one timestamp after all its events,
        in prefill-worker order (as Dynamo's replay does)."""
        self.router.on_finished(eng, s, now)
        req = self._orig.pop(s.req.index)
        h = Handoff(req, self.workers[eng.id], s, now)
        h.src.kv_waits += 1
        self._handoffs[req.index] = h
        self._held.append(h)

    def _route_held(self) -> None:
        held, self._held = self._held, []
        if len(held) > 1:
            held.sort(key=_src_id)
        for h in held:
            self._route_handoff(h)

    def _route_handoff(self, h: Handoff) -> None:
        """The decode router picks the destination of a held handoff."""
        req = h.req
        now = self.now
        if self._decode_active is None:
            ws = [w for w in self.workers if w.state == ACTIVE and w.role == "decode"]
            self._decode_active = (ws, [w.engine for w in ws])
        active, engines = self._decode_active
        router = self.decode_router
        if router.wants_kv_events:
            for x in active:
                if x.engine.stretch_ends is not None:
                    gone = x.engine.stretch_evictions_until(now)
                    if gone:
                        router.publish_removed(x.engine, gone)
        dst = router.select(req, engines, now)
        router.on_routed(dst, req)
        h.keys = router.take_keys()
        w = self.workers[dst.id]
        h.dst = w
        w.pending.append(h)
        deng = w.engine
        if not deng.busy:
            self._reserve_pending(w)
        else:
            self._cut_stretch(w)     # the reservation waits for the next pass boundary

    def _reserve_pending(self, w: Worker) -> None:
        """One retry of a decode worker's pending handoffs (Dynamo's vLLM core: one per
        pass boundary and one per applied activation): reserve KV for the head if its
        blocks are free now; the transfer starts at the reservation. A head that can never
        fit the pool is rejected and the next one tried."""
        eng = w.engine
        pending = w.pending
        cfg = self.disagg
        while pending:
            h = pending[0]
            # Dynamo retries a head that failed only once the worker's capacity changed since
            # (its capacity generation: a request completed or was rejected there, or one was
            # preempted); an activation alone, whose blocks newly cached might be hits, does
            # not make it due.
            gen = self._capacity_gen.get(eng.id, 0) + eng.num_preemptions
            if h.attempted_gen == gen:
                return
            got = eng.reserve_remote(h.req, h.keys)
            if got is None:
                bs = eng.bs
                if (h.req.input_length + bs - 1) // bs > eng.cfg.num_gpu_blocks:
                    pending.pop(0)        # can never fit this decode worker
                    self._reject_handoff(h, REASON_KV_CAPACITY)
                    continue
                h.attempted_gen = gen
                return
            pending.pop(0)
            w.kv_waits += 1
            h.dst_seq, missing = got
            h.dst_seq.first_admit = h.src_seq.first_admit
            h.dst_seq.reused = h.src_seq.reused
            h.destination_reserved_ms = self.now
            h.reservation_order = self._reservations
            self._reservations += 1
            delay = cfg.delay_ms(h.req.input_length, missing)
            h.ready_ms = self.now + delay
            if delay > 0.0:
                self._push(h.ready_ms, EV_HANDOFF, h)
                return
            # A zero-time transfer (no bytes per token, or bandwidth 0): Dynamo activates
            # the destination in the reservation's own step, not at a later pass boundary.
            self._activate(h)
            if not eng.busy:
                self._dirty.append(w)
            return

    def _on_transfer_done(self, h: Handoff) -> None:
        w = h.dst
        eng = w.engine
        if not eng.busy:
            self._activate(h)
            self._dirty.append(w)
            return
        w.transferred.append(h)
        self._cut_stretch(w)

    def _activate(self, h: Handoff) -> None:
        """The KV has arrived and the decode worker is at a pass boundary: the request
        joins its queue; the source releases at its own next boundary."""
        h.destination_activated_ms = self.now
        h.dst.kv_waits -= 1
        h.dst.engine.activate_remote(h.dst_seq)
        del self._handoffs[h.req.index]
        self._note(h)
        if h.dst.pending:
            # An applied activation retries the pending head once (Dynamo's
            # effects_after_capacity_change), besides the retry of each pass boundary.
            self._reserve_pending(h.dst)
        src = h.src
        if src.engine.busy:
            src.releases.append(h)
        else:
            self._release_source(h)

    def _release_source(self, h: Handoff) -> None:
        h.source_released_ms = self.now
        src = h.src
        src.engine.release_source(h.src_seq)
        src.kv_waits -= 1
        h.src_seq = None
        self._note(h)
        if not src.engine.busy and src.engine.has_work():
            self._dirty.append(src)          # it may have been waiting for these blocks
        elif src.state == DRAINING:
            self._maybe_retire(src)          # a draining source leaves with its last hold

    def _note(self, h: Handoff) -> None:
        self.metrics.set_handoff(h.req.index, h.src.pool_index,
                                 None if h.dst is None else h.dst.pool_index,
                                 h.source_held_ms, h.destination_reserved_ms,
                                 h.destination_activated_ms, h.source_released_ms)

    def _reject_handoff(self, h: Handoff, reason: int) -> None:
        req = h.req
        del self._handoffs[req.index]
        s = h.src_seq
        self.decode_router.on_finished(h.dst.engine, s, self.now)
        self.metrics.record(req.index, req.arrival_ms, s.first_admit, math.nan, math.nan,
                            math.nan, req.input_length, 0, req.output_length, s.reused,
                            h.dst.engine.id, STATUS_REJECTED, 0, reason)
        self._release_source(h)
        self._release_followers(req)

    def _boundary(self, w: Worker) -> None:
        """A disaggregated worker's pass boundary: activations and reservations (decode),
        releases of handed-off KV (prefill)."""
        if w.releases:
            rel, w.releases = w.releases, []
            for h in rel:
                self._release_source(h)
        if w.pending:
            self._reserve_pending(w)
        if w.transferred:
            done, w.transferred = w.transferred, []
            if len(done) > 1:
                # Transfers that ended during the pass are activated in the order they
                # were reserved, not the order they ended (Dynamo 1.6.1: the queue order,
                # hence the running order and LIFO preemption's victim, follows it).
                done.sort(key=_reservation_order)
            for h in done:
                self._activate(h)

    def _on_decode_finished(self, eng: Engine, s, status: int) -> None:
        self._capacity_gen[eng.id] = self._capacity_gen.get(eng.id, 0) + 1
        self.decode_router.on_finished(eng, s, self.now)
        self._release_followers(s.req)

    def counts(self, role: str | None = None) -> tuple[int, int, int]:
        """(active, starting, draining) workers (a worker's DP ranks count once); of one
        pool (``agg``, ``prefill`` or ``decode``) when ``role`` is given."""
        a = s = d = 0
        for w in self.workers:
            if w.dp_rank or (role is not None and w.role != role):
                continue
            if w.state == ACTIVE:
                a += 1
            elif w.state == STARTING:
                s += 1
            elif w.state == DRAINING:
                d += 1
        return a, s, d

    def _record_replicas(self) -> None:
        a, s, d = self.counts()
        if not self.replicas or self.replicas[-1][1:] != (a, s, d):
            self.replicas.append((self.now, a, s, d))
        if self.disaggregated:
            for role, rec in self.pool_replicas.items():
                c = self.counts(role)
                if not rec or rec[-1][1:] != c:
                    rec.append((self.now, *c))

    def add_workers(self, n: int, role: str = "agg") -> None:
        """Start ``n`` workers (of pool ``role`` when disaggregated: ``prefill`` or
        ``decode``); they take ``startup_time_s`` before receiving requests."""
        if (role == "agg") == self.disaggregated:
            raise ValueError(f"cannot add {role!r} workers to "
                             f"{'a disaggregated' if self.disaggregated else 'an aggregated'}"
                             " cluster")
        startup_ms = self.cluster_cfg.startup_time_s * 1000.0
        for _ in range(n):
            if startup_ms <= 0:
                self._new_worker(ACTIVE, role)
            else:
                for w in self._new_worker(STARTING, role):
                    self._push(self.now + startup_ms, EV_WORKER_READY, w)
        self._record_replicas()

    def remove_workers(self, n: int, role: str | None = None) -> int:
        """Cancel starting workers first (newest first), then drain active ones (newest
        first); a draining worker takes no new requests and leaves when empty (a
        disaggregated one also once its handoffs are done). A worker's DP ranks change
        state together. ``role``: only that pool's workers (never its last active one)."""
        removed = 0
        heads = [w for w in self.workers
                 if not w.dp_rank and (role is None or w.role == role)]
        for w in reversed(heads):
            if removed == n:
                break
            if w.state == STARTING:
                for r in self._ranks(w):
                    self._set_state(r, REMOVED)
                    r.removed_ms = self.now
                removed += 1
        active = [w for w in heads if w.state == ACTIVE]
        for w in reversed(active):
            if removed == n or sum(1 for x in heads if x.state == ACTIVE) <= 1:
                break      # never drain the last active worker
            for r in self._ranks(w):
                self._set_state(r, DRAINING)
            removed += 1
            self._maybe_retire(w)
        self._record_replicas()
        return removed

    def _maybe_retire(self, w: Worker) -> None:
        ranks = self._ranks(w)
        if w.state == DRAINING and not any(r.engine.has_work() or r.engine.busy or r.kv_waits
                                           or r.pending or r.transferred or r.releases
                                           for r in ranks):
            for r in ranks:
                self._set_state(r, REMOVED)
                r.removed_ms = self.now
            self._record_replicas()

    # -- engine callbacks -----------------------------------------------------------------
    def _on_finished(self, eng: Engine, s, status: int) -> None:
        """A request left an engine (completed or rejected): release what waits on it."""
        self.router.on_finished(eng, s, self.now)
        self._release_followers(s.req)

    def _release_followers(self, req: Request) -> None:
        for nxt in self.workload.on_complete(req, self.now):
            self._push(nxt.arrival_ms, EV_ARRIVAL, nxt)

    # -- main loop --------------------------------------------------------------------------
    def _route(self, req: Request) -> None:
        self.num_arrived += 1
        self.arrived_input_tokens += req.input_length
        self.arrived_output_tokens += req.output_length
        active, engines = self._active_workers()
        if not active:
            # Nowhere to go (all workers starting): queue on the earliest starting worker.
            starting = [w for w in self.workers if w.state == STARTING]
            if not starting:
                self.num_unroutable += 1
                self.metrics.record(req.index, req.arrival_ms, math.nan, math.nan, math.nan,
                                    math.nan, req.input_length, 0, req.output_length, 0, -1,
                                    STATUS_REJECTED, 0, REASON_NO_WORKER)
                self._release_followers(req)
                return
            w = starting[0]
        else:
            if self._kv_events:
                # Workers mid-stretch publish the evictions of passes that have ended.
                for x in active:
                    if x.engine.stretch_ends is not None:
                        gone = x.engine.stretch_evictions_until(self.now)
                        if gone:
                            self.router.publish_removed(x.engine, gone)
            eng = self.router.select(req, engines, self.now)
            w = self.workers[eng.id]
        self.router.on_routed(w.engine, req)
        if self.disaggregated:
            # The prefill worker runs a copy with one output token (Dynamo's disagg.rs).
            self._orig[req.index] = req
            req = Request(req.index, req.arrival_ms, req.input_length, 1, req.hash_ids,
                          req.trace_block_size, req.session_id, req.delay_ms, req.line)
        self._enqueue(w, req, self.router.take_keys())

    def _enqueue(self, w: Worker, req: Request, keys: Sequence[int] | None) -> None:
        """Hand ``req`` to ``w``'s engine: a running stretch is cut short at the arrival,
        an idle worker starts at the end of this timestamp."""
        eng = w.engine
        eng.add_request(req, keys)
        if eng.busy:
            self._cut_stretch(w)
        elif w.state != STARTING:
            self._dirty.append(w)

    def _cut_stretch(self, w: Worker) -> None:
        """New work for a busy worker: a bulk decode stretch ends at its first pass boundary
        after now (the pass-end event is replaced when that moves it)."""
        eng = w.engine
        if eng.stretch_ends is not None and len(eng.stretch_ends) > 1:
            old_end = eng.pass_end
            new_end = eng.truncate_stretch(self.now)
            if new_end != old_end:
                w.version += 1
                self._push(new_end, EV_PASS_END, (w, w.version))

    # -- external routing (DynoSimRouting-v0) ----------------------------------------------
    # With ``hold_arrivals`` set, ``run_until`` stops at each arrival: the request waits in
    # ``held_arrival`` (the next workload request is already pulled) and the caller routes
    # it with ``route_to`` before calling ``run_until`` again, which resumes the same
    # timestamp (its other events, then its idle workers). Off by default.
    def _hold(self, req: Request, t: float) -> None:
        if self.held_arrival is not None:
            raise RuntimeError(f"request {self.held_arrival.index} is still held: route it "
                               "with route_to() before resuming the simulation")
        self.held_arrival = req
        if not self.heap or self.heap[0][0] != t:
            # Nothing else at t: a no-op marker brings run_until back to t on resume, so
            # the workers made busy at t still start at t.
            self._push(t, EV_CONTROL, Simulation._resume_marker)

    @staticmethod
    def _resume_marker(sim: "Simulation") -> None:
        """No-op control event (see ``_hold``)."""

    def route_to(self, req: Request, index: int, keys: Sequence[int] | None = None) -> None:
        """Route ``req`` to the ``index``-th active worker (ascending id), exactly as
        ``_route`` does when the router picks that worker: arrival counters, the router's
        bookkeeping (a KV router's overlap and load views), a running stretch cut short.
        ``keys`` are the prompt's full-block keys if the caller already computed them."""
        active, engines = self._active_workers()
        if not 0 <= index < len(active):
            raise ValueError(f"worker index {index!r} is out of range: {len(active)} active "
                             f"workers (0..{len(active) - 1})")
        if req is self.held_arrival:
            self.held_arrival = None
        self.num_arrived += 1
        self.arrived_input_tokens += req.input_length
        self.arrived_output_tokens += req.output_length
        router = self.router
        w = active[index]
        if router.wants_kv_events:
            for x in active:
                if x.engine.stretch_ends is not None:
                    gone = x.engine.stretch_evictions_until(self.now)
                    if gone:
                        router.publish_removed(x.engine, gone)
            if hasattr(router, "_keys"):          # KvRouter: what select() leaves for on_routed
                rkeys = router._keys(req)
                router._last = (rkeys, router.overlap(rkeys, w.id))
        router.on_routed(w.engine, req)
        rkeys = router.take_keys()
        self._enqueue(w, req, rkeys if rkeys is not None else keys)

    def _start(self, w: Worker) -> None:
        if self._grouped:
            self._start_group(w)
            return
        eng = w.engine
        if self.disaggregated and not eng.busy:
            self._boundary(w)
        if eng.busy or not eng.has_work():
            return
        now = self.now
        # (a decode worker with handoffs still to reserve retries at every pass boundary:
        # no bulk stretch over them)
        k = 0 if self.exact or (self.disaggregated and w.pending) else eng.plan_stretch()
        if self.disaggregated:
            eng.dest_pending = bool(w.pending)
        if k > 1:
            end = eng.start_stretch(now, k)
        else:
            end = eng.start_pass(now)
            while not eng._did_work:
                eng.busy = False
                if self.disaggregated and w.kv_waits:
                    # Blocks are held by handoffs (a source not yet released, a reservation
                    # in transfer): wait for them; their release or activation restarts us.
                    eng.num_passes -= 1
                    return
                # Nothing can run: the head was preempted and its known sequence outgrew
                # the whole pool, or (disaggregated decode worker, no handoff waiting for a
                # reservation) it fits the pool but the activated copies queued behind it
                # hold the blocks it needs. Dynamo aborts the replay in both cases ("an
                # effect-free zero-duration pass"); we reject the head, say which, and retry.
                eng.reject_head(self._stuck_head_reason(eng))
                if self.disaggregated:
                    self._boundary(w)       # the freed blocks may fit a reservation
                if not eng.has_work():
                    self._maybe_retire(w)
                    return
                if self.disaggregated:
                    eng.dest_pending = bool(w.pending)
                end = eng.start_pass(now)
        w.version += 1
        self._push(end, EV_PASS_END, (w, w.version))

    def _stuck_head_reason(self, eng: Engine) -> int:
        """Why the waiting head of a worker where nothing can run is rejected: its prompt
        (with the tokens it has generated) exceeds the whole pool, or it fits the pool and
        is blocked for good by requests queued behind it that hold blocks (a deadlock)."""
        s = eng.waiting[0]
        if (s.prompt_len + s.generated + eng.bs - 1) // eng.bs <= eng.cfg.num_gpu_blocks:
            return REASON_DECODE_KV_DEADLOCK if self.disaggregated else REASON_KV_DEADLOCK
        return REASON_KV_CAPACITY

    def _start_group(self, w: Worker) -> None:
        """Attention-DP barrier (Dynamo 1.6.1's grouped engine): when no pass of the worker
        is in flight, every rank with work starts a pass now, and all of them end together
        at the latest rank's end, where their tokens are stamped. Passes are stepped one
        by one (no bulk stretches across a barrier)."""
        ranks = self._ranks(w)
        if any(r.engine.busy for r in ranks):
            return                      # the group pass in flight restarts it when it ends
        now = self.now
        end = -1.0
        for r in ranks:
            eng = r.engine
            if not eng.has_work():
                continue
            e = eng.start_pass(now)
            while not eng._did_work:    # as in _start: a head that can never run
                eng.busy = False
                eng.reject_head()
                if not eng.has_work():
                    e = -1.0
                    break
                e = eng.start_pass(now)
            if e > end:
                end = e
        if end < 0:
            self._maybe_retire(w)
            return
        head = ranks[0]
        head.version += 1
        self._push(end, EV_PASS_END, (head, head.version))

    def _finish_group(self, head: Worker, t: float) -> None:
        """The group pass of ``head``'s worker ends at ``t``: each rank that took part
        emits its tokens there, in rank order."""
        router = self.router
        for r in self._ranks(head):
            eng = r.engine
            if not eng.busy:
                continue
            eng.finish_pass(t)
            if router.wants_kv_events and eng.kv.has_events():
                router.apply_kv_events(eng)
        if any(r.engine.has_work() for r in self._ranks(head)):
            self._dirty.append(head)
        else:
            self._maybe_retire(head)

    def run_until(self, t_stop: float | None = None) -> bool:
        """Process events up to and including ``t_stop`` (all if None). Returns False
        when the run is over."""
        heap = self.heap
        pop = heapq.heappop
        limit = self.max_sim_time_ms
        progress = self.progress
        n_events = 0
        while heap:
            t = heap[0][0]
            if t_stop is not None and t > t_stop:
                self.now = max(self.now, t_stop)
                return True
            if limit is not None and t > limit:
                self.now = limit
                self.cut_off = True
                break
            self.now = t
            # Handle every event at this timestamp, then start idle workers.
            while heap and heap[0][0] == t:
                _, kind, _, payload = pop(heap)
                if kind == EV_PASS_END:
                    w, version = payload
                    if version != w.version:
                        continue
                    if self._grouped:
                        self._finish_group(w, t)
                        continue
                    eng = w.engine
                    if eng.stretch_ends is not None:
                        eng.finish_stretch(t)
                    else:
                        eng.finish_pass(t)
                    if self._kv_events and eng.kv.has_events():
                        # The pass's KV events reach the router at its end (after its
                        # tokens: same timestamp, and arrivals come later).
                        self.router.apply_kv_events(eng)
                    if eng.has_work():
                        self._dirty.append(w)
                    else:
                        if self.disaggregated:
                            self._boundary(w)
                            if eng.has_work():
                                self._dirty.append(w)
                                continue
                        self._maybe_retire(w)
                elif kind == EV_ARRIVAL:
                    if payload is self._pending_arrival:
                        self._pull_arrival()
                    if self.hold_arrivals:
                        self._hold(payload, t)
                        return True
                    self._route(payload)
                elif kind == EV_WORKER_READY:
                    w = payload
                    if w.state == STARTING:
                        self._set_state(w, ACTIVE)
                        w.ready_ms = t
                        self._record_replicas()
                        if w.engine.has_work():
                            self._dirty.append(w)
                elif kind == EV_CONTROL:
                    payload(self)
                elif kind == EV_HANDOFF:
                    self._on_transfer_done(payload)
            if self.disaggregated and self._held:
                self._route_held()
            if self.check_invariants:
                self._check(t)
            while self._dirty:
                # (one round when aggregated; a disaggregated start can free a source's
                # blocks on another worker, which then starts at this timestamp too)
                dirty = self._dirty
                self._dirty = []
                if len(dirty) > 1:
                    # Ascending worker id, each once: sort plain ints (workers[i].id == i),
                    # no per-element key calls.
                    ws = self.workers
                    dirty = [ws[i] for i in sorted({w.engine.id for w in dirty})]
                for w in dirty:
                    self._start(w)
            n_events += 1
            if progress is not None and not (n_events & 0x3FF):
                progress(t)
        self._done = True
        return False

    def _check(self, t: float) -> None:
        assert t >= self._last_t, "clock went backwards"
        self._last_t = t
        for w in self.workers:
            w.engine.check_invariants()

    # -- results ---------------------------------------------------------------------------
    def finish(self) -> RunResult:
        """Close the run: count requests still in flight, integrate provisioned time."""
        if not self._done:
            self.run_until(None)
        if self.cut_off:
            if self.disaggregated:
                self._cut_handoffs()
            for w in self.workers:
                w.engine.stop_at(self.now)
        cols_last = self.metrics.cols["last_token_ms"]
        last_completion = max((x for x in cols_last if x == x), default=0.0)
        end = self.now if self.cut_off else max(last_completion, 0.0)
        worker_s = 0.0
        role_s = {"agg": 0.0, "prefill": 0.0, "decode": 0.0}
        for w in self.workers:
            if w.dp_rank:
                continue            # a worker's ranks share its lifetime (counted once)
            stop = w.removed_ms if w.removed_ms is not None else end
            ws = max(0.0, min(stop, end) - w.created_ms) / 1000.0
            worker_s += ws
            role_s[w.role] += ws
        extra = {"not_arrived_requests": self._count_not_arrived(),
                 "unroutable_requests": self.num_unroutable,
                 "num_workers_final": self.counts()[0],
                 "cut_off_ms": self.max_sim_time_ms if self.cut_off else None}
        if not self.disaggregated:
            # totals.gpus_per_worker is a whole worker's GPUs (dp_size x gpus_per_dp_rank,
            # what GPU-hours multiply); --gpus-per-worker / cluster.gpus_per_worker is one
            # rank's (its TP)
            extra.update({"dp_size": self.cluster_cfg.dp_size,
                          "gpus_per_dp_rank": self.cluster_cfg.gpus_per_worker})
        if self.disaggregated:
            d = self.disagg
            p_h = role_s["prefill"] * d.prefill_gpus_per_worker / 3600.0
            d_h = role_s["decode"] * d.decode_gpus_per_worker / 3600.0
            extra.update({"prefill_worker_seconds": role_s["prefill"],
                          "decode_worker_seconds": role_s["decode"],
                          "prefill_gpus_per_worker": d.prefill_gpus_per_worker,
                          "decode_gpus_per_worker": d.decode_gpus_per_worker,
                          "prefill_gpu_hours": p_h, "decode_gpu_hours": d_h,
                          "gpu_hours": p_h + d_h})
        summary = self.metrics.summary(num_requests=self.num_arrived, sla=self.sla,
                                       provisioned_worker_seconds=worker_s,
                                       gpus_per_worker=self.cluster_cfg.worker_gpus,
                                       extra_totals=extra)
        summary["engine"] = {
            "passes": sum(w.engine.num_passes for w in self.workers),
            "preemptions": sum(w.engine.num_preemptions for w in self.workers),
            "evictions": sum(w.engine.kv.evictions for w in self.workers),
        }
        tiers = [w.engine for w in self.workers if getattr(w.engine, "host", None) is not None]
        if tiers:        # G2 host tier: hits and traffic over every rank
            host = {"host_hit_requests": sum(e.host_hit_requests for e in tiers),
                    "host_reused_tokens": sum(e.host_reused_tokens for e in tiers)}
            for e in tiers:
                for k, v in e.host.counters().items():
                    host[k] = host.get(k, 0) + v
            summary["kv_host_tier"] = host
        return RunResult(summary, self.metrics, self.workers, self.replicas)

    def _cut_handoffs(self) -> None:
        """At a cut-off: every handoff not yet activated is in flight (held, waiting for
        its reservation or in transfer); prefill copies still computing carry their
        request's real output length into their in-flight records."""
        for idx in sorted(self._handoffs):
            h = self._handoffs[idx]
            req, s = h.req, h.src_seq
            self._note(h)
            self.metrics.record(idx, req.arrival_ms, s.first_admit, math.nan, math.nan,
                                math.nan, req.input_length, 0, req.output_length, s.reused,
                                h.src.engine.id, STATUS_IN_FLIGHT, 0, 0)
        self._handoffs = {}
        for w in self.workers:
            if w.role == "prefill":
                for s in list(w.engine.running) + list(w.engine.waiting):
                    orig = self._orig.get(s.req.index)
                    if orig is not None:
                        s.max_out = orig.output_length

    def _count_not_arrived(self) -> int | None:
        """Workload requests that never arrived before the cut-off (None if unknown, e.g.
        an unbounded generator)."""
        if not self.cut_off:
            return 0
        try:
            total = self.workload.describe().get("num_requests")
        except (AttributeError, TypeError):
            total = None
        return None if total is None else max(0, int(total) - self.num_arrived)

    def run(self) -> RunResult:
        self.run_until(None)
        return self.finish()
