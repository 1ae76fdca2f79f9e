"""Polish round 5 (s11): figure titles name what they show, the static policy's panel says
what it holds, the unread-planner-knob note is given once per run."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from matplotlib.figure import Figure

from conftest import load_script

ROOT = Path(__file__).resolve().parents[1]


def _titles(monkeypatch) -> list[str]:
    """Every axes title of every figure saved from now on."""
    titles: list[str] = []
    real = Figure.savefig

    def savefig(self, *a, **kw):
        titles.extend(t for ax in self.axes for t in (ax.get_title(), ax.get_title("left"))
                      if t)
        return real(self, *a, **kw)
    monkeypatch.setattr(Figure, "savefig", savefig)
    return titles


def _record(policy: str, seeds: list[int], families: list[str], **extra) -> dict:
    """A result record (``Evaluation.as_dict()``'s keys the figures read)."""
    return {"policy": policy, "episodes": len(seeds), "mean_reward": 0.0, "std_reward": 0.0,
            "sla_attainment": 0.5, "gpu_hours_per_episode": 1.0, "p90_ttft_ms": 1.0,
            "p90_itl_ms": 1.0, "env_id": "DynoSim-v0", "episodes_plan": {"split": "eval"},
            "per_episode": [{"seed": s, "setup": {"scenario": f, "split": "eval"}}
                            for s, f in zip(seeds, families)], **extra}


# -- 1. leaderboard / front figures name the env and the episodes from the result files --------

def test_leaderboard_front_title_names_env_set_and_episodes(monkeypatch, tmp_path: Path) -> None:
    from agents.evaluate import Evaluation
    from agents.leaderboard import plot_front
    titles = _titles(monkeypatch)
    over = {"env.reward.sla_target": 0.9}
    recs = [_record(p, [4, 5, 6], ["ramp", "ramp", "bursty"], overrides=over)
            for p in ("heuristic:load", "runs/a")]
    plot_front([Evaluation.from_record(r) for r in recs], tmp_path / "f.png", Path("runs"))
    assert titles[-1] == ("Policies on DynoSim-v0 --set env.reward.sla_target=0.9: 3 held-out "
                          "episodes (split=eval, seeds 4..6; 2 ramp, 1 bursty)")
    # records that differ say so, each set with its policy count
    recs[1] = _record("runs/a", [0, 2], ["flash", "flash"])
    plot_front([Evaluation.from_record(r) for r in recs], tmp_path / "f.png", Path("runs"))
    assert titles[-1].startswith("Policies on DynoSim-v0 (--set per policy): ")
    assert "3 held-out episodes (split=eval, seeds 4..6; 2 ramp, 1 bursty) for 1 policy" \
        in titles[-1]
    assert "2 held-out episodes (split=eval, seeds 0, 2; 2 flash) for 1 policy" in titles[-1]


@pytest.mark.parametrize("directory, episodes", [
    ("docs/leaderboard", "10 held-out episodes (split=eval, seeds 0..9;"),
    ("docs/leaderboard/fresh_seeds", "30 held-out episodes (split=eval, seeds 1000..1029;")])
def test_replot_leaderboard_title_reads_the_committed_records(directory: str, episodes: str,
                                                              monkeypatch, tmp_path: Path
                                                              ) -> None:
    """The committed v0.1 leaderboards (no env_id, no episodes_plan): the episodes from the
    records' per-episode seeds and setups; the title is what the committed PNG shows."""
    import shutil
    shutil.copy(ROOT / directory / "leaderboard.json", tmp_path / "leaderboard.json")
    titles = _titles(monkeypatch)
    assert load_script("replot_leaderboard").main([str(tmp_path)]) == 0
    assert titles[-1].startswith(f"Policies on DynoSim-v0: {episodes}"), titles
    assert titles[-1].endswith(")") and "for 1 policy" not in titles[-1], titles
    rows = json.loads((tmp_path / "leaderboard.json").read_text())
    for fam in {e["setup"]["scenario"] for e in rows[0]["per_episode"]}:
        n = sum(e["setup"]["scenario"] == fam for e in rows[0]["per_episode"])
        assert f"{n} {fam}" in titles[-1]


def test_heldout_front_title_reads_the_result_files(monkeypatch, tmp_path: Path) -> None:
    """The held-out figure's title was hard-coded ("6 episodes: 3 ramp_cycle, ..."): now
    from the files, so a bench scored on other episodes says so."""
    import shutil
    mod = load_script("plot_heldout_front")
    titles = _titles(monkeypatch)
    pts, target = mod.points(ROOT / "docs" / "benchmark")
    mod.plot(pts, target, tmp_path / "f.png")
    assert titles[-1] == ("DynoSim-v0 (--set per policy): 6 held-out episodes (split=eval, "
                          "seeds 0..5; 3 ramp_cycle, 2 azure_mod, 1 flash_crowd)"), titles
    bench = tmp_path / "bench"
    bench.mkdir()
    shutil.copy(ROOT / "docs" / "benchmark" / "heuristic_load.json", bench)
    d = json.loads((bench / "heuristic_load.json").read_text())
    d["per_episode"] = d["per_episode"][:2]
    d["episodes"] = 2
    (bench / "heuristic_load.json").write_text(json.dumps(d))
    (bench / "learned_x.json").write_text(json.dumps({
        "evaluation": {"episodes": 3, "seed": 7, "split": "train"},
        "mean_std_over_seeds": {"gpu_hours_per_episode": {"mean": 1, "std": 0},
                                "sla_attainment": {"mean": 0.5, "std": 0}}}))
    pts, target = mod.points(bench)
    mod.plot(pts, target, tmp_path / "g.png")
    assert "2 held-out episodes (split=eval, seeds 0..1; 1 flash_crowd, 1 ramp_cycle) for " \
           "1 policy; 3 episodes (split=train, seeds 7..9) for 1 policy" in titles[-1], titles


def test_heldout_front_bad_per_episode_is_one_line(tmp_path: Path, capsys) -> None:
    from conftest import one_line_error
    mod = load_script("plot_heldout_front")
    (tmp_path / "heuristic_load.json").write_text(json.dumps(
        {"sla_attainment": 0.5, "gpu_hours_per_episode": 1.0, "per_episode": [{"seed": "x"}]}))
    rc = mod.main(["--bench", str(tmp_path), "--out", str(tmp_path / "f.png")])
    one_line_error(rc, capsys.readouterr().err, str(tmp_path / "heuristic_load.json"),
                   "per_episode[0].seed", "expected a JSON whole number")


# -- 2. the static policy's panel says how many workers it holds -------------------------------

STATIC_ENV = {"cluster": {"num_workers": 4}, "env": {}}


def _trace(n: int = 12) -> dict:
    return {"t_s": [5.0 * (k + 1) for k in range(n)], "active_workers": [4] * n,
            "starting_workers": [0] * n, "queued_requests": [k % 3 for k in range(n)],
            "arrival_rate_rps": [1.0] * n}


def test_plot_learned_static_panel_says_what_it_holds(monkeypatch, tmp_path: Path) -> None:
    mod = load_script("plot_learned")
    titles = _titles(monkeypatch)
    ep = {"seed": 0, "setup": {"scenario": "flash_crowd"}, "sla_attainment": 0.5,
          "gpu_hours": 1.0, "scaling_events": 0, "reversals": 0, "flaps": 0,
          "flap_steps": [], "steps": 12}
    mod.plot([SimpleNamespace(policy=p, traces=[_trace()], per_episode=[ep],
                              env_config=STATIC_ENV)
              for p in ("heuristic:static", "heuristic:static:4")], tmp_path / "f.png")
    assert titles[0].startswith("heuristic:static (holds 4 workers) on held-out flash_crowd")
    assert titles[1].startswith("heuristic:static:4 on held-out")      # its spec says it


def test_leaderboard_replicas_static_panel_says_what_it_holds(monkeypatch,
                                                              tmp_path: Path) -> None:
    from agents.evaluate import Evaluation
    from agents.leaderboard import plot_replicas
    titles = _titles(monkeypatch)
    res = []
    for p in ("heuristic:load", "heuristic:static"):
        r = Evaluation.from_record(_record(p, [0], ["ramp"], env_config=STATIC_ENV))
        r.traces = [_trace()]
        res.append(r)
    plot_replicas(res, tmp_path / "r.png", Path("runs"))
    assert any(t.startswith("heuristic:static (holds 4 workers): SLA") for t in titles), titles


# -- 3. the unread-planner-knob note: once per run, not once per worker process ----------------

NOTE = "note: env.planner.kalman_r has no effect here"
VEC = """
import sys
import gymnasium as gym
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import SubprocVecEnv
if __name__ == "__main__":
    kw = {{"config": {config!r}, "env.planner.kalman_r": 3}}
    if {parent_first}:
        import dynosim_gym
        gym.make("DynoSim-v0", **kw).close()     # the parent notes first
    v = make_vec_env("dynosim_gym:DynoSim-v0", n_envs=2, vec_env_cls=SubprocVecEnv,
                     env_kwargs=kw, vec_env_kwargs={{"start_method": {method!r}}})
    v.reset()
    v.close()
    print("workers", v.num_envs)
"""


@pytest.mark.parametrize("parent_first, method", [(False, "forkserver"), (False, "spawn"),
                                                  (True, "forkserver"), (True, "fork")])
def test_unread_planner_knob_note_is_given_once_with_two_subprocess_envs(
        parent_first: bool, method: str, tmp_path: Path) -> None:
    """SB3's SubprocVecEnv builds each env in its own process, and each process gave the
    note: two workers, two copies. Now once: the first worker claims it (its siblings stay
    quiet), or, when the parent built an env first, the parent's note is the only one."""
    import os
    import subprocess
    import sys
    pytest.importorskip("stable_baselines3")
    env = {k: v for k, v in os.environ.items() if k != "DYNOSIM_NOTED"}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    script = VEC.format(config=str(ROOT / "envs_configs" / "autoscale_tiny.yaml"),
                        parent_first=parent_first, method=method)
    for attempt in (1, 2):          # twice: a second run (new parent) is noted again
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                             cwd=tmp_path, env=env, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "workers 2" in out.stdout
        assert out.stderr.count(NOTE) == 1, (attempt, out.stderr)
        assert [ln for ln in out.stderr.splitlines() if NOTE in ln][0].startswith(NOTE)


def test_rllib_driver_notes_before_its_env_runners_start(monkeypatch, capsys) -> None:
    """RLlib builds the envs in its env runners (Ray worker processes), whose stderr Ray
    does not forward (``dynosim.executors.connect``: ``log_to_driver=False``): the user saw
    no note at all. The driver now gives it before Ray starts (and the runners inherit
    ``DYNOSIM_NOTED``)."""
    import os

    import dynosim_gym.config as config_mod
    from agents import rllib_train
    from dynosim import executors
    monkeypatch.setattr(config_mod, "_NOTED", set())
    monkeypatch.delenv(config_mod.NOTED_ENV, raising=False)

    def connect(*a, **k):
        noted = os.environ.get(config_mod.NOTED_ENV, "")
        raise SystemExit(f"connect: noted={bool(noted)}")
    monkeypatch.setattr(executors, "connect", connect)
    with pytest.raises(SystemExit, match="noted=True"):
        rllib_train.train("DynoSim-v0", config=str(ROOT / "envs_configs" / "autoscale_tiny.yaml"),
                          timesteps=64, out="unused",
                          overrides={"env.planner.kalman_r": 3})
    assert capsys.readouterr().err.count(NOTE) == 1


# -- 4. one parser for count flags (duplicates D9: agents.cli._pos_int repeated
# dynosim.options.positive_int with other wording) ----------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["train", "--algo", "ppo", "--timesteps", "0"], "--timesteps"),
    (["evaluate", "--policy", "heuristic:load", "--episodes", "0"], "--episodes"),
    (["search", "--space", "s.yaml", "--objective", "minimise totals.gpu_hours", "--trials",
      "0"], "--trials"),
    (["bench", "--repeats", "0"], "--repeats")])
