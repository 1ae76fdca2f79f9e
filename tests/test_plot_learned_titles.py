"""``scripts/plot_learned.py``'s panel titles (s9 polish)."""
from __future__ import annotations

from pathlib import Path

from conftest import load_script


def test_plot_learned_titles_name_the_run_not_the_machine_path(tmp_path: Path,
                                                                monkeypatch) -> None:
    """scripts/plot_learned.py's titles showed a run by its absolute path
    (``/work/exp/runs/ppo_r8/s3 on held-out ...``): now relative to the repository, or
    ``NAME/sSEED`` outside it."""
    from types import SimpleNamespace

    import matplotlib.axes
    mod = load_script("plot_learned")
    root = mod.ROOT
    assert mod.policy_label("/work/exp/runs/ppo_r8/s3") == "ppo_r8/s3"
    assert mod.policy_label("/work/exp/runs/ppo_r8/s3/model.zip") == "ppo_r8/s3"
    assert mod.policy_label(str(root / "runs" / "learned" / "ppo" / "s0")) == \
        "runs/learned/ppo/s0"
    monkeypatch.chdir(root)
    assert mod.policy_label("runs/quick") == "runs/quick"
    for spec in ("heuristic:load-tuned", "pretrained:autoscaler", "oracle:schedule"):
        assert mod.policy_label(spec) == spec
    n = 40
    trace = {"t_s": [5.0 * (k + 1) for k in range(n)],
             "active_workers": [1] * 10 + [2] * 10 + [3] * 20,
             "starting_workers": [0] * 9 + [1] + [0] * 9 + [1] + [0] * 20,
             "queued_requests": [k % 7 for k in range(n)],
             "arrival_rate_rps": [1.0 + (k % 5) for k in range(n)]}
    ep = {"seed": 0, "setup": {"scenario": "flash_crowd"}, "sla_attainment": 0.5,
          "gpu_hours": 1.0, "scaling_events": 2, "reversals": 0, "flaps": 0,
          "flap_steps": [], "steps": n}
    titles = []
    real = matplotlib.axes.Axes.set_title

    def spy(self, label, *args, **kwargs):
        titles.append(label)
        return real(self, label, *args, **kwargs)
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", spy)
    mod.plot([SimpleNamespace(policy="/work/exp/runs/ppo_r8/s3", traces=[trace],
                              per_episode=[ep])], tmp_path / "f.png")
    assert titles and titles[0].startswith("ppo_r8/s3 on held-out flash_crowd"), titles
    assert "/work/exp" not in " ".join(titles)
