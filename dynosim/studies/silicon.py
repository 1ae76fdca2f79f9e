"""Validation against silicon: replay AIC's measured static-concurrency runs and report MAPE.

``sim/data/silicon/silicon_rows.csv`` (made by ``scripts/extract_silicon_rows.py`` from
aiconfigurator-core 0.12.0's ``systems/silicon_sample.csv``; see the README beside it) holds
measured mean TTFT and TPOT of benchmark runs at a fixed concurrency, for each (model, GPU,
backend, TP) we ship a timing table for. ``replay_row`` reproduces such a run the way Dynamo's
``h100_qwen3_counterpart`` replay does (aiconfigurator's counterpart replay): one worker of
``tp`` GPUs, block size 64, ``max_num_batched_tokens`` 2048, ``max_num_seqs`` 256, the KV pool
of the table (``gpu_memory_utilization`` 0.9), a closed loop at the row's concurrency with
``10 x concurrency`` requests of fixed ISL/OSL; TTFT counts from dispatch.

Metrics compared (means over requests):

* TTFT and TPOT: the simulator's ``latency_ms.ttft.mean`` / ``latency_ms.tpot.mean``.
* TPS/GPU (output tokens/s per GPU): the silicon rows carry no throughput, so for both sides
  it is derived from the means the same way, ``c * OSL / (TTFT + (OSL-1) * TPOT) / TP``
  (steady-state closed loop). The simulator's own whole-run figure
  (``totals.output_throughput_tok_s / TP``, which includes ramp-up and drain) is also
  returned as ``pred_tps_gpu_run`` and its MAPE reported as ``mape_tps_gpu_run``.

Version mismatch: the silicon rows were measured with older engines (vLLM 0.12.0, SGLang
0.5.1.post1 / 0.5.8.post1) than the perf data behind our tables (AIC's current vLLM 0.24.0,
SGLang 0.5.14), so part of any error is engine drift, not simulator error. Each backend is
replayed with its own scheduler core (``sim.engines``): vLLM rows as above, SGLang rows with
the SGLang core at Dynamo's SGLang defaults (one-token pages over the table's pool, chunked
prefill 8192, max prefill tokens 16384). Rows with fp8/fp4 weights are left out because the
tables are bf16.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

import sim
from sim.errors import InputError

DATA = Path(sim.__file__).resolve().parent / "data" / "silicon" / "silicon_rows.csv"

# Dynamo's published replay MAPE for H100 SXM, Qwen3-32B, vLLM, TP2, ISL=OSL=1024, c 8..128
# (scripts/h100_qwen3_counterpart/README.md; Mocker replay vs silicon_sample.csv).
DYNAMO_GROUP = ("Qwen/Qwen3-32B", "h100_sxm", "vllm", 2)
DYNAMO_MAPE = {"ttft": 8.5, "tpot": 13.8, "tps_gpu": 16.1}
DYNAMO_AIC_ALONE_MAPE = {"ttft": 24.7, "tpot": 14.6, "tps_gpu": 17.3}

REPLAY = {"block_size": 64, "max_num_batched_tokens": 2048, "max_num_seqs": 256,
          "requests_per_concurrency": 10}

_INT = ("tp", "isl", "osl", "concurrency")
_FLOAT = ("ttft_ms", "tpot_ms")
PRED_KEYS = ("pred_ttft_ms", "pred_tpot_ms", "pred_tps_gpu")


@lru_cache(maxsize=4)
def _read(path: str) -> tuple[dict, ...]:
    out = []
    with open(path, newline="") as f:
        for i, r in enumerate(csv.DictReader(f), start=2):
            try:
                for k in _INT:
                    r[k] = int(r[k])
                for k in _FLOAT:
                    r[k] = float(r[k])
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"bad silicon row: {exc}", file=path, line=i) from None
            out.append(r)
    return tuple(out)


def load_rows(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The shipped silicon rows (fresh dicts): model, gpu, backend, backend_version, tp,
    dtype, isl, osl, concurrency, ttft_ms, tpot_ms, source_id."""
    return [dict(r) for r in _read(str(path or DATA))]


