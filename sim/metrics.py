"""Per-request records and the run summary, with Dynamo's statistic definitions.

Definitions follow Dynamo's replay report (``replay/report.rs``; ``docs/dynamo_replay_semantics.md`` §5):

* TTFT = first token - arrival; TTST = second token - first token;
* TPOT = (e2e - TTFT) / (output_length - 1) per request with more than one token;
* ITL mean is token-weighted, sum(e2e - TTFT) / sum(output_length - 1); ITL percentiles,
  min, max and std are over the individual gaps between consecutive tokens;
* percentiles are nearest-rank with round-half-up: ``sorted[round_half_up(q * (n - 1))]``;
* ``duration_ms`` is the last completion time measured from the first arrival (t = 0).

ITL and per-user throughput (1000 / gap) are distributions over every token gap. Like
Dynamo's collector, their percentiles come from a DDSketch with relative accuracy 0.001
(so ours match Dynamo's bin for bin); mean, min, max and std are exact. A sketch has
bounded memory and takes a whole stretch of passes as one numpy call.
"""
from __future__ import annotations

import json
import math
from array import array
from typing import IO, Any, Iterable

import numpy as np

STATUS_COMPLETED, STATUS_REJECTED, STATUS_IN_FLIGHT = 0, 1, 2
STATUS_NAMES = ("completed", "rejected", "in_flight")
_STATS = ("mean", "min", "max", "median", "p75", "p90", "p95", "p99", "std")
_QUANTILES = {"median": 0.5, "p75": 0.75, "p90": 0.9, "p95": 0.95, "p99": 0.99}

# Per-request columns: name -> array typecode ('d' float64, 'q' int64).
_COLUMNS = {
    "request_index": "q", "arrival_time_ms": "d", "first_admit_ms": "d", "first_token_ms": "d",
    "second_token_ms": "d", "last_token_ms": "d", "input_length": "q", "output_length": "q",
    "requested_output_length": "q", "reused_input_tokens": "q", "worker": "q", "status": "q",
    "num_preemptions": "q", "reason": "q",
}
#: Per-request handoff times of a disaggregated run (ms; Dynamo's per-request field names).
HANDOFF_FIELDS = ("source_held_ms", "destination_reserved_ms", "destination_activated_ms",
                  "source_released_ms")
REJECT_REASONS = ("", "prompt_exceeds_kv_capacity", "prompt_exceeds_max_model_len",
                  "no_active_worker", "prompt_exceeds_batch_budget_unchunked",
                  "sequence_exceeds_kv_capacity", "decode_kv_deadlock", "kv_deadlock")


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def nearest_rank(sorted_values: np.ndarray, q: float) -> float:
    n = len(sorted_values)
    return float(sorted_values[_round_half_up(q * (n - 1))])


def describe(values: np.ndarray) -> dict[str, float]:
    """Dynamo-style statistics of one metric (population std)."""
    v = np.sort(np.asarray(values, dtype=float))
    if len(v) == 0:
        return {k: 0.0 for k in _STATS}
    out = {"mean": float(v.mean()), "min": float(v[0]), "max": float(v[-1])}
    for name, q in _QUANTILES.items():
        out[name] = nearest_rank(v, q)
    out["std"] = float(v.std())
    return {k: out[k] for k in _STATS}


_ALPHA = 0.001
_GAMMA = 1 + 2 * _ALPHA / (1 - _ALPHA)
_LN_GAMMA = math.log1p(2 * _ALPHA / (1 - _ALPHA))
_INV_LN_GAMMA = 1.0 / _LN_GAMMA
_KEY_OFFSET = 1 << 15          # keys cover values from ~1e-14 to ~1e14
_NBINS = 1 << 16
_GAP_BUFFER = 1 << 16     # gaps the collector buffers before binning (bounds its memory)


