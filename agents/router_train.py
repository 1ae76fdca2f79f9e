"""Training aids for learned routers on ``DynoSimRouting-v0`` (used by ``dynosim train``).

* :class:`RequestCreditCallback`: the env's reward at a step counts the requests *decided*
  in it, whichever decision routed them. This callback moves each outcome
  (``info["request_outcomes"]``: ``+sla_weight`` met, ``-sla_weight`` violated) to the step
  that routed the request (``info["routed_request_index"]``), within each rollout and
  episode, then recomputes returns and advantages. A request still undecided when the
  rollout ends contributes 0 to its step (its effect reaches the return only through the
  value bootstrap); the truncation bootstrap SB3 adds to the reward is kept.
* :func:`behaviour_clone`: a warm start by behaviour cloning (maximum likelihood of a
  teacher's actions under the policy, the recipe of SB3's documentation notebook
  "Pre-training using Behavior Cloning", Stable-Baselines-Team/rl-colab-notebooks) from
  ``heuristic:kv`` on training episodes. It serves both envs: ``DynoSim-v0``'s learned
  autoscalers use it too, with ``teacher: oracle:schedule-greedy`` (each training episode's
  greedy hindsight schedule, agents/oracle.py, which scales up one start-up time ahead; the
  shipped recipe's teacher), ``oracle:schedule`` (the local-search one) or
  ``oracle:schedule-floor`` (the local search with a per-segment floor), and for
  sb3-contrib's recurrent policies it fits whole episodes as sequences (LSTM state from
  zeros at each episode start, as during a rollout). The ``imitation`` library would do
  the same, but its latest release (1.0.1) would downgrade this project to
  stable-baselines3 2.2.1 and gymnasium 0.29.1 (``pip install --dry-run
  imitation==1.0.1``), so the few lines of the loop are here.

Hyperparameter keys (``agents/hyperparams/ppo.yml``; ``reward_credit`` for
``DynoSimRouting-v0`` only): ``reward_credit: request | step`` and ``bc_warm_start:
{episodes, epochs, batch_size, learning_rate, teacher, first_seed, regularise, dagger}``
(teacher: a heuristic spec or one of :data:`SCHEDULE_TEACHERS`; ``dagger: {rounds}``
relabels the clone's own states with the schedule, :func:`behaviour_clone`).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from sim.errors import InputError


def request_credit_callback(sla_weight: float):
    """A :class:`RequestCreditCallback` (built lazily: SB3 is imported on use)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class RequestCreditCallback(BaseCallback):
        """Credits each request's outcome to the step that routed it (module doc)."""

        def __init__(self) -> None:
            super().__init__()
            self.w = float(sla_weight)
            self._reset_rollout()

        def _reset_rollout(self) -> None:
            self.t = 0
            self.raw: list[np.ndarray] = []           # env rewards per step, (n_envs,)
            self.credit: list[np.ndarray] = []
            self.routed: list[dict[int, int]] = []    # per env: request index -> step

        def _on_rollout_start(self) -> None:
            self._reset_rollout()
            self.routed = [dict() for _ in range(self.training_env.num_envs)]

        def _on_step(self) -> bool:
            infos = self.locals["infos"]
            rewards = np.asarray(self.locals["rewards"], dtype=np.float64).copy()
            dones = self.locals["dones"]
            self.raw.append(rewards)
            self.credit.append(np.zeros_like(rewards))
            for e, info in enumerate(infos):
                routed = self.routed[e]
                for idx, met in info.get("request_outcomes", ()):
                    t = routed.pop(idx, None)
                    if t is not None:
                        self.credit[t][e] += self.w if met else -self.w
                r = info.get("routed_request_index", -1)
                if r >= 0:
                    routed[r] = self.t
                if dones[e]:
                    routed.clear()                    # indices restart each episode
            self.t += 1
            return True

        def _on_rollout_end(self) -> None:
            buf = self.model.rollout_buffer
            n = min(self.t, buf.buffer_size)
            raw = np.stack(self.raw[-n:])
            credit = np.stack(self.credit[-n:])
            boot = buf.rewards[:n] - raw                 # SB3's truncation bootstrap
            buf.rewards[:n] = (credit + boot).astype(buf.rewards.dtype)
            buf.compute_returns_and_advantage(last_values=self.locals["values"],
                                              dones=self.locals["dones"])

    return RequestCreditCallback()


