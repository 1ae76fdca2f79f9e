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


def test_points_on_the_same_spot_share_one_label():
    """A recipe whose every seed is a heuristic (round 9 and its bare base) is one label,
    "A = B", not two labels fighting over one spot; points apart keep their own."""
    mod = _script()
    pts = [{"label": "base", "gpu": 4.2300, "sla": 64.70},
           {"label": "r9", "gpu": 4.2301, "sla": 64.71},
           {"label": "r8", "gpu": 4.63, "sla": 64.70}]
    assert [p["label"] for p in mod.merge_coincident(pts)] == ["base\n= r9", None, "r8"]


def test_a_recipe_missing_the_mean_of_episodes_check_is_labelled(tmp_path):
    mod = _script()
    d = json.loads((BENCH / "learned_ppo_r6.json").read_text())
    d["target"]["mean_episode"]["sla_attainment"] = 0.10
    (tmp_path / "learned_ppo_r6.json").write_text(json.dumps(d))
    (pt,), _ = mod.points(tmp_path)
    assert pt["label"].startswith("r6\n(episode mean 10 % <")
    out = tmp_path / "front.png"
    mod.plot([pt], d["target"], out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_labels_keep_off_each_other_the_markers_and_the_error_bars(tmp_path, monkeypatch):
    """The README's picture, drawn from the shipped result files: no label box (2 px
    padding) overlaps another label, any point's marker or any error bar (the label
    "oracle:schedule at planner's SLA" once sat on r4d's bar and a marker). adjustText runs
    a fixed number of iterations (``ADJUST``), so the layout is the same on any machine."""
    import itertools

    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import LineCollection
    from matplotlib.figure import Figure

    mod = _script()
    assert all("iter_lim" in t for t in mod.ADJUST_TRIALS)   # not a time limit
    figs = []
    real = Figure.savefig
    monkeypatch.setattr(Figure, "savefig",
                        lambda self, *a, **k: (figs.append(self), real(self, *a, **k))[1])
    pts, target = mod.points(BENCH)
    mod.plot(pts, target, tmp_path / "front.png")
    fig = figs[-1]
    ax = fig.axes[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    texts = [t for t in ax.texts if t.get_text().strip()]
    assert len(texts) == sum(p["label"] is not None for p in pts)
    boxes = {t.get_text(): t.get_window_extent(renderer).padded(2.0) for t in texts}
    assert [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes.items(), 2)
            if ba.overlaps(bb)] == []
    segments = [ax.transData.transform(s) for c in ax.collections
                if isinstance(c, LineCollection) for s in c.get_segments()]
    assert len(segments) >= 2 * sum(p["kind"] == "learned" and p["gpu_std"] > 0
                                    and p["sla_std"] > 0 for p in pts)   # the bars drawn
    on_bar = {label for label, box in boxes.items() for (x0, y0), (x1, y1) in segments
              for f in np.linspace(0.0, 1.0, 60) if box.contains(x0 + f * (x1 - x0),
                                                                  y0 + f * (y1 - y0))}
    assert on_bar == set()
    on_marker = [(label, p["label"]) for label, box in boxes.items() for p in pts
                 if box.padded(3.0).contains(*ax.transData.transform((p["gpu"], p["sla"])))]
    assert on_marker == []


def test_the_hindsight_front_interpolates_between_measured_levels_only():
    mod = _script()
    front = [(50.0, 2.0), (60.0, 3.0), (80.0, 3.5)]
    assert mod.front_gpu(front, 55.0) == 2.5
    assert mod.front_gpu(front, 70.0) == 3.25
    assert mod.front_gpu(front, 80.0) == 3.5
    assert mod.front_gpu(front, 49.9) is None and mod.front_gpu(front, 80.1) is None
    rec = mod.gaps([{"label": "p", "kind": "learned", "sla": 70.0, "gpu": 3.9},
                    {"label": "q", "kind": "heuristic", "sla": 20.0, "gpu": 1.0}],
                   {"gpu_hours_per_episode_max": 2.75,
                    "pooled": {"baseline_sla_attainment": 0.55}}, front)
    assert rec["points"][0]["excess_over_hindsight"] == 0.2          # 3.9 / 3.25 - 1
    assert rec["points"][1]["excess_over_hindsight"] is None        # outside the front
    assert rec["target"]["excess_allowed"] == 0.1                   # 2.75 / 2.5 - 1


def test_a_front_file_scored_at_another_target_is_refused(tmp_path):
    import pytest

    from sim.errors import InputError
    mod = _script()
    d = json.loads((BENCH / "hindsight_front" / "oracle_schedule_sla70.json").read_text())
    d["episodes_plan"]["sla_target"] = 0.75
    (tmp_path / "hindsight_front").mkdir()
    (tmp_path / "hindsight_front" / "oracle_schedule_sla70.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="sla_target"):
        mod.hindsight_front(tmp_path)


def test_the_shipped_gaps_file_is_what_the_result_files_give():
    """docs/benchmark/hindsight_front/gaps.json is regenerated from the committed result
    files alone (`--gaps`), and the front rises with attainment (more SLA never costs the
    local search less here; a dip would mean a level's search got stuck)."""
    mod = _script()
    pts, target = mod.points(BENCH)
    front = mod.hindsight_front(BENCH)
    assert len(front) == len(mod.FRONT)
    assert all(g0 < g1 for (_, g0), (_, g1) in zip(front, front[1:]))
    shipped = json.loads((BENCH / "hindsight_front" / "gaps.json").read_text())
    assert shipped == json.loads(json.dumps(mod.gaps(pts, target, front)))
    (tuned,) = [r for r in shipped["points"] if r["label"] == "load-tuned"]
    assert tuned["excess_over_hindsight"] > shipped["target"]["excess_allowed"] > 0


def test_gaps_png_without_gaps_is_a_one_line_error(tmp_path, capsys):
    mod = _script()
    rc = mod.main(["--out", str(tmp_path / "f.png"), "--gaps-png", str(tmp_path / "g.png")])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--gaps-png" in err[0] and "--gaps" in err[0]
    assert not (tmp_path / "g.png").exists()
