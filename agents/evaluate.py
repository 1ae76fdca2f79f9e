"""Score policies on held-out episodes, and the leaderboard (``dynosim evaluate``).

Every policy -- Dynamo's planners as heuristics, or a trained SB3 model -- goes through the
same loop: ``policy.predict(obs, state, episode_start, deterministic=True)`` on one
environment, reset with seeds ``seed .. seed + episodes - 1`` and ``split="eval"`` (windows
and seed streams never used in training). Per policy we report the mean episode reward,
the SLA attainment pooled over all decided requests, GPU-hours per episode, and the mean of
the episodes' p90 TTFT and ITL.
"""
from __future__ import annotations

import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import InputError

from .heuristics import AUTOSCALING_HEURISTICS, make_heuristic
from .train import algo_class, check_env_id

METRICS = ("mean_reward", "sla_attainment", "gpu_hours", "ttft_p90_ms", "itl_p90_ms")


@dataclass
class Evaluation:
    policy: str
    episodes: int
    mean_reward: float
    std_reward: float
    sla_attainment: float
    gpu_hours: float
    ttft_p90_ms: float
    itl_p90_ms: float
    requests_decided: int
    per_episode: list[dict[str, Any]] = field(default_factory=list, repr=False)
    traces: list[dict[str, list[float]]] = field(default_factory=list, repr=False)

    def as_dict(self, with_episodes: bool = True) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("policy", "episodes", "mean_reward", "std_reward",
                                             "sla_attainment", "gpu_hours", "ttft_p90_ms",
                                             "itl_p90_ms", "requests_decided")}
        if with_episodes:
            d["per_episode"] = self.per_episode
        return d


def load_policy(spec: str, env):
    """``heuristic:NAME`` or the path of a saved model (``model.zip`` or its run dir)."""
    if spec.startswith("heuristic:"):
        try:
            return make_heuristic(spec, env)
        except ValueError as exc:
            raise InputError(str(exc), field="--policy") from None
    path = Path(spec)
    from .rllib_train import is_rllib_run, load_policy as load_rllib_policy
    if path.is_dir() and is_rllib_run(path):
        return load_rllib_policy(path)
    if path.is_dir():
        path = path / "model.zip"
    if not path.is_file():
        raise InputError(f"no such model: {spec} (expected heuristic:"
                         f"{'|heuristic:'.join(AUTOSCALING_HEURISTICS)} or a model.zip)",
                         field="--policy")
    run = path.parent / "run.json"
    algo = json.loads(run.read_text())["algo"] if run.is_file() else "ppo"
    return algo_class(algo).load(path, device="cpu")


def run_config_of(spec: str) -> dict[str, Any] | None:
    """The env config a trained model was trained with (its run.json), if any."""
    p = Path(spec)
    run = (p if p.is_dir() else p.parent) / "run.json"
    if not spec.startswith("heuristic:") and run.is_file():
        return json.loads(run.read_text()).get("env_config")
    return None


def evaluate(spec: str, env_id: str = "DynoSim-v0", *, config: Any = None, episodes: int = 5,
             seed: int = 0, split: str = "eval", overrides: dict[str, Any] | None = None,
             keep_traces: int = 0, quiet: bool = True) -> Evaluation:
    """Run ``episodes`` episodes of ``spec`` and summarise them."""
    import gymnasium as gym

    env_id = check_env_id(env_id)
    if episodes < 1:
        raise InputError(f"must be >= 1, got {episodes}", field="--episodes")
    if config is None:
        config = run_config_of(spec)
    env = gym.make(f"dynosim_gym:{env_id}", config=config, **(overrides or {}))
    policy = load_policy(spec, env)
    space = getattr(policy, "observation_space", None)
    if space is not None and space.shape != env.observation_space.shape:
        raise InputError(f"the model observes {space.shape}, this env config gives "
                         f"{env.observation_space.shape}; evaluate it with its training "
                         "config", field="--config")
    rewards, eps, traces = [], [], []
    met = decided = 0
    it = range(episodes)
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm
        it = tqdm(it, desc=spec, unit="episode", file=sys.stderr)
    for k in it:
        obs, info = env.reset(seed=seed + k, options={"split": split})
        state = None
        start = np.ones((1,), dtype=bool)
        total = 0.0
        trace = {"t_s": [], "arrival_rate_rps": [], "active_workers": [],
                 "starting_workers": [], "draining_workers": [], "sla_attainment": []}
        done = False
        while not done:
            action, state = policy.predict(obs, state=state, episode_start=start,
                                           deterministic=True)
            start = np.zeros((1,), dtype=bool)
            obs, reward, term, trunc, info = env.step(action)
            total += reward
            done = term or trunc
            if k < keep_traces:
                for key in trace:
                    trace[key].append(float(info[key]))
        summary = dict(info["episode_summary"], reward=total, seed=seed + k,
                       setup=env.unwrapped.episode)
        met += summary["requests_met"]
        decided += summary["requests_decided"]
        rewards.append(total)
        eps.append(summary)
        if k < keep_traces:
            traces.append(trace)
    env.close()
    return Evaluation(
        policy=spec, episodes=episodes, mean_reward=float(np.mean(rewards)),
        std_reward=float(np.std(rewards)),
        sla_attainment=met / decided if decided else 1.0,
        gpu_hours=float(np.mean([e["gpu_hours"] for e in eps])),
        ttft_p90_ms=float(np.mean([e["ttft_p90_ms"] for e in eps])),
        itl_p90_ms=float(np.mean([e["itl_p90_ms"] for e in eps])),
        requests_decided=decided, per_episode=eps, traces=traces)


