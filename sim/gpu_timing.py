"""Pass timing for real GPUs from tables derived from aiconfigurator-core (AIC) 0.12.0.

The tables in ``sim/data/gpu_tables`` are made offline by ``scripts/gen_gpu_tables.py``
(which needs the optional ``[aic]`` extra); this module needs only numpy, so the simulator
never depends on AIC's 0.6 GB stack. One file per (model, GPU, backend, TP); see the script
for what a file holds. Like Dynamo's AIC-backed mocker, prefill and decode of a pass are
predicted separately and added by the engine.

* prefill: trilinear lookup over (log num_seqs, new tokens, cached tokens); piecewise
  linear in tokens between log-spaced nodes, linear extrapolation past the last node.
* decode: ``(a + b*B + c*KV) * residual(B, KV/B)``; the residual grid is clamped at its
  edges, so beyond B 512 or context 32k the linear part extrapolates.

Durations go through the same nanosecond clock (``modeled_ms``) as the other models.
"""
from __future__ import annotations

import json
import math
from bisect import bisect_right
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import InputError
from .timing import TimingModel, _to_ns, modeled_ms, modeled_ms_array

TABLE_DIR = Path(__file__).resolve().parent / "data" / "gpu_tables"
FORMAT = "dynosim-gpu-table/1"


def _norm_model(name: str) -> str:
    """``meta-llama/Meta-Llama-3.1-8B``, ``Llama-3.1-8B`` and ``llama-3.1-8b`` all match."""
    s = name.strip().lower().replace("--", "/").rsplit("/", 1)[-1]
    return s[len("meta-"):] if s.startswith("meta-") else s


def _norm_gpu(name: str) -> str:
    s = name.strip().lower()
    return s if "_" in s else s + "_sxm"


@lru_cache(maxsize=1)
def _index() -> tuple[dict, ...]:
    out = []
    for p in sorted(TABLE_DIR.glob("*.json")):
        with p.open() as f:
            t = json.load(f)
        if t.get("format") != FORMAT:
            continue
        out.append({"model": t["model"], "gpu": t["gpu"], "backend": t["backend"],
                    "backend_version": t["backend_version"], "tp": int(t["tp"]),
                    "num_gpu_blocks": int(t["kv"]["num_gpu_blocks"]),
                    "block_size": int(t["kv"]["block_size"]),
                    "kv_bytes_per_token": int(t["kv"]["kv_bytes_per_token"]),
                    "path": str(p)})
    return tuple(out)


def list_tables() -> list[dict]:
    """One entry per shipped (model, gpu, backend, tp), with its KV pool and file path."""
    return [dict(e) for e in _index()]


