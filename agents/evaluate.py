"""Score policies on held-out episodes or whole traces, and the leaderboard (``dynosim evaluate``).

Every policy -- Dynamo's planners and tuned planners as heuristics, static counts, trained
SB3 models, shipped pretrained models -- goes through the same loop:
``policy.predict(obs, state, episode_start, deterministic=True)`` on one environment.

Episodes are either

* seeded: ``seed .. seed + episodes - 1`` with ``split="eval"`` (held-out windows, seed
  streams and workload families never used in training), or
* pinned windows of a trace (``trace=PATH``): consecutive windows ``[k S, (k+1) S)`` of
  ``window_s`` seconds (``0`` = the whole trace as one episode), all of them or the first N.

Scoring always uses the *evaluation* config (``config``, default: the env's default), its
reward included; a trained model contributes only its policy interface (``env.observation``,
``env.action``, ``env.interval_s``, read from its ``run.json``). Every result records the
reward config it was scored with (``reward_config``) and that interface.

Metrics, pooled over all requests of all episodes (a request counts once, when it
completes, is rejected or times out): ``sla_attainment`` (met / decided), ``p90_ttft_ms``
and ``p90_itl_ms`` (nearest-rank percentiles of every completed request, not means of
per-episode percentiles); ``gpu_hours`` (total) and ``gpu_hours_per_episode``;
``scaling_events`` (steps that changed the provisioned worker count, summed) and
``reversals_per_hour`` (a scaling event in the opposite direction of the previous one, per
simulated hour); ``mean_reward`` (per episode). Routing (``DynoSimRouting-v0``) adds
``mean_ttft_ms``, ``prefix_cache_reused_ratio`` (prompt tokens served from the prefix cache /
prompt tokens of the completed requests) and ``request_throughput_rps`` (completed requests
per simulated second); its leaderboard is :func:`routing_leaderboard`.
"""
from __future__ import annotations

import bisect
import csv
import dataclasses
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import InputError

from .heuristics import (AUTOSCALING_HEURISTICS, ROUTING_ENV, ROUTING_HEURISTICS, heuristic_env,
                         heuristics_for, make_heuristic, tuned_baselines)
from .train import algo_class, check_env_id

METRICS = ("mean_reward", "sla_attainment", "gpu_hours_per_episode", "p90_ttft_ms",
           "p90_itl_ms", "scaling_events", "reversals_per_hour")
#: Shipped pretrained models: ``agents/pretrained/NAME.zip`` (+ ``NAME.json``, its run record).
PRETRAINED_DIR = Path(__file__).resolve().parent / "pretrained"
#: env config keys that are the policy's interface (taken from a model's run record).
INTERFACE_KEYS = ("observation", "action", "interval_s")
DEFAULT_CONFIGS = {"DynoSim-v0": "autoscale_default", "DynoSimRouting-v0": "routing_default"}


def _pct(sorted_vals: list[float], q: float) -> float:
    from dynosim_gym.monitor import _pct as pct
    return pct(sorted_vals, q) if sorted_vals else 0.0


