"""The leaderboards (``dynosim evaluate --leaderboard DIR``): every heuristic, tuned baseline,
hindsight oracle and trained model scored by :func:`agents.evaluate.evaluate` on the same
episodes, written as ``leaderboard.{md,csv,json}`` with plots (autoscaling: replicas vs load
and SLA vs GPU-hours; routing: the pooled TTFT CDF).
"""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import InputError
from sim.wording import plural

from .evaluate import (DEFAULT_CONFIGS, METRICS, Evaluation, evaluate, pretrained_models,
                       resolve_policy)
from .heuristics import (AUTOSCALING_HEURISTICS, ROUTING_ENV, ROUTING_HEURISTICS,
                         heuristics_for, tuned_baselines)
from .algos import check_env_id


def check_policies(specs: list[str], env_id: str, policies: list[str] | None,
                   reference: str, config: Any = None,
                   overrides: dict[str, Any] | None = None) -> None:
    """Every leaderboard entry resolved before the first is evaluated, so a typo in the
    last one does not throw away the others' episodes. Errors are one-line InputErrors on
    the flag the entry came from: ``--policies``, ``--reference`` or ``--leaderboard`` (a
    model found under the directory). The env config (``config``, ``overrides``) is built
    first, so its error is the only line (before any progress line)."""
    from .evaluate import PolicySpec, make_eval_env
    from .oracle import ORACLES
    env, _ = make_eval_env(PolicySpec(reference, "heuristic", env_id), env_id, config,
                           overrides or {})
    env.close()
    for spec in specs:
        flag = ("--policies" if policies and spec in policies else
                "--reference" if spec == reference else "--leaderboard")
        try:
            if spec.startswith("oracle:"):
                if env_id == ROUTING_ENV or spec not in ORACLES:
                    raise InputError(f"unknown oracle {spec!r} for {env_id}; expected one of "
                                     f"{', '.join(ORACLES) if env_id != ROUTING_ENV else 'none'}")
                continue
            pol = resolve_policy(spec)
        except InputError as exc:
            raise InputError(f"{spec}: {exc.detail}" if not exc.detail.startswith(spec)
                             else exc.detail, file=exc.file, line=exc.line,
                             field=flag) from None
        if pol.env_id is not None and pol.env_id != env_id:
            raise InputError(f"{spec} acts on {pol.env_id}, not {env_id} (the leaderboard's "
                             f"--env); the heuristics for {env_id}: "
                             f"{', '.join(heuristics_for(env_id))}", field=flag)
        if spec.startswith("heuristic:static:"):    # a count the env can provision
            from .heuristics import make_heuristic
            env, _ = make_eval_env(pol, env_id, config, overrides or {})
            try:
                make_heuristic(spec, env)
            except ValueError as exc:
                raise InputError(str(exc), field=flag) from None
            finally:
                env.close()


def find_models(directory: Path) -> list[Path]:
    """Run directories under ``directory``: SB3 runs (``model.zip``) and
    ``scripts/es_search.py`` runs (``policy.json`` beside a ``run.json``)."""
    return sorted({p.parent for p in directory.rglob("model.zip")}
                  | {p.parent for p in directory.rglob("policy.json")
                     if (p.parent / "run.json").is_file()})