@lru_cache(maxsize=None)
def _read(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def _available() -> str:
    groups: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for e in _index():
        groups.setdefault((e["model"], e["tp"]), []).append((e["gpu"], e["backend"]))
    parts = []
    for (model, tp), pairs in groups.items():
        gpus = sorted({g for g, _ in pairs})
        bes = sorted({b for _, b in pairs})
        if len(pairs) == len(gpus) * len(bes):
            parts.append(f"{model} tp{tp} on {'|'.join(gpus)} x {'|'.join(bes)}")
        else:
            parts.append(f"{model} tp{tp} on " + ",".join(f"{g}/{b}" for g, b in sorted(pairs)))
    return "; ".join(parts) if parts else "none (sim/data/gpu_tables is empty)"


def load_gpu_timing(model: str, gpu: str, backend: str, tp: int, *, speedup_ratio: float = 1.0,
                    decode_speedup_ratio: float = 1.0) -> "GpuTableTiming":
    """Timing model for a shipped combination; InputError (one line) if there is none."""
    try:
        tp_i = int(tp)
    except (TypeError, ValueError):
        raise InputError(f"tp must be an integer, got {tp!r}", field="tp") from None
    want = (_norm_model(model), _norm_gpu(gpu), backend.strip().lower(), tp_i)
    for e in _index():
        if (_norm_model(e["model"]), e["gpu"], e["backend"], e["tp"]) == want:
            return GpuTableTiming(_read(e["path"]), speedup_ratio=speedup_ratio,
                                  decode_speedup_ratio=decode_speedup_ratio, source=e["path"])
    raise InputError(f"no GPU timing table for model {model!r}, gpu {gpu!r}, backend {backend!r}, "
                     f"tp {tp}; available: {_available()}", field="timing")


def _seg(nodes: list[float], x: float) -> tuple[int, float]:
    """Segment index and fraction, clamped to [0, 1] at the ends."""
    last = len(nodes) - 1
    if x <= nodes[0]:
        return 0, 0.0
    if x >= nodes[last]:
        return last - 1, 1.0
    i = bisect_right(nodes, x) - 1
    return i, (x - nodes[i]) / (nodes[i + 1] - nodes[i])


def _seg_extrap(nodes: list[float], x: float) -> tuple[int, float]:
    """Like ``_seg`` but the fraction may exceed 1 past the last node (linear extrapolation)."""
    last = len(nodes) - 1
    if x <= nodes[0]:
        return 0, 0.0
    i = min(bisect_right(nodes, x) - 1, last - 1)
    return i, (x - nodes[i]) / (nodes[i + 1] - nodes[i])


class GpuTableTiming(TimingModel):
    """Prefill and decode pass times of one (model, GPU, backend, TP) from its AIC table."""

    decode_depends_on_kv_only = False

    def __init__(self, table: dict, *, speedup_ratio: float = 1.0,
                 decode_speedup_ratio: float = 1.0, source: str | None = None) -> None:
        if table.get("format") != FORMAT:
            raise InputError(f"not a {FORMAT} table", file=source, field="format")
        if not (speedup_ratio > 0 and decode_speedup_ratio > 0
                and math.isfinite(speedup_ratio) and math.isfinite(decode_speedup_ratio)):
            raise InputError("speed-up ratios must be positive", file=source,
                             field="speedup_ratio")
        self.source = source
        self.meta = {k: table[k] for k in ("model", "gpu", "backend", "backend_version", "tp",
                                           "aiconfigurator_core_version", "attribution")}
        self.model, self.gpu, self.backend = table["model"], table["gpu"], table["backend"]
        self.backend_version = table["backend_version"]
        self.tp = int(table["tp"])
        self.gpus_per_worker = self.tp * int(table.get("pp", 1))
        kv = table["kv"]
        self.kv_bytes_per_token = int(kv["kv_bytes_per_token"])
        self.kv_capacity_tokens = int(kv["kv_capacity_tokens"])
        self.block_size = int(kv["block_size"])
        self.num_gpu_blocks = int(kv["num_gpu_blocks"])
        self.speedup_ratio = float(speedup_ratio)
        self.decode_speedup_ratio = float(decode_speedup_ratio)
        self._decode_speedup = self.speedup_ratio * self.decode_speedup_ratio

        pf = table["prefill"]
        self._pn = [float(x) for x in pf["num_seqs"]]
        self._pn_log = [math.log(x) for x in self._pn]
        self._pt = [float(x) for x in pf["new_tokens"]]
        self._pp = [float(x) for x in pf["cached_tokens"]]
        self._pms = [[[float(v) for v in row] for row in plane] for plane in pf["ms"]]
        shape = np.asarray(pf["ms"], dtype=float).shape
        if shape != (len(self._pn), len(self._pt), len(self._pp)):
            raise InputError(f"prefill grid shape {shape} does not match its axes", file=source,
                             field="prefill.ms")

        dc = table["decode"]
        self._a, self._b, self._c = float(dc["a"]), float(dc["b"]), float(dc["c"])
        self._db = [float(x) for x in dc["batch_size"]]
        self._dc = [float(x) for x in dc["context_per_seq"]]
        self._dr = [[float(v) for v in row] for row in dc["residual"]]
        self._dc_arr = np.asarray(self._dc)
        self._dr_arr = np.asarray(self._dr)
        if self._dr_arr.shape != (len(self._db), len(self._dc)):
            raise InputError("decode residual shape does not match its axes", file=source,
                             field="decode.residual")
        self._native_pass = self._make_native_pass()

    def _make_native_pass(self):
        """``sim._kvpool.TableTiming`` for this table (a pass's prefill and decode times in
        C, bit-identical to the methods below), or None without the native module (or with
        ``DYNOSIM_PURE_PYTHON``: the Python model is the reference)."""
        from . import kv_cache as _kv
        if _kv.NativeKvPool is None:
            return None
        from ._kvpool import TableTiming
        f8 = lambda x: np.asarray(x, dtype=np.float64).tobytes()  # noqa: E731
        return TableTiming(f8(self._pn_log), f8(self._pt), f8(self._pp), f8(self._pms),
                           self._a, self._b, self._c, f8(self._db), f8(self._dc),
                           f8(self._dr), _to_ns)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_native_pass"] = None          # a C object: made again after unpickling
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._native_pass = self._make_native_pass()

    # -- raw model (milliseconds before the nanosecond clock) ----------------------------
    def _plane(self, k: int, it: int, ft: float, ip: int, fp: float) -> float:
        z = self._pms[k]
        r0, r1 = z[it], z[it + 1]
        lo = r0[ip] * (1.0 - fp) + r0[ip + 1] * fp
        hi = r1[ip] * (1.0 - fp) + r1[ip + 1] * fp
        return lo * (1.0 - ft) + hi * ft

    def raw_prefill_ms(self, new_tokens: int, cached_tokens: int = 0, num_seqs: int = 1) -> float:
        if new_tokens <= 0:
            return 0.0
        n = max(1, min(int(num_seqs), int(new_tokens)))
        it, ft = _seg_extrap(self._pt, float(new_tokens))
        ip, fp = _seg_extrap(self._pp, float(max(0, cached_tokens)))
        k, fk = _seg(self._pn_log, math.log(n))
        ms = self._plane(k, it, ft, ip, fp)
        if fk > 0.0:
            ms = ms * (1.0 - fk) + self._plane(k + 1, it, ft, ip, fp) * fk
        return ms

    def raw_decode_ms(self, batch_size: int, total_kv_tokens: int) -> float:
        if batch_size <= 0:
            return 0.0
        lin = (self._a + self._b * batch_size) + self._c * total_kv_tokens
        i, fx = _seg(self._db, float(batch_size))
        j, fy = _seg(self._dc, total_kv_tokens / batch_size)
        z0, z1 = self._dr[i], self._dr[i + 1]
        r = ((z0[j] * (1.0 - fy) + z0[j + 1] * fy) * (1.0 - fx)
             + (z1[j] * (1.0 - fy) + z1[j + 1] * fy) * fx)
        return lin * r

    def raw_decode_ms_array(self, batch_size: int, total_kv_tokens: np.ndarray) -> np.ndarray:
        """``raw_decode_ms`` over many KV totals: same float operations in the same order."""
        kv = np.asarray(total_kv_tokens, dtype=np.int64)
        lin = (self._a + self._b * batch_size) + self._c * kv.astype(np.float64)
        i, fx = _seg(self._db, float(batch_size))
        cps = kv / batch_size
        nodes = self._dc_arr
        last = len(nodes) - 1
        j = np.clip(np.searchsorted(nodes, cps, side="right") - 1, 0, last - 1)
        fy = (cps - nodes[j]) / (nodes[j + 1] - nodes[j])
        fy = np.where(cps <= nodes[0], 0.0, np.where(cps >= nodes[last], 1.0, fy))
        z0, z1 = self._dr_arr[i], self._dr_arr[i + 1]
        r = ((z0[j] * (1.0 - fy) + z0[j + 1] * fy) * (1.0 - fx)
             + (z1[j] * (1.0 - fy) + z1[j + 1] * fy) * fx)
        return lin * r

    def native_stretch_ends(self):
        """``f(now, ctx0, n, k, to_ns) -> bytes`` of the end times of k decode passes of a batch
        of n, computed in C (``sim._kvpool``), or None when that is unavailable or the decode
        speed-up is not 1. Bit-identical to ``decode_ms`` pass by pass."""
        if self._decode_speedup != 1.0:
            return None
        try:
            from ._kvpool import table_decode_ends
        except ImportError:
            return None
        nodes = self._dc_arr.astype(np.float64).tobytes()
        rows: dict[int, tuple] = {}
        a, b, c = self._a, self._b, self._c

        def ends(now: float, ctx0: int, n: int, k: int, to_ns) -> bytes:
            row = rows.get(n)
            if row is None:
                i, fx = _seg(self._db, float(n))
                row = rows[n] = (fx, self._dr_arr[i].tobytes(), self._dr_arr[i + 1].tobytes())
            return table_decode_ends(now, ctx0, n, k, a, b, c, row[0], nodes, row[1], row[2],
                                     to_ns)
        return ends

    # -- TimingModel -------------------------------------------------------------------
    def prefill_ms(self, new_tokens: int, cached_tokens: int = 0, num_seqs: int = 1) -> float:
        native = self._native_pass
        if native is not None and self.speedup_ratio == 1.0:
            try:
                return native.prefill_ms(new_tokens, cached_tokens, num_seqs)
            except TypeError:       # not ints (e.g. a planner's float estimate): below
                pass
        if new_tokens <= 0:
            return 0.0
        return modeled_ms(self.raw_prefill_ms(new_tokens, cached_tokens, num_seqs),
                          self.speedup_ratio)

    def decode_ms(self, batch_size: int, active_kv_tokens: int, total_kv_tokens: int = 0,
                  capacity_tokens: int = 1) -> float:
        native = self._native_pass
        if native is not None and self._decode_speedup == 1.0:
            try:
                return native.decode_ms(batch_size, total_kv_tokens)
            except TypeError:       # not ints: below
                pass
        if batch_size <= 0:
            return 0.0
        return modeled_ms(self.raw_decode_ms(batch_size, total_kv_tokens), self._decode_speedup)

    def decode_ms_array(self, batch_size: int, total_kv_tokens: np.ndarray,
                        capacity_tokens: int = 1) -> np.ndarray:
        """Hook for ``sim.timing.decode_ms_series``: bit-identical to ``decode_ms`` per pass."""
        if batch_size <= 0:
            return np.zeros(len(total_kv_tokens))
        return modeled_ms_array(self.raw_decode_ms_array(batch_size, total_kv_tokens),
                                self._decode_speedup)

    def describe(self) -> str:
        return f"gpu:{self.model}:{self.gpu}:{self.backend}:tp{self.tp}"
