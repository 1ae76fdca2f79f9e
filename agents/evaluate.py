"""Score policies on held-out episodes or whole traces (``dynosim evaluate``).

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
simulated hour); ``flaps`` and ``flaps_per_hour`` (reversals less than
:data:`~dynosim_gym.autoscaling_env.FLAP_WINDOW_S` = 300 s after the previous, opposite, move:
Kubernetes HPA's default scale-down stabilization window; a load that rises and falls needs
reversals, not flaps); ``mean_reward`` (per episode). Routing (``DynoSimRouting-v0``) adds
``mean_ttft_ms``, ``prefix_cache_reused_ratio`` (prompt tokens served from the prefix cache /
prompt tokens of the completed requests) and ``request_throughput_rps`` (completed requests
per simulated second). ``per_episode`` lists each episode's summary (the env's
``episode_summary``) under the same names as the pooled figures (``p90_ttft_ms``,
``p90_itl_ms``: that episode's percentiles). The leaderboards are in :mod:`agents.leaderboard`.
"""
from __future__ import annotations

import bisect
import dataclasses
import json
import math
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import InputError
from sim.wording import exact, plural

from dynosim_gym.actions import POOLS

from .heuristics import ROUTING_ENV, heuristic_env, heuristics_for, make_heuristic
from .algos import algo_class, check_env_id