@dataclass
class Evaluation:
    policy: str
    episodes: int
    mean_reward: float
    std_reward: float
    sla_attainment: float
    gpu_hours: float
    gpu_hours_per_episode: float
    p90_ttft_ms: float
    p90_itl_ms: float
    scaling_events: int
    reversals_per_hour: float
    requests_decided: int
    requests_in_flight: int            # arrived, not decided at the episodes' cut-offs
    simulated_hours: float
    # routing figures (0 where they do not apply): mean TTFT of the completed requests,
    # prompt tokens served from the prefix cache / prompt tokens of the completed requests,
    # completed requests per simulated second (pooled).
    mean_ttft_ms: float = 0.0
    prefix_cache_reused_ratio: float = 0.0
    request_throughput_rps: float = 0.0
    env_id: str = ""
    reward_config: dict[str, Any] = field(default_factory=dict)
    policy_interface: dict[str, Any] = field(default_factory=dict)
    episodes_plan: dict[str, Any] = field(default_factory=dict)
    per_episode: list[dict[str, Any]] = field(default_factory=list, repr=False)
    traces: list[dict[str, list[float]]] = field(default_factory=list, repr=False)
    ttfts_ms: list[float] = field(default_factory=list, repr=False)   # pooled, sorted

    #: v0.1 result keys (``leaderboard.json`` of docs/leaderboard) -> these fields
    V01_KEYS = {"ttft_p90_ms": "p90_ttft_ms", "itl_p90_ms": "p90_itl_ms",
                "gpu_hours": "gpu_hours_per_episode"}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "Evaluation":
        """An Evaluation from a result record, v0.1's (per-episode GPU-hours, mean p90s)
        included; figures v0.1 did not record are 0."""
        names = {f.name for f in dataclasses.fields(cls)}
        if "gpu_hours_per_episode" not in rec:          # v0.1
            rec = {cls.V01_KEYS.get(k, k): v for k, v in rec.items()}
            rec["gpu_hours"] = rec["gpu_hours_per_episode"] * rec.get("episodes", 1)
        base = {"scaling_events": 0, "reversals_per_hour": 0.0, "requests_in_flight": 0,
                "simulated_hours": 0.0, "gpu_hours": 0.0, "requests_decided": 0}
        return cls(**{**base, **{k: v for k, v in rec.items()
                                 if k in names and k not in ("per_episode", "traces",
                                                             "ttfts_ms")}})

    def as_dict(self, with_episodes: bool = True) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items()
             if k not in ("per_episode", "traces", "ttfts_ms")}
        if with_episodes:
            d["per_episode"] = self.per_episode
        return d


# -- policy specs ----------------------------------------------------------------------------

@dataclass
class PolicySpec:
    """A resolved ``--policy``: what it is, which env it acts on, and how to load it."""
    spec: str
    kind: str                          # heuristic | model | pretrained | rllib
    env_id: str | None                 # None: decided by the model's run record
    path: Path | None = None
    run: dict[str, Any] | None = None  # the model's run.json

    def interface(self) -> dict[str, Any]:
        """Env config entries the policy needs (observation/action/interval of training)."""
        if not self.run or "env_config" not in self.run:
            return {}
        env = self.run["env_config"].get("env", {})
        return {k: env[k] for k in INTERFACE_KEYS if k in env}

    def load(self, env):
        if self.kind == "heuristic":
            try:
                return make_heuristic(self.spec, env)
            except ValueError as exc:
                raise InputError(str(exc), field="--policy") from None
        if self.kind == "rllib":
            from .rllib_train import load_policy as load_rllib_policy
            return load_rllib_policy(self.path)
        algo = (self.run or {}).get("algo", "ppo")
        return algo_class(algo).load(self.path, device="cpu")


def pretrained_models() -> dict[str, Path]:
    return {p.stem: p for p in sorted(PRETRAINED_DIR.glob("*.zip"))}


def resolve_policy(spec: str) -> PolicySpec:
    """``heuristic:NAME`` | ``pretrained:NAME`` | a ``model.zip`` | a ``dynosim train`` run
    directory. Errors are one-line InputErrors on ``--policy`` naming the bad key."""
    if spec.startswith("heuristic:"):
        try:
            return PolicySpec(spec, "heuristic", heuristic_env(spec))
        except ValueError as exc:
            raise InputError(str(exc), field="--policy") from None
    if spec.startswith("pretrained:"):
        name = spec.split(":", 1)[1]
        models = pretrained_models()
        if name not in models:
            raise InputError(f"unknown pretrained policy {name!r}; available: "
                             f"{', '.join('pretrained:' + k for k in models) or 'none'}",
                             field="--policy")
        path = models[name]
        meta = path.with_suffix(".json")
        run = json.loads(meta.read_text()) if meta.is_file() else None
        return PolicySpec(spec, "pretrained", (run or {}).get("env_id"), path, run)
    path = Path(spec)
    from .rllib_train import is_rllib_run
    if path.is_dir() and is_rllib_run(path):     # a --framework rllib run directory
        run = json.loads((path / "run.json").read_text())
        return PolicySpec(spec, "rllib", run.get("env_id"), path, run)
    if path.is_dir():
        path = path / "model.zip"
    if not path.is_file():
        raise InputError(f"no such model: {spec} (expected heuristic:NAME, pretrained:NAME, "
                         "a model.zip or a dynosim train --out directory)", field="--policy")
    run_file = path.parent / "run.json"
    run = json.loads(run_file.read_text()) if run_file.is_file() else None
    return PolicySpec(spec, "model", (run or {}).get("env_id"), path, run)


