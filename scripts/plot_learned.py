"""Replicas vs load of a learned autoscaler on one held-out episode (issue 11, "learned
behaviour"), beside a comparison policy on the same episode.

    python scripts/plot_learned.py [--policy pretrained:autoscaler] \\
        [--compare heuristic:load-tuned] [--seed 0 | --first-of ramp_cycle] \\
        [--config YAML] [--out out/learned_replicas_vs_load.png]

Per policy: provisioned (active + starting) and active workers, the arrival rate and the
queued requests per 5 s step. Each scale-up *onset* (a scale-up with none in the 60 s before)
is marked and labelled with the requests queued when it was issued (adjustText places the
labels), so one sees whether scale-ups start before the queue builds. Each *flap* (a
reversal under 300 s after the opposite move, the env's ``episode_summary()["flap_steps"]``)
is a red x on its move, half a worker short of the count after it (clear of an onset's
triangle at that count). Prints, per policy: scaling events, reversals and flaps per hour
and the queue at each onset (median), as JSON.
Episode ``--seed 0`` of the held-out split is the flash-crowd episode of docs/benchmark;
``--first-of FAMILY`` takes the first held-out episode (seeds 0, 1, ...) of that family
instead, a rule fixed before looking at any policy on it (``ramp_cycle``: a load that
rises over minutes, which the observed rate and its slope can anticipate).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sim.wording import plural  # noqa: E402

ONSET_GAP_S = 60.0      # a scale-up with no other in the preceding 60 s starts a new one


def scale_events(trace: dict) -> tuple[list[int], list[int]]:
    """Step indices of scale-ups and scale-downs of the provisioned count (the count after
    step i differs from the count after step i-1). The trace starts after the first step, so
    a change made by the first action (from the reset count) is not marked."""
    prov = np.asarray(trace["active_workers"]) + np.asarray(trace["starting_workers"])
    diff = np.diff(prov, prepend=prov[0])
    return [int(i) for i in np.flatnonzero(diff > 0)], [int(i) for i in np.flatnonzero(diff < 0)]


def onsets(trace: dict, ups: list[int]) -> list[int]:
    t = trace["t_s"]
    out, last = [], -1e18
    for i in ups:
        if t[i] - last > ONSET_GAP_S:
            out.append(i)
        last = t[i]
    return out


def stats(res) -> dict:
    tr = res.traces[0]
    ups, downs = scale_events(tr)
    first = onsets(tr, ups)
    # queue at the step before the decision took effect: what the policy saw
    q = [tr["queued_requests"][max(i - 1, 0)] for i in first]
    ep = res.per_episode[0]
    return {"policy": res.policy, "scenario": ep["setup"].get("scenario"),
            "sla_attainment": ep["sla_attainment"], "gpu_hours": ep["gpu_hours"],
            "scaling_events": ep["scaling_events"],
            "reversals_per_hour": ep["reversals"] / (ep["steps"] * 5.0 / 3600.0),
            "flaps_per_hour": ep["flaps"] / (ep["steps"] * 5.0 / 3600.0),
            "scale_up_onsets": len(first),
            "queued_at_onset_median": statistics.median(q) if q else None,
            "queued_at_onset": q}


def policy_label(spec: str) -> str:
    """A policy's name in a plot title: ``heuristic:``/``oracle:``/``pretrained:`` specs as
    given; a run directory or model file by its path relative to the repository, or, outside
    it, by its last two parts (``RUNS/NAME/sSEED`` -> ``NAME/sSEED``; a ``model.zip`` is
    named by its run directory), so a figure never shows the machine's absolute path."""
    if spec.startswith(("heuristic:", "oracle:", "pretrained:")):
        return spec
    path = Path(spec).resolve()
    if path.is_relative_to(ROOT):
        return path.relative_to(ROOT).as_posix()
    if path.name == "model.zip":
        path = path.parent
    return "/".join(path.parts[-2:])