METRICS = ("mean_reward", "sla_attainment", "gpu_hours_per_episode", "p90_ttft_ms",
           "p90_itl_ms", "scaling_events", "reversals_per_hour", "flaps_per_hour")
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
    flaps: int
    flaps_per_hour: float
    requests_decided: int
    requests_in_flight: int            # arrived, not decided at the episodes' cut-offs
    simulated_hours: float
    # routing figures (0 where they do not apply): mean TTFT of the completed requests,
    # prompt tokens served from the prefix cache / prompt tokens of the completed requests,
    # completed requests per simulated second (pooled).
    mean_ttft_ms: float = 0.0
    prefix_cache_reused_ratio: float = 0.0
    request_throughput_rps: float = 0.0
    # Pooled attainment weighs episodes by their requests, so a policy can give up whole
    # light episodes and still score on the heavy ones: the mean of the episodes' own
    # attainment, and per workload family (the episode setup's ``scenario``, else its
    # ``workload``) the family's pooled attainment, mean episode attainment, GPU-hours per
    # episode, episodes and requests decided, show it.
    mean_episode_sla_attainment: float = 0.0
    per_family: dict[str, dict[str, float]] = field(default_factory=dict)
    env_id: str = ""
    # the ``--set`` overrides the evaluation config was built with, as given (on top of the
    # config and the model's policy interface)
    overrides: dict[str, Any] = field(default_factory=dict)
    reward_config: dict[str, Any] = field(default_factory=dict)
    policy_interface: dict[str, Any] = field(default_factory=dict)
    # a model scored without its run record: the note printed on stderr ("no run record
    # for MODEL; scoring with the evaluation config's interface (...)"); empty otherwise
    interface_note: str = ""
    episodes_plan: dict[str, Any] = field(default_factory=dict)
    # completed requests behind the pooled latency percentiles: 0 = no samples (nothing
    # completed; p90_ttft_ms / p90_itl_ms / mean_ttft_ms are then 0, not a latency); None in
    # records written before it was kept
    latency_samples: int | None = None
    # pooled GPU-hours per pool of a disaggregated config ({"prefill": h, "decode": h},
    # summing to gpu_hours); empty for one aggregated pool
    gpu_hours_by_role: dict[str, float] = field(default_factory=dict)
    # the full resolved env config the episodes ran (EnvConfig.to_dict(): the config, the
    # policy interface and --set on top), as train's run.json records it, so the result
    # can be reproduced from the output alone
    env_config: dict[str, Any] = field(default_factory=dict)
    per_episode: list[dict[str, Any]] = field(default_factory=list, repr=False)
    traces: list[dict[str, list[float]]] = field(default_factory=list, repr=False)
    ttfts_ms: list[float] = field(default_factory=list, repr=False)   # pooled, sorted

    #: v0.1 result keys (``leaderboard.json`` of docs/leaderboard) -> these fields
    V01_KEYS = {"ttft_p90_ms": "p90_ttft_ms", "itl_p90_ms": "p90_itl_ms",
                "gpu_hours": "gpu_hours_per_episode"}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "Evaluation":
        """An Evaluation from a result record, v0.1's (per-episode GPU-hours, mean p90s)
        included; figures v0.1 did not record are 0. ``per_episode`` is kept (a figure's
        subtitle names the episodes' seeds and workload families from it)."""
        names = {f.name for f in dataclasses.fields(cls)}
        if "gpu_hours_per_episode" not in rec:          # v0.1
            rec = {cls.V01_KEYS.get(k, k): v for k, v in rec.items()}
            rec["gpu_hours"] = rec["gpu_hours_per_episode"] * rec.get("episodes", 1)
        base = {"scaling_events": 0, "reversals_per_hour": 0.0, "flaps": 0,
                "flaps_per_hour": 0.0, "requests_in_flight": 0,
                "simulated_hours": 0.0, "gpu_hours": 0.0, "requests_decided": 0}
        return cls(**{**base, **{k: v for k, v in rec.items()
                                 if k in names and k not in ("traces", "ttfts_ms")}})

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
    kind: str                          # heuristic | model | pretrained | rllib | es
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
        if self.kind == "heuristic" and self.path is not None:    # a tuned YAML elsewhere
            from .heuristics import tuned_policy
            return tuned_policy(self.run, env, self.path.stem)
        if self.kind == "heuristic":
            try:
                return make_heuristic(self.spec, env)
            except ValueError as exc:
                raise InputError(str(exc), field="--policy") from None
        if self.kind == "rllib":
            from .rllib_train import load_policy as load_rllib_policy
            return load_rllib_policy(self.path)
        if self.kind == "es":                    # scripts/es_search.py: agents.linear_policy
            from .linear_policy import load_policy as load_linear_policy
            pol = load_linear_policy(self.path)
            names = list(env.unwrapped.cfg.env.observation.features)
            if env.unwrapped.cfg.env.observation.stack == 1 and pol.features != names:
                raise InputError(f"the policy reads features {pol.features}, this env config "
                                 f"observes {names}", file=str(self.path / "policy.json"),
                                 field="features")
            return pol
        algo = (self.run or {}).get("algo", "ppo")
        try:
            return algo_class(algo).load(self.path, device="cpu")
        except Exception as exc:   # SB3 raises ValueError/AssertionError/KeyError/... here
            raise InputError(f"cannot load it as a stable-baselines3 {algo} model: "
                             f"{type(exc).__name__}: {exc}", file=str(self.path),
                             field="--policy") from None


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
    if path.suffix.lower() in (".yaml", ".yml") and path.is_file():
        # a tuned planner's YAML (dynosim tune --out FILE): scored as that tuned heuristic
        from .heuristics import TUNED_BASES, read_tuned
        try:
            data = read_tuned(path)
        except ValueError as exc:
            raise InputError(f"not a tuned planner (dynosim tune's YAML): "
                             f"{str(exc).partition(': ')[2]}", file=str(path),
                             field="--policy") from None
        return PolicySpec(spec, "heuristic", TUNED_BASES[data["base"]], path, data)
    path = Path(spec)
    if path.is_dir() and (path / "run.json").is_file():
        run = _read_run_json(path / "run.json")
        if run.get("framework") == "rllib":      # a --framework rllib run directory
            return PolicySpec(spec, "rllib", run.get("env_id"), path, run)
        if run.get("framework") == "es":         # a scripts/es_search.py run directory
            return PolicySpec(spec, "es", run.get("env_id"), path, run)
    if path.is_dir() and (path / "policy.json").is_file() and not (path / "model.zip").is_file():
        # a scripts/es_search.py run directory whose run record is missing or not its own
        if not (path / "run.json").is_file():
            raise InputError("an es run directory (it holds policy.json) without its run.json "
                             "(the run record scripts/es_search.py writes beside it)",
                             file=str(path / "run.json"), field="--policy")
        raise InputError("an es run directory (it holds policy.json) whose run.json does not "
                         "say \"framework\": \"es\"", file=str(path / "run.json"),
                         field="--policy")
    if path.is_dir():
        path = path / "model.zip"
    if not path.is_file():
        raise InputError(f"no such model: {spec} (expected heuristic:NAME, pretrained:NAME, "
                         "a model.zip or a dynosim train --out directory)", field="--policy")
    if not _is_sb3_zip(path):
        raise InputError("not a stable-baselines3 model (expected the model.zip that "
                         "dynosim train or SB3's model.save wrote)", file=str(path),
                         field="--policy")
    # its run record: run.json beside it (dynosim train), or NAME.json (a pretrained model)
    run_file = next((f for f in (path.parent / "run.json", path.with_suffix(".json"))
                     if f.is_file()), None)
    run = _read_run_json(run_file) if run_file is not None else None
    return PolicySpec(spec, "model", (run or {}).get("env_id"), path, run)


