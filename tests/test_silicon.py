"""`dynosim.studies.silicon`: silicon rows from aiconfigurator-core, their replay, MAPE and the CLI table."""
from __future__ import annotations

import argparse
import json

import pytest

from dynosim.studies import silicon
from sim.errors import InputError
from sim.gpu_timing import list_tables


def _args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    silicon.add_parser(p.add_subparsers(dest="command"))
    return p.parse_args(["validate", "silicon", *argv])


def test_rows_load_and_each_has_a_table() -> None:
    rows = silicon.load_rows()
    assert len(rows) >= 100
    have = {(t["model"], t["gpu"], t["backend"], t["tp"]) for t in list_tables()}
    for r in rows:
        assert silicon.group_key(r) in have
        assert r["dtype"] == "bf16"
        assert r["isl"] > 0 and r["osl"] > 1 and r["concurrency"] > 0
        assert r["ttft_ms"] > 0 and r["tpot_ms"] > 0
    assert silicon.DYNAMO_GROUP in {silicon.group_key(r) for r in rows}
    # Dynamo's counterpart rows (ISL=OSL=1024, c 8..128) are all there
    assert sorted(r["concurrency"] for r in silicon._dynamo_subset(rows)) == [8, 16, 32, 64, 128]


def test_replay_of_a_small_row_gives_positive_plausible_numbers() -> None:
    row = next(r for r in silicon.load_rows() if silicon.group_key(r) == silicon.DYNAMO_GROUP
               and r["isl"] == 1024 and r["osl"] == 128 and r["concurrency"] == 8)
    p = silicon.replay_row(row)
    assert p["num_requests"] == p["completed"] == 80
    for k in ("pred_ttft_ms", "pred_tpot_ms", "pred_tps_gpu", "pred_tps_gpu_run"):
        assert p[k] > 0, k
    # within a factor of two of the measurement (a replay, not a curve fit)
    assert 0.5 < p["pred_ttft_ms"] / row["ttft_ms"] < 2
    assert 0.5 < p["pred_tpot_ms"] / row["tpot_ms"] < 2
    assert p["pred_tps_gpu"] == pytest.approx(silicon.tps_per_gpu(
        8, 128, p["pred_ttft_ms"], p["pred_tpot_ms"], 2))


def test_mape_on_hand_made_numbers() -> None:
    assert silicon.mape([110, 90], [100, 100]) == pytest.approx(10.0)
    assert silicon.mape([150, 100, 25], [100, 100, 50]) == pytest.approx(100 / 3)
    with pytest.raises(ValueError):
        silicon.mape([1, 2], [1])
    base = {"model": "M", "gpu": "g", "backend": "vllm", "tp": 2, "isl": 100, "osl": 11,
            "concurrency": 4, "backend_version": "0.1"}
    # silicon: e2e = 100 + 10*10 = 200 ms -> 4*11/0.2/2 = 110 tok/s/GPU
    rows = [dict(base, ttft_ms=100.0, tpot_ms=10.0, pred_ttft_ms=120.0, pred_tpot_ms=9.0,
                 pred_tps_gpu=99.0),
            dict(base, ttft_ms=200.0, tpot_ms=20.0, pred_ttft_ms=200.0, pred_tpot_ms=25.0,
                 pred_tps_gpu=55.0),
            dict(base, tp=4, ttft_ms=50.0, tpot_ms=5.0, pred_ttft_ms=25.0, pred_tpot_ms=5.0,
                 pred_tps_gpu=1.0)]
    assert silicon.silicon_tps_gpu(rows[0]) == pytest.approx(110.0)
    table = silicon.mape_table(rows)
    assert [(e["group"], e["n"]) for e in table] == [("M/g/vllm/tp2", 2), ("M/g/vllm/tp4", 1)]
    e = table[0]
    assert e["mape_ttft"] == pytest.approx((20 + 0) / 2)
    assert e["mape_tpot"] == pytest.approx((10 + 25) / 2)
    # second row silicon: e2e 400 ms -> 4*11/0.4/2 = 55 -> 0% error; first row 10%
    assert e["mape_tps_gpu"] == pytest.approx(5.0)
    assert table[1]["mape_ttft"] == pytest.approx(50.0)


def test_run_prints_a_markdown_row_per_group_and_dynamo_numbers(capsys) -> None:
    assert silicon.run(_args()) == 0
    out = capsys.readouterr().out
    groups = {silicon.group_name(silicon.group_key(r)) for r in silicon.load_rows()}
    assert len(groups) >= 5
    lines = out.splitlines()
    assert lines[0].startswith("| group |")
    for g in groups:
        assert sum(line.startswith(f"| {g} |") for line in lines) == 1, g
    assert "8.5%" in out and "13.8%" in out and "16.1%" in out
    assert "Ours on the same 5 rows" in out


def test_run_json_with_group_filter(capsys) -> None:
    assert silicon.run(_args("--json", "--group", "vllm/tp2")) == 0
    out = json.loads(capsys.readouterr().out)
    assert [g["group"] for g in out["groups"]] == ["Qwen/Qwen3-32B/h100_sxm/vllm/tp2"]
    g = out["groups"][0]
    assert g["n"] == len(out["rows"]) == 30
    assert g["silicon_versions"] == ["0.12.0"] and g["table_version"] == "0.24.0"
    assert out["dynamo"]["published_mape"] == {"ttft": 8.5, "tpot": 13.8, "tps_gpu": 16.1}
    ours = out["dynamo"]["ours_same_rows"]
    assert ours["n"] == 5
    # the replay should be in the same league as Dynamo's Mocker (not a tuned bound)
    assert ours["mape_ttft"] < 30 and ours["mape_tpot"] < 30 and ours["mape_tps_gpu"] < 30


def test_bad_group_is_an_input_error_one_liner(capsys) -> None:
    with pytest.raises(InputError) as ei:
        silicon.run(_args("--group", "nope-7b"))
    msg = str(ei.value)
    assert "\n" not in msg and "nope-7b" in msg and "Qwen/Qwen3-32B/h100_sxm/vllm/tp2" in msg
    assert silicon.main(["--group", "nope-7b"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dynosim: error:") and "Traceback" not in err