def leaderboard(directory: str | Path, *, env_id: str = "DynoSim-v0", config: Any = None,
                episodes: int = 5, seed: int = 0, reference: str = "heuristic:load",
                policies: list[str] | None = None, split: str = "eval",
                trace: str | None = None, window_s: float | None = None,
                windows: int | None = None, overrides: dict[str, Any] | None = None,
                quiet: bool = True) -> list[Evaluation]:
    """Evaluate the heuristics and every trained model under ``directory`` on the same
    held-out episodes (scored with the same evaluation config: ``config`` with
    ``overrides``, on ``split``, or on windows of ``trace`` as :func:`~agents.evaluate.
    evaluate`); write ``leaderboard.md``, ``leaderboard.csv``, ``leaderboard.json`` (each
    result's resolved env config and episode plan) and the plots ``replicas_vs_load.png``
    and ``sla_vs_gpu_hours.png`` there. Ratios are relative to ``reference``."""
    d = Path(directory)
    if d.exists() and not d.is_dir():
        raise InputError(f"{str(d)!r} exists and is not a directory", file="command line",
                         field="--leaderboard")
    d.mkdir(parents=True, exist_ok=True)          # the results go there
    env_id = check_env_id(env_id)
    if env_id == ROUTING_ENV:
        return routing_leaderboard(d, config=config, episodes=episodes, seed=seed,
                                   reference="heuristic:kv" if reference == "heuristic:load"
                                   else reference, policies=policies, split=split,
                                   trace=trace, window_s=window_s, windows=windows,
                                   overrides=overrides, quiet=quiet)
    specs = list(policies or [f"heuristic:{h}" for h in AUTOSCALING_HEURISTICS]
                         + [h for h in heuristics_for(env_id)          # tuned planners
                            if h.split(":", 1)[1] in tuned_baselines()]
                         + [str(p) for p in find_models(d)])
    if reference not in specs:
        specs.insert(0, reference)
    check_policies(specs, env_id, policies, reference, config, overrides)
    plan = dict(split=split, trace=trace, window_s=window_s, windows=windows,
                overrides=dict(overrides or {}))
    results = []
    for spec in specs:
        if not quiet:
            print(f"leaderboard: {spec}", file=sys.stderr, flush=True)
        if spec.startswith("oracle:"):
            from .oracle import evaluate_oracle
            results.append(evaluate_oracle(spec, config=config, episodes=episodes, seed=seed,
                                           quiet=quiet, **plan))
        else:
            results.append(evaluate(spec, env_id, config=config, episodes=episodes, seed=seed,
                                    keep_traces=1, quiet=quiet, **plan))
    ref = next(r for r in results if r.policy == reference)
    rows = []
    for r in results:
        row = {"policy": _label(r.policy, d, r), **{m: getattr(r, m) for m in METRICS}}
        row["sla_attainment_std"] = float(np.std([e["sla_attainment"] for e in r.per_episode]))
        row["gpu_hours_std"] = float(np.std([e["gpu_hours"] for e in r.per_episode]))
        for m in ("sla_attainment", "gpu_hours_per_episode", "mean_reward"):
            base = getattr(ref, m)
            row[f"{m}_vs_ref"] = getattr(r, m) / base if base else math.nan
        rows.append(row)
    _write_csv(d / "leaderboard.csv", rows)
    (d / "leaderboard.md").write_text(_markdown(rows, _label(reference, d, ref), episodes, seed,
                                                results[0].reward_config,
                                                results[0].episodes_plan))
    (d / "leaderboard.json").write_text(json.dumps(
        [r.as_dict() for r in results], indent=1, default=str) + "\n")
    plot_replicas(results, d / "replicas_vs_load.png", d, reference=reference)
    plot_front(results, d / "sla_vs_gpu_hours.png", d)
    return results


def static_holds(spec: str, result: Any = None) -> str:
    """What ``heuristic:static`` (no count in the spec) holds, for a label:
    ``" (holds 4 workers)"``, the env config's initial pool (from ``result.env_config``);
    ``""`` for any other policy or a result without its env config (v0.1's records)."""
    env_config = getattr(result, "env_config", None)
    return f" (holds {_initial_pool(env_config)})" \
        if spec == "heuristic:static" and env_config else ""


def _label(spec: str, d: Path, result: Evaluation | None = None) -> str:
    """A policy's name in the tables and plots; ``heuristic:static`` (no count) with the
    count it holds (:func:`static_holds`)."""
    if static_holds(spec, result):
        return spec + static_holds(spec, result)
    if spec.startswith(("heuristic:", "oracle:", "pretrained:")):
        return spec
    p = Path(spec)
    try:
        return str(p.relative_to(d)) or p.name
    except ValueError:
        return str(p)


