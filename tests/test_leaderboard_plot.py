"""``agents.leaderboard.plot_replicas``: every panel shows the same episode, so the
right-hand (arrival rate, queued / 10) axis has one scale for all panels; before, each
panel autoscaled to its own queue (0-10 in one, 0-100 in the next), so the same arrivals
looked different per policy."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from agents.leaderboard import plot_replicas  # noqa: E402


def _result(policy: str, queued: list[int]) -> SimpleNamespace:
    n = len(queued)
    trace = {"t_s": [5.0 * (i + 1) for i in range(n)],
             "arrival_rate_rps": [2.0 + (i % 3) for i in range(n)],
             "queued_requests": queued, "active_workers": [2] * n,
             "starting_workers": [0] * n}
    return SimpleNamespace(policy=policy, traces=[trace], sla_attainment=0.5,
                           gpu_hours_per_episode=1.0, mean_reward=-1.0)


def test_panels_of_one_episode_share_the_arrivals_axis(tmp_path: Path, monkeypatch) -> None:
    figs = []
    monkeypatch.setattr(plt, "close", lambda fig=None: figs.append(fig))
    results = [_result("heuristic:load", [0] * 10),          # arrivals only: top 4 req/s
               _result("heuristic:static", [0, 50, 900, 30, 0, 0, 0, 0, 0, 0]),
               _result("heuristic:throughput", [5] * 10)]
    out = tmp_path / "replicas_vs_load.png"
    plot_replicas(results, out, tmp_path)
    assert out.stat().st_size > 5000 and len(figs) == 1
    fig = figs[0]
    left, right = fig.axes[:3], fig.axes[3:]
    assert len(right) == 3
    limits = {ax.get_ylim() for ax in right}
    assert len(limits) == 1, limits
    assert limits.pop()[1] >= 90.0            # the largest queue / 10 fits in every panel
    assert len({ax.get_ylim() for ax in left}) == 1
