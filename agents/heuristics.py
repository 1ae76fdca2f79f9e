"""Heuristic policies with Stable-Baselines3's ``predict()`` signature.

``policy.predict(obs, state=None, episode_start=None, deterministic=False) -> (actions,
state)`` is all SB3's ``evaluate_policy`` and our evaluator need, so Dynamo's planners and
learned agents are scored through one path on the same episodes.

* :class:`PlannerPolicy` (``heuristic:load`` / ``heuristic:throughput``) asks each
  environment what Dynamo's load-based or throughput-based planner would do now
  (``DynoSimEnv.planner_action``). The planner runs inside the simulation as an advisor and
  reads what it reads in Dynamo: per-engine forward-pass metrics and queues (load), arrival
  counts, ISL/OSL and the engine timing model (throughput). That is more than the agent's
  observation, so the comparison favours the heuristic.
* Tuned planners (``heuristic:load-tuned``, ...): a planner with knobs found by ``dynosim
  tune`` on the training split, shipped as a small YAML in ``agents/tuned/``.
* :class:`StaticPolicy` (``heuristic:static``) never changes the worker count;
  ``heuristic:static:N`` (:class:`StaticCountPolicy`) goes to N workers and stays there.
* Routing (``DynoSimRouting-v0``): :class:`RoundRobinPolicy`, :class:`LeastLoadedPolicy`,
  :class:`RandomRoutePolicy` and :class:`KvCostPolicy` (Dynamo's KV-aware cost from the
  observation; ``heuristic:kv-tuned`` is it with knobs found by ``dynosim tune``).

The policy must be bound to the environment it acts on (``bind(env)``), because the planner
advice lives there: a Gymnasium env, a Gymnasium vector env or an SB3 VecEnv.
"""
from __future__ import annotations

import sys

from pathlib import Path
from typing import Any

import numpy as np


def _num_envs(env) -> int:
    return int(getattr(env, "num_envs", 1))


def _is_vector(env) -> bool:
    return hasattr(env, "env_method") or (hasattr(env, "num_envs") and hasattr(env, "call"))


def _call(env, name: str, *args) -> list[Any]:
    """Call a method of every sub-environment (SB3 VecEnv, Gymnasium VectorEnv, or one env)."""
    if hasattr(env, "env_method"):                       # SB3 VecEnv
        return list(env.env_method(name, *args))
    if hasattr(env, "call") and hasattr(env, "num_envs"):  # Gymnasium VectorEnv
        return list(env.call(name, *args))
    fn = getattr(env, "get_wrapper_attr", None)
    method = fn(name) if fn is not None else getattr(env.unwrapped, name)
    return [method(*args)]


def _act(a):
    """An env's action as a plain int (Discrete) or an int64 array (MultiDiscrete)."""
    a = np.asarray(a)
    return int(a) if a.ndim == 0 else a.astype(np.int64)


class HeuristicPolicy:
    """Base: SB3-style ``predict`` over a batch (vector env) or one observation."""

    name = "heuristic"

    def __init__(self, env=None) -> None:
        self.env = env

    def bind(self, env) -> "HeuristicPolicy":
        self.env = env
        return self

    def actions(self, obs: np.ndarray, n: int) -> list[int]:
        raise NotImplementedError

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False):
        vector = self.env is not None and _is_vector(self.env)
        n = _num_envs(self.env) if vector else 1
        # (n,) Discrete actions, or (n, pools) MultiDiscrete ones (disaggregated pools)
        acts = np.asarray(self.actions(np.asarray(observation), n), dtype=np.int64)
        return (acts.reshape(n, *acts.shape[1:]) if vector else acts[0]), state


class PlannerPolicy(HeuristicPolicy):
    """Dynamo's ``load`` or ``throughput`` planner (see the module doc); ``knobs`` override
    :class:`sim.planner.PlannerConfig` fields (a tuned planner)."""

    def __init__(self, kind: str, env=None, knobs: dict[str, Any] | None = None,
                 name: str | None = None) -> None:
        super().__init__(env)
        if kind not in ("load", "throughput"):
            raise ValueError(f"unknown planner {kind!r}; expected load or throughput")
        self.kind = kind
        self.knobs = dict(knobs or {})
        self.name = name or f"heuristic:{kind}"

    def actions(self, obs: np.ndarray, n: int) -> list[int]:
        if self.env is None:
            raise RuntimeError("PlannerPolicy needs the environment: policy.bind(env)")
        if self.knobs:
            return [_act(a) for a in _call(self.env, "planner_action", self.kind, self.knobs)]
        return [_act(a) for a in _call(self.env, "planner_action", self.kind)]