def _initial_pool(env_config: dict) -> str:
    """The workers an episode starts with: ``4 workers``, or ``1P + 1D`` for pools."""
    dis = env_config.get("disagg")
    if dis:
        return f"{dis['num_prefill_workers']}P + {dis['num_decode_workers']}D"
    n = env_config.get("env", {}).get("initial_workers") or \
        env_config["cluster"]["num_workers"]
    return plural(int(n), "worker")


def _markdown(rows: list[dict], reference: str, episodes: int, seed: int,
              reward_cfg: dict, plan: dict | None = None) -> str:
    head = ("| policy | mean reward | SLA attainment (± std over episodes) | GPU-hours / "
            "episode | p90 TTFT (ms) | p90 ITL (ms) | scaling events | reversals / h | flaps / h | "
            "SLA vs ref | GPU-h vs ref |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = [f"| {r['policy']} | {r['mean_reward']:.2f} | {r['sla_attainment']:.1%} "
             f"(± {100 * r['sla_attainment_std']:.1f}) | "
             f"{r['gpu_hours_per_episode']:.3f} ± {r['gpu_hours_std']:.3f} | "
             f"{r['p90_ttft_ms']:.0f} | "
             f"{r['p90_itl_ms']:.1f} | {r['scaling_events']} | {r['reversals_per_hour']:.1f} | "
             f"{r['flaps_per_hour']:.1f} | {r['sla_attainment_vs_ref']:.3f} | {r['gpu_hours_per_episode_vs_ref']:.3f} |"
             for r in rows]
    seeds = f"seed {seed}" if episodes == 1 else f"seeds {seed}..{seed + episodes - 1}"
    plan = plan or {"split": "eval"}
    which = (f"{plural(plan['windows'], 'window')} of {plan['trace']} ({plan['window_s']:g} s "
             "each)" if "trace" in plan else
             f"{plural(episodes, 'held-out episode' if plan['split'] == 'eval' else 'episode')}"
             f" (split={plan['split']}, {seeds})")
    if plan.get("requests_unscored"):         # the tail after the last whole window
        which += (f" ({plan['requests_unscored']:,} of the trace's "
                  f"{plan['requests_in_trace']:,} requests, after the last whole window, "
                  "in no episode)")
    note = (f"\n{which}, "
            f"the same for every policy; SLA attainment and percentiles pooled over all "
            f"requests (± = std of the episodes' own figures); flaps = reversals under 300 s "
            f"after the opposite move (Kubernetes HPA's default scale-down stabilization "
            f"window); ratios "
            f"relative to {reference}; reward: {json.dumps(reward_cfg)}.\n")
    return head + "\n".join(lines) + "\n" + note


def _front(results: list[Evaluation]) -> list[Evaluation]:
    """Policies no other policy beats on both SLA attainment (higher) and GPU-hours (lower)."""
    return [r for r in results
            if not any(o.sla_attainment >= r.sla_attainment
                       and o.gpu_hours_per_episode <= r.gpu_hours_per_episode
                       and (o.sla_attainment, o.gpu_hours_per_episode)
                       != (r.sla_attainment, r.gpu_hours_per_episode)
                       for o in results)]


def scored_episodes(plan: dict | None, first: bool = False) -> str:
    """What a result was scored on, for plot labels: ``"3 windows of az.jsonl (60 s each)"``
    for a trace (``first``: ``"first window of az.jsonl, [0, 60) s"``), else held-out (split
    eval) or training (split train) episodes. ``plan`` is ``Evaluation.episodes_plan``
    (empty for a v0.1 record: held-out)."""
    plan = plan or {}
    if plan.get("trace"):
        name = str(plan["trace"])
        name = name if name.startswith("bundled:") else Path(name).name
        ws = float(plan.get("window_s") or 0)
        if first:
            return (f"{name} (whole trace)" if ws == 0 else
                    f"first window of {name}, [0, {ws:g}) s")
        return (f"{name} (whole trace, 1 episode)" if ws == 0 else
                f"{plural(int(plan.get('windows', 1)), 'window')} of {name} ({ws:g} s each)")
    split = plan.get("split", "eval")
    if split == "eval":
        return "first held-out episode" if first else "held-out episodes"
    return f"first episode (split={split})" if first else f"episodes of split={split}"