def flap_marker_y(prov: np.ndarray, flaps: list[int]) -> np.ndarray:
    """Heights (workers) of the flap markers: on the step's move, half a worker short of
    the count after it (below it after a scale-up, above it after a scale-down). A flap
    that is also a scale-up onset then sits half a worker below the onset's triangle
    (drawn at the count after the move); both at that count drew one on top of the other."""
    idx = np.asarray(flaps, dtype=int)
    before = prov[np.maximum(idx - 1, 0)]
    return prov[idx] - 0.5 * np.sign(prov[idx] - before)


def plot(results: list, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agents.leaderboard import static_holds
    from dynosim.plots import adjust_labels

    fig, axes = plt.subplots(len(results), 1, figsize=(10, 3.2 * len(results)), sharex=True,
                             squeeze=False)
    top = max(max(np.asarray(r.traces[0]["active_workers"])
                  + np.asarray(r.traces[0]["starting_workers"])) for r in results)
    qmax = max(max(r.traces[0]["queued_requests"]) for r in results)
    rmax = max(max(r.traces[0]["arrival_rate_rps"]) for r in results)
    for ax, r in zip(axes[:, 0], results):
        tr = r.traces[0]
        st = stats(r)
        t = np.asarray(tr["t_s"])
        prov = np.asarray(tr["active_workers"]) + np.asarray(tr["starting_workers"])
        load = ax.twinx()
        load.fill_between(t, tr["arrival_rate_rps"], step="pre", color="0.85", lw=0)
        load.set_ylim(0, rmax * 1.15)
        load.set_ylabel("arrival rate (req/s)", fontsize=8, color="0.4")
        queue = ax.twinx()
        queue.spines["right"].set_position(("axes", 1.08))
        queue.plot(t, tr["queued_requests"], color="C3", lw=0.9)
        queue.set_ylim(0, qmax * 1.15 + 1)
        queue.set_ylabel("queued requests", fontsize=8, color="C3")
        ax.step(t, prov, where="pre", color="C0", lw=1.8, label="provisioned (active + starting)")
        ax.step(t, tr["active_workers"], where="pre", color="C0", lw=0.9, ls="--",
                label="active (serving)")
        ups, _ = scale_events(tr)
        first = onsets(tr, ups)
        ax.scatter(t[first], prov[first], marker="^", color="C2", s=40, zorder=5,
                   label=f"scale-up onset ({len(first)})")
        flaps = r.per_episode[0]["flap_steps"]
        flap_y = flap_marker_y(prov, flaps)
        if flaps:
            ax.scatter(t[flaps], flap_y, marker="x", color="red", s=30, lw=1.2,
                       zorder=6, label=f"flap ({len(flaps)})")
        ax.set_ylim(0, top + 3.5)             # headroom: the legend sits above the labels
        ax.set_ylabel("workers", fontsize=9)
        ax.set_zorder(max(load.get_zorder(), queue.get_zorder()) + 1)
        ax.patch.set_visible(False)
        ax.set_title(f"{policy_label(r.policy)}{static_holds(r.policy, r)} on held-out {st['scenario']} (episode seed "
                     f"{r.per_episode[0]['seed']}): SLA {st['sla_attainment']:.1%}, "
                     f"{st['gpu_hours']:.2f} GPU-h, {plural(st['scaling_events'], 'scaling event')}, "
                     f"{st['reversals_per_hour']:.1f} reversals/h, "
                     f"{st['flaps_per_hour']:.1f} flaps/h", fontsize=9, loc="left")
        texts = [ax.text(t[i], prov[i] + 0.3, f"q={int(tr['queued_requests'][max(i - 1, 0)])}",
                         fontsize=7, color="C2",
                         bbox={"fc": "white", "ec": "none", "alpha": 0.8, "pad": 0.5})
                 for i in first[:12]]
        if texts:               # the labels keep clear of the onsets and the flaps
            adjust_labels(texts, ax=ax, x=np.concatenate([t[first[:12]], t[flaps]]),
                          y=np.concatenate([prov[first[:12]], flap_y]),
                          arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5})
        ax.legend(loc="upper right", fontsize=7, framealpha=0.9, ncol=3)
        ax.grid(alpha=0.25)
    axes[-1, 0].set_xlabel("simulated time (s); q = requests queued when a scale-up onset "
                           "was decided; grey = arrival rate, red = queued requests")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def first_episode_of(family: str, limit: int = 100, config: str | None = None) -> int:
    """Seed of the first held-out episode (``split=eval``, seeds 0, 1, ...) of ``family``
    in the env config ``config`` (default: DynoSim-v0's); InputError on ``--first-of`` if
    the held-out split has no such family."""
    import gymnasium as gym

    import dynosim_gym  # noqa: F401  (registers the ids)
    from dynosim_gym.config import load_env_config
    from sim.errors import InputError
    env = gym.make("DynoSim-v0", config=load_env_config(
        config, defaults="autoscale_default").to_dict())
    held_out = env.unwrapped.episodes.scenarios["eval"]
    if family not in held_out:
        env.close()
        kind = ("a training family" if family in env.unwrapped.episodes.scenarios["train"]
                else "an unknown family")
        raise InputError(f"{family!r} is {kind}; held-out families: {', '.join(held_out)}",
                         field="--first-of")
    try:
        for seed in range(limit):
            _, info = env.reset(seed=seed, options={"split": "eval"})
            if info["episode_setup"]["scenario"] == family:
                return seed
    finally:
        env.close()
    raise InputError(f"no held-out {family} episode in seeds 0-{limit - 1}",
                     field="--first-of")