class StaticPolicy(HeuristicPolicy):
    """Keep the current worker count (the 'no autoscaling' baseline)."""

    name = "heuristic:static"

    def actions(self, obs: np.ndarray, n: int) -> list[int]:
        if self.env is None:
            raise RuntimeError("StaticPolicy needs the environment: policy.bind(env)")
        return [_act(a) for a in _call(self.env, "hold_action")]


class StaticCountPolicy(HeuristicPolicy):
    """Go to ``workers`` provisioned workers (within the action's step limit) and stay."""

    def __init__(self, workers: int, env=None) -> None:
        super().__init__(env)
        self.workers = workers
        self.name = f"heuristic:static:{workers}"

    def actions(self, obs: np.ndarray, n: int) -> list[int]:
        if self.env is None:
            raise RuntimeError("StaticCountPolicy needs the environment: policy.bind(env)")
        return [_act(a) for a in _call(self.env, "target_action", self.workers)]


class RoundRobinPolicy(HeuristicPolicy):
    """Worker ``k mod N`` for the k-th request of the episode."""

    name = "heuristic:round_robin"

    def __init__(self, num_workers: int, env=None) -> None:
        super().__init__(env)
        self.num_workers = num_workers
        self._k: np.ndarray | None = None

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False):
        obs = np.asarray(observation)
        n = 1 if obs.ndim == 1 else obs.shape[0]
        if self._k is None or len(self._k) != n:
            self._k = np.zeros(n, dtype=np.int64)
        if episode_start is not None:
            self._k[np.asarray(episode_start, dtype=bool).reshape(n)] = 0
        acts = self._k % self.num_workers
        self._k += 1
        return (int(acts[0]) if obs.ndim == 1 else acts.copy()), state


def _unsquash(y: np.ndarray) -> np.ndarray:
    y = np.clip(y, 0.0, 1.0 - 1e-7)
    return y / (1.0 - y)


def kv_costs(obs: np.ndarray, scales: dict[str, float], num_workers: int,
             overlap_credit: float = 1.0, prefill_load_scale: float = 1.0) -> np.ndarray:
    """Dynamo's KV-router cost per worker from a ``DynoSimRouting-v0`` observation, shape
    ``(num_workers,)`` in KV blocks: ``prefill_load_scale * prefill blocks to compute``
    (queued prefill + this prompt minus its cached prefix, ``overlap_credit`` per cached
    block) plus ``decode blocks`` (held + this prompt's). Source: Dynamo's ``docs/router/kv_cache_routing.md``
    (``router-design.md``: ``cost = prefill_load_scale * adjusted + decode_blocks``)."""
    w = np.asarray(obs, dtype=np.float64)[: 5 * num_workers].reshape(num_workers, 5)
    bs = scales["block_size"]
    isl = _unsquash(np.asarray(obs, dtype=np.float64)[5 * num_workers]) * scales["isl_tokens"]
    req_blocks = isl / bs
    queued = _unsquash(w[:, 0]) * scales["queued_prefill_tokens"] / bs
    held = w[:, 1] * scales["kv_blocks"]
    cached = w[:, 4] * np.floor(req_blocks)
    prefill = queued + req_blocks - overlap_credit * cached
    return prefill_load_scale * prefill + held + req_blocks