def group_key(row: dict) -> tuple[str, str, str, int]:
    return (row["model"], row["gpu"], row["backend"], int(row["tp"]))


def group_name(key: Sequence) -> str:
    model, gpu, backend, tp = key
    return f"{model}/{gpu}/{backend}/tp{tp}"


def tps_per_gpu(concurrency: float, osl: float, ttft_ms: float, tpot_ms: float,
                tp: float) -> float:
    """Steady-state closed-loop output tokens/s per GPU from mean TTFT and TPOT."""
    e2e_s = (ttft_ms + (osl - 1) * tpot_ms) / 1000.0
    return concurrency * osl / e2e_s / tp if e2e_s > 0 else 0.0


def silicon_tps_gpu(row: dict) -> float:
    return tps_per_gpu(row["concurrency"], row["osl"], row["ttft_ms"], row["tpot_ms"], row["tp"])


def replay_row(row: dict, *, seed: int = 0, requests_per_concurrency: int | None = None,
               max_num_batched_tokens: int | None = None, timing: Any = None) -> dict[str, Any]:
    """Simulate one static-concurrency run; returns predicted means and throughput.

    Keys: ``pred_ttft_ms``, ``pred_tpot_ms``, ``pred_tps_gpu`` (derived like the silicon
    side, see the module doc), ``pred_tps_gpu_run`` (whole-run output tokens/s / TP),
    ``num_requests``, ``completed``, ``preemptions``, ``num_gpu_blocks``, ``table_version``.
    ``timing`` replaces the row's timing model for the passes (the table still gives the KV
    pool and GPUs per worker): ``bench/silicon_side_by_side.py`` replays with Dynamo's NPZ
    lookup this way.
    """
    from sim.engine import EngineConfig
    from sim.gpu_timing import load_gpu_timing
    from sim.simulator import ClusterConfig, Simulation
    from sim.workloads.synthetic import closed_loop, fixed, synthetic

    table = load_gpu_timing(row["model"], row["gpu"], row["backend"], int(row["tp"]))
    c, isl, osl = int(row["concurrency"]), int(row["isl"]), int(row["osl"])
    n = c * (requests_per_concurrency or REPLAY["requests_per_concurrency"])
    wl = synthetic(np.random.default_rng(seed), arrival=closed_loop(c), isl=fixed(isl),
                   osl=fixed(osl), num_requests=n)
    if row["backend"] == "sglang":
        # SGLang's own scheduler core at Dynamo's SGLang defaults: one-token pages (the
        # table's pool, in tokens), chunked prefill 8192, max prefill tokens 16384.
        engine = EngineConfig(backend="sglang", block_size=1,
                              num_gpu_blocks=table.num_gpu_blocks * table.block_size,
                              max_num_seqs=REPLAY["max_num_seqs"])
    else:
        engine = EngineConfig(block_size=REPLAY["block_size"],
                              num_gpu_blocks=table.num_gpu_blocks,
                              max_num_batched_tokens=(max_num_batched_tokens
                                                      or REPLAY["max_num_batched_tokens"]),
                              max_num_seqs=REPLAY["max_num_seqs"])
    sim = Simulation(wl, engine=engine, timing=table if timing is None else timing, seed=seed,
                     cluster=ClusterConfig(num_workers=1, gpus_per_worker=table.gpus_per_worker))
    s = sim.run().summary
    lat, tot = s["latency_ms"], s["totals"]
    ttft, tpot = lat["ttft"]["mean"], lat["tpot"]["mean"]
    gpus = table.gpus_per_worker
    return {"pred_ttft_ms": ttft, "pred_tpot_ms": tpot,
            "pred_tps_gpu": tps_per_gpu(c, osl, ttft, tpot, gpus),
            "pred_tps_gpu_run": tot["output_throughput_tok_s"] / gpus,
            "num_requests": n, "completed": tot["completed_requests"],
            "preemptions": tot["num_preemptions"], "num_gpu_blocks": table.num_gpu_blocks,
            "table_version": table.backend_version}