def main(argv=None) -> int:
    """Exit code: 0, or 2 with one stderr line on bad input (the ``dynosim`` CLI's path)."""
    from agents.cli import _seed
    from dynosim.cli import run_script
    from dynosim.options import Parser, ScriptHelpFormatter
    ap = Parser(prog="plot_learned.py", description=__doc__, formatter_class=ScriptHelpFormatter)
    ap.add_argument("--policy", default="pretrained:autoscaler",
                    help="the policy plotted: any `dynosim evaluate --policy` SPEC")
    ap.add_argument("--compare", default="heuristic:load-tuned",
                    help="the policy plotted beside it on the same episode ('' for none)")
    ap.add_argument("--seed", type=_seed, default=0, help="held-out episode (split=eval)")
    ap.add_argument("--first-of", default=None, metavar="FAMILY",
                    help="the first held-out episode of FAMILY (overrides --seed; default: none, --seed "
                         "picks the episode)")
    ap.add_argument("--config", metavar="YAML", default=None,
                    help="evaluation env config, as `dynosim evaluate --config` (default: "
                    "DynoSim-v0's, autoscale_default)")
    from dynosim.plots import plot_file
    ap.add_argument("--out", type=plot_file, default="out/learned_replicas_vs_load.png",
                    help="PNG written (the shipped figures: --out docs/benchmark/NAME.png)")
    return run_script(ap, argv, run)


def run(args: argparse.Namespace) -> int:
    from agents.evaluate import evaluate, resolve_policy
    from sim.errors import InputError
    for flag, spec in (("--policy", args.policy), ("--compare", args.compare)):
        try:
            if spec:
                resolve_policy(spec)
        except InputError as exc:
            raise InputError(exc.detail, file=exc.file, line=exc.line, field=flag) from None
    if args.first_of:
        args.seed = first_episode_of(args.first_of, config=args.config)
    results = [evaluate(p, "DynoSim-v0", config=args.config, episodes=1, seed=args.seed,
                        split="eval", keep_traces=1) for p in (args.policy, args.compare) if p]
    plot(results, Path(args.out))
    print(json.dumps([stats(r) for r in results], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
