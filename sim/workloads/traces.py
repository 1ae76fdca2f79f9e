"""Trace replay: Mooncake JSONL (with prefix hash_ids and sessions) and the Azure LLM CSV.

Loaders parse and validate the whole file up front (a bad line should fail before a long
run starts, with file, line and field in the message); replay itself is then a cheap walk.
"""
from __future__ import annotations

import json
import math
import re
from datetime import date
from pathlib import Path
from typing import Any, Iterator

from ..errors import InputError
from ..request import Request
from ..schema import MAX_TIME_MS, TRACE_FIELDS, WORKLOAD_FIELDS
from .base import Workload, _show, check_int, check_number

_BOM = b"\xef\xbb\xbf"


class TraceWorkload(Workload):
    """A parsed trace: open-loop rows and first turns, plus each session turn's successor."""

    def __init__(self, *, name: str, kind: str, path: str, first_turns: list[Request],
                 successors: dict[int, Request], concurrency: int | None,
                 stats: dict[str, Any]) -> None:
        self.name = name
        self.kind = kind
        self.path = path
        self.concurrency = concurrency
        self._firsts = first_turns
        self._successors = successors
        self._stats = stats

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "path": self.path,
                "concurrency": self.concurrency, **self._stats}

    def _first_turns(self) -> Iterator[Request]:
        return iter(self._firsts)

    def _next_turn(self, request: Request) -> Request | None:
        return self._successors.get(request.index)


def _read_text(path: str | Path) -> str:
    """Whole file as text; unreadable files and bad UTF-8 become InputError with a line."""
    fname = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", file=fname) from None
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


