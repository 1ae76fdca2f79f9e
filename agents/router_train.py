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
  ``heuristic:kv`` on training episodes. The ``imitation`` library would do the same, but
  its latest release (1.0.1) would downgrade this project to stable-baselines3 2.2.1 and
  gymnasium 0.29.1 (``pip install --dry-run imitation==1.0.1``), so the few lines of the
  loop are here.

Hyperparameter keys (``agents/hyperparams/ppo.yml``, ``DynoSimRouting-v0``):
``reward_credit: request | step`` and ``bc_warm_start: {episodes, epochs, batch_size,
learning_rate, teacher}``.
"""
from __future__ import annotations

import sys
from typing import Any

import numpy as np


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


def behaviour_clone(model, env_cfg: dict[str, Any], *, episodes: int = 20, epochs: int = 10,
                    batch_size: int = 256, learning_rate: float = 1e-3,
                    teacher: str = "heuristic:kv", seed: int = 0,
                    quiet: bool = True) -> dict[str, Any]:
    """Fit ``model.policy`` to ``teacher``'s actions on ``episodes`` training episodes
    (``split=train``, seeds ``10_000 + seed ..``, apart from PPO's own seed streams). Returns
    the samples count, the final negative log-likelihood and the agreement with the teacher
    (share of samples where the policy's most likely action is the teacher's)."""
    import gymnasium as gym
    import torch as th

    from .heuristics import make_heuristic

    env = gym.make("dynosim_gym:DynoSimRouting-v0", config=env_cfg)
    teach = make_heuristic(teacher, env)
    obs_l, act_l = [], []
    for k in range(episodes):
        obs, _ = env.reset(seed=10_000 + seed + k, options={"split": "train"})
        start, done = np.ones(1, dtype=bool), False
        while not done:
            a, _ = teach.predict(obs, episode_start=start, deterministic=True)
            start = np.zeros(1, dtype=bool)
            obs_l.append(obs)
            act_l.append(int(a))
            obs, _, term, trunc, _ = env.step(a)
            done = term or trunc
    env.close()
    X = th.as_tensor(np.asarray(obs_l, dtype=np.float32))
    y = th.as_tensor(np.asarray(act_l, dtype=np.int64))
    pol = model.policy
    opt = th.optim.Adam(pol.parameters(), lr=learning_rate)
    gen = th.Generator().manual_seed(seed)
    pol.set_training_mode(True)
    nll = float("nan")
    for ep in range(epochs):
        perm = th.randperm(len(X), generator=gen)
        tot = 0.0
        for i in range(0, len(X), batch_size):
            b = perm[i:i + batch_size]
            dist = pol.get_distribution(X[b])
            loss = -dist.log_prob(y[b]).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            tot += float(loss.detach()) * len(b)
        nll = tot / len(X)
        if not quiet:
            print(f"dynosim: behaviour cloning epoch {ep + 1}/{epochs}: NLL {nll:.4f}",
                  file=sys.stderr, flush=True)
    pol.set_training_mode(False)
    with th.no_grad():
        agree = float((pol.get_distribution(X).distribution.probs.argmax(-1) == y)
                      .float().mean())
    return {"teacher": teacher, "episodes": episodes, "samples": int(len(X)),
            "epochs": epochs, "final_nll": nll, "teacher_agreement": agree}
