"""Action types for the autoscaling environment (factories from the ``env.action`` config).

* ``delta`` (default): ``Discrete(2k + 1)``; action ``i`` changes the provisioned workers
  (active + starting) by ``i - k``.
* ``target``: ``Discrete(max_workers - min_endpoint + 1)``; action ``i`` asks for
  ``min_endpoint + i`` workers.

Either way the env clamps the request to ``[min_endpoint, max_gpu_budget // gpus_per_worker]``
(so plain PPO works) and ``action_masks()`` marks the actions that need no clamping (for
sb3-contrib's MaskablePPO).
"""
from __future__ import annotations

import numpy as np
from gymnasium import spaces

from .base import check_discrete


class ActionType:
    space: spaces.Discrete

    def __init__(self, min_workers: int, max_workers: int) -> None:
        self.lo, self.hi = min_workers, max_workers

    def target(self, action, current: int) -> int:
        """Requested worker count (unclamped) for ``action`` given ``current`` workers."""
        raise NotImplementedError

    def from_target(self, target: int, current: int) -> int:
        """The action that asks for ``target`` (as close as the space allows)."""
        raise NotImplementedError

    def check(self, action) -> int:
        """``action`` as an int; ValueError unless the space contains it (no bools)."""
        if type(action) is int and 0 <= action < self.space.n:     # the hot path
            return action
        return check_discrete(self.space, action)

    def masks(self, current: int) -> np.ndarray:
        t = np.array([self.target(a, current) for a in range(self.space.n)])
        return (t >= self.lo) & (t <= self.hi)


class DeltaAction(ActionType):
    def __init__(self, min_workers: int, max_workers: int, max_step: int) -> None:
        super().__init__(min_workers, max_workers)
        self.k = max_step
        self.space = spaces.Discrete(2 * max_step + 1)

    def target(self, action, current: int) -> int:
        return current + int(action) - self.k

    def from_target(self, target: int, current: int) -> int:
        return int(min(max(target - current, -self.k), self.k)) + self.k


class TargetAction(ActionType):
    def __init__(self, min_workers: int, max_workers: int) -> None:
        super().__init__(min_workers, max_workers)
        self.space = spaces.Discrete(max_workers - min_workers + 1)

    def target(self, action, current: int) -> int:
        return self.lo + int(action)

    def from_target(self, target: int, current: int) -> int:
        return int(min(max(target, self.lo), self.hi)) - self.lo


def make_action_type(cfg, min_workers: int, max_workers: int) -> ActionType:
    if cfg.type == "delta":
        return DeltaAction(min_workers, max_workers, cfg.max_step)
    return TargetAction(min_workers, max_workers)