def softmax_pick(costs: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    """Dynamo's KV-router selection (``lib/llm/src/kv_router`` in ai-dynamo/dynamo): argmin at temperature 0 (ties to the
    lowest index); above 0, min-max normalised costs sampled with
    ``p_i ~ exp(-(c_i - c_min) / ((c_max - c_min) T))``, uniform if all costs are equal."""
    if temperature <= 0:
        return int(np.argmin(costs))
    span = float(costs.max() - costs.min())
    if span <= 0:
        return int(rng.integers(len(costs)))
    # normalise first, then divide: span * temperature can underflow to 0 for tiny spans
    logits = -((costs - costs.min()) / span) / temperature
    p = np.exp(logits - logits.max())
    return int(rng.choice(len(costs), p=p / p.sum()))


#: The KV router's tunable knobs (``heuristic:kv`` defaults = Dynamo's, §5.1-5.2).
KV_KNOBS = {"overlap_credit": 1.0, "prefill_load_scale": 1.0, "temperature": 0.0}


class KvCostPolicy(HeuristicPolicy):
    """Route to the worker with the least Dynamo KV cost (:func:`kv_costs`, selected by
    :func:`softmax_pick`), computed from the observation alone. ``knobs``: :data:`KV_KNOBS`
    (a tuned router); sampling at temperature > 0 uses a generator seeded with ``seed``,
    reseeded with ``seed + k`` at the start of the k-th episode (deterministic)."""

    name = "heuristic:kv"

    def __init__(self, env, knobs: dict[str, Any] | None = None, name: str | None = None,
                 seed: int = 0) -> None:
        super().__init__(env)
        u = env.unwrapped if hasattr(env, "unwrapped") else env
        self.scales = dict(u.obs_scales)
        self.num_workers = int(u.num_workers)
        unknown = set(knobs or {}) - set(KV_KNOBS)
        if unknown:
            raise ValueError(f"unknown KV router knob(s) {', '.join(sorted(unknown))}; "
                             f"expected {', '.join(KV_KNOBS)}")
        self.knobs = {**KV_KNOBS, **(knobs or {})}
        self.name = name or self.name
        self.seed = seed
        self._episodes = 0
        self.rng = np.random.default_rng(seed)

    def costs(self, obs: np.ndarray) -> np.ndarray:
        k = self.knobs
        return kv_costs(obs, self.scales, self.num_workers, k["overlap_credit"],
                        k["prefill_load_scale"])

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False):
        obs = np.asarray(observation)
        batch = obs.reshape(-1, obs.shape[-1])
        if episode_start is not None and bool(np.asarray(episode_start).reshape(-1)[0]):
            self.rng = np.random.default_rng(self.seed + self._episodes)
            self._episodes += 1
        t = float(self.knobs["temperature"])
        acts = np.array([softmax_pick(self.costs(o), t, self.rng) for o in batch],
                        dtype=np.int64)
        return (acts[0] if obs.ndim == 1 else acts), state


class LeastLoadedPolicy(HeuristicPolicy):
    """Dynamo's least-loaded routing (Dynamo's ``docs/router/README.md``, router modes): the worker with the fewest
    active requests (running + waiting), ties to the least KV blocks held, then the lowest
    index; read from the observation (prefix caches ignored)."""

    name = "heuristic:least_loaded"

    def __init__(self, num_workers: int, env=None) -> None:
        super().__init__(env)
        self.num_workers = num_workers

    def actions(self, obs: np.ndarray, n: int) -> list[int]:
        from dynosim_gym.routing_env import RUNNING_SCALE, WAITING_SCALE
        out = []
        for o in np.asarray(obs, dtype=np.float64).reshape(n, -1):
            w = o[: 5 * self.num_workers].reshape(self.num_workers, 5)
            active = np.rint(_unsquash(w[:, 2]) * RUNNING_SCALE
                             + _unsquash(w[:, 3]) * WAITING_SCALE)
            out.append(int(np.lexsort((np.arange(self.num_workers), w[:, 1], active))[0]))
        return out


class RandomRoutePolicy(HeuristicPolicy):
    """Dynamo's random routing (Dynamo's ``docs/router/README.md``, router modes): a uniform worker per request,
    from a generator seeded with ``seed``, reseeded with ``seed + k`` at the start of the
    k-th episode (so a result is reproducible)."""

    name = "heuristic:random"

    def __init__(self, num_workers: int, env=None, seed: int = 0) -> None:
        super().__init__(env)
        self.num_workers = num_workers
        self.seed = seed
        self._episodes = 0
        self.rng = np.random.default_rng(seed)

    def predict(self, observation, state=None, episode_start=None, deterministic: bool = False):
        obs = np.asarray(observation)
        n = 1 if obs.ndim == 1 else obs.shape[0]
        if episode_start is not None and bool(np.asarray(episode_start).reshape(-1)[0]):
            self.rng = np.random.default_rng(self.seed + self._episodes)
            self._episodes += 1
        acts = self.rng.integers(self.num_workers, size=n)
        return (int(acts[0]) if obs.ndim == 1 else acts), state


