"""Trace replay: Mooncake JSONL (with prefix hash_ids and sessions) and the Azure LLM CSV.

Loaders parse and validate the whole file up front (a bad line should fail before a long
run starts, with file, line and field in the message); replay itself is then a cheap walk.

What Dynamo's replay accepts, we accept (``docs/dynamo_replay_semantics.md`` rules 16-19,
checked against ai-dynamo 1.6.1 in ``tests/test_trace_inputs.py``): rows in any timestamp
order (replayed sorted by time, ties in file order), negative timestamps (every arrival is
shifted so the earliest is at 0) and ``output_length: 0`` (the request completes at the end
of its prefill pass without a token). We also read gzip-compressed files (``.jsonl.gz``,
``.csv.gz``, detected by their magic bytes), which Dynamo's mooncake reader does not. What a
loader did beyond a plain read is listed in ``TraceWorkload.notes`` (the CLI prints it).
"""
from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from datetime import date
from operator import attrgetter
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError
from ..request import Request
from ..schema import MAX_TIME_MS, TRACE_FIELDS, WORKLOAD_FIELDS
from .base import Workload, _show, check_int, check_number

_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"


class TraceWorkload(Workload):
    """A parsed trace: open-loop rows and first turns, plus each session turn's successor."""

    def __init__(self, *, name: str, kind: str, path: str, first_turns: list[Request],
                 successors: dict[int, Request], concurrency: int | None,
                 stats: dict[str, Any], notes: list[str] | None = None) -> None:
        self.name = name
        self.kind = kind
        self.path = path
        self.concurrency = concurrency
        self._firsts = first_turns
        self._successors = successors
        self._stats = stats
        #: What the loader did beyond a plain read (sorted rows, shifted timestamps, rows
        #: with no output tokens, gzip), one short clause each; empty for a plain trace.
        self.notes = notes or []

    def describe(self) -> dict[str, Any]:
        out = {"name": self.name, "kind": self.kind, "path": self.path,
               "concurrency": self.concurrency, **self._stats}
        if self.notes:
            out["notes"] = list(self.notes)
        return out

    def _first_turns(self) -> Iterator[Request]:
        return iter(self._firsts)

    def _next_turn(self, request: Request) -> Request | None:
        return self._successors.get(request.index)