def _seeds(seeds: list[int]) -> str:
    """``"seed 3"``, ``"seeds 0..9"`` (consecutive) or ``"seeds 0, 2, 7"``."""
    if len(seeds) == 1:
        return f"seed {seeds[0]}"
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"seeds {seeds[0]}..{seeds[-1]}"
    return "seeds " + ", ".join(map(str, seeds))


def _scored_on(rec: dict[str, Any]) -> tuple[str, dict[str, int]]:
    """One result record's episodes: ``(what, families)``, ``what`` naming the count, split
    and seeds (``"10 held-out episodes (split=eval, seeds 0..9)"``) or the trace windows,
    ``families`` the episodes per workload family (setup ``scenario``, else ``workload``;
    empty when the record keeps no per-episode setups)."""
    plan = rec.get("episodes_plan") or {}
    eps = rec.get("per_episode") or []
    n = int(rec.get("episodes") or len(eps))
    families: dict[str, int] = {}
    for e in eps:
        setup = e.get("setup") or {}
        fam = setup.get("scenario") or setup.get("workload")
        if fam:
            families[fam] = families.get(fam, 0) + 1
    if plan.get("trace"):
        return scored_episodes(plan), families
    split = plan.get("split") or next((e["setup"]["split"] for e in eps
                                       if "split" in (e.get("setup") or {})), "eval")
    seeds = [int(e["seed"]) for e in eps if "seed" in e]
    if not seeds and "seeds" in plan:
        s = [int(x) for x in plan["seeds"]]     # [first, last] or every seed
        seeds = list(range(s[0], s[-1] + 1)) if len(s) == 2 and s[-1] - s[0] + 1 == n else s
    kind = "held-out episode" if split == "eval" else "episode"
    return (f"{plural(n, kind)} (split={split}"
            f"{', ' + _seeds(seeds) if seeds else ''})"), families


def scored_caption(records: list[dict[str, Any]], env_id: str = "DynoSim-v0") -> str:
    """What a figure's results were scored on, for its subtitle: the env, the ``--set``
    overrides when every record has the same, and the episodes (count, split, seeds, the
    workload families), e.g. ``"DynoSim-v0: 6 held-out episodes (split=eval, seeds 0..5;
    3 ramp_cycle, 2 azure_mod, 1 flash_crowd)"`` (``" (--set per policy)"`` after the env
    when the records' overrides differ).

    Args:
        records: result records (``Evaluation.as_dict()``, v0.1's ``leaderboard.json`` rows,
            or any dict with ``episodes`` and ``episodes_plan``/``per_episode``).
        env_id: the env of a record that names none (v0.1 records; their GPU-hours figures
            are the autoscaling env's).
    Returns: one line; when the records' episodes differ, each set with its record count
    (``"...; 3 episodes (split=train, seeds 7..9) for 1 policy"``).
    """
    envs = sorted({r.get("env_id") or env_id for r in records})
    sets: dict[str, dict[str, int]] = {}
    counts: dict[str, int] = {}
    for r in records:
        what, fams = _scored_on(r)
        counts[what] = counts.get(what, 0) + 1
        if fams and not sets.get(what):
            sets[what] = fams
    def described(what: str) -> str:
        fams = sets.get(what)
        if not fams:
            return what
        mix = ", ".join(f"{k} {f}" for f, k in sorted(fams.items(), key=lambda x: -x[1]))
        return f"{what[:-1]}; {mix})" if what.endswith(")") else f"{what} ({mix})"
    if len(counts) == 1:                    # the same for every policy
        episodes = described(next(iter(counts)))
    else:
        episodes = "; ".join(f"{described(w)} for {plural(c, 'policy', many='policies')}"
                             for w, c in counts.items())
    sets_ = {json.dumps(r.get("overrides") or {}, sort_keys=True) for r in records}
    over = json.loads(next(iter(sets_))) if len(sets_) == 1 else None
    config = ("" if over == {} else " (--set per policy)" if over is None else
              " --set " + " ".join(f"{k}={v}" for k, v in over.items()))
    return f"{' + '.join(envs)}{config}: {episodes}"