def _bound_arrival(arrival_ms: float, bad, field: str) -> None:
    """The rebased, sped-up arrival must stay where a millisecond is representable."""
    if arrival_ms > MAX_TIME_MS:
        raise bad(f"arrival {arrival_ms:.6g} ms after the first request (divided by "
                  f"arrival_speedup_ratio) exceeds 2^52 ms, where float64 times lose "
                  "millisecond precision", field)


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

    Arrivals are rebased so the first is at 0 and divided by ``arrival_speedup_ratio``.
    Rows sharing a ``session_id`` form a session: turn n+1 is released ``delay`` ms after
    turn n completes (explicit ``delay``/``delay_ms``, unscaled; else the timestamp delta to
    turn n, divided by the speed-up). ``concurrency=N`` replays closed-loop (timestamps of
    first turns ignored). ``hash_ids`` beyond ``ceil(input_length / trace_block_size)``
    carry no tokens and are dropped. Timestamps must be non-decreasing.
    """
    bs, speed, conc = _check_params(trace_block_size, arrival_speedup_ratio, concurrency)
    fname = str(path)
    text = _read_text(path)

    firsts: list[Request] = []
    successors: dict[int, Request] = {}
    last_turn: dict[str, tuple[int, float]] = {}   # session -> (index, timestamp) of last turn
    t0 = prev_ts = 0.0
    prev_line = 0
    n = total_in = total_out = 0
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

        key, ts = _field(obj, "timestamp", "created_time", True, fname, lineno)
        if type(ts) not in (int, float) or not math.isfinite(ts):
            raise bad(f"expected a number (ms), got {_show(ts)}", key)
        if ts < 0:
            raise bad(f"must be >= 0, got {ts}", key)
        _bound(_MC["timestamp"], ts, bad, key)
        if n and ts < prev_ts:
            raise bad(f"timestamp {ts} is earlier than {prev_ts} on line {prev_line}; "
                      "requests must be sorted by arrival time", key)

        key, inp = _field(obj, "input_length", "input_tokens", True, fname, lineno)
        if type(inp) is not int:
            raise bad(f"expected an integer, got {_show(inp)}", key)
        if inp < 1:
            raise bad(f"must be >= 1, got {inp}", key)
        _bound(_MC["input_length"], inp, bad, key)
        key, out = _field(obj, "output_length", "output_tokens", True, fname, lineno)
        if type(out) is not int:
            raise bad(f"expected an integer, got {_show(out)}", key)
        if out < 1:
            raise bad(f"must be >= 1, got {out}", key)
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

        if n == 0:
            t0 = ts
        need = -(-inp // bs)
        _bound_arrival((ts - t0) / speed, bad, key)
        req = Request(index=n, arrival_ms=(ts - t0) / speed, input_length=inp,
                      output_length=out,
                      hash_ids=tuple(ids) if len(ids) == need else tuple(ids[:need]),
                      trace_block_size=bs, session_id=sid,
                      delay_ms=0.0 if delay is None else float(delay), line=lineno)
        if sid is not None and sid in last_turn:
            prev_index, prev_turn_ts = last_turn[sid]
            if delay is None:
                req.delay_ms = (ts - prev_turn_ts) / speed
            successors[prev_index] = req
        else:
            firsts.append(req)
        if sid is not None:
            last_turn[sid] = (n, ts)
        prev_ts, prev_line = ts, lineno
        n += 1
        total_in += inp
        total_out += out

    if n == 0:
        raise InputError("no requests in file", file=fname)
    return TraceWorkload(
        name=Path(fname).stem, kind="mooncake", path=fname, first_turns=firsts,
        successors=successors, concurrency=conc,
        stats={"num_requests": n, "num_sessions": len(last_turn),
               "num_first_turns": len(firsts), "span_ms": (prev_ts - t0) / speed,
               "mean_input_length": total_in / n, "mean_output_length": total_out / n,
               "trace_block_size": bs, "arrival_speedup_ratio": speed})


# -- Azure LLM inference CSV ----------------------------------------------------------------

_AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_TS_RE = re.compile(r"(\d{4})-(\d{2})-(\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?")


def load_azure(path: str | Path, *, arrival_speedup_ratio: float = 1.0,
               concurrency: int | None = None) -> TraceWorkload:
    """Load an Azure LLM inference trace CSV (``TIMESTAMP,ContextTokens,GeneratedTokens``).

    Timestamps are parsed to integer nanoseconds so the 7 fractional digits survive exactly;
    only the final rebased difference becomes a float of ms. No prefix info (``hash_ids``
    is None). Line numbers count the header as line 1.
    """
    _, speed, conc = _check_params(512, arrival_speedup_ratio, concurrency)
    fname = str(path)
    lines = _read_text(path).split("\n")
    header = [c.strip() for c in lines[0].rstrip("\r").split(",")]
    missing = [c for c in _AZURE_COLUMNS if c not in header]
    if missing or not lines[0].strip():
        raise InputError(f"expected a CSV header with columns {','.join(_AZURE_COLUMNS)}, "
                         f"got {lines[0].strip()[:80]!r}", file=fname, line=1,
                         field=missing[0] if missing else None)
    i_ts, i_in, i_out = (header.index(c) for c in _AZURE_COLUMNS)
    ncols = len(header)

    firsts: list[Request] = []
    day_cache: dict[str, int] = {}
    ns0 = prev_ns = 0
    prev_line = 0
    total_in = total_out = 0
    for lineno, raw in enumerate(lines[1:], 2):
        if not raw or raw.isspace():
            continue
        cols = raw.rstrip("\r").split(",")
        if len(cols) != ncols:
            raise InputError(f"expected {ncols} columns, got {len(cols)}",
                             file=fname, line=lineno)
        ns = _azure_ns(cols[i_ts].strip(), day_cache, fname, lineno)
        inp = _azure_count(cols[i_in], "ContextTokens", fname, lineno)
        out = _azure_count(cols[i_out], "GeneratedTokens", fname, lineno)
        if firsts and ns < prev_ns:
            raise InputError(f"timestamp {cols[i_ts].strip()} is earlier than the one on line "
                             f"{prev_line}; requests must be sorted by arrival time",
                             file=fname, line=lineno, field="TIMESTAMP")
        if not firsts:
            ns0 = ns
        _bound_arrival((ns - ns0) / 1e6 / speed,
                       lambda m, f: InputError(m, file=fname, line=lineno, field=f), "TIMESTAMP")
        firsts.append(Request(index=len(firsts), arrival_ms=(ns - ns0) / 1e6 / speed,
                              input_length=inp, output_length=out, line=lineno))
        prev_ns, prev_line = ns, lineno
        total_in += inp
        total_out += out

    n = len(firsts)
    if n == 0:
        raise InputError("no requests in file", file=fname)
    return TraceWorkload(
        name=Path(fname).stem, kind="azure", path=fname, first_turns=firsts, successors={},
        concurrency=conc,
        stats={"num_requests": n, "num_sessions": 0, "num_first_turns": n,
               "span_ms": (prev_ns - ns0) / 1e6 / speed, "mean_input_length": total_in / n,
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


def _azure_count(text: str, field: str, fname: str, line: int) -> int:
    """A token count >= 1 written as plain ASCII digits."""
    s = text.strip()
    if not (s.isascii() and s.isdigit()):
        raise InputError(f"expected a positive integer, got {s[:40]!r}",
                         file=fname, line=line, field=field)
    value = int(s) if len(s) <= 40 else 10**40      # no 10^6-digit int parsing
    if value < 1:
        raise InputError(f"must be >= 1, got {value}", file=fname, line=line, field=field)
    msg = TRACE_FIELDS["azure"][field][0].violation(value)
    if msg:
        raise InputError(msg if len(s) <= 40 else msg.replace(str(value), s[:20] + "..."),
                         file=fname, line=line, field=field)
    return value