def mape(pred: Iterable[float], actual: Iterable[float]) -> float:
    """Mean absolute percentage error, in percent, of ``pred`` against ``actual``."""
    p, a = np.asarray(list(pred), dtype=float), np.asarray(list(actual), dtype=float)
    if p.shape != a.shape or p.size == 0:
        raise ValueError("mape needs two non-empty sequences of equal length")
    return float(np.mean(np.abs(p - a) / np.abs(a)) * 100.0)


def replay_rows(rows: Iterable[dict], **kw: Any) -> list[dict]:
    """Rows with their predictions merged in (rows that already carry them are kept)."""
    out = []
    for r in rows:
        r = dict(r)
        if not all(k in r for k in PRED_KEYS):
            r.update(replay_row(r, **kw))
        out.append(r)
    return out


def mape_table(rows: Iterable[dict], **kw: Any) -> list[dict[str, Any]]:
    """One entry per (model, GPU, backend, TP): n, versions, MAPE of TTFT, TPOT and TPS/GPU.

    Rows without ``pred_*`` keys are replayed first (``replay_row``); rows with them are
    taken as they are, so hand-made predictions can be scored.
    """
    groups: dict[tuple, list[dict]] = {}
    for r in replay_rows(rows, **kw):
        groups.setdefault(group_key(r), []).append(r)
    out = []
    for key in sorted(groups):
        g = groups[key]
        ent = {"group": group_name(key), "model": key[0], "gpu": key[1], "backend": key[2],
               "tp": key[3], "n": len(g),
               "silicon_versions": sorted({str(r.get("backend_version", "")) for r in g}),
               "table_version": g[0].get("table_version"),
               "mape_ttft": mape([r["pred_ttft_ms"] for r in g], [r["ttft_ms"] for r in g]),
               "mape_tpot": mape([r["pred_tpot_ms"] for r in g], [r["tpot_ms"] for r in g]),
               "mape_tps_gpu": mape([r["pred_tps_gpu"] for r in g],
                                    [silicon_tps_gpu(r) for r in g])}
        if all("pred_tps_gpu_run" in r for r in g):
            ent["mape_tps_gpu_run"] = mape([r["pred_tps_gpu_run"] for r in g],
                                           [silicon_tps_gpu(r) for r in g])
        out.append(ent)
    return out


def select_rows(rows: list[dict], group: str | None) -> list[dict]:
    """Rows whose group name contains ``group`` (case-insensitive); InputError if none."""
    if not group:
        return rows
    want = group.strip().lower()
    sel = [r for r in rows if want in group_name(group_key(r)).lower()]
    if not sel:
        names = sorted({group_name(group_key(r)) for r in rows})
        raise InputError(f"no silicon group matches {group!r}; groups: {', '.join(names)}",
                         field="--group")
    return sel


def _dynamo_subset(rows: list[dict]) -> list[dict]:
    """The rows Dynamo's counterpart replayed: Qwen3-32B H100 vLLM TP2, ISL=OSL=1024."""
    return [r for r in rows if group_key(r) == DYNAMO_GROUP and r["isl"] == r["osl"] == 1024]