def schedule_cache_dir() -> Path:
    """Where hindsight schedules are kept between runs: ``$DYNOSIM_CACHE/schedules``
    (default ``~/.cache/dynosim/schedules``)."""
    root = os.environ.get("DYNOSIM_CACHE") or Path.home() / ".cache" / "dynosim"
    return Path(root) / "schedules"


#: Hindsight-schedule oracles a warm start can clone (agents/oracle.py).
SCHEDULE_TEACHERS = ("oracle:schedule-greedy", "oracle:schedule", "oracle:schedule-floor")
#: The warm start's teacher for ``env.action.type: residual`` whose labels are offsets by
#: construction: the base itself, offset 0 at every step (issue 11, round 9). The clone
#: then reproduces the base, and PPO, kept near it by the regulariser, learns only the
#: deviations the reward pays for (a schedule teacher's labels are its absolute count
#: minus the base, which rebuilt the load -> count map in rounds 7b-8).
BASE_TEACHER = "base"


def _schedule_teacher(env, opts: dict[str, Any], seed: int,
                      oracle: str = "oracle:schedule-greedy"):
    """A hindsight schedule (``oracle``, one of :data:`SCHEDULE_TEACHERS`) as a teacher for
    one training episode: its per-step worker targets (agents/oracle.py). A schedule costs
    ~60 partial replays (the greedy one; the local search ~100-200 more), so it is cached
    on disk (:func:`schedule_cache_dir`) under a hash of the episode's config without the
    reward weights (they do not change the simulation; the SLA target the oracle aims at
    is kept), the options, the seed, the episode's setup (``info["episode_setup"]``: what
    code outside the config decides, e.g. a family's ``TRACE_LOAD`` or prompt cap, so a
    changed family misses the cache) and the oracle: the greedy schedule's key has no
    oracle field (as before ``oracle:schedule`` became the local search, so caches made
    then still hit), every other oracle's key names it, so two oracles never read each
    other's schedules; nor ``env.observation.features`` (it changes no simulation). The schedule is planned and keyed without
    ``env.action.scale_down_window_s`` and ``reversal_cooldown_s``; the learner's env
    applies them to the teacher's requests. A ``residual`` action's schedule is planned and keyed as a
    ``target`` action's (the learner's env maps each count to the nearest offset)."""
    import hashlib
    import json

    import gymnasium as gym

    from .oracle import SEGMENT_FLOOR, SchedulePolicy, best_schedule, greedy_schedule

    u = env.unwrapped
    e = u.cfg.env
    cfg = u.cfg.to_dict()
    cfg["env"] = {k: v for k, v in cfg["env"].items() if k != "reward"}
    # the schedule is a plan of counts, made without scale-down stabilisation (the learner's
    # env applies it to the teacher's requests as to its own): keyed and replayed without
    window = cfg["env"]["action"].pop("scale_down_window_s", 0.0)
    # likewise the reversal cooldown, and the residual base's interval (a count plan has
    # no base); keys made before either existed still hit
    cooldown = cfg["env"]["action"].pop("reversal_cooldown_s", 0.0)
    cfg["env"]["action"].pop("base_interval_s", None)
    cfg["env"]["action"].pop("base_before_first_tick", None)
    cfg["env"]["action"].pop("stabilise", None)      # what the window acts on (round 11)
    cfg["env"]["action"].pop("offset_dwell_s", None)  # the offset's dwell (round 13)
    # a residual learner's teacher is the same plan of counts (its env maps each count to
    # the nearest offset), planned on a target-action env: keyed as that (keys made
    # before env.action.residual_offsets existed still hit)
    residual = cfg["env"]["action"].pop("residual_offsets", None) is not None and \
        cfg["env"]["action"]["type"] == "residual"
    if residual:
        cfg["env"]["action"]["type"] = "target"
    # what the policy observes does not change the simulation: a recipe's own features
    # share the schedules (keys made before env.observation.features existed still hit)
    cfg["env"]["observation"].pop("features", None)
    _, info = env.reset(seed=seed, options=opts)
    fields = {"config": cfg, "sla_target": e.reward.sla_target, "options": opts,
              "seed": seed, "segment_s": 120.0, "setup": info["episode_setup"]}
    if oracle != "oracle:schedule-greedy":
        fields["oracle"] = oracle
    key = json.dumps(fields, sort_keys=True, default=str)
    path = schedule_cache_dir() / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"
    cached = path.exists()
    if cached:
        targets = json.loads(path.read_text())["targets"]
    else:
        plain = gym.make(env.spec.id, config=cfg_counts(u.cfg, residual),
                         **{"env.action.scale_down_window_s": 0.0,
                            "env.action.reversal_cooldown_s": 0.0,
                            **({"env.action.type": "target"} if residual else {})}) \
            if window or cooldown or residual else env
        args = (plain, opts, seed, e.min_endpoint, u.max_workers, e.reward.sla_target,
                120.0, e.interval_s, e.episode_steps)
        if oracle == "oracle:schedule-greedy":
            targets = greedy_schedule(*args)["targets"]
        else:
            targets = best_schedule(*args, segment_floor=SEGMENT_FLOOR if oracle ==
                                    "oracle:schedule-floor" else None)["targets"]
        if plain is not env:
            plain.close()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"seed": seed, "options": opts, "targets": targets}))
        tmp.replace(path)                    # atomic: parallel runs may share the cache
    policy = SchedulePolicy(env, targets)
    policy.cache_file, policy.cached = path, cached     # for the teacher's progress line
    return policy