class OffsetPolicy:
    """Always the action of one offset of ``env.action.type: residual`` (SB3-style
    ``predict``): offset 0 is the bare base, the throughput planner's count (issue 11,
    rounds 7b-9; ``scripts/residual_base.py`` and the warm start's ``teacher: base``).
    InputError (on ``field``) unless ``env`` takes residual actions and ``offset`` is in
    their range."""

    def __init__(self, env, offset: int = 0, field: str = "env.action.type",
                 offset_field: str = "--offset") -> None:
        from dynosim_gym.actions import ResidualAction
        from sim.errors import InputError
        at = env.unwrapped.action_type
        if not isinstance(at, ResidualAction):
            raise InputError(f"an offset to the base needs env.action.type: residual, "
                             f"got type {env.unwrapped.cfg.env.action.type!r}", field=field)
        if not at.off_lo <= offset <= at.off_hi:
            raise InputError(f"{offset} is outside env.action.residual_offsets "
                             f"[{at.off_lo}, {at.off_hi}]", field=offset_field)
        self.action = offset - at.off_lo

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        return np.int64(self.action), state


TUNED_DIR = Path(__file__).resolve().parent / "tuned"
AUTOSCALING_ENV, ROUTING_ENV = "DynoSim-v0", "DynoSimRouting-v0"
#: name -> env id it acts on (``static:N`` is a pattern; tuned planners come from TUNED_DIR).
HEURISTICS = {"load": AUTOSCALING_ENV, "throughput": AUTOSCALING_ENV,
              "static": AUTOSCALING_ENV, "static:N": AUTOSCALING_ENV,
              "kv": ROUTING_ENV, "round_robin": ROUTING_ENV,
              "least_loaded": ROUTING_ENV, "random": ROUTING_ENV}
AUTOSCALING_HEURISTICS = ("load", "throughput", "static")
ROUTING_HEURISTICS = ("kv", "round_robin", "least_loaded", "random")
#: A tuned baseline's ``base`` -> the env id it acts on.
TUNED_BASES = {"load": AUTOSCALING_ENV, "throughput": AUTOSCALING_ENV, "kv": ROUTING_ENV}


def tuned_baselines() -> dict[str, Path]:
    """Shipped tuned planners: name -> YAML (``agents/tuned/NAME.yaml``)."""
    return {p.stem: p for p in sorted(TUNED_DIR.glob("*.yaml"))}


def read_tuned(path: Path) -> dict[str, Any]:
    """A tuned baseline's YAML: ``base`` (load | throughput: a planner, PlannerConfig knobs;
    kv: the KV router, :data:`KV_KNOBS`), ``knobs`` and how it was found (``tuned_on``,
    ``command``...)."""
    from sim.config import yaml_load
    data = yaml_load(path.read_text(encoding="utf-8")) or {}
    if data.get("base") not in TUNED_BASES or not isinstance(data.get("knobs"), dict):
        raise ValueError(f"{path}: expected 'base: {'|'.join(TUNED_BASES)}' and a 'knobs' "
                         "mapping")
    return data


def heuristics_for(env_id: str) -> list[str]:
    """Every ``heuristic:NAME`` that acts on ``env_id`` (shipped tuned ones included)."""
    names = [k for k, e in HEURISTICS.items() if e == env_id]
    names += [k for k, p in tuned_baselines().items()
              if TUNED_BASES.get(read_tuned(p)["base"]) == env_id]
    return ["heuristic:" + k for k in names]


def heuristic_env(spec: str) -> str:
    """The env id a ``heuristic:NAME`` acts on; ValueError naming the choices if unknown."""
    kind = spec.split(":", 1)[1] if spec.startswith("heuristic:") else spec
    if kind.startswith("static:"):
        static_count(kind)
        return AUTOSCALING_ENV
    if kind in HEURISTICS:
        return HEURISTICS[kind]
    tuned = tuned_baselines()
    if kind in tuned:
        return TUNED_BASES[read_tuned(tuned[kind])["base"]]
    raise ValueError(f"unknown heuristic {spec!r}; expected one of "
                     + "; ".join(f"{', '.join(heuristics_for(e))} ({e})"
                                 for e in (AUTOSCALING_ENV, ROUTING_ENV)))


