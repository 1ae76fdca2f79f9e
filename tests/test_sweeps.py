"""``dynosim sweep`` (dynosim/studies/sweeps.py): the three planner studies on a tiny window, the
optimum/cliff/frontier helpers on hand-made rows, and one-line input errors."""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex

import pytest

from dynosim.studies import sweeps
from sim.errors import InputError

WINDOW_S = "20"      # tiny window: each point simulates 20 s of the trace


def _parser() -> argparse.ArgumentParser:
    from dynosim.options import Parser
    p = Parser(prog="dynosim")
    sub = p.add_subparsers(dest="command", parser_class=Parser)
    sweeps.add_parser(sub)
    return p


def _args(*argv: str) -> argparse.Namespace:
    return _parser().parse_args(["sweep", *argv])


@pytest.mark.parametrize("study,n_points", [
    ("pareto", len(sweeps.QUICK_STATIC) + 2 + len(sweeps.QUICK_DISAGG)),
    ("interval", len(sweeps.QUICK_INTERVALS_S)),
    ("cold-start", len(sweeps.QUICK_STARTUP_TIMES_S)),
])
def test_quick_study_writes_csv_png_and_table(tmp_path, capsys, study, n_points):
    out = tmp_path / "out"
    rc = sweeps.run(_args(study, "--quick", "--max-sim-time-s", WINDOW_S, "--jobs", "1",
                          "--out", str(out)))
    assert rc == 0
    stem = study.replace("-", "_")
    with open(out / f"{stem}.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        assert tuple(reader.fieldnames) == sweeps.COLUMNS
        rows = list(reader)
    assert len(rows) == n_points
    assert [int(r["point"]) for r in rows] == list(range(n_points))
    assert all(r["study"] == study for r in rows)
    assert all(float(r["gpu_hours"]) > 0 for r in rows)
    png = out / f"{stem}.png"
    assert png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = capsys.readouterr().out
    assert text.count("\n| ") == n_points + 1          # header + one line per point
    if study == "pareto":
        kinds = [r["kind"] for r in rows]
        assert kinds.count("load") == 1 and kinds.count("throughput") == 1
        assert all(int(r["replicas"]) * int(r["tp"]) <= sweeps.MAX_GPU_BUDGET
                   for r in rows if r["kind"] == "static")
        dis = [r for r in rows if r["kind"] == "disagg"]
        assert [tuple(int(r[k]) for k in sweeps.DISAGG_KEYS) for r in dis] == \
            list(sweeps.QUICK_DISAGG)
        for r in dis:       # GPU-hours per role: the pool's TP, summed
            assert float(r["gpu_hours"]) == pytest.approx(
                float(r["prefill_gpu_hours"]) + float(r["decode_gpu_hours"]), rel=1e-5)
            assert float(r["prefill_gpu_hours"]) / float(r["decode_gpu_hours"]) == \
                pytest.approx(int(r["num_prefill_workers"]) * int(r["prefill_tp"])
                              / (int(r["num_decode_workers"]) * int(r["decode_tp"])), rel=1e-4)
            assert r["tp"] == r["replicas"] == ""
        assert "1P1D TP2/2" in text and "2P1D TP2/4" in text
    elif study == "interval":
        assert [float(r["interval_s"]) for r in rows] == list(sweeps.QUICK_INTERVALS_S)
        assert "optimum:" in text
    else:
        assert [float(r["startup_s"]) for r in rows] == list(sweeps.QUICK_STARTUP_TIMES_S)
        assert "cliff:" in text


def test_csv_does_not_depend_on_jobs(tmp_path):
    """Each point is deterministic and the CSV holds no wall-clock value: byte-identical;
    wall times go to the run record."""
    for jobs in ("1", "2"):
        sweeps.run(_args("interval", "--quick", "--max-sim-time-s", WINDOW_S, "--jobs", jobs,
                         "--out", str(tmp_path / jobs)))
    a, b = ((tmp_path / j / "interval.csv").read_bytes() for j in ("1", "2"))
    assert a == b and b"wall" not in a.splitlines()[0]
    info = json.loads((tmp_path / "2" / "interval.run.json").read_text())
    assert info["executor"] == "local" and info["points"] == len(sweeps.QUICK_INTERVALS_S)
    assert len(info["point_wall_s"]) == info["points"] and info["points_per_s"] > 0


def test_disaggregated_point_reproduces_with_its_command(tmp_path, capsys):
    """A disaggregated row's ``command`` column replays it: ``dynosim simulate`` of that
    command gives the row's GPU-hours and p90 TTFT."""
    from dynosim.cli import main
    ns = _args("pareto", "--quick", "--max-sim-time-s", WINDOW_S, "--out", str(tmp_path))
    point = next(p for p in sweeps.make_points("pareto", ns) if p["kind"] == "disagg")
    sweeps.write_csv([sweeps.run_point(point)], tmp_path / "p.csv")
    row = sweeps.read_csv(tmp_path / "p.csv")[0]
    argv = shlex.split(row["command"])[2:]
    assert main(["simulate", *[a for a in argv if a != "--quiet"], "--json", "--quiet"]) == 0
    doc = json.loads(capsys.readouterr().out)
    s = doc.get("summary") or doc
    assert s["totals"]["gpu_hours"] == pytest.approx(row["gpu_hours"], rel=1e-5)
    assert s["latency_ms"]["ttft"]["p90"] == pytest.approx(row["p90_ttft_ms"], rel=1e-5)
    assert "--prefill-tp 2 --decode-tp 2" in row["command"]


def test_full_grids_match_published_setup():
    ns = argparse.Namespace(trace=sweeps.DEFAULT_TRACE, arrival_speedup_ratio=None,
                            quick=False, max_sim_time_s=None,
                            kv_transfer_bandwidth=sweeps.KV_TRANSFER_GBPS,
                            kv_bytes_per_token=sweeps.KV_BYTES_PER_TOKEN)
    assert [p["interval_s"] for p in sweeps.make_points("interval", ns)] == \
        [1, 2, 5, 10, 20, 30, 60, 120, 300]
    cs = sweeps.make_points("cold-start", ns)
    assert [p["startup_s"] for p in cs] == [float(x) for x in range(0, 301, 30)]
    assert all(p["interval_s"] == 10 for p in cs)
    pa = sweeps.make_points("pareto", ns)
    static = [(p["replicas"], p["tp"]) for p in pa if p["kind"] == "static"]
    assert (8, 2) in static and (4, 4) in static and (8, 1) in static
    assert (5, 4) not in static                          # 20 GPUs > budget 16
    assert all(r * tp <= 16 for r, tp in static)
    argv = " ".join(pa[-1]["argv"])
    for flag in ("--router-mode kv", "--model Qwen/Qwen3-32B", "--gpu h200_sxm",
                 "--backend vllm", "--tp 2", "--initial-workers 2", "--max-gpu-budget 16",
                 "--sla-ttft-ms 1500", "--sla-itl-ms 50", "--planner throughput"):
        assert flag in argv
    dis = [p for p in pa if p["kind"] == "disagg"]
    grid = [tuple(p[k] for k in sweeps.DISAGG_KEYS) for p in dis]
    assert len(set(grid)) == len(grid) and (2, 4, 2, 2) in grid and (1, 2, 1, 2) in grid
    for x, tp_p, y, tp_d in grid:      # xPyD within the budget, TP per role from the tables
        assert x * tp_p + y * tp_d in sweeps.DISAGG_TOTAL_GPUS
        assert x * tp_p >= y * tp_d and {tp_p, tp_d} <= set(sweeps.STATIC_TPS)
    assert {(p[1], p[3]) for p in grid} == {(a, b) for a in (1, 2, 4) for b in (1, 2, 4)}
    argv = " ".join(dis[0]["argv"])
    for flag in ("--router-mode kv", "--num-prefill-workers 2", "--num-decode-workers 2",
                 "--prefill-tp 1", "--decode-tp 1", "--kv-transfer-bandwidth 64",
                 "--kv-bytes-per-token 262144"):
        assert flag in argv
    # planners stay last, after the static (aggregated, then disaggregated) points
    assert [p["kind"] for p in pa[-2:]] == ["load", "throughput"]


# -- helpers on hand-made rows -----------------------------------------------------------------

def _iv(interval, ttft, gpu_h, events=0):
    return {"interval_s": interval, "p90_ttft_ms": ttft, "gpu_hours": gpu_h,
            "scaling_events": events}


def test_optimum_interval_is_min_gpu_hours_within_sla():
    rows = [_iv(1, 900, 10.0), _iv(5, 1200, 8.0), _iv(10, 1400, 7.5),
            _iv(60, 5000, 5.0),          # cheapest, but violates the SLA
            _iv(300, float("nan"), 4.0)]  # nothing completed: not eligible
    assert sweeps.optimum_interval(rows, 1500)["interval_s"] == 10
    assert sweeps.optimum_interval(rows, 1300)["interval_s"] == 5
    assert sweeps.optimum_interval(rows, 6000)["interval_s"] == 60
    assert sweeps.optimum_interval(rows, 100) is None
    tie = [_iv(20, 1000, 6.0), _iv(10, 1000, 6.0)]
    assert sweeps.optimum_interval(tie, 1500)["interval_s"] == 10


def test_cold_start_cliff_is_first_startup_over_sla():
    rows = [{"startup_s": s, "p90_ttft_ms": t} for s, t in
            [(60, 1000), (0, 800), (30, 900), (90, 1600), (120, 1400), (150, 9000)]]
    assert sweeps.cold_start_cliff(rows, 1500) == 90     # unsorted input, later dip ignored
    assert sweeps.cold_start_cliff(rows, 10_000) is None
    assert sweeps.cold_start_cliff(rows, 850) == 30
    assert sweeps.cold_start_cliff([{"startup_s": 0, "p90_ttft_ms": None}], 1500) == 0


def test_pareto_front():
    rows = [{"gpu_hours": g, "p90_ttft_ms": t} for g, t in
            [(1, 100), (2, 50), (2, 80), (3, 50), (4, 10), (5, float("nan"))]]
    assert sweeps.pareto_front(rows) == [True, True, False, False, True, False]
    # maximising both (throughput per GPU vs per user): the mirror image
    assert sweeps.pareto_front(rows, maximise=True) == [True, False, True, True, True, False]


def test_markdown_marks_each_kinds_frontier_and_the_joint_one():
    def row(label, kind, g, t):
        return {"label": label, "kind": kind, "gpu_hours": g, "p90_ttft_ms": t,
                "p90_itl_ms": 1.0, "scaling_events": 0, "output_tok_s_per_gpu": 1.0,
                "output_tok_s_per_user": 1.0}
    rows = [row("a1", "static", 4.0, 100.0), row("a2", "static", 8.0, 50.0),
            row("d1", "disagg", 4.0, 80.0), row("d2", "disagg", 8.0, 60.0),
            row("load", "load", 1.0, 1.0)]
    marks = [line.rsplit("|", 2)[1].strip() for line in
             sweeps.markdown_table(rows, "pareto").splitlines()[2:]]
    assert marks == ["yes", "yes, joint", "yes, joint", "yes", ""]


# -- bad input -------------------------------------------------------------------------------

def _one_line(exc: BaseException) -> str:
    msg = str(exc)
    assert "\n" not in msg and msg
    return msg


def test_unknown_study(capsys):
    with pytest.raises(InputError) as ei:
        sweeps.run(argparse.Namespace(study="nope", jobs=1, out="/tmp"))
    assert "unknown study 'nope'" in _one_line(ei.value)
    with pytest.raises(SystemExit) as se:        # the CLI parser: usage error, one line
        _parser().parse_args(["sweep", "nope", "--out", "x"])
    assert se.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "nope" in err


def test_jobs_zero(tmp_path, capsys):
    with pytest.raises(SystemExit) as se:
        _args("interval", "--jobs", "0", "--out", str(tmp_path))
    assert se.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--jobs" in err and "must be >= 1, got 0" in err
    ns = _args("interval", "--out", str(tmp_path))
    ns.jobs = 0                                  # programmatic callers get an InputError
    with pytest.raises(InputError) as ei:
        sweeps.run(ns)
    assert "--jobs" in _one_line(ei.value)


def test_unwritable_out(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(InputError) as ei:
        sweeps.run(_args("interval", "--quick", "--out", str(f)))
    assert "not a directory" in _one_line(ei.value)
    with pytest.raises(InputError) as ei:
        sweeps.run(_args("interval", "--quick", "--out", str(f / "sub")))
    assert "--out" in _one_line(ei.value)
    if os.geteuid() != 0:                        # root can write anywhere
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        try:
            with pytest.raises(InputError) as ei:
                sweeps.run(_args("interval", "--quick", "--out", str(ro)))
            assert "not writable" in _one_line(ei.value)
        finally:
            ro.chmod(0o700)


def test_bad_trace_is_one_line(tmp_path):
    with pytest.raises(InputError) as ei:
        sweeps.run(_args("interval", "--quick", "--trace", str(tmp_path / "missing.jsonl"),
                         "--out", str(tmp_path / "o")))
    _one_line(ei.value)
