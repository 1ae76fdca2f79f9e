"""What happened in the cluster during one decision interval: the raw material of the
observation and the reward.

The monitor reads the simulation between steps without touching it: request records added
since the last call (``MetricsCollector`` columns), arrival counters, each engine's queues
and KV pool, and the workers' lifetimes (for GPU-seconds). Every figure is a plain float or
int computed from simulated quantities only, so ``info`` stays deterministic.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

from sim.metrics import STATUS_COMPLETED
from sim.simulator import ACTIVE, DRAINING, REMOVED, STARTING, Simulation


def _pct(sorted_vals: list[float], q: float) -> float:
    """Nearest-rank percentile (round half up), like the run summary."""
    n = len(sorted_vals)
    return sorted_vals[min(n - 1, int(q * (n - 1) + 0.5))]


@dataclass
class Interval:
    """One interval's figures (simulated time only)."""
    t0_s: float
    t1_s: float
    arrived: int = 0
    mean_isl: float = 0.0
    mean_osl: float = 0.0
    completed: int = 0
    met: int = 0                  # completed within both SLAs
    rejected: int = 0
    timed_out: int = 0            # first time seen waiting longer than the timeout
    ttft_p50_ms: float = 0.0      # over requests completed in the interval (0 if none)
    ttft_p90_ms: float = 0.0
    itl_p90_ms: float = 0.0       # per-request TPOT, p90
    kv_hit_rate: float = 0.0      # reused / prompt tokens of requests completed
    queued: int = 0               # waiting requests at the end of the interval
    running: int = 0
    queued_prefill_tokens: int = 0
    kv_utilisation: float = 0.0   # mean over active workers of used / total blocks
    oldest_wait_ms: float = 0.0   # oldest request without a first token
    active: int = 0
    starting: int = 0
    draining: int = 0
    gpu_seconds: float = 0.0      # provisioned in the interval (starting + active + draining)
    #: disaggregated pools: GPU-seconds per role (``{"prefill": ..., "decode": ...}``)
    role_gpu_seconds: dict = field(default_factory=dict)
    ttfts: list[float] = field(default_factory=list, repr=False)
    tpots: list[float] = field(default_factory=list, repr=False)
    #: ``(request index, met)`` of every request decided in the interval, in order
    outcomes: list[tuple[int, bool]] = field(default_factory=list, repr=False)

    @property
    def finished(self) -> int:
        """Requests whose outcome was decided in the interval (the SLA denominator)."""
        return self.completed + self.rejected + self.timed_out

    @property
    def sla_attainment(self) -> float:
        """Share of decided requests that met the SLA; 1.0 if none was decided."""
        return self.met / self.finished if self.finished else 1.0


def _scan(seqs, waiting: bool, now: float, timeout: float, gone: set, oldest: float,
          outcomes: list) -> tuple:
    """One engine queue's share of an interval: ``(queued prefill tokens, oldest wait,
    requests newly past the timeout)``. ``waiting``: every sequence's uncomputed known
    tokens count (= ``Engine.queued_prefill_tokens``); running: only the uncomputed prompt
    of sequences without a first token. A request first seen past ``timeout`` (ms) without
    a first token joins ``gone``, counts once and appends ``(index, False)`` to ``outcomes``
    (the routing env credits it to the decision that routed it). ``oldest`` (ms) is the running maximum
    carried over the queues. Compiled, ``s`` is typed (``monitor.pxd``): this scan visits
    every queued request at every step, thousands when the pool is overloaded."""
    qp = 0
    n_out = 0
    for s in seqs:
        if waiting:
            qp += s.prompt_len + s.generated - s.computed
        if s.first_token != s.first_token:      # NaN: no first token yet
            arrival = s.arrival_ms
            age = now - arrival
            if not waiting and s.prompt_len > s.computed:
                qp += s.prompt_len - s.computed
            if age > oldest:
                oldest = age
            if age > timeout:
                index = s.index
                if index not in gone:
                    gone.add(index)
                    n_out += 1
                    outcomes.append((index, False))
    return qp, oldest, n_out


def _decided(idx, st, arr, ft, lt, out, ru, il, start: int, stop: int, gone: set,
             ttft_sla: float, itl_sla: float, iv: Interval) -> tuple[int, int]:
    """Count the request records ``start .. stop - 1`` (``MetricsCollector`` columns:
    request index, status, arrival, first and last token times, output, reused and input
    tokens) into ``iv``: completions, SLA met, rejections, TTFT and TPOT samples and
    outcomes. A request in ``gone`` (already counted when it timed out) is taken out of it
    and skipped. Returns the reused and prompt tokens of the completed requests.
    Compiled (``monitor.pxd``), the columns are read through typed buffers."""
    completed = met = rejected = 0
    reused = prompt = 0
    ttfts, tpots, outcomes = iv.ttfts, iv.tpots, iv.outcomes
    for j in range(start, stop):
        i = idx[j]
        if gone and i in gone:
            gone.discard(i)          # counted when it timed out
            continue
        if st[j] == STATUS_COMPLETED:
            completed += 1
            o = out[j]
            if o == 0:        # output_length 0: no token, no sample, not within SLA
                reused += ru[j]
                prompt += il[j]
                outcomes.append((i, False))
                continue
            ttft = ft[j] - arr[j]
            tpot = (lt[j] - ft[j]) / (o - 1) if o > 1 else 0.0
            ttfts.append(ttft)
            tpots.append(tpot)
            reused += ru[j]
            prompt += il[j]
            ok = ttft <= ttft_sla and tpot <= itl_sla
            if ok:
                met += 1
            outcomes.append((i, ok))
        else:
            rejected += 1
            outcomes.append((i, False))
    iv.completed += completed
    iv.met += met
    iv.rejected += rejected
    return reused, prompt