# -- leaderboard ---------------------------------------------------------------------------------

def find_models(directory: Path) -> list[Path]:
    return sorted(p.parent for p in directory.rglob("model.zip"))


def leaderboard(directory: str | Path, *, env_id: str = "DynoSim-v0", config: Any = None,
                episodes: int = 5, seed: int = 0, reference: str = "heuristic:load",
                policies: list[str] | None = None, quiet: bool = True) -> list[Evaluation]:
    """Evaluate the heuristics and every trained model under ``directory`` on the same
    held-out episodes; write ``leaderboard.md``, ``leaderboard.csv``, ``leaderboard.json``
    and the plots ``replicas_vs_load.png`` and ``sla_vs_gpu_hours.png`` there. Ratios are
    relative to ``reference``."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError("leaderboard directory not found", file=str(d), field="--leaderboard")
    specs = policies or ([f"heuristic:{h}" for h in AUTOSCALING_HEURISTICS]
                         + [str(p) for p in find_models(d)])
    if reference not in specs:
        specs.insert(0, reference)
    # One env config for every policy (the default unless given), so rewards compare;
    # trained models must have been trained on the same observation and action spaces.
    cfg = config if config is not None else ("autoscale_default" if env_id == "DynoSim-v0"
                                             else "routing_default")
    results = []
    for spec in specs:
        results.append(evaluate(spec, env_id, config=cfg, episodes=episodes, seed=seed,
                                keep_traces=1, quiet=quiet))
    ref = next(r for r in results if r.policy == reference)
    rows = []
    for r in results:
        row = {"policy": _label(r.policy, d), **{m: getattr(r, m) for m in METRICS}}
        for m in METRICS:
            base = getattr(ref, m)
            row[f"{m}_vs_ref"] = getattr(r, m) / base if base else math.nan
        rows.append(row)
    with open(d / "leaderboard.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (d / "leaderboard.md").write_text(_markdown(rows, _label(reference, d), episodes, seed))
    (d / "leaderboard.json").write_text(json.dumps(
        [r.as_dict() for r in results], indent=1, default=str) + "\n")
    plot_replicas(results, d / "replicas_vs_load.png", d, reference=reference)
    plot_front(results, d / "sla_vs_gpu_hours.png", d)
    return results


def _label(spec: str, d: Path) -> str:
    if spec.startswith("heuristic:"):
        return spec
    p = Path(spec)
    try:
        return str(p.relative_to(d)) or p.name
    except ValueError:
        return str(p)


def _markdown(rows: list[dict], reference: str, episodes: int, seed: int) -> str:
    head = ("| policy | mean reward | SLA attainment | GPU-hours / episode | p90 TTFT (ms) | "
            "p90 ITL (ms) | SLA vs ref | GPU-h vs ref | reward vs ref |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = [f"| {r['policy']} | {r['mean_reward']:.2f} | {r['sla_attainment']:.1%} | "
             f"{r['gpu_hours']:.3f} | {r['ttft_p90_ms']:.0f} | {r['itl_p90_ms']:.1f} | "
             f"{r['sla_attainment_vs_ref']:.3f} | {r['gpu_hours_vs_ref']:.3f} | "
             f"{r['mean_reward_vs_ref']:.3f} |" for r in rows]
    note = (f"\n{episodes} held-out episodes (split=eval, seeds {seed}..{seed + episodes - 1}), "
            f"the same for every policy; ratios relative to {reference}.\n")
    return head + "\n".join(lines) + "\n" + note


def _front(results: list[Evaluation]) -> list[Evaluation]:
    """Policies no other policy beats on both SLA attainment (higher) and GPU-hours (lower)."""
    return [r for r in results
            if not any(o.sla_attainment >= r.sla_attainment and o.gpu_hours <= r.gpu_hours
                       and (o.sla_attainment, o.gpu_hours) != (r.sla_attainment, r.gpu_hours)
                       for o in results)]


def plot_replicas(results: list[Evaluation], path: Path, d: Path, max_panels: int = 6,
                  reference: str = "heuristic:load") -> None:
    """Provisioned workers against the arrival rate in the first evaluation episode, one
    panel per policy: the heuristics, then learned policies (if there are too many: those on
    the SLA/GPU-hours front, the ones beating ``reference`` on both axes first)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traced = [r for r in results if r.traces]
    heur = [r for r in traced if r.policy.startswith("heuristic:")]
    learned = [r for r in traced if not r.policy.startswith("heuristic:")]
    if len(heur) + len(learned) > max_panels:
        front = _front(results)
        ref = next((r for r in results if r.policy == reference), None)

        def beats_ref(r: Evaluation) -> bool:
            return ref is not None and (r.sla_attainment >= ref.sla_attainment
                                        and r.gpu_hours <= ref.gpu_hours)
        learned = sorted((r for r in learned if r in front),
                         key=lambda r: (not beats_ref(r), -r.mean_reward))
        learned = learned[: max(1, max_panels - len(heur))]
    shown = heur + learned
    if not shown:
        return
    fig, axes = plt.subplots(len(shown), 1, figsize=(9, 1.5 + 1.25 * len(shown)), sharex=True,
                             squeeze=False)
    top = max(max(np.array(r.traces[0]["active_workers"]) + np.array(r.traces[0]["starting_workers"]))
              for r in shown)
    for ax, r in zip(axes[:, 0], shown):
        tr = r.traces[0]
        ax2 = ax.twinx()
        ax2.fill_between(tr["t_s"], tr["arrival_rate_rps"], step="pre", color="0.85")
        ax2.set_ylabel("req/s", fontsize=8)
        workers = np.array(tr["active_workers"]) + np.array(tr["starting_workers"])
        ax.step(tr["t_s"], workers, where="pre", color="C0", lw=1.6)
        ax.set_ylim(0, top + 0.5)
        ax.set_ylabel("workers", fontsize=8)
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.set_title(f"{_label(r.policy, d)}: SLA {r.sla_attainment:.1%}, "
                     f"{r.gpu_hours:.3f} GPU-h/episode (means over all episodes)", fontsize=9,
                     loc="left")
    axes[-1, 0].set_xlabel("simulated time (s) — first held-out episode; grey: arrival rate")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_front(results: list[Evaluation], path: Path, d: Path) -> None:
    """SLA attainment against GPU-hours per episode for every policy, front highlighted."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    front = _front(results)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in results:
        heur = r.policy.startswith("heuristic:")
        ax.scatter(r.gpu_hours, 100 * r.sla_attainment, marker="s" if heur else "o",
                   color="C1" if heur else "C0", edgecolor="k" if r in front else "none",
                   s=60, zorder=3)
        ax.annotate(_label(r.policy, d), (r.gpu_hours, 100 * r.sla_attainment), fontsize=7,
                    xytext=(4, 3), textcoords="offset points")
    pts = sorted((r.gpu_hours, 100 * r.sla_attainment) for r in front)
    if len(pts) > 1:
        ax.plot(*zip(*pts), color="0.6", lw=1, zorder=2)
    ax.set_xlabel("GPU-hours per episode (lower is better)")
    ax.set_ylabel("SLA attainment % (higher is better)")
    ax.set_title("Policies on held-out episodes (squares: heuristics; outlined: front)",
                 fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
