"""A permutation-equivariant actor-critic for ``DynoSimRouting-v0`` (SB3 ``policy=RouterPolicy``).

The routing observation is ``num_workers`` blocks of :data:`dynosim_gym.routing_env.
WORKER_FEATURES` and the request's features. An MLP over the flat vector ties a policy to
worker indices (PPO on it learned to send most requests to one worker, issue 16). Here every
worker is scored by the *same* small network from

* its own features (queued prefill, KV held, running, waiting, prefix overlap),
* the same features relative to the pool (minus their mean over workers),
* the request's features, and
* Dynamo's KV-router cost of sending the request there (:func:`agents.heuristics.kv_costs`,
  default knobs), min-max normalised over the pool, and the request blocks the worker would
  have to prefill, / the request's blocks (heuristic guidance, as in Jain et al. 2024),

and the action logits are the workers' scores (a categorical over workers). Permuting the
workers permutes the logits the same way; the value is computed from the mean of the
workers' embeddings, so it does not depend on their order. Shapes: observation ``(B, 5 N +
1)``; per-worker input ``(B, N, 13)``; logits ``(B, N)``; value ``(B, 1)``.
"""
from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from torch import nn

N_WORKER = 5            # len(WORKER_FEATURES)
N_INPUT = 2 * N_WORKER + 1 + 2


def _unsquash(y: th.Tensor) -> th.Tensor:
    y = th.clamp(y, 0.0, 1.0 - 1e-6)
    return y / (1.0 - y)


def worker_inputs(obs: th.Tensor, num_workers: int, scales: dict[str, float]) -> th.Tensor:
    """``(B, 5 N + 1)`` observations -> ``(B, N, 13)`` per-worker inputs (module doc)."""
    b = obs.shape[0]
    w = obs[:, : N_WORKER * num_workers].reshape(b, num_workers, N_WORKER)
    req = obs[:, N_WORKER * num_workers:]
    rel = w - w.mean(dim=1, keepdim=True)
    bs = scales["block_size"]
    req_blocks = _unsquash(req[:, :1]) * scales["isl_tokens"] / bs              # (B, 1)
    queued = _unsquash(w[:, :, 0]) * scales["queued_prefill_tokens"] / bs       # (B, N)
    held = w[:, :, 1] * scales["kv_blocks"]
    cached = w[:, :, 4] * th.floor(req_blocks)
    to_prefill = req_blocks - cached
    cost = queued + to_prefill + held + req_blocks
    lo = cost.min(dim=1, keepdim=True).values
    hi = cost.max(dim=1, keepdim=True).values
    cost_n = (cost - lo) / (hi - lo + 1e-6)
    prefill_n = to_prefill / (req_blocks + 1.0)
    req_b = req.unsqueeze(1).expand(b, num_workers, req.shape[1])
    return th.cat([w, rel, req_b, cost_n.unsqueeze(-1), prefill_n.unsqueeze(-1)], dim=-1)


class WorkerScorer(nn.Module):
    """SB3 ``mlp_extractor``: ``latent_pi`` = a score per worker (``(B, N)``),
    ``latent_vf`` = an MLP of the mean worker embedding (``(B, hidden)``)."""

    def __init__(self, num_workers: int, scales: dict[str, float], hidden: int = 64) -> None:
        super().__init__()
        self.num_workers = num_workers
        self.scales = dict(scales)
        self.embed = nn.Sequential(nn.Linear(N_INPUT, hidden), nn.Tanh(),
                                   nn.Linear(hidden, hidden), nn.Tanh())
        self.score = nn.Linear(hidden, 1)
        self.critic = nn.Sequential(nn.Linear(hidden, hidden), nn.Tanh())
        self.latent_dim_pi = num_workers
        self.latent_dim_vf = hidden

    def _embed(self, features: th.Tensor) -> th.Tensor:
        return self.embed(worker_inputs(features, self.num_workers, self.scales))

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        e = self._embed(features)
        return self.score(e).squeeze(-1), self.critic(e.mean(dim=1))

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        return self.score(self._embed(features)).squeeze(-1)

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return self.critic(self._embed(features).mean(dim=1))


class RouterPolicy(ActorCriticPolicy):
    """SB3 actor-critic with a :class:`WorkerScorer` and the scores as the logits (no
    action head). ``policy_kwargs``: ``num_workers``, ``scales`` (the env's ``obs_scales``),
    ``hidden`` (default 64)."""

    def __init__(self, *args: Any, num_workers: int, scales: dict[str, float],
                 hidden: int = 64, **kwargs: Any) -> None:
        self.num_workers = int(num_workers)
        self.scales = dict(scales)
        self.hidden = int(hidden)
        kwargs.setdefault("ortho_init", True)
        super().__init__(*args, **kwargs)

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = WorkerScorer(self.num_workers, self.scales, self.hidden)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        self.action_net = nn.Identity()          # the workers' scores are the logits
        nn.init.orthogonal_(self.mlp_extractor.score.weight, gain=0.01)
        nn.init.zeros_(self.mlp_extractor.score.bias)
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1),
                                              **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(num_workers=self.num_workers, scales=self.scales, hidden=self.hidden)
        return data
