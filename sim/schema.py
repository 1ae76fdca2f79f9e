"""The allowed range of every numeric input, in one place.

Each bound comes from what the number means and where it ends up:

* **Token counts** (a request's ``input_length``/``output_length``, ``max_model_len``, the
  batch token budget, block sizes) are C ``long`` fields of the engine's sequences
  (``sim/engine.pxd``), multiplied by one another (blocks x block size = tokens), and a
  request's work is laid out per token or per block in places (prompt block keys, decode
  stretches of one pass time per output token): at most ``2^24`` (16,777,216; longer
  than any model's context window) each. ``2^31 - 1`` would fit the C types, but one
  request of 2^31 output tokens needs over 20 GB for its decode stretch (measured: the
  process was killed for memory), and 2^24 keeps one request under ~0.5 GB.
* **KV blocks per worker** index the native pool's slots as int32 (``sim/_kvpool.c``), and
  the pool reserves about 60 bytes of address space per block (slot record, freed stack,
  hash table; touched only when used): at most ``2^28`` (16 GB of address space, more than
  any GPU holds at one token per block).
* **Workers** cost about 82 KB each before they hold anything (engine, pool, queues;
  measured: 4,096 workers add 335 MB of peak RSS to a two-request run): at most 4,096
  workers (and GPUs), so a cluster's fixed memory stays under 0.4 GB.
* **Times** are float64 milliseconds inside the simulator: a timestamp, a delay, an SLA or
  a duration stays below ``2^52`` ms (about 142,700 years), where consecutive floats are
  still at most 1 ms apart, so a millisecond is never rounded away. Seconds are bounded
  by the same limit (``2^52 / 1000`` s).
* **Ratios** (speed-ups) stay within ``[10^-3, 10^6]`` and weights within ``[0, 10^6]``:
  a slow-down beyond 1000x or a factor beyond 10^6 is a unit error, and the times it
  scales would leave the ms-exact range. A fixed pass time (``fixed:P,D``) is at most one
  hour for the same reason.
* ``hash_ids`` are int64 keys in the native pool; seeds are int64 too.

The config dataclasses (:mod:`sim.config`, :mod:`dynosim_gym.config`) carry these ranges as
field metadata (``_opt(64, range=BLOCK_SIZE)``) and the trace loaders and workload
factories check theirs with :meth:`Range.violation`; ``dynosim config schema`` prints the
whole table from the same objects (:func:`dynosim.config_schema.render`).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
MAX_TOKENS = 2**24
MAX_BLOCKS = 2**28
MAX_WORKERS = 4096
MAX_TIME_MS = float(2**52)
MAX_TIME_S = MAX_TIME_MS / 1000.0
MAX_RATIO = 1e6
MAX_RATE_RPS = 1e6
MAX_REQUESTS = INT32_MAX


def _fmt(x: float | int) -> str:
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer() and abs(x) < 1e16):
        return str(int(x))
    return f"{x:g}"


#: Bounds that are representation limits (float64 ms exactness, int32/int64), not what a
#: field means: a message for a value inside them does not quote them (``4.5036e+12`` s as
#: the upper end of a dwell told the user nothing); a value beyond one is told the limit and
#: its ``why``.
_CAPS = frozenset({MAX_TIME_MS, MAX_TIME_S, INT32_MAX, INT64_MAX})


def _is_cap(bound: float | int | None) -> bool:
    return bound is not None and abs(bound) in _CAPS


@dataclass(frozen=True)
class Range:
    """A closed interval ``[lo, hi]`` (``lo_open``: ``(lo, hi]``); None = unbounded side.

    ``unit`` and ``why`` document it (``dynosim config schema``). ``rule``: the field's own
    constraint beyond its bounds, checked where the other fields are known (e.g. ``"0 (off)
    or a multiple of env.interval_s"``); a value below ``lo`` is told the rule instead of
    the interval."""

    lo: float | int | None = None
    hi: float | int | None = None
    lo_open: bool = False
    unit: str = ""
    why: str = ""
    hi_open: bool = False
    rule: str = ""

    def text(self) -> str:
        lo = "-inf" if self.lo is None else _fmt(self.lo)
        hi = "inf" if self.hi is None else _fmt(self.hi)
        close = ")" if self.hi is None or self.hi_open else "]"
        return f"{'(' if self.lo_open else '['}{lo}, {hi}{close}"

    def violation(self, value: Any) -> str | None:
        """None if ``value`` (a real number) is in range, else a one-line message that
        names the value and the allowed range: the interval, unless its other end is a
        representation limit (:data:`_CAPS`); past such a limit, the limit and why it is one;
        below ``lo`` with a ``rule``, the rule."""
        lo, hi = self.lo, self.hi
        if lo is not None and (value < lo or (self.lo_open and value == lo)):
            if self.rule:
                return f"must be {self.rule}, got {_show(value)}"
            return self._message(">" if self.lo_open else ">=", lo, hi, value)
        if hi is not None and (value > hi or (self.hi_open and value == hi)):
            return self._message("<" if self.hi_open else "<=", hi, lo, value)
        return None

    def _message(self, op: str, bound: float | int, other: float | int | None,
                 value: Any) -> str:
        if _is_cap(bound):
            unit = f" {self.unit}" if self.unit else ""
            why = f": {self.why}" if self.why else ""
            return (f"must be {op} {_fmt(bound)}{unit}, got {_show(value)} (allowed "
                    f"{self.text()}{unit}{why})")
        allowed = "" if _is_cap(other) else f" (allowed {self.text()})"
        return f"must be {op} {_fmt(bound)}, got {_show(value)}{allowed}"

    def with_lo(self, lo: float | int | None, lo_open: bool = False) -> "Range":
        return dataclasses.replace(self, lo=lo, lo_open=lo_open)

    def with_rule(self, rule: str) -> "Range":
        return dataclasses.replace(self, rule=rule)


def _show(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


_TOK = "per-token/per-block work of one request stays < ~0.5 GB; beyond any context window"
_TIME = "float64 ms stay 1-ms exact below 2^52 ms"

TOKENS = Range(1, MAX_TOKENS, unit="tokens", why=_TOK)
TOKENS0 = TOKENS.with_lo(0)
BLOCK_SIZE = Range(0, MAX_TOKENS, lo_open=True, unit="tokens", why=_TOK)
NUM_GPU_BLOCKS = Range(0, MAX_BLOCKS, lo_open=True, unit="blocks",
                       why="int32 pool slots; ~60 B of address space per block")
WORKERS = Range(1, MAX_WORKERS, unit="workers", why="~82 KB of fixed memory per worker")
GPUS = Range(1, MAX_WORKERS, unit="GPUs", why="at least one GPU per worker")
DP_RANKS = Range(1, MAX_WORKERS, unit="ranks", why="each rank is a scheduler with its own KV "
                 "pool (~82 KB of fixed memory)")
SEQS = Range(1, INT32_MAX, unit="sequences", why="C long counters")
TIME_MS = Range(0, MAX_TIME_MS, unit="ms", why=_TIME)
TIME_MS_POS = TIME_MS.with_lo(0, lo_open=True)
TIMESTAMP_MS = Range(-MAX_TIME_MS, MAX_TIME_MS, unit="ms", why=_TIME)
TIME_S = Range(0, MAX_TIME_S, unit="s", why=_TIME)
TIME_S_POS = TIME_S.with_lo(0, lo_open=True)
RATIO = Range(1e-3, MAX_RATIO, unit="x", why="a 1000x slow-down or 10^6x speed-up is a unit "
              "error")
PASS_MS = Range(0, 3_600_000, unit="ms", why="a forward pass over an hour is a unit error")
WEIGHT = Range(0, MAX_RATIO, unit="", why="beyond 10^6 is a unit error")
FRACTION = Range(0, 1, unit="", why="a share")
SHARE_OPEN = Range(0, 1, lo_open=True, hi_open=True, unit="", why="a share, neither none nor all")
# -- disaggregated prefill/decode (sim.disagg) --
# KV links: the host tier (d2h/h2d) and the prefill->decode transfer
GBPS = Range(0, 1e6, unit="GB/s", why="a link beyond 1 PB/s is a unit error; 0 = no delay")
KV_BYTES = Range(1, 2**40, unit="B/token", why="beyond 1 TiB per token is a unit error")
RATE = Range(0, MAX_RATE_RPS, lo_open=True, unit="req/s",
             why="10^6 req/s is beyond any cluster simulated here")
RATE0 = RATE.with_lo(0)
COUNT = Range(1, MAX_REQUESTS, unit="", why="indices fit int32")
COUNT0 = COUNT.with_lo(0)
SEED = Range(0, INT64_MAX, unit="", why="int64 seed")
HASH_ID = Range(0, INT64_MAX, unit="", why="int64 keys in the native KV pool")

#: Trace fields: format -> field -> (Range, note). The loaders check the upper bounds here;
#: the lower bounds and acceptance rules are the loaders' own (they follow Dynamo's).
TRACE_FIELDS: dict[str, dict[str, tuple[Range, str]]] = {
    "mooncake": {
        "timestamp": (TIMESTAMP_MS, "alias created_time; arrival, rebased to the first"),
        "input_length": (TOKENS, "alias input_tokens; missing: len(hash_ids) x block size"),
        "output_length": (TOKENS0, "alias output_tokens; 0 completes at the end of prefill"),
        "hash_ids[i]": (HASH_ID, "one per trace_block_size tokens"),
        "delay": (TIME_MS, "alias delay_ms; session turn gap"),
    },
    "azure": {
        "TIMESTAMP": (Range(unit="date", why="YYYY-MM-DD HH:MM:SS[.f]; years 1-9999 span "
                                           "< 2^52 ms"), "parsed to integer ns"),
        "ContextTokens": (TOKENS, "prompt tokens"),
        "GeneratedTokens": (TOKENS0, "output tokens"),
    },
}

#: Workload block keys (``workload:`` in YAML; synthetic factories and trace loaders).
WORKLOAD_FIELDS: dict[str, Range] = {
    "trace_block_size": Range(1, MAX_TOKENS, unit="tokens", why=_TOK),
    "arrival_speedup_ratio": RATIO,
    "concurrency": Range(1, MAX_REQUESTS, unit="requests", why="closed-loop requests in flight"),
    "num_requests": COUNT,
    "duration_s": TIME_S_POS,
    "num_prefix_groups": COUNT0,
    "shared_prefix_ratio": FRACTION,
    "shared_prefix_blocks": Range(0, MAX_TOKENS, unit="blocks", why=_TOK),
    "turns_per_session": COUNT,
    "inter_turn_delay_ms": TIME_MS,
    "arrival.rate / mean_rate / rate_max": RATE,
    "arrival.start_rate / end_rate": RATE0,
    "arrival.cv": RATIO,
    "arrival.amplitude": Range(0, 1, hi_open=True, unit="", why="keeps the rate positive"),
    "arrival.duration_s / period_s": TIME_S_POS,
    "arrival.phase_s": Range(-MAX_TIME_S, MAX_TIME_S, unit="s", why=_TIME),
    "isl|osl.value / lo / hi / mean / max_value": TOKENS,
    "isl|osl.sigma": Range(0, 100, unit="", why="lognormal shape; beyond, lengths only pile up "
                                                "at 1 and max_value"),
}

#: Planner knobs (``planner:`` section; ``sim.planner.PlannerConfig`` checks their types).
PLANNER_FIELDS: dict[str, Range] = {
    "load_adjustment_interval_seconds": TIME_S_POS,
    "throughput_adjustment_interval_seconds": TIME_S_POS,
    "max_throughput_scaling_replicas": WORKERS,
    "max_gpu_budget": GPUS,
    "min_gpu_budget": Range(-1, MAX_WORKERS, unit="GPUs", why="-1 disables the floor"),
    "min_endpoint": WORKERS,
    "decode_engine_num_gpu": GPUS,
    "kalman_q_level": WEIGHT,
    "kalman_q_trend": WEIGHT,
    "kalman_r": WEIGHT.with_lo(0, lo_open=True),
    "kalman_min_points": Range(1, MAX_REQUESTS, unit="intervals", why="int32-sized"),
    "load_scaling_down_sensitivity": Range(0, 100, unit="%", why="Dynamo's range"),
    "load_min_observations": Range(1, MAX_REQUESTS, unit="intervals", why="int32-sized"),
    "max_num_fpm_samples": Range(2, 1_000_000, unit="samples",
                                 why="a buffer of forward-pass metrics per worker"),
    "decode_scale_up_kv_rate": Range(0, 100, unit="%", why="Dynamo's range"),
    "decode_scale_down_kv_rate": Range(0, 100, unit="%", why="Dynamo's range"),
    "prefill_engine_num_gpu": GPUS,
    "prefill_min_endpoint": WORKERS,
    "decode_min_endpoint": WORKERS,
    "prefill_scale_up_queue_tokens": TOKENS0,
    "prefill_scale_down_queue_tokens": TOKENS0,
    "scale_down_cooldown_seconds": TIME_S,
    "fpm_samples_per_interval": Range(1, 1000, unit="samples",
                                      why="one sampling event each per interval"),
}

#: Flags of ``dynosim simulate`` checked by argparse: no config field of their own (--tp), or
#: a second spelling of one (so the error names the flag the user typed): (range, type).
FLAG_RANGES: dict[str, tuple[Range, type]] = {
    "--tp": (GPUS, int),
    "--initial-workers": (WORKERS, int),       # cluster.num_workers
    "--startup-time": (TIME_S, float),         # cluster.startup_time_s
}


def field_range(f) -> Range | None:
    """The Range in a dataclass field's metadata (None if it has none)."""
    return f.metadata.get("range")


def _integral(text: str) -> int | None:
    """``"1e3"`` -> 1000; None unless ``text`` is a finite number with an integral value."""
    try:
        x = float(text)
    except ValueError:
        return None
    return int(x) if math.isfinite(x) and x == int(x) else None


def int_arg(text: str) -> int:
    """An argparse ``type=`` for an integer flag: ``"12"`` or ``"1e3"`` (as YAML 1.2 and
    ``--set`` read it); a usage error (exit 2) otherwise."""
    try:
        return int(text)
    except ValueError:
        n = _integral(text)
        if n is None:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        return n


def arg_type(rng: Range, typ: type) -> Callable[[str], Any]:
    """An argparse ``type=`` that parses ``typ`` and checks ``rng`` (usage error, exit 2)."""
    def parse(text: str) -> Any:
        try:
            value = typ(text)
        except ValueError:
            value = _integral(text) if typ is int else None   # "1e3", as YAML and --set read
            if value is None:
                raise argparse.ArgumentTypeError(
                    f"expected {'an integer' if typ is int else 'a number'}, got {text!r}"
                ) from None
        if isinstance(value, float) and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        msg = rng.violation(value)
        if msg:
            raise argparse.ArgumentTypeError(msg)
        return value
    parse.__name__ = typ.__name__
    return parse