class GapSketch:
    """Positive samples with multiplicities: DDSketch bins + exact moments.

    Arrays are buffered and binned in large batches: one numpy pass per ~256k samples
    instead of one per engine stretch.
    """

    __slots__ = ("bins", "zeros", "n", "total", "total_sq", "lo", "hi", "_pending",
                 "_pending_size", "shift", "_dsum")

    def __init__(self) -> None:
        self.bins = np.zeros(_NBINS, dtype=np.int64)
        self.zeros = 0
        self.n = 0
        self.total = 0.0
        self.total_sq = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self._pending: list[tuple[np.ndarray, int]] = []
        self._pending_size = 0
        # Moments are kept about the first sample seen, so the variance of a nearly
        # constant stream does not cancel catastrophically.
        self.shift: float | None = None
        self._dsum = 0.0          # sum of (v - shift); total_sq is sum of (v - shift)^2

    def add(self, v: float, count: int) -> None:
        if self.shift is None:
            self.shift = v
        self.n += count
        d = v - self.shift
        self.total += v * count
        self._dsum += d * count
        self.total_sq += d * d * count
        if v < self.lo:
            self.lo = v
        if v > self.hi:
            self.hi = v
        if v <= 0.0:
            self.zeros += count
            return
        k = math.ceil(math.log(v) * _INV_LN_GAMMA) + _KEY_OFFSET
        self.bins[min(max(k, 0), _NBINS - 1)] += count

    def add_array(self, v: np.ndarray, count: int) -> None:
        if len(v):
            self._pending.append((v, count))
            self._pending_size += len(v)
            if self._pending_size > 1 << 18:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        v = np.concatenate([a for a, _ in self._pending])
        w = np.concatenate([np.full(len(a), c, dtype=np.int64) for a, c in self._pending])
        self._pending = []
        self._pending_size = 0
        self.add_weighted(v, w)

    def add_weighted(self, v: np.ndarray, w: np.ndarray) -> None:
        """Sample ``v[i]`` occurs ``w[i]`` times (int64 weights)."""
        if not len(v):
            return
        wf = w.astype(float)
        if self.shift is None:
            self.shift = float(v[0])
        d = v - self.shift
        self.n += int(w.sum())
        self.total += float((v * wf).sum())
        self._dsum += float((d * wf).sum())
        self.total_sq += float((d * d * wf).sum())
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))
        pos = v > 0.0
        self.zeros += int(w[~pos].sum())
        keys = np.ceil(np.log(v[pos]) * _INV_LN_GAMMA).astype(np.int64) + _KEY_OFFSET
        np.clip(keys, 0, _NBINS - 1, out=keys)
        self.bins += np.bincount(keys, weights=w[pos], minlength=_NBINS).astype(np.int64)

    def merge(self, other: "GapSketch") -> None:
        other._flush()
        self._flush()
        if other.n == 0:
            return
        if self.shift is None:
            self.shift = other.shift
        # Re-centre the other's moments on our shift.
        delta = other.shift - self.shift
        self.total_sq += other.total_sq + 2 * delta * other._dsum + delta * delta * other.n
        self._dsum += other._dsum + delta * other.n
        self.total += other.total
        self.bins += other.bins
        self.zeros += other.zeros
        self.n += other.n
        self.lo = min(self.lo, other.lo)
        self.hi = max(self.hi, other.hi)

    def quantile(self, q: float) -> float:
        """Dynamo's rule: rank = round_half_up(q (n - 1)); value of the bin holding it."""
        self._flush()
        n = self.n
        if n == 0:
            return 0.0
        if n == 1:
            return self.lo        # Dynamo's collector reports a lone sample as is
        rank = _round_half_up(q * (n - 1))
        if rank < self.zeros:
            return 0.0
        cum = np.cumsum(self.bins)
        k = int(np.searchsorted(cum, rank - self.zeros, side="right")) - _KEY_OFFSET
        return math.exp(k * _LN_GAMMA) * (2.0 / (1.0 + _GAMMA))

    def describe(self, mean: float | None = None) -> dict[str, float]:
        self._flush()
        if self.n == 0:
            return {k: 0.0 for k in _STATS}
        m = self.total / self.n
        d = self._dsum / self.n
        out = {"mean": m if mean is None else mean, "min": self.lo, "max": self.hi}
        for name, q in _QUANTILES.items():
            out[name] = self.quantile(q)
        out["std"] = math.sqrt(max(0.0, self.total_sq / self.n - d * d))
        return {k: out[k] for k in _STATS}