def plot_replicas(results: list[Evaluation], path: Path, d: Path, max_panels: int = 6,
                  reference: str = "heuristic:load") -> None:
    """Provisioned workers against the arrival rate in the first evaluation episode, one
    panel per policy: the heuristics, then learned policies (if there are too many: those on
    the SLA/GPU-hours front, the ones beating ``reference`` on both axes first). Every panel
    shows the same episode, so both axes are shared: workers on the left, and on the right
    the arrival rate and queued requests / 10 on one scale for all panels (the same
    arrivals look the same in each)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    traced = [r for r in results if r.traces]
    fixed = ("heuristic:", "oracle:")
    heur = [r for r in traced if r.policy.startswith(fixed)]
    learned = [r for r in traced if not r.policy.startswith(fixed)]
    if len(heur) + len(learned) > max_panels:
        front = _front(results)
        ref = next((r for r in results if r.policy == reference), None)

        def beats_ref(r: Evaluation) -> bool:
            return ref is not None and (r.sla_attainment >= ref.sla_attainment
                                        and r.gpu_hours_per_episode <= ref.gpu_hours_per_episode)
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
    top2 = max(max(max(r.traces[0]["arrival_rate_rps"], default=0.0),
                   max(r.traces[0].get("queued_requests") or [0]) / 10.0) for r in shown)
    for ax, r in zip(axes[:, 0], shown):
        tr = r.traces[0]
        ax2 = ax.twinx()
        ax2.fill_between(tr["t_s"], tr["arrival_rate_rps"], step="pre", color="0.85")
        if tr.get("queued_requests"):
            ax2.plot(tr["t_s"], np.asarray(tr["queued_requests"]) / 10.0, color="C3", lw=0.8)
        ax2.set_ylim(0, 1.05 * top2 or 1.0)
        ax2.set_ylabel("req/s; queued/10", fontsize=8)
        workers = np.array(tr["active_workers"]) + np.array(tr["starting_workers"])
        ax.step(tr["t_s"], workers, where="pre", color="C0", lw=1.6)
        ax.set_ylim(0, top + 0.5)
        ax.set_ylabel("workers", fontsize=8)
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.set_title(f"{_label(r.policy, d, r)}: SLA {r.sla_attainment:.1%}, "
                     f"{r.gpu_hours_per_episode:.3f} GPU-h/episode (over all episodes)",
                     fontsize=9, loc="left")
    axes[-1, 0].set_xlabel(f"simulated time (s), {scored_episodes(getattr(shown[0], 'episodes_plan', None), True)}"
                           "\nblue: provisioned workers, grey: arrival rate, red: queued "
                           "requests / 10")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_front(results: list[Evaluation], path: Path, d: Path) -> None:
    """SLA attainment against GPU-hours per episode for every policy, front highlighted.
    Labels are placed by adjustText (away from each other and from the markers, with a
    leader line when moved), so close policies stay readable."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from dynosim.plots import adjust_labels

    front = _front(results)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)   # the saved dpi: labels placed at it
    xs, ys, texts = [], [], []
    for r in results:
        heur = r.policy.startswith("heuristic:")
        x, y = r.gpu_hours_per_episode, 100 * r.sla_attainment
        ax.scatter(x, y, marker="s" if heur else "o", color="C1" if heur else "C0",
                   edgecolor="k" if r in front else "none", s=60, zorder=3)
        xs.append(x)
        ys.append(y)
        texts.append(ax.text(x, y, _label(r.policy, d, r), fontsize=7, zorder=4))
    pts = sorted((r.gpu_hours_per_episode, 100 * r.sla_attainment) for r in front)
    if len(pts) > 1:
        ax.plot(*zip(*pts), color="0.6", lw=1, zorder=2)
    ax.set_xlabel("GPU-hours per episode (lower is better)")
    ax.set_ylabel("SLA attainment (% of requests, higher is better)")
    ax.set_title(f"Policies on {scored_caption([r.as_dict() for r in results])}",
                 fontsize=10, wrap=True)
    ax.grid(alpha=0.3)
    ax.margins(x=0.18, y=0.15)        # room, so adjustText keeps labels off the frame
    lo, hi = ax.get_ylim()            # attainment is at most 100 %: no tick above it
    if hi > 100:
        hi = 100 + 0.03 * (100 - lo) if lo < 100 else 101
        ax.set_ylim(lo, hi)
        ax.set_yticks([t for t in ax.get_yticks() if lo <= t <= 100])
        ax.set_ylim(lo, hi)
    kinds = {r.policy.startswith("heuristic:") for r in results}   # only the kinds drawn
    ax.legend(handles=[
        *([Line2D([], [], marker="s", ls="", color="C1", label="heuristic planner")]
          if True in kinds else []),
        *([Line2D([], [], marker="o", ls="", color="C0", label="trained policy or oracle")]
          if False in kinds else []),
        Line2D([], [], marker="o", ls="-", color="0.6", markerfacecolor="none",
               markeredgecolor="k", label="front (outlined: not beaten on both axes)")],
        fontsize=7, loc="lower right")
    fig.tight_layout()
    adjust_labels(texts, x=xs, y=ys, ax=ax, expand=(1.3, 1.6), max_move=None,
                  arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6})
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- routing leaderboard -------------------------------------------------------------------------