class ClusterMonitor:
    def __init__(self, sim: Simulation, ttft_sla_ms: float, itl_sla_ms: float,
                 timeout_ms: float, gpus_per_worker: int) -> None:
        """``gpus_per_worker``: GPUs of one worker; of a disaggregated simulation, each
        role's own (``sim.disagg``) count instead, and ``role_gpu_seconds`` splits them."""
        self.sim = sim
        d = sim.disagg
        self.role_gpus = ({"prefill": d.prefill_gpus_per_worker,
                           "decode": d.decode_gpus_per_worker} if d is not None else None)
        self.ttft_sla = ttft_sla_ms
        self.itl_sla = itl_sla_ms
        self.timeout_ms = timeout_ms
        self.gpus = gpus_per_worker
        self._row = 0
        self._arr = (0, 0, 0)
        self._timed_out: set[int] = set()
        self._t_ms = sim.now
        self._hit = 0.0

    def collect(self) -> Interval:
        sim = self.sim
        now = sim.now
        iv = Interval(self._t_ms / 1000.0, now / 1000.0)
        # arrivals
        n0, i0, o0 = self._arr
        iv.arrived = n = sim.num_arrived - n0
        if n:
            iv.mean_isl = (sim.arrived_input_tokens - i0) / n
            iv.mean_osl = (sim.arrived_output_tokens - o0) / n
        self._arr = (sim.num_arrived, sim.arrived_input_tokens, sim.arrived_output_tokens)
        # outcomes decided since the last call
        c = sim.metrics.cols
        k = len(c["status"])
        ttft_sla, itl_sla, gone = self.ttft_sla, self.itl_sla, self._timed_out
        reused = prompt = 0
        if k > self._row:
            reused, prompt = _decided(
                c["request_index"], c["status"], c["arrival_time_ms"], c["first_token_ms"],
                c["last_token_ms"], c["output_length"], c["reused_input_tokens"],
                c["input_length"], self._row, k, gone, ttft_sla, itl_sla, iv)
            self._row = k
        if prompt:
            self._hit = reused / prompt
        iv.kv_hit_rate = self._hit
        if iv.ttfts:
            s = sorted(iv.ttfts)
            iv.ttft_p50_ms, iv.ttft_p90_ms = _pct(s, 0.5), _pct(s, 0.9)
            iv.itl_p90_ms = _pct(sorted(iv.tpots), 0.9)
        # queues, KV, timeouts, GPU-seconds
        kv_sum = 0.0
        t0 = self._t_ms
        gpu_ms = 0.0
        oldest = 0.0
        timeout = self.timeout_ms
        role_ms = {"prefill": 0.0, "decode": 0.0} if self.role_gpus is not None else None
        for w in sim.workers:
            state = w.state
            if state == REMOVED:
                stop = w.removed_ms
                if stop <= t0:
                    continue
            else:
                stop = now
            dt = max(0.0, stop - max(w.created_ms, t0))
            if role_ms is not None:
                role_ms[w.role] += dt
            gpu_ms += dt
            if state == REMOVED:
                continue
            eng = w.engine
            if state == ACTIVE:
                iv.active += 1
                kv_sum += eng.kv.num_active / eng.kv.num_blocks
            elif state == STARTING:
                iv.starting += 1
            elif state == DRAINING:
                iv.draining += 1
            iv.queued += len(eng.waiting)
            iv.running += len(eng.running)
            qp, oldest, n_out = _scan(eng.waiting, True, now, timeout, gone, oldest,
                                        iv.outcomes)
            iv.queued_prefill_tokens += qp
            iv.timed_out += n_out
            qp, oldest, n_out = _scan(eng.running, False, now, timeout, gone, oldest,
                                        iv.outcomes)
            iv.queued_prefill_tokens += qp
            iv.timed_out += n_out
        iv.kv_utilisation = kv_sum / iv.active if iv.active else 0.0
        iv.oldest_wait_ms = oldest
        if role_ms is None:
            iv.gpu_seconds = gpu_ms / 1000.0 * self.gpus
        else:
            iv.role_gpu_seconds = {r: ms / 1000.0 * self.role_gpus[r] for r, ms in role_ms.items()}
            iv.gpu_seconds = sum(iv.role_gpu_seconds.values())
        self._t_ms = now
        return iv