def run_config_of(spec: str) -> dict[str, Any] | None:
    """The env config a trained model was trained with (its run.json), if any."""
    try:
        return (resolve_policy(spec).run or {}).get("env_config")
    except InputError:
        return None


# -- episodes --------------------------------------------------------------------------------

def trace_workload(path: str) -> dict[str, Any]:
    """A ``workload:`` block for a trace file: ``.jsonl`` = Mooncake, ``.csv`` = Azure, or
    ``bundled:NAME``."""
    if path.startswith("bundled:"):
        kind = "azure" if "azure" in path else "mooncake"
    elif path.endswith(".csv"):
        kind = "azure"
    elif path.endswith((".jsonl", ".json")):
        kind = "mooncake"
    else:
        raise InputError("expected a Mooncake .jsonl, an Azure .csv or bundled:NAME",
                         field="--trace")
    if not path.startswith("bundled:") and not Path(path).is_file():
        raise InputError("trace file not found", file=path, field="--trace")
    return {"kind": kind, "path": str(Path(path).resolve()) if not path.startswith("bundled:")
            else path}


def plan_windows(arrivals_ms: list[float], total_s: float, window_s: float, interval_s: float,
                 windows: int | None) -> list[float]:
    """Start times of consecutive windows of ``window_s`` covering the trace (``0``: one
    window over the whole trace). Errors: window longer than the trace, not a multiple of
    the decision interval, more windows than fit, a window without requests."""
    if window_s < 0 or not math.isfinite(window_s):
        raise InputError(f"must be >= 0, got {window_s:g}", field="--window-s")
    if window_s == 0:
        starts, length = [0.0], total_s
    else:
        if window_s > total_s:
            raise InputError(f"a {window_s:g} s window is longer than the trace "
                             f"({total_s:.0f} s)", field="--window-s")
        k = window_s / interval_s
        if abs(k - round(k)) > 1e-9:
            raise InputError(f"must be a multiple of the decision interval ({interval_s:g} s), "
                             f"got {window_s:g}", field="--window-s")
        n = int(total_s // window_s)
        starts, length = [i * window_s for i in range(n)], window_s
    if windows is not None:
        if windows > len(starts):
            raise InputError(f"the trace holds {len(starts)} window(s) of {window_s:g} s, "
                             f"asked for {windows}", field="--windows")
        starts = starts[:windows]
    for s in starts:
        lo = bisect.bisect_left(arrivals_ms, s * 1000.0)
        hi = bisect.bisect_left(arrivals_ms, (s + length) * 1000.0)
        if window_s == 0:
            hi = len(arrivals_ms)
        if hi <= lo:
            raise InputError(f"window [{s:g}, {s + length:g}) s of the trace has no requests",
                             field="--window-s")
    return starts


def make_eval_env(spec: PolicySpec, env_id: str, config: Any, overrides: dict[str, Any]):
    """The evaluation env: ``config`` (default: the env's default) with the policy's
    interface on top, then ``overrides``."""
    import gymnasium as gym
    from dynosim_gym.config import load_env_config
    base = config if config is not None else DEFAULT_CONFIGS[env_id]
    over = {f"env.{k}": v for k, v in spec.interface().items()}
    over.update(overrides)
    cfg = load_env_config(base, **over)
    return gym.make(f"dynosim_gym:{env_id}", config=cfg.to_dict()), cfg


def run_episode(env, policy, options: dict[str, Any], seed: int,
                keep_trace: bool = False) -> dict[str, Any]:
    """One episode: its summary, reward, per-request TTFT/TPOT lists and (optionally) a trace
    of workers and load per step."""
    obs, info = env.reset(seed=seed, options=options)
    state = None
    start = np.ones((1,), dtype=bool)
    total = 0.0
    keys = ("t_s", "arrival_rate_rps", "active_workers", "starting_workers",
            "draining_workers", "sla_attainment", "queued_requests")
    trace: dict[str, list[float]] = {k: [] for k in keys}
    done = False
    u = env.unwrapped
    while not done:
        action, state = policy.predict(obs, state=state, episode_start=start,
                                       deterministic=True)
        start = np.zeros((1,), dtype=bool)
        obs, reward, term, trunc, info = env.step(action)
        total += reward
        done = term or trunc
        if keep_trace:
            info = dict(info, queued_requests=u._last.queued)
            for key in keys:
                trace[key].append(float(info[key]))
    summary = dict(info["episode_summary"], reward=total, seed=seed, setup=u.episode)
    return {"summary": summary, "ttfts": list(u._ttfts), "tpots": list(u._tpots),
            "trace": trace if keep_trace else None}


def episode_plan(pol: PolicySpec, env_id: str, config: Any, overrides: dict[str, Any],
                 trace: str | None, window_s: float | None, windows: int | None,
                 episodes: int, seed: int, split: str):
    """The evaluation env, its config, and the episodes to run: ``[(reset options, seed)]``
    plus a JSON description of the plan."""
    overrides = dict(overrides)
    if trace is None:
        env, cfg = make_eval_env(pol, env_id, config, overrides)
        runs = [({"split": split}, seed + k) for k in range(episodes)]
        return env, cfg, runs, {"split": split, "seeds": [seed, seed + episodes - 1]}
    overrides["workload"] = trace_workload(trace)
    env, cfg = make_eval_env(pol, env_id, config, overrides)
    tr = env.unwrapped.episodes.trace
    env.close()
    arrivals = [r.arrival_ms for r in tr._firsts]
    if not arrivals:
        raise InputError("the trace has no requests", file=trace, field="--trace")
    total_s = arrivals[-1] / 1000.0
    iv = cfg.env.interval_s
    ws = 60.0 * iv if window_s is None else float(window_s)
    starts = plan_windows(arrivals, total_s, ws, iv, windows)
    steps = int(round(ws / iv)) if ws > 0 else int(math.floor(total_s / iv)) + 1
    overrides["env.episode_steps"] = steps
    env, cfg = make_eval_env(pol, env_id, config, overrides)
    runs = [({"window_start_s": s}, seed) for s in starts]
    return env, cfg, runs, {"trace": trace, "window_s": ws, "windows": len(starts),
                            "episode_steps": steps, "seed": seed}


def evaluate(spec: str, env_id: str | None = None, *, config: Any = None, episodes: int = 5,
             seed: int = 0, split: str = "eval", overrides: dict[str, Any] | None = None,
             trace: str | None = None, window_s: float | None = None,
             windows: int | None = None, keep_traces: int = 0,
             quiet: bool = True) -> Evaluation:
    """Score ``spec`` on seeded episodes or on pinned windows of ``trace`` (module doc)."""
    if env_id is not None:
        env_id = check_env_id(env_id)
        if spec.startswith("heuristic:"):
            try:
                heuristic_env(spec)
            except ValueError:
                raise InputError(f"unknown heuristic {spec!r} for {env_id}; expected one of "
                                 f"{', '.join(heuristics_for(env_id))}",
                                 field="--policy") from None
    pol = resolve_policy(spec)
    env_id = check_env_id(env_id or pol.env_id or "DynoSim-v0")
    if pol.env_id is not None and pol.env_id != env_id:
        what = "a routing policy" if pol.env_id == ROUTING_ENV else "an autoscaling policy"
        valid = f"; the heuristics for {env_id}: {', '.join(heuristics_for(env_id))}"
        raise InputError(f"{spec} is {what}: it acts on {pol.env_id}, not {env_id}{valid}",
                         field="--policy")
    if episodes < 1:
        raise InputError(f"must be >= 1, got {episodes}", field="--episodes")
    env, cfg, runs, plan = episode_plan(pol, env_id, config, overrides or {}, trace,
                                        window_s, windows, episodes, seed, split)
    policy = pol.load(env)
    space = getattr(policy, "observation_space", None)
    if space is not None and space.shape != env.observation_space.shape:
        raise InputError(f"the model observes {space.shape}, this env config gives "
                         f"{env.observation_space.shape}{feature_diff(pol, env_id, cfg)}",
                         field="--policy")
    it = list(enumerate(runs))
    if not quiet and sys.stderr.isatty():
        from tqdm import tqdm
        it = tqdm(it, desc=spec, unit="episode", file=sys.stderr)
    results = [run_episode(env, policy, opts, s, keep_trace=k < keep_traces) for k, (opts, s) in it]
    u = env.unwrapped
    reward_cfg = resolved_reward(cfg, u)
    env.close()
    ev = summarise(spec, results, cfg, reward_cfg, pol.interface(), plan)
    ev.env_id = env_id
    return ev


def observation_features(env_id: str, cfg) -> list[str]:
    """The observation's entry names for an env config (routing: ``w0.queued_prefill``...;
    autoscaling: the features, suffixed ``@k`` for the k-th stacked interval)."""
    if env_id == ROUTING_ENV:
        from dynosim_gym.routing_env import feature_names
        return feature_names(int(cfg.env.initial_workers or cfg.sim.cluster.num_workers))
    from dynosim_gym.observations import FEATURES
    stack = cfg.env.observation.stack
    return [f"{f}@{k}" if stack > 1 else f for k in range(stack) for f in FEATURES]


def feature_diff(pol: PolicySpec, env_id: str, cfg) -> str:
    """``: features only the model has: ...; only this env has: ...`` from the model's run
    record (empty when it has none)."""
    run_cfg = (pol.run or {}).get("env_config")
    if not run_cfg:
        return " (the model has no run record to compare features with)"
    from dynosim_gym.config import load_env_config
    try:
        theirs = observation_features(env_id, load_env_config(run_cfg))
    except InputError:
        return " (the model's run record is not a valid env config)"
    ours = observation_features(env_id, cfg)

    def short(names: list[str]) -> str:
        return ", ".join(names[:6]) + (f" (+{len(names) - 6} more)" if len(names) > 6 else "")
    only_model = [f for f in theirs if f not in set(ours)]
    only_env = [f for f in ours if f not in set(theirs)]
    return (f"; features only the model has: {short(only_model) or 'none'}; only this env "
            f"config has: {short(only_env) or 'none'}")


def resolved_reward(cfg, u) -> dict[str, Any]:
    """The reward config a result was scored with, defaults resolved (``gpu_weight``,
    ``request_scale``)."""
    out = asdict(cfg.env.reward)
    for key, attr in (("gpu_weight", "w_gpu"), ("request_scale", "request_scale")):
        if hasattr(u, attr):
            out[key] = getattr(u, attr)
    return out


def summarise(spec: str, results: list[dict], cfg, reward_cfg: dict, interface: dict,
              plan: dict) -> Evaluation:
    eps = [r["summary"] for r in results]
    met = sum(e["requests_met"] for e in eps)
    decided = sum(e["requests_decided"] for e in eps)
    ttfts = sorted(x for r in results for x in r["ttfts"])
    tpots = sorted(x for r in results for x in r["tpots"])
    # routing episodes step per request: their length is the window (``simulated_s``)
    hours = sum(e.get("simulated_s", e["steps"] * cfg.env.interval_s) for e in eps) / 3600.0
    reused = sum(e.get("reused_input_tokens", 0) for e in eps)
    prompt = sum(e.get("prompt_tokens", 0) for e in eps)
    completed = sum(e.get("requests_completed", 0) for e in eps)
    gpu = float(sum(e["gpu_hours"] for e in eps))
    rewards = [e["reward"] for e in eps]
    return Evaluation(
        policy=spec, episodes=len(eps), mean_reward=float(np.mean(rewards)),
        std_reward=float(np.std(rewards)),
        sla_attainment=met / decided if decided else 1.0,
        gpu_hours=gpu, gpu_hours_per_episode=gpu / len(eps),
        p90_ttft_ms=_pct(ttfts, 0.9), p90_itl_ms=_pct(tpots, 0.9),
        scaling_events=int(sum(e.get("scaling_events", 0) for e in eps)),
        reversals_per_hour=sum(e.get("reversals", 0) for e in eps) / hours if hours else 0.0,
        requests_decided=decided,
        requests_in_flight=int(sum(e.get("requests_in_flight", 0) for e in eps)),
        simulated_hours=hours,
        mean_ttft_ms=float(np.mean(ttfts)) if ttfts else 0.0,
        prefix_cache_reused_ratio=reused / prompt if prompt else 0.0,
        request_throughput_rps=completed / (3600.0 * hours) if hours else 0.0,
        reward_config=reward_cfg,
        policy_interface=interface, episodes_plan=plan, per_episode=eps,
        traces=[r["trace"] for r in results if r["trace"] is not None], ttfts_ms=ttfts)


# -- leaderboard ---------------------------------------------------------------------------------

def find_models(directory: Path) -> list[Path]:
    return sorted(p.parent for p in directory.rglob("model.zip"))


def leaderboard(directory: str | Path, *, env_id: str = "DynoSim-v0", config: Any = None,
                episodes: int = 5, seed: int = 0, reference: str = "heuristic:load",
                policies: list[str] | None = None, quiet: bool = True) -> list[Evaluation]:
    """Evaluate the heuristics and every trained model under ``directory`` on the same
    held-out episodes (scored with the same evaluation config); write ``leaderboard.md``,
    ``leaderboard.csv``, ``leaderboard.json`` and the plots ``replicas_vs_load.png`` and
    ``sla_vs_gpu_hours.png`` there. Ratios are relative to ``reference``."""
    d = Path(directory)
    if not d.is_dir():
        raise InputError("leaderboard directory not found", file=str(d), field="--leaderboard")
    env_id = check_env_id(env_id)
    if env_id == ROUTING_ENV:
        return routing_leaderboard(d, config=config, episodes=episodes, seed=seed,
                                   reference="heuristic:kv" if reference == "heuristic:load"
                                   else reference, policies=policies, quiet=quiet)
    specs = policies or ([f"heuristic:{h}" for h in AUTOSCALING_HEURISTICS]
                         + [h for h in heuristics_for(env_id)          # tuned planners
                            if h.split(":", 1)[1] in tuned_baselines()]
                         + [str(p) for p in find_models(d)])
    if reference not in specs:
        specs.insert(0, reference)
    results = []
    for spec in specs:
        if not quiet:
            print(f"leaderboard: {spec}", file=sys.stderr, flush=True)
        if spec.startswith("oracle:"):
            from .oracle import evaluate_oracle
            results.append(evaluate_oracle(spec, config=config, episodes=episodes, seed=seed))
        else:
            results.append(evaluate(spec, env_id, config=config, episodes=episodes, seed=seed,
                                    keep_traces=1, quiet=quiet))
    ref = next(r for r in results if r.policy == reference)
    rows = []
    for r in results:
        row = {"policy": _label(r.policy, d), **{m: getattr(r, m) for m in METRICS}}
        row["sla_attainment_std"] = float(np.std([e["sla_attainment"] for e in r.per_episode]))
        row["gpu_hours_std"] = float(np.std([e["gpu_hours"] for e in r.per_episode]))
        for m in ("sla_attainment", "gpu_hours_per_episode", "mean_reward"):
            base = getattr(ref, m)
            row[f"{m}_vs_ref"] = getattr(r, m) / base if base else math.nan
        rows.append(row)
    with open(d / "leaderboard.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    (d / "leaderboard.md").write_text(_markdown(rows, _label(reference, d), episodes, seed,
                                                results[0].reward_config))
    (d / "leaderboard.json").write_text(json.dumps(
        [r.as_dict() for r in results], indent=1, default=str) + "\n")
    plot_replicas(results, d / "replicas_vs_load.png", d, reference=reference)
    plot_front(results, d / "sla_vs_gpu_hours.png", d)
    return results