ROUTING_METRICS = ("sla_attainment", "p90_ttft_ms", "mean_ttft_ms", "prefix_cache_reused_ratio",
                   "request_throughput_rps", "mean_reward")


def routing_leaderboard(d: Path, *, config: Any = None, episodes: int = 5, seed: int = 0,
                        reference: str = "heuristic:kv", policies: list[str] | None = None,
                        split: str = "eval", trace: str | None = None,
                        window_s: float | None = None, windows: int | None = None,
                        overrides: dict[str, Any] | None = None,
                        quiet: bool = True) -> list[Evaluation]:
    """The routing leaderboard (``DynoSimRouting-v0``): the routing heuristics, shipped tuned
    KV routers, ``pretrained:`` routers and every model under ``d``, on the same episodes;
    writes ``d/leaderboard.{md,csv,json}`` and ``d/ttft_cdf.png`` (pooled TTFT CDF, one
    curve per policy). Ratios are relative to ``reference`` (default ``heuristic:kv``)."""
    specs = policies or ([f"heuristic:{h}" for h in ROUTING_HEURISTICS]
                         + [h for h in heuristics_for(ROUTING_ENV)
                            if h.split(":", 1)[1] not in ROUTING_HEURISTICS]
                         + [f"pretrained:{k}" for k, p in pretrained_models().items()
                            if _pretrained_env(p) == ROUTING_ENV]
                         + [str(p) for p in find_models(d)])
    specs = list(specs)
    if reference not in specs:
        specs.insert(0, reference)
    check_policies(specs, ROUTING_ENV, policies, reference, config, overrides)
    results = []
    for spec in specs:
        if not quiet:
            print(f"leaderboard: {spec}", file=sys.stderr, flush=True)
        results.append(evaluate(spec, ROUTING_ENV, config=config, episodes=episodes, seed=seed,
                                split=split, trace=trace, window_s=window_s, windows=windows,
                                overrides=overrides, quiet=quiet))
    ref = next(r for r in results if r.policy == reference)
    rows = []
    for r in results:
        row = {"policy": _label(r.policy, d), **{m: getattr(r, m) for m in ROUTING_METRICS}}
        row["sla_attainment_std"] = float(np.std([e["sla_attainment"] for e in r.per_episode]))
        row["p90_ttft_ms_std"] = float(np.std([e["p90_ttft_ms"] for e in r.per_episode]))
        row["requests_decided"] = r.requests_decided
        for m in ("sla_attainment", "p90_ttft_ms", "request_throughput_rps"):
            base = getattr(ref, m)
            row[f"{m}_vs_ref"] = getattr(r, m) / base if base else math.nan
        rows.append(row)
    _write_csv(d / "leaderboard.csv", rows)
    head = ("| policy | SLA attainment (± std over episodes) | p90 TTFT (ms, ± std of the "
            "episodes' p90) | mean TTFT (ms) | "
            "prefix-cache reuse | throughput (req/s) | mean reward | p90 TTFT vs ref |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = [f"| {r['policy']} | {r['sla_attainment']:.1%} (± {100 * r['sla_attainment_std']:.1f})"
             f" | {r['p90_ttft_ms']:,.0f} (± {r['p90_ttft_ms_std']:,.0f}) | "
             f"{r['mean_ttft_ms']:,.0f} | "
             f"{r['prefix_cache_reused_ratio']:.1%} | {r['request_throughput_rps']:.3f} | "
             f"{r['mean_reward']:.1f} | {r['p90_ttft_ms_vs_ref']:.3f} |" for r in rows]
    plan = json.dumps(results[0].episodes_plan)
    note = (f"\n{results[0].episodes} episode(s) per policy, the same for every policy ({plan});"
            f" SLA attainment and TTFT percentiles pooled over all requests (± = std of the "
            f"episodes' own figures); ratios relative to {_label(reference, d)}; reward: "
            f"{json.dumps(results[0].reward_config)}.\n")
    (d / "leaderboard.md").write_text(head + "\n".join(lines) + "\n" + note)
    (d / "leaderboard.json").write_text(json.dumps(
        [r.as_dict() for r in results], indent=1, default=str) + "\n")
    from dynosim_gym.config import load_env_config
    sla = load_env_config(config if config is not None else DEFAULT_CONFIGS[ROUTING_ENV],
                          **dict(overrides or {})).sim.sla.ttft_ms
    plot_ttft_cdf(results, d / "ttft_cdf.png", d, sla_ttft_ms=sla)
    return results