def _read_text(path: str | Path, notes: list[str]) -> str:
    """Whole file as text, gunzipped if it starts with gzip's magic bytes (a note says so);
    unreadable files, broken gzip and bad UTF-8 become InputError (bad UTF-8 with a line)."""
    fname = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", file=fname) from None
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise InputError(f"not a readable gzip file ({exc})", file=fname) from None
        notes.append("read as gzip")
    if data.startswith(_BOM):
        data = data[len(_BOM):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise InputError(f"not valid UTF-8 (byte 0x{data[exc.start]:02x})",
                         file=fname, line=line) from None


def _check_params(trace_block_size: Any, arrival_speedup_ratio: Any,
                  concurrency: Any) -> tuple[int, float, int | None]:
    bs = check_int(trace_block_size, "trace_block_size",
                   allowed=WORKLOAD_FIELDS["trace_block_size"])
    speed = check_number(arrival_speedup_ratio, "arrival_speedup_ratio",
                         allowed=WORKLOAD_FIELDS["arrival_speedup_ratio"])
    conc = None if concurrency is None else \
        check_int(concurrency, "concurrency", allowed=WORKLOAD_FIELDS["concurrency"])
    return bs, speed, conc


# -- bounds (sim.schema): every number must fit the types it reaches ------------------------

_MC = TRACE_FIELDS["mooncake"]


def _bound(spec, value, bad, field: str) -> None:
    """Raise ``bad(message, field)`` when ``value`` is outside the field's schema range."""
    msg = spec[0].violation(value)
    if msg:
        raise bad(msg, field)


def _bound_time(what: str, ms: float, bad, field: str) -> None:
    """A rebased, sped-up time must stay where a millisecond is representable."""
    if ms > MAX_TIME_MS:
        raise bad(f"{what} is {ms:.6g} ms after dividing by arrival_speedup_ratio; above "
                  "2^52 ms float64 times lose millisecond precision", field)


def _bound_last_arrival(firsts: list[Request], fname: str, field: str) -> None:
    if firsts:
        last = max(firsts, key=attrgetter("arrival_ms"))
        _bound_time("the arrival after the earliest", last.arrival_ms,
                    lambda m, f: InputError(m, file=fname, line=last.line, field=f), field)


# -- Mooncake JSONL -------------------------------------------------------------------------

def _field(obj: dict, name: str, alias: str, required: bool, fname: str,
           line: int) -> tuple[str, Any]:
    """(name actually used, value) for a field that has an upstream alias."""
    if name in obj:
        if alias in obj:
            raise InputError(f"both '{name}' and its alias '{alias}' given",
                             file=fname, line=line, field=name)
        return name, obj[name]
    if alias in obj:
        return alias, obj[alias]
    if required:
        raise InputError(f"missing required field (alias '{alias}')",
                         file=fname, line=line, field=name)
    return name, None


def load_mooncake(path: str | Path, *, trace_block_size: int = 512,
                  arrival_speedup_ratio: float = 1.0,
                  concurrency: int | None = None) -> TraceWorkload:
    """Load a Mooncake-style JSONL trace (Dynamo ``trace_format="mooncake"``).

    Arrivals are ``(timestamp - earliest timestamp) / arrival_speedup_ratio`` (so the first
    is at 0, negative timestamps included) and replayed in time order, ties in file order
    (Dynamo: ``docs/dynamo_replay_semantics.md`` rule 19). Rows sharing a ``session_id``
    form a session, in file order: turn n+1 is released ``delay`` ms after turn n completes
    (explicit ``delay``/``delay_ms``, unscaled; else the timestamp delta to turn n, divided
    by the speed-up, which must not be negative: Dynamo's "invalid delay"). ``concurrency=N``
    replays closed-loop (timestamps of first turns ignored). ``hash_ids`` beyond
    ``ceil(input_length / trace_block_size)`` carry no tokens and are dropped.
    ``output_length: 0`` is allowed (rule 17: the request ends with its prefill pass); a
    missing ``input_length`` is ``len(hash_ids) * trace_block_size`` and, in closed loop
    only, a missing timestamp is 0 (both as Dynamo).
    """
    bs, speed, conc = _check_params(trace_block_size, arrival_speedup_ratio, concurrency)
    fname = str(path)
    notes: list[str] = []
    text = _read_text(path, notes)

    firsts: list[Request] = []
    successors: dict[int, Request] = {}
    last_turn: dict[str, tuple[int, float]] = {}   # session -> (index, timestamp) of last turn
    t_min = math.inf              # earliest first-turn timestamp: the rebase origin
    t_max = -math.inf             # latest timestamp (span of the trace)
    prev_ts = -math.inf
    n = total_in = total_out = num_unsorted = num_no_output = num_implied = 0
    loads = json.loads

    for lineno, raw in enumerate(text.split("\n"), 1):
        if not raw or raw.isspace():
            continue

        def bad(msg: str, field: str | None = None) -> InputError:
            return InputError(msg, file=fname, line=lineno, field=field)

        try:
            obj = loads(raw)
        except json.JSONDecodeError as exc:
            raise bad(f"invalid JSON: {exc.msg} (column {exc.colno})") from None
        except ValueError as exc:        # e.g. an integer literal over 4300 digits
            raise bad(f"invalid JSON: {' '.join(str(exc).split())[:80]}") from None
        except RecursionError:
            raise bad("invalid JSON: nested too deeply") from None
        if type(obj) is not dict:
            raise bad(f"expected a JSON object, got {type(obj).__name__}")

        # a closed loop ignores arrival times, so there (only) they may be missing (Dynamo)
        key_ts, ts = _field(obj, "timestamp", "created_time", conc is None, fname, lineno)
        if ts is None:
            ts = 0.0
        elif type(ts) not in (int, float) or not math.isfinite(ts):
            raise bad(f"expected a number (ms), got {_show(ts)}", key_ts)
        _bound(_MC["timestamp"], ts, bad, key_ts)

        key_in, inp = _field(obj, "input_length", "input_tokens", False, fname, lineno)
        if inp is not None:
            if type(inp) is not int:
                raise bad(f"expected an integer, got {_show(inp)}", key_in)
            if inp < 1:
                raise bad(f"must be >= 1, got {inp}", key_in)
        key, out = _field(obj, "output_length", "output_tokens", True, fname, lineno)
        if type(out) is not int:
            raise bad(f"expected an integer, got {_show(out)}", key)
        if out < 0:
            raise bad(f"must be >= 0, got {out}", key)
        _bound(_MC["output_length"], out, bad, key)

        ids = obj.get("hash_ids")
        if ids is None:
            raise bad("missing required field", "hash_ids")
        if type(ids) is not list:
            raise bad(f"expected a list of non-negative integers, got {_show(ids)}", "hash_ids")
        if not all(type(h) is int for h in ids) or (ids and min(ids) < 0):
            pos = next(i for i, h in enumerate(ids) if type(h) is not int or h < 0)
            raise bad(f"hash_ids[{pos}] is {_show(ids[pos])}; expected a non-negative "
                      "integer", "hash_ids")
        if ids and max(ids) > _MC["hash_ids[i]"][0].hi:
            pos = ids.index(max(ids))
            _bound(_MC["hash_ids[i]"], ids[pos], bad, f"hash_ids[{pos}]")
        if inp is None:       # Dynamo: a missing input_length is the hash_ids' capacity
            inp = len(ids) * bs
            if inp < 1:
                raise bad("missing, and no hash_ids to take it from", "input_length")
            num_implied += 1
        _bound(_MC["input_length"], inp, bad, key_in)
        if inp > len(ids) * bs:
            raise bad(f"input_length {inp} exceeds hash_ids capacity {len(ids) * bs} "
                      f"({len(ids)} hash_ids x trace_block_size {bs})", "input_length")

        sid = obj.get("session_id")
        if sid is not None:
            if type(sid) not in (str, int):
                raise bad(f"expected a string or integer, got {_show(sid)}", "session_id")
            sid = str(sid)
        key, delay = _field(obj, "delay", "delay_ms", False, fname, lineno)
        if delay is not None:
            if type(delay) not in (int, float) or not math.isfinite(delay) or delay < 0:
                raise bad(f"expected a number >= 0 (ms), got {_show(delay)}", key)
            _bound(_MC["delay"], delay, bad, key)

        need = -(-inp // bs)
        # arrival_ms holds the raw timestamp until the origin is known (rebased below).
        req = Request(index=n, arrival_ms=ts, input_length=inp, output_length=out,
                      hash_ids=tuple(ids) if len(ids) == need else tuple(ids[:need]),
                      trace_block_size=bs, session_id=sid,
                      delay_ms=0.0 if delay is None else float(delay), line=lineno)
        if sid is not None and sid in last_turn:
            prev_index, prev_turn_ts = last_turn[sid]
            if delay is None:
                if ts < prev_turn_ts:
                    raise bad(f"invalid delay {ts - prev_turn_ts:g} ms: earlier than the "
                              f"previous turn of session {sid!r} (turns replay in file "
                              "order; give an explicit 'delay')", key_ts)
                req.delay_ms = (ts - prev_turn_ts) / speed
                _bound_time("delay from the previous turn", req.delay_ms, bad, key_ts)
            successors[prev_index] = req
        else:
            if ts < prev_ts:
                num_unsorted += 1
            prev_ts = ts if ts > prev_ts else prev_ts
            t_min = ts if ts < t_min else t_min
            firsts.append(req)
        if sid is not None:
            last_turn[sid] = (n, ts)
        t_max = ts if ts > t_max else t_max
        n += 1
        num_no_output += out == 0
        total_in += inp
        total_out += out

    if n == 0:
        raise InputError("no requests in file", file=fname)
    for req in firsts:
        req.arrival_ms = (req.arrival_ms - t_min) / speed
    _bound_last_arrival(firsts, fname, "timestamp")
    if t_min < 0:
        notes.append(f"timestamps start at {t_min:g} ms; shifted so the first arrival is at 0")
    _sort_arrivals(firsts, num_unsorted, notes)
    if num_no_output:
        notes.append(f"{num_no_output:,} request{'s' if num_no_output != 1 else ''} with "
                     "output_length 0 (complete at the end of prefill, no TTFT/E2E sample)")
    if num_implied:
        notes.append(f"{num_implied:,} row{'s' if num_implied != 1 else ''} without "
                     "input_length: taken as len(hash_ids) x trace_block_size")
    return TraceWorkload(
        name=_trace_name(fname), kind="mooncake", path=fname, first_turns=firsts,
        successors=successors, concurrency=conc, notes=notes,
        stats={"num_requests": n, "num_sessions": len(last_turn),
               "num_first_turns": len(firsts), "span_ms": (t_max - t_min) / speed,
               "mean_input_length": total_in / n, "mean_output_length": total_out / n,
               "trace_block_size": bs, "arrival_speedup_ratio": speed})


def _sort_arrivals(firsts: list[Request], num_unsorted: int, notes: list[str]) -> None:
    """Replay order: by arrival time, ties in file order (a stable sort), as Dynamo does."""
    if num_unsorted:
        firsts.sort(key=attrgetter("arrival_ms"))
        notes.append(f"{num_unsorted:,} row{'s' if num_unsorted != 1 else ''} earlier than a "
                     "previous row; replayed in time order (ties in file order)")


def _trace_name(fname: str) -> str:
    """``conv.jsonl`` and ``conv.jsonl.gz`` are both named ``conv``."""
    p = Path(fname)
    return Path(p.stem).stem if p.suffix.lower() == ".gz" else p.stem


# -- Azure LLM inference CSV ----------------------------------------------------------------

_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_TS_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?")


def load_azure(path: str | Path, *, arrival_speedup_ratio: float = 1.0,
               concurrency: int | None = None) -> TraceWorkload:
    """Load an Azure LLM inference trace CSV (``TIMESTAMP,ContextTokens,GeneratedTokens``).

    Timestamps are parsed to integer nanoseconds so the 7 fractional digits survive exactly;
    only the final rebased difference becomes a float of ms. No prefix info (``hash_ids``
    is None). Line numbers count the header as line 1. The same leniency as the Mooncake
    loader: rows in any order (replayed sorted by time, ties in file order; arrivals
    measured from the earliest), ``GeneratedTokens`` 0 allowed, gzip read.
    """
    _, speed, conc = _check_params(512, arrival_speedup_ratio, concurrency)
    fname = str(path)
    notes: list[str] = []
    lines = _read_text(path, notes).split("\n")
    header = [c.strip() for c in lines[0].rstrip("\r").split(",")]
    missing = [c for c in _AZURE_COLUMNS if c not in header]
    if missing or not lines[0].strip():
        raise InputError(f"expected a CSV header with columns {','.join(_AZURE_COLUMNS)}, "
                         f"got {lines[0].strip()[:80]!r}", file=fname, line=1,
                         field=missing[0] if missing else None)
    i_ts, i_in, i_out = (header.index(c) for c in _AZURE_COLUMNS)
    ncols = len(header)

    firsts: list[Request] = []
    stamps: list[int] = []        # integer ns, so the rebase below is exact
    day_cache: dict[str, int] = {}
    prev_ns = -1
    total_in = total_out = num_unsorted = num_no_output = 0
    for lineno, raw in enumerate(lines[1:], 2):
        if not raw or raw.isspace():
            continue
        cols = raw.rstrip("\r").split(",")
        if len(cols) != ncols:
            raise InputError(f"expected {ncols} columns, got {len(cols)}",
                             file=fname, line=lineno)
        ns = _azure_ns(cols[i_ts].strip(), day_cache, fname, lineno)
        inp = _azure_count(cols[i_in], "ContextTokens", fname, lineno, 1)
        out = _azure_count(cols[i_out], "GeneratedTokens", fname, lineno, 0)
        if ns < prev_ns:
            num_unsorted += 1
        else:
            prev_ns = ns
        firsts.append(Request(index=len(firsts), arrival_ms=0.0, input_length=inp,
                              output_length=out, line=lineno))
        stamps.append(ns)
        num_no_output += out == 0
        total_in += inp
        total_out += out

    n = len(firsts)
    if n == 0:
        raise InputError("no requests in file", file=fname)
    ns0 = min(stamps)
    for req, ns in zip(firsts, stamps):
        req.arrival_ms = (ns - ns0) / 1e6 / speed
    _bound_last_arrival(firsts, fname, "TIMESTAMP")
    _sort_arrivals(firsts, num_unsorted, notes)
    if num_no_output:
        notes.append(f"{num_no_output:,} request{'s' if num_no_output != 1 else ''} with "
                     "GeneratedTokens 0 (complete at the end of prefill, no TTFT/E2E sample)")
    return TraceWorkload(
        name=_trace_name(fname), kind="azure", path=fname, first_turns=firsts, successors={},
        concurrency=conc, notes=notes,
        stats={"num_requests": n, "num_sessions": 0, "num_first_turns": n,
               "span_ms": (max(stamps) - ns0) / 1e6 / speed, "mean_input_length": total_in / n,
               "mean_output_length": total_out / n, "arrival_speedup_ratio": speed})


def _azure_ns(text: str, day_cache: dict[str, int], fname: str, line: int) -> int:
    """``YYYY-MM-DD HH:MM:SS.fffffff`` -> integer nanoseconds since 0001-01-01."""
    m = _TS_RE.fullmatch(text)
    bad = None
    if m is None:
        bad = "expected 'YYYY-MM-DD HH:MM:SS[.fffffff]'"
    else:
        y, mo, d, hh, mi, ss, frac = m.groups()
        day = day_cache.get(text[:10])
        if day is None:
            try:
                day = day_cache[text[:10]] = date(int(y), int(mo), int(d)).toordinal()
            except ValueError as exc:
                bad = f"invalid date: {exc}"
        if bad is None and (int(hh) > 23 or int(mi) > 59 or int(ss) > 59):
            bad = "invalid time of day"
    if bad is not None:
        raise InputError(f"{bad}, got {text[:40]!r}", file=fname, line=line, field="TIMESTAMP")
    secs = (day * 86400 + int(hh) * 3600 + int(mi) * 60 + int(ss))
    return secs * 1_000_000_000 + (int(frac.ljust(9, "0")) if frac else 0)


def _azure_count(text: str, field: str, fname: str, line: int, minimum: int) -> int:
    """A token count >= ``minimum`` written as plain ASCII digits."""
    s = text.strip()
    if not (s.isascii() and s.isdigit()):
        raise InputError(f"expected a non-negative integer, got {s[:40]!r}",
                         file=fname, line=line, field=field)
    value = int(s) if len(s) <= 40 else 10**40      # no 5,000-digit int parsing
    if value < minimum:
        raise InputError(f"must be >= {minimum}, got {value}", file=fname, line=line,
                         field=field)
    msg = TRACE_FIELDS["azure"][field][0].violation(value)
    if msg:
        raise InputError(msg if len(s) <= 40 else msg.replace(str(value), s[:20] + "..."),
                         file=fname, line=line, field=field)
    return value
