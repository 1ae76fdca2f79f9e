"""`dynosim models` and `dynosim simulate --model/--gpu/--backend/--tp` (GPU timing tables)."""
from __future__ import annotations

import json
from pathlib import Path

from dynosim.cli import main
from sim.gpu_timing import list_tables, load_gpu_timing

TINY = str(Path(__file__).resolve().parents[1] / "envs_configs" / "tiny.yaml")


def test_models_lists_every_shipped_table(capsys) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == len(list_tables()) >= 20
    assert {("Qwen/Qwen3-32B", "h200_sxm", "vllm", 2)} <= {
        (r["model"], r["gpu"], r["backend"], r["tp"]) for r in rows}
    assert main(["models"]) == 0
    assert "Qwen/Qwen3-32B" in capsys.readouterr().out


def test_simulate_with_a_gpu_table_takes_kv_capacity_and_gpus_from_it(capsys) -> None:
    table = load_gpu_timing("Qwen/Qwen3-32B", "h200_sxm", "vllm", 2)
    assert main(["simulate", "--config", TINY, "--model", "Qwen/Qwen3-32B", "--gpu", "h200_sxm",
                 "--backend", "vllm", "--tp", "2", "--json", "--quiet"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["totals"]["gpus_per_worker"] == 2
    assert out["config"]["engine"]["num_gpu_blocks"] == table.num_gpu_blocks
    assert out["config"]["timing"]["model"] == "gpu:Qwen/Qwen3-32B:h200_sxm:vllm:2"
    t = out["totals"]
    assert t["completed_requests"] + t["rejected_requests"] + t["in_flight_requests"] == \
        t["num_requests"] > 0
    # an explicit KV size still wins over the table's
    assert main(["simulate", "--config", TINY, "--model", "Qwen/Qwen3-32B", "--gpu", "h200_sxm",
                 "--backend", "vllm", "--tp", "2", "--num-gpu-blocks", "777", "--json",
                 "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["config"]["engine"]["num_gpu_blocks"] == 777


def test_gpu_flags_bad_input_is_one_line_exit_2(capsys) -> None:
    assert main(["simulate", "--config", TINY, "--model", "Qwen/Qwen3-32B", "--gpu",
                 "h200_sxm", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing --backend, --tp" in err and "Traceback" not in err
    assert main(["simulate", "--config", TINY, "--model", "Nope-7B", "--gpu", "h200_sxm",
                 "--backend", "vllm", "--tp", "1", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "available" in err and "Qwen/Qwen3-32B" in err
    assert main(["simulate", "--config", TINY, "--timing", "gpu:Qwen/Qwen3-32B:h200_sxm",
                 "--quiet"]) == 2
    assert "gpu:MODEL:GPU:BACKEND:TP" in capsys.readouterr().err
