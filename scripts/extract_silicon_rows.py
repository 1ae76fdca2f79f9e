#!/usr/bin/env python
"""Extract the silicon rows we can validate against from aiconfigurator-core's silicon_sample.csv.

Run offline under a venv with ``aiconfigurator-core`` installed (the simulator never needs it):

    /work/aic-venv/bin/python scripts/extract_silicon_rows.py [--out sim/data/silicon/silicon_rows.csv]

``systems/silicon_sample.csv`` in the package holds measured end-to-end TTFT/TPOT means of
static-concurrency benchmark runs (one row per model, GPU, backend version, TP, ISL, OSL,
concurrency). We keep a row only if

* it is an aggregated (``mode == agg``) single-replica run without PP, attention DP or MoE
  parallelism (what ``dynosim.studies.silicon`` replays: one worker of ``tp`` GPUs);
* its (model, GPU, backend, TP) has a shipped table in ``sim/data/gpu_tables`` (model names
  match loosely: organisation prefix, ``Meta-`` and ``-Instruct`` are ignored);
* its weights are bf16, like our tables (which AIC built with its default bf16 GEMM and KV
  cache): rows with a ``precision``/``gemm_quant_mode`` of fp8/fp4/nvfp4, or an FP8/NVFP4
  checkpoint name, are skipped. A blank precision means the checkpoint's native dtype, which
  is bf16 for the kept model (Qwen/Qwen3-32B).

Uses only the standard library plus the installed package's data file, so it also runs under
the project venv if you pass ``--csv`` explicitly.
"""
from __future__ import annotations

import csv
import io
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TABLE_DIR = ROOT / "sim" / "data" / "gpu_tables"
OUT = ROOT / "sim" / "data" / "silicon" / "silicon_rows.csv"
COLUMNS = ["model", "gpu", "backend", "backend_version", "tp", "dtype", "isl", "osl",
           "concurrency", "ttft_ms", "tpot_ms", "source_id"]
QUANT_WORDS = ("fp8", "fp4", "nvfp4", "int8", "int4", "awq", "gptq", "w4a", "w8a")


def norm_model(name: str) -> str:
    s = name.strip().lower().replace("--", "/").rsplit("/", 1)[-1]
    if s.startswith("meta-"):
        s = s[len("meta-"):]
    for suffix in ("-instruct",):
        if s.endswith(suffix):
            s = s[: -len(suffix)]
    return s


def find_csv() -> tuple[Path, str]:
    try:
        import aiconfigurator_core  # noqa: PLC0415
        from importlib.metadata import version  # noqa: PLC0415
    except ImportError:
        sys.exit("aiconfigurator-core is not installed here; run under its venv or pass --csv")
    pkg = Path(aiconfigurator_core.__file__).resolve().parent
    hits = sorted(pkg.rglob("silicon_sample.csv"))
    if not hits:
        sys.exit(f"no silicon_sample.csv under {pkg}")
    return hits[0], version("aiconfigurator-core")


def shipped_tables() -> dict[tuple[str, str, str, int], str]:
    from dynosim.options import read_json
    out = {}
    for p in sorted(TABLE_DIR.glob("*.json")):
        t = read_json(p, dict)
        out[(norm_model(t["model"]), t["gpu"], t["backend"], int(t["tp"]))] = t["model"]
    return out


def dtype_of(r: dict) -> str:
    words = " ".join([r.get("precision") or "", r.get("gemm_quant_mode") or "",
                      r.get("model_path") or ""]).lower()
    for q in QUANT_WORDS:
        if q in words:
            return q
    return "bf16"


def _int(x: str) -> int | None:
    try:
        return int(float(x))
    except (TypeError, ValueError):
        return None


def main(argv: list[str] | None = None) -> int:
    from dynosim.options import Parser, ScriptHelpFormatter
    ap = Parser(prog="extract_silicon_rows.py", description=__doc__, formatter_class=ScriptHelpFormatter)
    ap.add_argument("--csv", type=Path, help="silicon_sample.csv (default: from the package)")
    ap.add_argument("--aic-version", default=None,
                    help="package version to record with --csv (default: unknown)")
    ap.add_argument("--out", type=Path, default=OUT,
                    help="CSV written (default: sim/data/silicon/silicon_rows.csv, the tracked table the simulator "
                         "reads, which this script exists to regenerate)")
    from dynosim.cli import run_script
    return run_script(ap, argv, _run)


def _run(args) -> int:
    if args.csv is not None:
        src, ver = args.csv, args.aic_version or "unknown"
    else:
        src, ver = find_csv()
    tables = shipped_tables()
    kept, why = [], Counter()
    with src.open(newline="") as f:
        for r in csv.DictReader(f):
            tp = _int(r["tp_size"])
            key = (norm_model(r["model_path"]), r["system"], r["backend"], tp)
            if r["mode"] != "agg":
                why["not agg (disagg)"] += 1
                continue
            if (_int(r["pp_size"]) or 1) != 1 or (_int(r["attention_dp_size"]) or 1) > 1:
                why["pp or attention dp"] += 1
                continue
            dt = dtype_of(r)
            same_but_dtype = (norm_model(r["model_path"].replace("-FP8", "").replace("-NVFP4", "")),
                              r["system"], r["backend"], tp)
            if key not in tables and same_but_dtype not in tables:
                why["no table for (model, gpu, backend, tp)"] += 1
                continue
            if dt != "bf16":
                why[f"{dt} weights (tables are bf16)"] += 1
                continue
            conc = _int(r["batch_size"])
            src_meta = r["silicon_data_source"] or ""
            for part in src_meta.split(";"):        # prefer the explicit silicon concurrency
                k, _, v = part.strip().partition("=")
                if k == "silicon_concurrency" and _int(v):
                    conc = _int(v)
            if not conc or not r["silicon_ttft_ms"] or not r["silicon_tpot_ms"]:
                why["missing concurrency/ttft/tpot"] += 1
                continue
            kept.append({"model": tables[key], "gpu": r["system"], "backend": r["backend"],
                         "backend_version": r["backend_version"], "tp": tp, "dtype": dt,
                         "isl": int(r["isl"]), "osl": int(r["osl"]), "concurrency": conc,
                         "ttft_ms": f"{float(r['silicon_ttft_ms']):.3f}",
                         "tpot_ms": f"{float(r['silicon_tpot_ms']):.4f}",
                         "source_id": r["id"]})
    kept.sort(key=lambda d: (d["model"], d["gpu"], d["backend"], d["tp"], d["backend_version"],
                             d["isl"], d["osl"], d["concurrency"]))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(kept)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(buf.getvalue())
    print(f"source {src} (aiconfigurator-core {ver})")
    print(f"kept {len(kept)} rows -> {args.out} ({args.out.stat().st_size:,} bytes)")
    for (m, g, b, v, t), n in sorted(Counter((d["model"], d["gpu"], d["backend"],
                                               d["backend_version"], d["tp"])
                                              for d in kept).items()):
        print(f"  {m} {g} {b} {v} tp{t}: {n}")
    print("skipped:")
    for k, n in why.most_common():
        print(f"  {k}: {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