def _pretrained_env(path: Path) -> str | None:
    meta = path.with_suffix(".json")
    return json.loads(meta.read_text()).get("env_id") if meta.is_file() else None


def plot_ttft_cdf(results: list[Evaluation], path: Path, d: Path,
                  sla_ttft_ms: float | None = None) -> None:
    """Empirical CDF of the pooled TTFTs, one curve per policy (log time axis), with each
    policy's p90 in the legend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.8))
    styles = ["-", "--", "-.", ":"]
    for k, r in enumerate(results):
        x = np.asarray(r.ttfts_ms, dtype=float)
        if len(x) == 0:               # nothing completed: said in the legend, no curve
            ax.plot([], [], lw=1.4, ls=styles[(k // 10) % 4],
                    label=f"{_label(r.policy, d)} (no samples: no request completed)")
            continue
        y = np.arange(1, len(x) + 1) / len(x)
        ax.step(np.maximum(x, 1.0), y, where="post", lw=1.4, ls=styles[(k // 10) % 4],
                label=f"{_label(r.policy, d)} (p90 {r.p90_ttft_ms:,.0f} ms)")
    if sla_ttft_ms:
        ax.axvline(sla_ttft_ms, color="0.4", lw=0.8, ls=":")
    ax.axhline(0.9, color="0.7", lw=0.6)
    ax.set_xscale("log")
    ax.set_xlabel("time to first token, TTFT (ms, log scale)")
    ax.set_ylabel("share of completed requests")
    ax.set_ylim(0, 1.01)
    ax.grid(alpha=0.3, which="both")
    ax.set_title("Pooled TTFT CDF per routing policy (horizontal line: p90; dotted: TTFT SLA)",
                 fontsize=10)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