def static_count(kind: str) -> int:
    """N of ``static:N``, read as integer flags are (``4``, ``4e0``; sim.schema.int_arg);
    ValueError unless a whole number >= 1."""
    import argparse

    from sim.schema import int_arg
    text = kind.split(":", 1)[1]
    try:
        n = int_arg(text)
    except argparse.ArgumentTypeError:
        n = 0
    if n < 1:
        raise ValueError(f"heuristic:static:N needs a whole worker count N >= 1 (4 or 4e0), got {text!r}")
    return n


def _check_static_count(n: int, u) -> None:
    """``heuristic:static:N`` must be a count the env can provision: the env clamps every
    request to ``env.min_endpoint`` and the GPU budget (as Dynamo's planner clamps to
    ``max_gpu_budget``), which would score another count under this name; so, like every
    out-of-range input, it is a one-line ValueError naming the bounds."""
    e = u.cfg.env
    if hasattr(u, "pool_gpus"):            # disaggregated: N workers in each pool
        per = sum(u.pool_gpus.values())
        most, what = e.max_gpu_budget // per, f"{per} GPUs per prefill + decode pair"
    else:
        per = u.cfg.sim.cluster.gpus_per_worker
        most, what = u.max_workers, f"{per} GPU{'s' if per != 1 else ''} per worker"
    if n > most:
        raise ValueError(f"heuristic:static:{n} asks for more workers than the env's GPU "
                         f"budget holds: env.max_gpu_budget {e.max_gpu_budget} at {what} "
                         f"allows at most {most}")
    if n < e.min_endpoint:
        raise ValueError(f"heuristic:static:{n} asks for fewer workers than the env keeps: "
                         f"env.min_endpoint is {e.min_endpoint}")


def make_heuristic(spec: str, env=None) -> HeuristicPolicy:
    """``heuristic:load | throughput | static | static:N | <tuned name>`` (autoscaling) or
    ``heuristic:kv | round_robin | least_loaded | random | <tuned kv name>`` (routing; needs
    ``env``). ValueError if unknown."""
    kind = spec.split(":", 1)[1] if spec.startswith("heuristic:") else spec
    heuristic_env(spec)
    if kind in ("load", "throughput"):
        return PlannerPolicy(kind, env)
    if kind == "static":
        return StaticPolicy(env)
    if kind.startswith("static:"):
        n = static_count(kind)
        if env is not None:
            _check_static_count(n, env.unwrapped if hasattr(env, "unwrapped") else env)
        return StaticCountPolicy(n, env)
    if kind == "kv":
        return KvCostPolicy(env)
    u = env.unwrapped if hasattr(env, "unwrapped") else env
    if kind == "round_robin":
        return RoundRobinPolicy(int(u.num_workers), env)
    if kind == "least_loaded":
        return LeastLoadedPolicy(int(u.num_workers), env)
    if kind == "random":
        return RandomRoutePolicy(int(u.num_workers), env)
    return tuned_policy(read_tuned(tuned_baselines()[kind]), env, kind)


def tuned_policy(data: dict[str, Any], env, kind: str) -> HeuristicPolicy:
    """The policy of a tuned baseline's YAML (:func:`read_tuned`), named
    ``heuristic:KIND``: the KV router or a planner with its knobs (:func:`_env_wins`)."""
    if data["base"] == "kv":
        return KvCostPolicy(env, knobs=data["knobs"], name=f"heuristic:{kind}")
    return PlannerPolicy(data["base"], env, knobs=_env_wins(data["knobs"], env, kind),
                         name=f"heuristic:{kind}")


def _env_wins(knobs: dict[str, Any], env, kind: str) -> dict[str, Any]:
    """A tuned planner's ``knobs`` less those the env's ``env.planner`` sets: what the user
    sets (``--set env.planner.KNOB=V`` or the config) wins over the tuned file, with a
    one-line stderr note per knob naming the tuned value it overrides."""
    if env is None:
        return dict(knobs)
    if hasattr(env, "get_attr") and hasattr(env, "num_envs"):      # vector envs
        cfg = env.get_attr("cfg")[0]
    else:
        cfg = getattr(env.unwrapped if hasattr(env, "unwrapped") else env, "cfg", None)
    given = dict(getattr(getattr(cfg, "env", None), "planner", None) or {})
    for key in sorted(set(knobs) & set(given)):
        print(f"note: env.planner.{key}={given[key]} overrides heuristic:{kind}'s tuned "
              f"value {knobs[key]}", file=sys.stderr)
    return {k: v for k, v in knobs.items() if k not in given}