def cfg_counts(cfg, residual: bool) -> dict[str, Any]:
    """``cfg.to_dict()``, without ``env.action.residual_offsets`` and the base's keys
    (``base_interval_s``, ``base_before_first_tick``, ``stabilise``, ``offset_dwell_s``) for a residual config (its teacher
    plans counts on a target action, which takes none of them)."""
    out = cfg.to_dict()
    if residual:
        out["env"]["action"].pop("residual_offsets", None)
        out["env"]["action"].pop("base_interval_s", None)
        out["env"]["action"].pop("base_before_first_tick", None)
        out["env"]["action"].pop("stabilise", None)
        out["env"]["action"].pop("offset_dwell_s", None)
    return out


def teacher_samples(env, teacher: str, seeds, learner=None, quiet: bool = True,
                    deadband: int = 0) -> tuple[list[np.ndarray], list[int], list[int]]:
    """(observations, the teacher's action at each, episode lengths) on the training-split
    episodes ``seeds`` of ``env``. ``teacher`` is a heuristic spec or one of
    :data:`SCHEDULE_TEACHERS` (each episode's own hindsight schedule). The teacher's
    actions drive the env, or, if ``learner`` (anything with SB3's ``predict``) is given,
    the learner's (DAgger): the teacher then only labels the learner's states (a schedule
    labels step t with its count for step t; with ``deadband`` k > 0, a schedule's count
    within k workers of the count provisioned now is labelled "hold the current count",
    so the labels do not toggle with the schedule's small steps)."""
    from .heuristics import OffsetPolicy, make_heuristic

    oracle = teacher in SCHEDULE_TEACHERS
    obs_l, act_l, lengths = [], [], []
    teach = None if oracle else OffsetPolicy(
        env, 0, field="bc_warm_start.teacher") if teacher == BASE_TEACHER \
        else make_heuristic(teacher, env)
    seeds = list(seeds)
    for k, s in enumerate(seeds):
        opts = {"split": "train"}
        if oracle:                    # the hindsight schedule of this very episode
            t0 = time.perf_counter()
            teach = _schedule_teacher(env, opts, s, teacher)
            if not quiet:             # a schedule not cached yet takes minutes: say so
                how = (f"read from the cache ({teach.cache_file})" if teach.cached else
                       f"planned in {time.perf_counter() - t0:.1f} s, cached in "
                       f"{teach.cache_file}")
                print(f"dynosim: teacher episode {k + 1}/{len(seeds)} (seed {s}): "
                      f"{teacher} schedule {how}", file=sys.stderr)
        obs, _ = env.reset(seed=s, options=opts)
        start, done, n = np.ones(1, dtype=bool), False, 0
        while not done:
            a, _ = teach.predict(obs, episode_start=start, deterministic=True)
            if deadband and learner is not None and oracle:
                u = env.unwrapped
                cur = sum(u.sim.counts()[:2])
                if abs(teach.targets[min(u._steps, len(teach.targets) - 1)] - cur) <= deadband:
                    a = u.target_action(cur)
            start = np.zeros(1, dtype=bool)
            obs_l.append(obs)
            act_l.append(int(a))
            if learner is not None:
                a, _ = learner.predict(obs, deterministic=True)
            obs, _, term, trunc, _ = env.step(a)
            done = term or trunc
            n += 1
        lengths.append(n)
    return obs_l, act_l, lengths