def test_count_flags_refuse_zero_in_the_same_words(argv: list[str], flag: str, capsys) -> None:
    from conftest import one_line_error
    from dynosim.cli import main
    rc = main(argv)
    one_line_error(rc, capsys.readouterr().err, f"argument {flag}: must be >= 1, got 0")


# -- found on the way (item 3): env.planner on a config without SLA targets ------------------------

def test_env_planner_knob_on_a_config_without_sla_names_the_missing_sla(capsys) -> None:
    """``--set env.planner.kalman_r=3`` with envs_configs/tiny.yaml (no sla section) said
    "flag '--set env.planner.kalman_r': must not be null (field 'env.planner')": the
    planner's SLA targets were null. Now the error the env gives without the knob (with
    the knob, also naming the flag that met it)."""
    from conftest import one_line_error
    from dynosim.cli import main
    tiny = str(ROOT / "envs_configs" / "tiny.yaml")
    args = ["evaluate", "--policy", "heuristic:load", "--config", tiny, "--episodes", "1",
            "--set", "env.episode_steps=2"]
    errs = []
    for extra in ([], ["--set", "env.planner.kalman_r=3"]):
        rc = main(args + extra)
        errs.append(capsys.readouterr().err)
        one_line_error(rc, errs[-1], "the environment needs SLA targets: set sla.ttft_ms and "
                       "sla.itl_ms", "tiny.yaml")
    assert "must not be null" not in errs[1]