class MetricsCollector:
    """Collects finished requests (compact columns) and token-gap runs."""

    def __init__(self) -> None:
        self.cols: dict[str, array] = {k: array(t) for k, t in _COLUMNS.items()}
        # The columns' bound ``append``s in _COLUMNS order, taken once: ``record`` runs per
        # request and would otherwise look up each column and its method (28 look-ups).
        self._appends = tuple(a.append for a in self.cols.values())
        self._itl = GapSketch()        # token gaps (ms)
        self._per_user = GapSketch()   # 1000 / gap (tokens/s)
        # Gaps buffered on the hot path (no numpy call per engine stretch); binned in bulk
        # when a sketch is read or the buffer is large.
        self._singles: list[float] = []                    # one gap each
        self._runs: list[float] = []                       # gaps ...
        self._run_counts: list[int] = []                   # ... times each
        self._arrays: list[tuple[np.ndarray, int]] = []    # (gaps, times each)
        self._ends: list[tuple[np.ndarray, int]] = []      # (pass end times, sequences)
        self._buffered = 0
        # Disaggregated runs: request index -> [prefill worker, decode worker, then the
        # handoff's times (HANDOFF_FIELDS)]; workers are indices within their pool
        # (Dynamo's prefill_worker_idx / decode_worker_idx). None when aggregated.
        self.handoffs: dict[int, list] | None = None

    def set_handoff(self, index: int, prefill_worker: int, decode_worker: int | None,
                    *times: float) -> None:
        """Record (or update) request ``index``'s pools and handoff times, in the order of
        HANDOFF_FIELDS (NaN = not reached)."""
        if self.handoffs is None:
            self.handoffs = {}
        self.handoffs[index] = [prefill_worker, decode_worker, *times]

    @property
    def itl(self) -> GapSketch:
        self._flush_gaps()
        return self._itl

    @property
    def per_user(self) -> GapSketch:
        self._flush_gaps()
        return self._per_user

    # -- hot path ---------------------------------------------------------
    def add_gap(self, gap_ms: float, count: int) -> None:
        """``count`` token gaps of ``gap_ms`` each."""
        self._runs.append(gap_ms)
        self._run_counts.append(count)
        self._buffered += 1
        if self._buffered > _GAP_BUFFER:
            self._flush_gaps()

    def add_gaps(self, gaps_ms: list[float]) -> None:
        """One token gap each."""
        self._singles.extend(gaps_ms)
        self._buffered += len(gaps_ms)
        if self._buffered > _GAP_BUFFER:
            self._flush_gaps()

    def add_gap_array(self, gaps_ms: np.ndarray, count: int) -> None:
        """Each of ``gaps_ms`` occurs ``count`` times (one pass of ``count`` sequences)."""
        self._arrays.append((gaps_ms, count))
        self._buffered += len(gaps_ms)
        if self._buffered > _GAP_BUFFER:
            self._flush_gaps()

    def add_pass_ends(self, ends_ms: np.ndarray, count: int) -> None:
        """Consecutive passes of ``count`` sequences ended at ``ends_ms``: each difference
        between neighbours is a token gap of each of those sequences."""
        if len(ends_ms) > 1:
            self._ends.append((ends_ms, count))
            self._buffered += len(ends_ms)
            if self._buffered > _GAP_BUFFER:
                self._flush_gaps()

    def _flush_gaps(self) -> None:
        if not self._buffered:
            return
        vals: list[np.ndarray] = []
        wts: list[np.ndarray] = []
        if self._runs:
            vals.append(np.array(self._runs, dtype=np.float64))
            wts.append(np.array(self._run_counts, dtype=np.int64))
        if self._singles:
            vals.append(np.array(self._singles, dtype=np.float64))
            wts.append(np.ones(len(self._singles), dtype=np.int64))
        for a, c in self._arrays:
            vals.append(np.asarray(a, dtype=np.float64))
            wts.append(np.full(len(a), c, dtype=np.int64))
        if self._ends:
            lens = np.array([len(e) for e, _ in self._ends])
            d = np.diff(np.concatenate([e for e, _ in self._ends]))
            # Drop the differences across two stretches' boundaries.
            keep = np.ones(len(d), dtype=bool)
            keep[np.cumsum(lens)[:-1] - 1] = False
            vals.append(d[keep])
            wts.append(np.repeat(np.array([c for _, c in self._ends], dtype=np.int64), lens - 1))
        self._singles, self._arrays, self._ends, self._buffered = [], [], [], 0
        self._runs, self._run_counts = [], []
        v = np.concatenate(vals)
        w = np.concatenate(wts)
        self._itl.add_weighted(v, w)
        pos = v > 0
        self._per_user.add_weighted(1000.0 / v[pos], w[pos])

    def record(self, index: int, arrival: float, first_admit: float, first_token: float,
               second_token: float, last_token: float, input_length: int, output_length: int,
               requested_output_length: int, reused: int, worker: int, status: int,
               num_preemptions: int = 0, reason: int = 0) -> None:
        (a_index, a_arrival, a_admit, a_first, a_second, a_last, a_isl, a_osl, a_req,
         a_reused, a_worker, a_status, a_preempt, a_reason) = self._appends
        a_index(index)
        a_arrival(arrival)
        a_admit(first_admit)
        a_first(first_token)
        a_second(second_token)
        a_last(last_token)
        a_isl(input_length)
        a_osl(output_length)
        a_req(requested_output_length)
        a_reused(reused)
        a_worker(worker)
        a_status(status)
        a_preempt(num_preemptions)
        a_reason(reason)

    # -- results ------------------------------------------------------------
    def columns(self) -> dict[str, np.ndarray]:
        """Columns as numpy arrays, sorted by request index (trace order)."""
        cols = {k: np.frombuffer(v, dtype=np.float64 if v.typecode == "d" else np.int64)
                if len(v) else np.zeros(0, dtype=np.float64 if v.typecode == "d" else np.int64)
                for k, v in self.cols.items()}
        order = np.argsort(cols["request_index"], kind="stable")
        return {k: v[order] for k, v in cols.items()}

    def summary(self, *, num_requests: int, sla: dict[str, float] | None = None,
                provisioned_worker_seconds: float = 0.0, gpus_per_worker: int = 1,
                extra_totals: dict[str, Any] | None = None) -> dict[str, Any]:
        c = self.columns()
        done = c["status"] == STATUS_COMPLETED
        arrival, first, second, last = (c[k][done] for k in
                                        ("arrival_time_ms", "first_token_ms", "second_token_ms",
                                         "last_token_ms"))
        out_len, in_len = c["output_length"][done], c["input_length"][done]
        # A request with output_length 0 completes at the end of its prefill pass (its
        # last_token_ms holds that time): it counts in the duration but, as in Dynamo, gives
        # no TTFT or E2E sample and fails any TTFT or ITL limit.
        ttft_all = first - arrival
        e2e_all = last - arrival
        tokens = out_len > 0
        ttft, e2e = ttft_all[tokens], e2e_all[tokens]
        multi = out_len > 1
        decode_span = (e2e_all - ttft_all)[multi]
        tpot = decode_span / (out_len[multi] - 1)
        ttst = (second - first)[multi]
        duration = float(last.max()) if len(last) else 0.0
        total_in, total_out = int(in_len.sum()), int(out_len.sum())
        itl_mean = float(decode_span.sum() / (out_len[multi] - 1).sum()) if multi.any() else 0.0
        reused = int(c["reused_input_tokens"][done].sum())
        totals: dict[str, Any] = {
            "num_requests": int(num_requests),
            "completed_requests": int(done.sum()),
            "rejected_requests": int((c["status"] == STATUS_REJECTED).sum()),
            "in_flight_requests": int((c["status"] == STATUS_IN_FLIGHT).sum()),
            "total_input_tokens": total_in,
            "total_output_tokens": total_out,
            "duration_ms": duration,
            "request_throughput_rps": _per_s(int(done.sum()), duration),
            "input_throughput_tok_s": _per_s(total_in, duration),
            "output_throughput_tok_s": _per_s(total_out, duration),
            "total_throughput_tok_s": _per_s(total_in + total_out, duration),
            "prefix_cache_reused_ratio": reused / total_in if total_in else 0.0,
            "num_preemptions": int(c["num_preemptions"].sum()),
            "provisioned_worker_seconds": provisioned_worker_seconds,
            "gpus_per_worker": gpus_per_worker,
            "gpu_hours": provisioned_worker_seconds * gpus_per_worker / 3600.0,
            "num_ttft_samples": int(len(ttft)),
            "num_tpot_samples": int(len(tpot)),
        }
        rejected = c["status"] == STATUS_REJECTED
        if rejected.any():
            reasons = c["reason"][rejected]
            totals["rejected_by_reason"] = {REJECT_REASONS[r]: int((reasons == r).sum())
                                            for r in sorted(set(reasons.tolist()))}
        if extra_totals:
            totals.update(extra_totals)
        latency = {
            "ttft": describe(ttft),
            "ttst": describe(ttst),
            "tpot": describe(tpot),
            "itl": self.itl.describe(mean=itl_mean),
            "e2e_latency": describe(e2e),
        }
        result: dict[str, Any] = {"totals": totals, "latency_ms": latency,
                                  "output_token_throughput_per_user": self.per_user.describe()}
        if sla:
            tpot_all = np.where(multi, (e2e_all - ttft_all) / np.maximum(out_len - 1, 1),
                                np.where(tokens, 0.0, np.nan))
            result["goodput"] = _goodput(sla, ttft_all, tpot_all=tpot_all, e2e=e2e_all,
                                         duration=duration, out_len=out_len,
                                         num_requests=num_requests)
        return result

    def write_jsonl(self, fh: IO[str]) -> None:
        """One JSON record per request, in trace order, with Dynamo's field names."""
        c = self.columns()
        n = len(c["request_index"])
        for i in range(n):
            st = int(c["status"][i])
            arrival = float(c["arrival_time_ms"][i])
            rec: dict[str, Any] = {"request_index": int(c["request_index"][i]),
                                   "status": STATUS_NAMES[st],
                                   "arrival_time_ms": arrival}
            first, last = float(c["first_token_ms"][i]), float(c["last_token_ms"][i])
            out_len = int(c["output_length"][i])
            rec["first_admit_ms"] = _num(float(c["first_admit_ms"][i]))
            rec["first_token_ms"] = _num(first)
            rec["last_token_ms"] = _num(last) if out_len > 0 else None
            rec["ttft_ms"] = _num(first - arrival)
            rec["ttst_ms"] = _num(float(c["second_token_ms"][i]) - first) if out_len > 1 else None
            rec["e2e_latency_ms"] = (_num(last - arrival) if st == STATUS_COMPLETED and out_len > 0
                                     else None)
            rec["itl_ms"] = _num((last - first) / (out_len - 1)) if out_len > 1 else None
            rec["input_length"] = int(c["input_length"][i])
            rec["output_length"] = out_len
            rec["requested_output_length"] = int(c["requested_output_length"][i])
            rec["reused_input_tokens"] = int(c["reused_input_tokens"][i])
            if self.handoffs is None:
                rec["worker"] = int(c["worker"][i]) if c["worker"][i] >= 0 else None
            else:
                h = self.handoffs.get(int(c["request_index"][i]))
                rec["prefill_worker"] = None if h is None else h[0]
                rec["decode_worker"] = None if h is None else h[1]
                for k, name in enumerate(HANDOFF_FIELDS):
                    rec[name] = None if h is None else _num(h[2 + k])
            rec["num_preemptions"] = int(c["num_preemptions"][i])
            if st == STATUS_REJECTED:
                rec["reject_reason"] = REJECT_REASONS[int(c["reason"][i])]
            fh.write(json.dumps(rec, separators=(",", ":")) + "\n")


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


def _per_s(count: float, duration_ms: float) -> float:
    return count / (duration_ms / 1000.0) if duration_ms > 0 else 0.0


def _goodput(sla: dict[str, float], ttft: np.ndarray, tpot_all: np.ndarray, e2e: np.ndarray,
             duration: float, out_len: np.ndarray, num_requests: int) -> dict[str, Any]:
    ok = np.ones(len(ttft), dtype=bool)
    if sla.get("ttft_ms") is not None:
        ok &= ttft <= sla["ttft_ms"]
    if sla.get("itl_ms") is not None:
        ok &= tpot_all <= sla["itl_ms"]
    if sla.get("e2e_ms") is not None:
        ok &= e2e <= sla["e2e_ms"]
    good = int(ok.sum())
    return {"sla": {k: v for k, v in sla.items() if v is not None},
            "good_requests": good,
            "goodput_rps": _per_s(good, duration),
            "goodput_tok_s": _per_s(int(out_len[ok].sum()), duration),
            "sla_attainment": good / num_requests if num_requests else 0.0}


def iter_json_lines(objs: Iterable[dict]) -> Iterable[str]:
    for o in objs:
        yield json.dumps(o, separators=(",", ":")) + "\n"
