"""scripts/plot_heldout_front.py: the held-out leaderboard picture reads every result file
(issue 11) and marks a recipe that meets the pooled target only by giving up episodes."""
from __future__ import annotations

import json
from pathlib import Path

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "docs" / "benchmark"


def _script():
    return load_script("plot_heldout_front")


def test_every_summary_file_is_a_point_with_its_figures():
    mod = _script()
    pts, target = mod.points(BENCH)
    summaries = [f for f in BENCH.glob("learned_*.json")
                 if not f.stem.rsplit("_s", 1)[-1].isdigit()]
    learned = [p for p in pts if p["kind"] in ("learned", "early")]
    assert len(learned) == len(summaries) > 0
    tuned = json.loads((BENCH / "heuristic_load-tuned.json").read_text())
    (p,) = [p for p in pts if p["label"] == "load-tuned"]
    assert p["gpu"] == tuned["gpu_hours_per_episode"]
    assert p["sla"] == 100 * tuned["sla_attainment"]
    # the target box is the tuned planner's attainment at 85 % of its GPU-hours
    assert abs(target["gpu_hours_per_episode_max"] - 0.85 * tuned["gpu_hours_per_episode"]) < 1e-9
    assert abs(target["pooled"]["baseline_sla_attainment"] - tuned["sla_attainment"]) < 1e-9


def test_a_recipe_missing_the_mean_of_episodes_check_is_labelled(tmp_path):
    mod = _script()
    d = json.loads((BENCH / "learned_ppo_r6.json").read_text())
    d["target"]["mean_episode"]["sla_attainment"] = 0.10
    (tmp_path / "learned_ppo_r6.json").write_text(json.dumps(d))
    (pt,), _ = mod.points(tmp_path)
    assert pt["label"].startswith("r6 (mean of episodes 10 % <")
    out = tmp_path / "front.png"
    mod.plot([pt], d["target"], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