def format_markdown(table: list[dict], *, dynamo_subset: dict | None = None) -> str:
    run_col = all("mape_tps_gpu_run" in e for e in table)
    head = "| group | silicon version | table version | n | TTFT MAPE % | TPOT MAPE % | TPS/GPU MAPE %"
    sep = "| --- | --- | --- | ---: | ---: | ---: | ---:"
    if run_col:
        head += " | TPS/GPU (run) MAPE %"
        sep += " | ---:"
    lines = [head + " |", sep + " |"]
    for e in table:
        line = (f"| {e['group']} | {', '.join(e['silicon_versions'])} | {e['table_version']} "
                f"| {e['n']} | {e['mape_ttft']:.1f} | {e['mape_tpot']:.1f} "
                f"| {e['mape_tps_gpu']:.1f}")
        if run_col:
            line += f" | {e['mape_tps_gpu_run']:.1f}"
        lines.append(line + " |")
    d, a = DYNAMO_MAPE, DYNAMO_AIC_ALONE_MAPE
    lines.append("")
    lines.append(f"Dynamo published (Mocker replay, {group_name(DYNAMO_GROUP)}, ISL=OSL=1024, "
                 f"c 8-128): TTFT {d['ttft']}%, TPOT {d['tpot']}%, TPS/GPU {d['tps_gpu']}% "
                 f"(AIC alone: {a['ttft']}%, {a['tpot']}%, {a['tps_gpu']}%).")
    if dynamo_subset is not None:
        s = dynamo_subset
        lines.append(f"Ours on the same {s['n']} rows: TTFT {s['mape_ttft']:.1f}%, TPOT "
                     f"{s['mape_tpot']:.1f}%, TPS/GPU {s['mape_tps_gpu']:.1f}%.")
    lines.append("Silicon rows were measured with older engines than the tables' perf data "
                 "(silicon vs table version above); each backend is replayed with its own "
                 "scheduler core (vLLM, SGLang); TPS/GPU = c*OSL/(TTFT+(OSL-1)*TPOT)/TP on "
                 "both sides.")
    return "\n".join(lines)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``validate silicon`` to a ``dynosim`` subparsers object; returns ``validate``."""
    v = subparsers.add_parser("validate", help="compare the simulator with measured data",
                              description="Compare simulator predictions with measurements.")
    vs = v.add_subparsers(dest="validate_command", metavar="WHAT")
    s = vs.add_parser("silicon", help="replay AIC's silicon_sample.csv runs; MAPE per group",
                      description="Replay the measured static-concurrency runs shipped in "
                      "sim/data/silicon (from aiconfigurator-core 0.12.0) and print the MAPE "
                      "of TTFT, TPOT and TPS/GPU per (model, GPU, backend, TP).")
    s.add_argument("--json", action="store_true",
                   help="print {groups, rows, dynamo} as JSON instead of Markdown")
    s.add_argument("--group", metavar="TEXT",
                   help="only groups whose name (MODEL/GPU/BACKEND/tpN) contains TEXT (default: all)")
    return v


def run(args: argparse.Namespace) -> int:
    """``dynosim validate silicon``; raises InputError (one line) on a bad ``--group``."""
    if getattr(args, "validate_command", "silicon") != "silicon":
        raise InputError("validate needs a target: silicon", field="validate")
    rows = replay_rows(select_rows(load_rows(), getattr(args, "group", None)))
    table = mape_table(rows)
    sub = _dynamo_subset(rows)
    subset = mape_table(sub)[0] if sub else None
    if getattr(args, "json", False):
        json.dump({"groups": table, "rows": rows,
                   "dynamo": {"group": group_name(DYNAMO_GROUP), "published_mape": DYNAMO_MAPE,
                              "published_aic_alone_mape": DYNAMO_AIC_ALONE_MAPE,
                              "ours_same_rows": subset},
                   "replay": REPLAY}, sys.stdout, indent=1)
        print()
    else:
        print(format_markdown(table, dynamo_subset=subset))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry: ``python -m dynosim.studies.silicon [--json] [--group G]``."""
    p = argparse.ArgumentParser(prog="dynosim")
    add_parser(p.add_subparsers(dest="command"))
    try:
        args = p.parse_args(["validate", "silicon", *(argv or [])])
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return run(args)
    except InputError as exc:
        print(f"dynosim: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