def _is_sb3_zip(path: Path) -> bool:
    """An SB3 save: a zip archive with its ``data`` entry (the JSON of the model's class
    and hyperparameters; stable_baselines3.common.save_util)."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            return "data" in z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


def _read_run_json(path: Path) -> dict[str, Any]:
    try:
        run = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"the model's run record is not valid JSON ({exc})", file=str(path),
                         field="--policy") from None
    if not isinstance(run, dict):
        raise InputError("the model's run record is not a JSON object", file=str(path),
                         field="--policy")
    _note_status(run, path)
    return run


_STATUS_NOTED: set[str] = set()


def _note_status(run: dict[str, Any], path: Path) -> None:
    """A run whose ``run.json`` status is not ``completed`` (``running``: still training or
    killed; ``failed``; ``cut``: an ES search stopped at its budget) is scored as saved, with
    a one-line stderr note (once per file): the user may be scoring a partial run."""
    status = run.get("status")
    if status in (None, "completed") or str(path) in _STATUS_NOTED:
        return
    _STATUS_NOTED.add(str(path))
    print(f"note: {path}: status is {status!r}, not 'completed': scoring the policy the run "
          "saved so far", file=sys.stderr)


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
                 windows: int | None, default: bool = False) -> list[float]:
    """Start times of consecutive windows of ``window_s`` covering the trace (``0``: one
    window over the whole trace). Errors: window longer than the trace, not a multiple of
    the decision interval, more windows than fit, a window without requests."""
    if window_s < 0 or not math.isfinite(window_s):
        raise InputError(f"must be >= 0, got {window_s:g}", field="--window-s")
    if window_s == 0:
        starts, length = [0.0], total_s
    else:
        if window_s > total_s:
            what = (f"the default window (60 decision intervals of {interval_s:g} s = "
                    f"{exact(window_s)} s, no --window-s given)" if default else
                    f"a {exact(window_s)} s window")
            how = ("; pass --window-s S (a multiple of the interval, at most the trace) or "
                   "--window-s 0 for the whole trace as one episode" if default else "")
            raise InputError(f"{what} is longer than the trace ({exact(total_s)} s){how}",
                             field="--window-s")
        k = window_s / interval_s
        if abs(k - round(k)) > 1e-9:
            raise InputError(f"must be a multiple of the decision interval ({interval_s:g} s), "
                             f"got {exact(window_s)}", field="--window-s")
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


def make_eval_env(spec: PolicySpec, env_id: str, config: Any, overrides: dict[str, Any],
                  flags: dict[str, str] | None = None):
    """The evaluation env: ``config`` (default: the env's default) with the policy's
    interface on top, then ``overrides`` (``--set``; ``flags`` names the flag of an
    override that came from another one, e.g. ``{"workload": "--trace"}``)."""
    import gymnasium as gym
    from dynosim_gym.config import load_env_config
    base = config if config is not None else DEFAULT_CONFIGS[env_id]
    interface = {f"env.{k}": v for k, v in spec.interface().items()}
    try:
        cfg = load_env_config(base, **{**interface, **overrides})
    except InputError as exc:
        # a value the model brought (not the config's or an override's): say so
        key = next((k for k in interface if exc.field and k not in overrides
                    and (exc.field == k or exc.field.startswith(k + "."))), None)
        if key is None:
            override_error(exc, lambda o: load_env_config(base, **{**interface, **o}),
                           overrides, flags)
        raise InputError(f"{exc.detail} (the value comes from the policy interface "
                         f"{spec.spec} was trained with, {key}: {_short(interface[key])}; "
                         "score it on a config that takes that interface)",
                         field=exc.field) from None
    try:
        return gym.make(f"dynosim_gym:{env_id}", config=cfg.to_dict()), cfg
    except InputError as exc:
        raise located(exc, cfg) from None


def located(exc: InputError, cfg) -> InputError:
    """``exc``, raised by an env built from ``cfg.to_dict()`` (so it names only "config"),
    with the file and line ``cfg`` was loaded from (``cfg.sim.locate`` of its field)."""
    if exc.file != "config" or exc.field is None:
        return exc
    file, line = cfg.sim.locate(exc.field)
    from dynosim_gym.episodes import ForeignScenario
    if isinstance(exc, ForeignScenario):     # kept: evaluate advises --env on it
        return ForeignScenario(exc.detail, owner=exc.owner, file=file, line=line,
                               field=exc.field)
    return InputError(exc.detail, file=file, line=line, field=exc.field)


def override_error(exc: InputError, load, overrides: dict[str, Any],
                   flags: dict[str, str] | None = None) -> None:
    """Re-raise ``exc`` (an env config that failed with ``overrides`` on top) naming the
    flag that supplied the bad value: ``--set KEY`` (or ``flags[KEY]``, e.g. ``--trace``)
    when the error is in an override's field, or when the config loads without the
    overrides (a cross-field check that blamed the config's own line, e.g. ``--set
    env.min_endpoint=4`` against the YAML's ``cluster.num_workers: 2``); else ``exc``
    itself. ``load(overrides)`` loads the config with those overrides."""
    from dynosim_gym.config import override_key
    flags = flags or {}

    def flag(key: str) -> str:
        return flags.get(key, f"--set {key}")
    if not overrides:
        raise exc
    dotted = {}
    for key in overrides:
        try:
            dotted[key] = override_key(key)
        except InputError:
            dotted[key] = key
    field = exc.field or ""
    own = max((k for k, d in dotted.items() if field and (
        field == d or field.startswith(d + ".") or d.startswith(field + "."))),
        key=lambda k: len(dotted[k]), default=None)           # the most specific key
    if own is not None:
        where = "" if field == dotted[own] else f" (field '{field}')"
        raise InputError(f"{exc.detail}{where}", field=flag(own)) from None
    try:
        load({})
    except InputError:
        raise exc from None                     # the config fails on its own
    culprit = next((k for k in overrides if _fails(load, {k: overrides[k]})), None)
    keys = [culprit] if culprit is not None else list(overrides)
    where = exc.format().split(": ", 1)[0] if exc.file or exc.field else ""
    raise InputError(f"{exc.detail}" + (f" ({where})" if where else ""),
                     field=", ".join(flag(k) for k in keys)) from None


def _fails(load, overrides: dict[str, Any]) -> bool:
    try:
        load(overrides)
    except InputError:
        return True
    return False


def _short(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)[:120]


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
                 episodes: int, seed: int, split: str, quiet: bool = True):
    """The evaluation env, its config, and the episodes to run: ``[(reset options, seed)]``
    plus a JSON description of the plan. Unless ``quiet``, what the trace loader did beyond
    a plain read (rows sorted, timestamps shifted, ...) is a note on stderr, as ``dynosim
    simulate`` prints it."""
    overrides = dict(overrides)
    if trace is None:
        env, cfg = make_eval_env(pol, env_id, config, overrides)
        runs = [({"split": split}, seed + k) for k in range(episodes)]
        return env, cfg, runs, {"split": split, "seeds": list(range(seed, seed + episodes))}
    from dynosim_gym.config import override_key
    for key in overrides:
        try:
            dotted = override_key(key)
        except InputError:
            continue                  # an unknown key: make_eval_env reports it
        if dotted == "env.episode_steps":
            raise InputError("with --trace the episode length is --window-s (the window "
                             "plan sets env.episode_steps); remove this --set",
                             field=f"--set {key}")
    overrides["workload"] = trace_workload(trace)
    flags = {"workload": "--trace"}
    env, cfg = make_eval_env(pol, env_id, config, overrides, flags)
    tr = env.unwrapped.episodes.trace
    env.close()
    if getattr(tr, "notes", None) and not quiet:
        print(f"dynosim: note: {trace}: {'; '.join(tr.notes)}", file=sys.stderr)
    arrivals = [r.arrival_ms for r in tr._firsts]
    if not arrivals:
        raise InputError("the trace has no requests", file=trace, field="--trace")
    total_s = arrivals[-1] / 1000.0
    iv = cfg.env.interval_s
    ws = 60.0 * iv if window_s is None else float(window_s)
    starts = plan_windows(arrivals, total_s, ws, iv, windows, default=window_s is None)
    unscored = unscored_requests(arrivals, starts, ws)
    if unscored:
        end = starts[-1] + ws
        why = (f"the trace's tail past the last whole {ws:g} s window" if windows is None
               else f"--windows {windows} scores the first {plural(len(starts), 'window')}")
        print(f"dynosim: {unscored:,} of {len(arrivals):,} trace requests arrive at or after "
              f"{end:g} s and are in no scored window ({why}); --window-s 0 scores the whole "
              "trace as one episode", file=sys.stderr)
    steps = int(round(ws / iv)) if ws > 0 else int(math.floor(total_s / iv)) + 1
    overrides["env.episode_steps"] = steps
    env, cfg = make_eval_env(pol, env_id, config, overrides,
                             {**flags, "env.episode_steps": "--window-s"})
    runs = [({"window_start_s": s}, seed) for s in starts]
    return env, cfg, runs, {"trace": trace, "window_s": ws, "windows": len(starts),
                            "episode_steps": steps, "seed": seed,
                            "requests_in_trace": len(arrivals), "requests_unscored": unscored}


def unscored_requests(arrivals_ms: list[float], starts: list[float], window_s: float) -> int:
    """Trace requests (first turns, by arrival) in none of the windows ``[s, s + window_s)``
    (``window_s`` 0: the whole trace, none left out): the tail after the last whole window,
    or the windows after the first ``--windows N``. The windows are consecutive from 0."""
    if window_s == 0 or not starts:
        return 0
    end_ms = (starts[-1] + window_s) * 1000.0
    return len(arrivals_ms) - bisect.bisect_left(arrivals_ms, end_ms)


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
    if env_id is None and config is not None and pol.env_id is not None:
        check_config_env(spec, pol.env_id, config)
    env_given = env_id or pol.env_id
    env_id = check_env_id(env_id or pol.env_id or "DynoSim-v0")
    if pol.env_id is not None and pol.env_id != env_id:
        what = "a routing policy" if pol.env_id == ROUTING_ENV else "an autoscaling policy"
        valid = f"; the heuristics for {env_id}: {', '.join(heuristics_for(env_id))}"
        raise InputError(f"{spec} is {what}: it acts on {pol.env_id}, not {env_id}{valid}",
                         field="--policy")
    if episodes < 1:
        raise InputError(f"must be >= 1, got {episodes}", field="--episodes")
    from dynosim_gym.episodes import ForeignScenario
    try:
        env, cfg, runs, plan = episode_plan(pol, env_id, config, overrides or {}, trace,
                                            window_s, windows, episodes, seed, split, quiet)
    except ForeignScenario as exc:       # a config of the other env, no env given: say so
        if env_given:
            raise
        raise InputError(f"{exc.detail.partition('; expected')[0]}: pass --env {exc.owner}"
                         f"{missing_record_hint(pol)}", file=exc.file, line=exc.line,
                         field=exc.field) from None
    if pol.kind == "heuristic":
        check_counts_action(spec, cfg, overrides or {})
    policy = pol.load(env)
    space = getattr(policy, "observation_space", None)
    acts = getattr(policy, "action_space", None)

    def fits(e) -> bool:            # both spaces: a --set that breaks either is named
        return ((space is None or e.observation_space.shape == space.shape)
                and (acts is None or e.action_space == acts))
    if space is not None and space.shape != env.observation_space.shape:
        cause, keys = mismatch_cause(pol, env_id, config, overrides or {}, fits)
        raise InputError(f"the model observes {space.shape}, this env config gives "
                         f"{env.observation_space.shape}{cause}"
                         f"{missing_record_hint(pol) or feature_diff(pol, env_id, cfg)}",
                         field=_blamed(keys))
    if acts is not None and acts != env.action_space:
        cause, keys = mismatch_cause(pol, env_id, config, overrides or {}, fits)
        raise InputError(f"the model acts in {acts}, this env config gives "
                         f"{env.action_space}{cause}{missing_record_hint(pol)}",
                         field=_blamed(keys))
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
    ev.overrides = dict(overrides or {})
    ev.interface_note = no_record_note(pol, cfg)
    if ev.interface_note:
        print(f"dynosim: {ev.interface_note}", file=sys.stderr)
    changed = interface_changes(pol.interface(), cfg)
    if changed:
        print(f"dynosim: warning: the overrides change the model's policy interface "
              f"({'; '.join(changed)}); it was trained with the values in policy_interface",
              file=sys.stderr)
    return ev


def scenario_env(config: Any) -> str | None:
    """The env an env config is a scenario of: ``DynoSimRouting-v0`` for ``routing_default``
    or a config whose training families are all routing families (``routing_families``),
    ``DynoSim-v0`` for ``autoscale_default`` or a config whose training families are all
    autoscaling families (:data:`dynosim_gym.scenarios.FAMILIES`), else None (either env
    takes it: the legacy shapes, a trace), and for a dict (a config given as values, e.g. a
    result's ``env_config``). A config that does not load is None (the env's own load says
    why)."""
    from dynosim_gym.config import load_env_config, resolve_config_path
    from dynosim_gym.scenarios import FAMILIES, ROUTING_FAMILIES

    if not isinstance(config, (str, Path)):
        return None
    try:
        path = resolve_config_path(config).resolve()
        for env_id, name in DEFAULT_CONFIGS.items():    # each env's default scenario
            if path == resolve_config_path(name).resolve():
                return env_id
        scenarios = [x.strip() for x in load_env_config(path).env.scenarios.split(",")]
    except InputError:
        return None
    if scenarios and all(x in ROUTING_FAMILIES for x in scenarios):
        return ROUTING_ENV
    if scenarios and all(x in FAMILIES and x not in ROUTING_FAMILIES for x in scenarios):
        return "DynoSim-v0"
    return None


def check_config_env(spec: str, policy_env: str, config: Any) -> None:
    """Without ``--env``, a policy scored on a scenario of the other env is an InputError
    on ``--config`` (as ``dynosim train`` refuses a routing scenario without ``--env``):
    ``--env`` says "score it there anyway"."""
    kind = scenario_env(config)
    if kind is None or kind == policy_env:
        return
    from dynosim_gym.config import load_env_config
    if policy_env == ROUTING_ENV and load_env_config(config).sim.disagg is not None:
        return             # no --env helps: the routing env's own error names the pools
    what = "a routing policy" if policy_env == ROUTING_ENV else "an autoscaling policy"
    # "--env" helps only when the policy's env takes every scenario of the config
    from dynosim_gym.scenarios import ENV_FAMILIES
    env = load_env_config(config).env
    names = {x.strip() for v in (env.scenarios, env.eval_scenarios or "")
             for x in v.split(",") if x.strip()}
    foreign = {s for other, fams in ENV_FAMILIES.items() if other != policy_env for s in fams}
    anyway = "" if names & foreign else f", or --env {policy_env} to score it on this one anyway"
    raise InputError(f"{config} is a {kind} scenario and {spec} is {what} ({policy_env}): "
                     f"give a {policy_env} config (e.g. {DEFAULT_CONFIGS[policy_env]})"
                     f"{anyway}", field="--config")


def check_counts_action(spec: str, cfg, overrides: dict[str, Any]) -> None:
    """Heuristics and oracles decide worker counts (``target_action``); a ``residual``
    action would clip each count to the base planner's + ``env.action.residual_offsets``
    and score another policy under their name: an InputError on the flag or the config
    line that set it. (The BC teacher of a residual learner plans on a target env of its
    own, agents/router_train.py, so it never comes here.)"""
    if cfg.env.action.type != "residual":
        return
    msg = (f"{spec} decides worker counts, which a residual action clips to the base "
           "planner's count + env.action.residual_offsets (it would score another policy "
           "under its name): score it with the default action, not env.action.type residual")
    if "env.action.type" in overrides:
        raise InputError(msg, field="--set env.action.type")
    raise located(InputError(msg, file="config", field="env.action.type"), cfg)


def interface_changes(model: dict[str, Any], cfg) -> list[str]:
    """``env.KEY: trained -> scored`` for every policy-interface entry of a model that the
    evaluation config (after ``--set``) scores with a different value."""
    eff = asdict(cfg.env)
    out = []
    for k, v in model.items():
        e = eff.get(k)
        if isinstance(v, dict) and isinstance(e, dict):
            out += [f"env.{k}.{kk}: {vv} -> {e[kk]}" for kk, vv in v.items()
                    if kk in e and e[kk] != vv]
        elif e != v:
            out.append(f"env.{k}: {v} -> {e}")
    return out


def observation_features(env_id: str, cfg) -> list[str]:
    """The observation's entry names for an env config (routing: ``w0.queued_prefill``...;
    autoscaling: the features, suffixed ``@k`` for the k-th stacked interval)."""
    if env_id == ROUTING_ENV:
        from dynosim_gym.routing_env import feature_names
        return feature_names(int(cfg.env.initial_workers or cfg.sim.cluster.num_workers))
    stack = cfg.env.observation.stack
    names = cfg.env.observation.features
    return [f"{f}@{k}" if stack > 1 else f for k in range(stack) for f in names]


def no_record_note(pol: PolicySpec, cfg) -> str:
    """For a model without its run record that fits the env config's spaces: the interface
    it is scored with (the evaluation config's, which may not be the one it was trained
    with: a scale-down window or a feature set changes its scores without changing its
    spaces). Empty for heuristics and models with a record."""
    if pol.run is not None or pol.path is None or pol.kind == "rllib":
        return ""
    obs = cfg.env.observation
    from dynosim_gym.observations import FEATURES
    feats = ("the default features" if list(obs.features) == list(FEATURES)
             else f"features {', '.join(obs.features)}")
    action = asdict(cfg.env.action)
    if action["scale_down_window_initial"] == "none":   # the default (round 14b): as before
        action.pop("scale_down_window_initial")
    if action["type"] != "residual":           # the offsets only mean something there
        action.pop("residual_offsets")
        action.pop("base_interval_s")
        action.pop("base_before_first_tick")
        action.pop("stabilise")
        action.pop("offset_dwell_s")
    return (f"no run record for {pol.path}; scoring with the evaluation config's interface "
            f"(action {_short(action)}, observation stack {obs.stack} of "
            f"{feats}, interval_s {cfg.env.interval_s:g})")


def missing_record_hint(pol: PolicySpec) -> str:
    """What to do when a model without its run record (a ``model.zip`` copied without
    ``run.json``, or ``NAME.zip`` without ``NAME.json``) does not fit the env config: the
    record carries its training interface (:data:`INTERFACE_KEYS`). Empty otherwise."""
    if pol.run is not None or pol.path is None or pol.kind == "rllib":
        return ""
    keys = ", ".join(f"env.{k}" for k in INTERFACE_KEYS)
    return (f"; {pol.path} has no run record ({pol.path.with_suffix('.json').name} beside "
            f"it, or run.json in its directory), which gives the interface it was trained "
            f"with ({keys}): copy the record from its training run next to it, or pass that "
            "interface with --env (the env it was trained on: --env DynoSimRouting-v0 for "
            "a router) and --config YAML (the training env config) or --set KEY=VALUE "
            "(e.g. --set action.type=target, and the action's scale-down window "
            "action.scale_down_window_s and observation.features it was trained with: "
            "nothing checks those against the model)")


def _blamed(keys: list[str]) -> str:
    """The flag an evaluation's space mismatch names: the ``--set`` keys that cause it,
    else ``--policy``."""
    return f"--set {', '.join(keys)}" if keys else "--policy"


def mismatch_cause(pol: PolicySpec, env_id: str, config: Any, overrides: dict[str, Any],
                   fits) -> tuple[str, list[str]]:
    """Why a model does not fit the evaluation env (``fits(env)`` False): the ``--set`` keys
    without which it would fit (each alone; else, when it fits without them all, each key
    that breaks the fit by itself, so several culprits are all named), and, when the model's run
    record names another training config (``config_source``) than the one evaluated, that
    config. Returns ``("; ..." text or "", the keys)``."""
    parts, keys = [], []
    if overrides:
        def fit_without(drop: set[str]) -> bool:
            try:
                env, _ = make_eval_env(pol, env_id, config,
                                       {k: v for k, v in overrides.items() if k not in drop})
            except InputError:
                return False
            try:
                return bool(fits(env))
            finally:
                env.close()
        keys = [k for k in overrides if fit_without({k})]
        if not keys and fit_without(set(overrides)):
            # several keys break it: each one that, kept alone, still breaks the fit
            keys = [k for k in overrides if not fit_without(set(overrides) - {k})] \
                or list(overrides)
        if keys:
            parts.append(f"--set {', '.join(keys)} "
                         f"{'causes' if len(keys) == 1 else 'cause'} it (the model fits "
                         f"without {'it' if len(keys) == 1 else 'them'})")
    source = (pol.run or {}).get("config_source")
    evaluated = config if config is not None else DEFAULT_CONFIGS[env_id]
    if source and not keys and not _same_config(source, evaluated):
        parts.append(f"the model was trained on {source} (its run record's config_source) "
                     f"and this evaluation uses {evaluated}: --config {source} scores it there")
    return "".join(f"; {p}" for p in parts), keys


def _same_config(a: Any, b: Any) -> bool:
    """Whether two ``--config`` values name the same file (bundled names resolved)."""
    from dynosim_gym.config import resolve_config_path
    if not isinstance(a, (str, Path)) or not isinstance(b, (str, Path)):
        return a == b
    try:
        return resolve_config_path(a).resolve() == resolve_config_path(b).resolve()
    except InputError:
        return str(a) == str(b)


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
    if not only_model and not only_env:      # the same features: the shapes differ elsewhere
        return ""
    return (f"; features only the model has: {short(only_model) or 'none'}; only this env "
            f"config has: {short(only_env) or 'none'}")


def resolved_reward(cfg, u) -> dict[str, Any]:
    """The reward config a result was scored with, defaults resolved (``gpu_weight``,
    ``request_scale``); a routing env's is only what applies to it (``sla_weight``: its
    reward is ``sla_weight x (met - violated)`` per request)."""
    from dynosim_gym.routing_env import DynoSimRoutingEnv
    if isinstance(u, DynoSimRoutingEnv):
        return {"sla_weight": u.w_sla}
    out = asdict(cfg.env.reward)
    for key, attr in (("gpu_weight", "w_gpu"), ("request_scale", "request_scale")):
        if hasattr(u, attr):
            out[key] = getattr(u, attr)
    return out


def _episode_attainment(e: dict) -> float:
    return e["requests_met"] / e["requests_decided"] if e["requests_decided"] else 1.0


def _per_family(eps: list[dict]) -> dict[str, dict[str, float]]:
    """Episode summaries grouped by workload family (:attr:`Evaluation.per_family`)."""
    groups: dict[str, list[dict]] = {}
    for e in eps:
        setup = e.get("setup") or {}
        groups.setdefault(str(setup.get("scenario") or setup.get("workload") or "episode"),
                          []).append(e)
    out = {}
    for name, g in sorted(groups.items()):
        decided = sum(e["requests_decided"] for e in g)
        out[name] = {
            "episodes": len(g), "requests_decided": decided,
            "sla_attainment": sum(e["requests_met"] for e in g) / decided if decided else 1.0,
            "mean_episode_sla_attainment": float(np.mean([_episode_attainment(e) for e in g])),
            "gpu_hours_per_episode": float(sum(e["gpu_hours"] for e in g)) / len(g)}
    return out


#: the env's episode-summary names -> the result's (``per_episode`` uses the pooled names)
EPISODE_KEYS = {"ttft_p90_ms": "p90_ttft_ms", "itl_p90_ms": "p90_itl_ms"}


def summarise(spec: str, results: list[dict], cfg, reward_cfg: dict, interface: dict,
              plan: dict) -> Evaluation:
    eps = [{EPISODE_KEYS.get(k, k): v for k, v in r["summary"].items()} for r in results]
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
        mean_episode_sla_attainment=float(np.mean([_episode_attainment(e) for e in eps])),
        per_family=_per_family(eps),
        policy=spec, episodes=len(eps), mean_reward=float(np.mean(rewards)),
        std_reward=float(np.std(rewards)),
        sla_attainment=met / decided if decided else 1.0,
        gpu_hours=gpu, gpu_hours_per_episode=gpu / len(eps),
        p90_ttft_ms=_pct(ttfts, 0.9), p90_itl_ms=_pct(tpots, 0.9),
        scaling_events=int(sum(e.get("scaling_events", 0) for e in eps)),
        reversals_per_hour=sum(e.get("reversals", 0) for e in eps) / hours if hours else 0.0,
        flaps=int(sum(e.get("flaps", 0) for e in eps)),
        flaps_per_hour=sum(e.get("flaps", 0) for e in eps) / hours if hours else 0.0,
        requests_decided=decided,
        requests_in_flight=int(sum(e.get("requests_in_flight", 0) for e in eps)),
        simulated_hours=hours,
        mean_ttft_ms=float(np.mean(ttfts)) if ttfts else 0.0,
        prefix_cache_reused_ratio=reused / prompt if prompt else 0.0,
        request_throughput_rps=completed / (3600.0 * hours) if hours else 0.0,
        reward_config=reward_cfg,
        policy_interface=interface, episodes_plan=plan, per_episode=eps,
        latency_samples=len(ttfts),
        gpu_hours_by_role={r: float(sum(e[f"gpu_hours_{r}"] for e in eps))
                           for r in POOLS if f"gpu_hours_{r}" in eps[0]},
        env_config=cfg.to_dict(),
        traces=[r["trace"] for r in results if r["trace"] is not None], ttfts_ms=ttfts)
