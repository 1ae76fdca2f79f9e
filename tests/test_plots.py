"""Plots the project writes are readable (issue 12): no two text labels overlap, axes say
what they show with units, the CDF guide lines are labelled."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from conftest import simulate
from dynosim.plots import plot_latency_cdfs
from sim.workloads import load_mooncake

REPO = Path(__file__).resolve().parents[1]


def _capture(monkeypatch) -> list[Figure]:
    figs: list[Figure] = []
    real = Figure.savefig

    def savefig(self, *a, **kw):
        figs.append(self)
        return real(self, *a, **kw)
    monkeypatch.setattr(Figure, "savefig", savefig)
    return figs


def _overlaps(texts) -> list[tuple[str, str]]:
    boxes = [(t.get_text(), t.get_window_extent()) for t in texts if t.get_text().strip()]
    return [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]


def test_leaderboard_front_labels_do_not_overlap(monkeypatch, tmp_path: Path) -> None:
    pytest.importorskip("stable_baselines3")
    from agents.evaluate import Evaluation
    from agents.leaderboard import plot_front
    figs = _capture(monkeypatch)
    # the case: heuristic:throughput and heuristic:load almost on top of each other
    pts = {"heuristic:load": (0.531, 0.533), "heuristic:throughput": (0.532, 0.535),
           "heuristic:static": (0.667, 0.817), "runs/ppo": (0.668, 0.816),
           "runs/ppo_gpu_weight_0.008": (0.669, 0.815), "runs/ppo_long_name_seed1": (0.60, 0.70)}
    results = [Evaluation.from_record(   # a v0.1 record (per-episode GPU-hours)
        dict(policy=p, episodes=2, mean_reward=0.0, std_reward=0.0, sla_attainment=s,
             gpu_hours=g, ttft_p90_ms=1.0, itl_p90_ms=1.0, requests_decided=1))
        for p, (g, s) in pts.items()]
    plot_front(results, tmp_path / "front.png", Path("runs"))
    ax = figs[-1].axes[0]
    labels = [t for t in ax.texts if t.get_text() in {"heuristic:load", "heuristic:throughput",
                                                      "heuristic:static", "ppo",
                                                      "ppo_gpu_weight_0.008",
                                                      "ppo_long_name_seed1"}]
    assert len(labels) == 6
    assert _overlaps(labels) == []
    assert "GPU-hours" in ax.get_xlabel() and "%" in ax.get_ylabel()


def test_cdf_plot_labels_guides_and_units(monkeypatch, tmp_path: Path) -> None:
    figs = _capture(monkeypatch)
    res = simulate(load_mooncake(REPO / "tests" / "data" / "peer_smoke.jsonl"), exact=False,
                   num_workers=2)
    plot_latency_cdfs(res, tmp_path / "cdf.png")
    fig = figs[-1]
    main_axes = [a for a in fig.axes if a.get_title()]
    assert [a.get_title() for a in main_axes] == ["TTFT", "ITL", "End-to-end latency"]
    for ax in main_axes:
        assert "(ms" in ax.get_xlabel()
        assert "fraction" in ax.get_ylabel() and "≤ x" in ax.get_ylabel()
    fig.canvas.draw()
    guides = [[t.get_text() for t in c.get_yticklabels()] for a in main_axes
              for c in a.child_axes]
    assert guides == [["p50", "p90", "p99"]] * 3
    for ax in main_axes:        # within a panel, no label sits on another
        texts = [t for a in (ax, *ax.child_axes)
                 for t in (*a.get_yticklabels(), *a.get_xticklabels(), a.xaxis.label,
                           a.yaxis.label, a.title) if t.get_visible()]
        assert _overlaps(texts) == []