def _label(spec: str, d: Path) -> str:
    if spec.startswith(("heuristic:", "oracle:", "pretrained:")):
        return spec
    p = Path(spec)
    try:
        return str(p.relative_to(d)) or p.name
    except ValueError:
        return str(p)


def _markdown(rows: list[dict], reference: str, episodes: int, seed: int,
              reward_cfg: dict) -> str:
    head = ("| policy | mean reward | SLA attainment (± std over episodes) | GPU-hours / "
            "episode | p90 TTFT (ms) | p90 ITL (ms) | scaling events | reversals / h | "
            "SLA vs ref | GPU-h vs ref |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
    lines = [f"| {r['policy']} | {r['mean_reward']:.2f} | {r['sla_attainment']:.1%} "
             f"(± {100 * r['sla_attainment_std']:.1f}) | "
             f"{r['gpu_hours_per_episode']:.3f} ± {r['gpu_hours_std']:.3f} | "
             f"{r['p90_ttft_ms']:.0f} | "
             f"{r['p90_itl_ms']:.1f} | {r['scaling_events']} | {r['reversals_per_hour']:.1f} | "
             f"{r['sla_attainment_vs_ref']:.3f} | {r['gpu_hours_per_episode_vs_ref']:.3f} |"
             for r in rows]
    note = (f"\n{episodes} held-out episodes (split=eval, seeds {seed}..{seed + episodes - 1}), "
            f"the same for every policy; SLA attainment and percentiles pooled over all "
            f"requests (± = std of the episodes' own figures); ratios "
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


def plot_replicas(results: list[Evaluation], path: Path, d: Path, max_panels: int = 6,
                  reference: str = "heuristic:load") -> None:
    """Provisioned workers against the arrival rate in the first evaluation episode, one
    panel per policy: the heuristics, then learned policies (if there are too many: those on
    the SLA/GPU-hours front, the ones beating ``reference`` on both axes first)."""
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
    for ax, r in zip(axes[:, 0], shown):
        tr = r.traces[0]
        ax2 = ax.twinx()
        ax2.fill_between(tr["t_s"], tr["arrival_rate_rps"], step="pre", color="0.85")
        if tr.get("queued_requests"):
            ax2.plot(tr["t_s"], np.asarray(tr["queued_requests"]) / 10.0, color="C3", lw=0.8)
        ax2.set_ylabel("req/s; queued/10", fontsize=8)
        workers = np.array(tr["active_workers"]) + np.array(tr["starting_workers"])
        ax.step(tr["t_s"], workers, where="pre", color="C0", lw=1.6)
        ax.set_ylim(0, top + 0.5)
        ax.set_ylabel("workers", fontsize=8)
        ax.set_zorder(ax2.get_zorder() + 1)
        ax.patch.set_visible(False)
        ax.set_title(f"{_label(r.policy, d)}: SLA {r.sla_attainment:.1%}, "
                     f"{r.gpu_hours_per_episode:.3f} GPU-h/episode (over all episodes)",
                     fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("simulated time (s), first held-out episode; blue: provisioned "
                           "workers, grey: arrival rate, red: queued requests / 10")
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
    from adjustText import adjust_text
    from matplotlib.lines import Line2D

    front = _front(results)
    fig, ax = plt.subplots(figsize=(8, 5))
    xs, ys, texts = [], [], []
    for r in results:
        heur = r.policy.startswith("heuristic:")
        x, y = r.gpu_hours_per_episode, 100 * r.sla_attainment
        ax.scatter(x, y, marker="s" if heur else "o", color="C1" if heur else "C0",
                   edgecolor="k" if r in front else "none", s=60, zorder=3)
        xs.append(x)
        ys.append(y)
        texts.append(ax.text(x, y, _label(r.policy, d), fontsize=7, zorder=4))
    pts = sorted((r.gpu_hours_per_episode, 100 * r.sla_attainment) for r in front)
    if len(pts) > 1:
        ax.plot(*zip(*pts), color="0.6", lw=1, zorder=2)
    ax.set_xlabel("GPU-hours per episode (lower is better)")
    ax.set_ylabel("SLA attainment (% of requests, higher is better)")
    ax.set_title("Policies on held-out episodes", fontsize=10)
    ax.grid(alpha=0.3)
    ax.margins(x=0.12, y=0.12)
    ax.legend(handles=[
        Line2D([], [], marker="s", ls="", color="C1", label="heuristic planner"),
        Line2D([], [], marker="o", ls="", color="C0", label="trained policy"),
        Line2D([], [], marker="o", ls="-", color="0.6", markerfacecolor="none",
               markeredgecolor="k", label="front (outlined: not beaten on both axes)")],
        fontsize=7, loc="lower right")
    fig.tight_layout()
    adjust_text(texts, x=xs, y=ys, ax=ax, expand=(1.3, 1.6), max_move=None,
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
        row["p90_ttft_ms_std"] = float(np.std([e["ttft_p90_ms"] for e in r.per_episode]))
        row["requests_decided"] = r.requests_decided
        for m in ("sla_attainment", "p90_ttft_ms", "request_throughput_rps"):
            base = getattr(ref, m)
            row[f"{m}_vs_ref"] = getattr(r, m) / base if base else math.nan
        rows.append(row)
    with open(d / "leaderboard.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
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
        if len(x) == 0:
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