def check_label_smoothing(eps: Any, *, file: str | None = None,
                          prefix: str = "") -> None:
    """``bc_warm_start.label_smoothing`` is a number in [0, 1): else a one-line InputError
    on ``file`` and field ``{prefix}bc_warm_start.label_smoothing`` (a recipe names its env
    id as ``prefix``, as its other fields' errors do)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0.0 <= eps < 1.0:
        raise InputError(f"expected a number in [0, 1), got {eps!r}", file=file,
                         field=f"{prefix}bc_warm_start.label_smoothing")


def behaviour_clone(model, env_cfg: dict[str, Any], *, episodes: int = 20, epochs: int = 10,
                    batch_size: int = 256, learning_rate: float = 1e-3,
                    teacher: str = "heuristic:kv", seed: int = 0, quiet: bool = True,
                    env_id: str = "DynoSimRouting-v0", regularise: dict | None = None,
                    first_seed: int | None = None, dagger: dict | None = None,
                    label_smoothing: float = 0.0) -> tuple[dict[str, Any], Any]:
    """Fit ``model.policy`` to ``teacher``'s actions on ``episodes`` training episodes of
    ``env_id`` (``split=train``, seeds ``10_000 + seed ..``, apart from PPO's own seed
    streams; ``first_seed ..`` for every training seed if given, so all seeds clone the same
    teacher episodes). A recurrent policy (sb3-contrib) is fitted on whole episodes, ``batch_size``
    samples' worth of episodes per batch. Returns the samples count and, before and after
    fitting, the mean negative log-likelihood of the teacher's actions and the agreement
    with the teacher (share of samples where the policy's most likely action is the
    teacher's), and the callback of ``regularise`` (None without it).

    ``regularise: {weight, steps, batch_size}`` keeps the policy near the clone during
    fine-tuning (:func:`bc_regulariser`): after each PPO update, ``steps`` Adam steps of
    ``weight`` x the teacher's NLL on the same samples (feed-forward policies only).

    ``dagger: {rounds}`` (a hindsight-schedule teacher and a feed-forward policy only):
    DAgger (Ross, Gordon and Bagnell, 2011) without mixing. After the fit, ``rounds`` times:
    the current policy acts (deterministically) on the same teacher episodes, each of its
    observations is labelled with the schedule's count for that step (the hindsight
    count, whatever the learner provisioned so far), the samples join the data set and
    the policy is fitted again for ``epochs``. The clone thus learns to return to the
    schedule from the states its own errors lead to, which cloning the teacher's states
    alone never shows it; the regulariser then uses the aggregate. The record adds each
    round's samples and the policy's agreement with the labels on its own states before
    that round's fit. ``dagger: {rounds, deadband: K}`` labels the learner's states with
    "hold" where the schedule is within K workers of the count provisioned (a hysteresis
    in the labels, against flapping; :func:`teacher_samples`).

    ``label_smoothing`` eps in [0, 1) (default 0, the plain NLL): the clone's loss, and the
    regulariser's, is the cross-entropy against (1 - eps) x the teacher's one-hot action +
    eps x uniform over the K actions (Szegedy et al., 2016; ``torch``'s
    ``cross_entropy(label_smoothing=eps)``), so a teacher whose labels are all one action
    (``teacher: base``) leaves a clone at p = 1 - eps (K - 1) / K on it rather than ~1,
    and PPO still samples the other actions. The record's NLLs stay the plain NLL."""
    import gymnasium as gym
    import torch as th

    check_label_smoothing(label_smoothing)
    env = gym.make(f"dynosim_gym:{env_id}", config=env_cfg)
    oracle = teacher in SCHEDULE_TEACHERS
    pol = model.policy
    if regularise and hasattr(pol, "lstm_actor"):
        raise InputError("bc_warm_start.regularise is for feed-forward policies only",
                         field="bc_warm_start.regularise")
    rounds = deadband = 0
    if dagger is not None:
        rounds = dagger.get("rounds", 1) if isinstance(dagger, dict) else None
        deadband = dagger.get("deadband", 0) if isinstance(dagger, dict) else None
        if (not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1
                or not isinstance(deadband, int) or isinstance(deadband, bool)
                or deadband < 0 or set(dagger) - {"rounds", "deadband"}):
            raise InputError(f"expected {{rounds: N >= 1, deadband: K >= 0 (optional)}}, "
                             f"got {dagger!r}", field="bc_warm_start.dagger")
        # (the base teacher labels any state: offset 0)
        if not (oracle or teacher == BASE_TEACHER) or hasattr(pol, "lstm_actor") or \
                (deadband and not oracle):
            raise InputError("needs a hindsight-schedule teacher (one of "
                             f"{', '.join(SCHEDULE_TEACHERS)}; or {BASE_TEACHER}, without a "
                             "deadband) and a feed-forward policy",
                             field="bc_warm_start.dagger")
    first = 10_000 + seed if first_seed is None else first_seed

    def collect(learner=None) -> tuple[list, list, list[int]]:
        return teacher_samples(env, teacher, range(first, first + episodes), learner,
                               quiet=quiet or learner is not None, deadband=deadband)

    obs_l, act_l, lengths = collect()
    X = th.as_tensor(np.asarray(obs_l, dtype=np.float32))
    y = th.as_tensor(np.asarray(act_l, dtype=np.int64))
    if hasattr(pol, "lstm_actor"):     # recurrent: items are whole episodes, padded (mask)
        T = max(lengths)
        bounds = np.cumsum([0, *lengths])
        Xs = th.zeros((len(lengths), T, X.shape[1]))
        ys = th.zeros((len(lengths), T), dtype=th.int64)
        mask = th.zeros((len(lengths), T), dtype=th.bool)
        for e, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
            Xs[e, :b - a], ys[e, :b - a], mask[e, :b - a] = X[a:b], y[a:b], True
        per_batch, n_items = max(1, batch_size // T), len(lengths)

        def fit(idx):
            """(log-likelihoods, predicted actions, teacher actions) of items ``idx``."""
            n_seq = len(idx)
            shape = (pol.lstm_actor.num_layers, n_seq, pol.lstm_actor.hidden_size)
            states = (th.zeros(shape), th.zeros(shape))     # each sequence from zeros,
            starts = th.zeros(n_seq * T)                     # as a rollout's episode start
            dist, _ = pol.get_distribution(Xs[idx].reshape(n_seq * T, -1), states, starts)
            m, yb = mask[idx].reshape(-1), ys[idx].reshape(-1)
            return (dist.log_prob(yb)[m], dist.distribution.probs.argmax(-1)[m], yb[m],
                    dist.distribution.logits[m])
    else:
        per_batch, n_items = batch_size, len(X)

        def fit(idx):
            dist = pol.get_distribution(X[idx])
            return (dist.log_prob(y[idx]), dist.distribution.probs.argmax(-1), y[idx],
                    dist.distribution.logits)

    def stats() -> tuple[float, float]:
        """(mean NLL, agreement with the teacher) over every sample."""
        with th.no_grad():
            logp, pred, yb, _ = fit(th.arange(n_items))
        return float(-logp.mean()), float((pred == yb).float().mean())

    opt = th.optim.Adam(pol.parameters(), lr=learning_rate)
    gen = th.Generator().manual_seed(seed)
    pol.set_training_mode(False)
    nll0, agree0 = stats()

    def fit_epochs(label: str) -> None:
        pol.set_training_mode(True)
        for ep in range(epochs):
            tot, count = 0.0, 0
            perm = th.randperm(n_items, generator=gen)
            for i in range(0, n_items, per_batch):
                logp, _, _, logits = fit(perm[i:i + per_batch])
                loss = smoothed_nll(logp, logits, label_smoothing)
                opt.zero_grad()
                loss.backward()
                opt.step()
                tot += float(loss.detach()) * len(logp)
                count += len(logp)
            # a tenth of the epochs (and the last) are enough to see it converge
            if not quiet and ((ep + 1) % max(1, epochs // 10) == 0 or ep + 1 == epochs):
                what = "label-smoothed cross-entropy" if label_smoothing else "NLL"
                print(f"dynosim: {label} epoch {ep + 1}/{epochs}: {what} "
                      f"{tot / count:.4f}", file=sys.stderr, flush=True)
        pol.set_training_mode(False)

    fit_epochs("behaviour cloning")
    dagger_rounds = []
    for r in range(rounds):
        o, a, _ = collect(learner=model)
        Xr = th.as_tensor(np.asarray(o, dtype=np.float32))
        yr = th.as_tensor(np.asarray(a, dtype=np.int64))
        with th.no_grad():
            own = float((pol.get_distribution(Xr).distribution.probs.argmax(-1) == yr)
                        .float().mean())
        dagger_rounds.append({"samples": int(len(Xr)), "agreement_on_own_states": own})
        X, y = th.cat([X, Xr]), th.cat([y, yr])
        n_items = len(X)
        fit_epochs(f"DAgger round {r + 1}/{rounds}")
    env.close()
    nll, agree = stats()
    record = {"teacher": teacher, "episodes": episodes, "first_seed": first,
              "samples": int(len(X)),
              "epochs": epochs, "initial_nll": nll0, "initial_agreement": agree0,
              "final_nll": nll, "teacher_agreement": agree}
    if label_smoothing:
        record["label_smoothing"] = label_smoothing
    if rounds:
        record["dagger"] = dagger_rounds
    if not regularise:
        return record, None
    record["regularise"] = dict(regularise)
    return record, bc_regulariser(X, y, seed=seed, label_smoothing=label_smoothing,
                                  **regularise)


def smoothed_nll(logp, logits, eps: float):
    """Mean label-smoothed cross-entropy: ``logp`` (n,) the log-probabilities of the
    labels, ``logits`` (n, K) the normalised log-probabilities of every action (a torch
    ``Categorical``'s ``logits``); ``-((1 - eps) logp + eps mean_k logits_k)``, the plain
    NLL at ``eps = 0``."""
    loss = -logp.mean()
    return loss if not eps else (1.0 - eps) * loss - eps * logits.mean(-1).mean()


def bc_regulariser(X, y, *, weight: float = 1.0, steps: int = 4, batch_size: int = 256,
                   seed: int = 0, label_smoothing: float = 0.0):
    """An SB3 callback that keeps a fine-tuned policy near its behaviour clone: at the start
    of each rollout but the first (i.e. after each PPO update, before the policy collects
    the next rollout, so PPO's ratios stay on-policy), ``steps`` minibatch steps of
    the policy's own optimiser on ``weight`` x the mean NLL of the teacher's actions ``y``
    (int64, (n,)) at observations ``X`` (float32, (n, obs_dim)). PPO updates and these steps
    alternate, an auxiliary phase as in Phasic Policy Gradient (Cobbe et al., 2021), so the
    policy cannot drift from the teacher on the teacher's states unseen while PPO changes it
    elsewhere. Records ``bc/nll`` and ``bc/agreement`` (TensorBoard) and keeps
    ``history``: (timesteps, NLL, agreement) before each phase. ``label_smoothing`` eps:
    the phases minimise the smoothed cross-entropy (:func:`smoothed_nll`) instead, so
    they pull toward the smoothed clone, not a one-hot one (the history's NLL is plain)."""
    import torch as th
    from stable_baselines3.common.callbacks import BaseCallback

    if weight <= 0 or steps < 1 or batch_size < 1:
        raise InputError(f"weight > 0, steps >= 1 and batch_size >= 1 needed, got {weight}, "
                         f"{steps}, {batch_size}", field="bc_warm_start.regularise")

    class BCRegulariser(BaseCallback):
        def __init__(self) -> None:
            super().__init__()
            self.gen = th.Generator().manual_seed(seed)
            self.history: list[tuple[int, float, float]] = []
            self.rollouts = 0

        def _on_step(self) -> bool:
            return True

        def _on_rollout_start(self) -> None:
            self.rollouts += 1
            if self.rollouts == 1:            # nothing trained yet: the clone as it was
                return
            pol = self.model.policy
            with th.no_grad():
                dist = pol.get_distribution(X)
                nll = float(-dist.log_prob(y).mean())
                agree = float((dist.distribution.probs.argmax(-1) == y).float().mean())
            self.history.append((int(self.num_timesteps), nll, agree))
            self.logger.record("bc/nll", nll)
            self.logger.record("bc/agreement", agree)
            pol.set_training_mode(True)
            for _ in range(steps):
                idx = th.randint(len(X), (batch_size,), generator=self.gen)
                d = pol.get_distribution(X[idx])
                loss = weight * smoothed_nll(d.log_prob(y[idx]), d.distribution.logits,
                                             label_smoothing)
                pol.optimizer.zero_grad()
                loss.backward()
                pol.optimizer.step()
            pol.set_training_mode(False)

    return BCRegulariser()
