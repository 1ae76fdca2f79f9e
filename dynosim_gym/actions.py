"""Action types for the autoscaling environment (factories from the ``env.action`` config).

* ``delta`` (default): ``Discrete(2k + 1)``; action ``i`` changes the provisioned workers
  (active + starting) by ``i - k``.
* ``target``: ``Discrete(max_workers - min_endpoint + 1)``; action ``i`` asks for
  ``min_endpoint + i`` workers.
* ``residual``: ``Discrete(hi - lo + 1)`` for ``residual_offsets = [lo, hi]``; action ``i``
  asks for ``base + lo + i`` workers, ``base`` being the throughput planner's worker count
  for the load it reads (the env sets :attr:`ResidualAction.base` every step; residual
  policy learning, Silver et al. 2018, Johannink et al. 2019).

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


class ResidualAction(ActionType):
    """An offset in ``[lo, hi]`` workers to a base count the env sets before each decision
    (:attr:`base`: the throughput planner's ``ceil(demand / engine rate)``, see
    :class:`~dynosim_gym.autoscaling_env.DynoSimEnv`)."""

    def __init__(self, min_workers: int, max_workers: int, offsets) -> None:
        super().__init__(min_workers, max_workers)
        self.off_lo, self.off_hi = int(offsets[0]), int(offsets[1])
        self.space = spaces.Discrete(self.off_hi - self.off_lo + 1)
        self.base = min_workers

    def target(self, action, current: int) -> int:
        return self.base + self.off_lo + int(action)

    def from_target(self, target: int, current: int) -> int:
        """The offset nearest to ``target - base`` (clipped to ``[lo, hi]``), as an action."""
        return int(min(max(target - self.base, self.off_lo), self.off_hi)) - self.off_lo


def make_action_type(cfg, min_workers: int, max_workers: int) -> ActionType:
    if cfg.type == "delta":
        return DeltaAction(min_workers, max_workers, cfg.max_step)
    if cfg.type == "residual":
        return ResidualAction(min_workers, max_workers, cfg.residual_offsets)
    return TargetAction(min_workers, max_workers)


# -- disaggregated pools (DynoSim-v0 on a config with a ``disagg`` section) -------------------

POOLS = ("prefill", "decode")


class PoolDeltaAction:
    """``MultiDiscrete([2k + 1, 2k + 1])``: sub-action ``i`` of pool ``j`` (0 = prefill,
    1 = decode) changes that pool's provisioned workers (active + starting) by ``i - k``.

    The env clamps each pool to its ``min_endpoint`` and the pair to the GPU budget
    (``P * gpus_prefill + D * gpus_decode <= max_gpu_budget``): decreases apply first, then
    increases in pool order (prefill, then decode) as far as the GPUs left allow.
    ``masks`` (sb3-contrib MaskablePPO, flattened over the sub-actions: the first ``2k + 1``
    entries are prefill's) marks the sub-actions that need no clamping while the other pool
    holds; holding is always allowed."""

    def __init__(self, floors: dict[str, int], gpus: dict[str, int], budget: int,
                 max_step: int) -> None:
        self.floor, self.gpus, self.budget, self.k = floors, gpus, budget, max_step
        self.space = spaces.MultiDiscrete([2 * max_step + 1] * len(POOLS))

    def check(self, action) -> tuple[int, int]:
        """``action`` as (prefill, decode) ints; ValueError unless the space contains it
        (integer arrays or sequences of shape (2,); no bools, floats or strings)."""
        a = np.asarray(action)
        if a.shape != (len(POOLS),) or a.dtype.kind not in "iu" or \
                not self.space.contains(a.astype(np.int64)):
            raise ValueError(f"action {action!r} is not in {self.space} (one integer delta "
                             f"index per pool: prefill, decode)")
        return int(a[0]), int(a[1])

    def targets(self, action: tuple[int, int], current: dict[str, int]) -> dict[str, int]:
        """Requested workers per pool (unclamped)."""
        return {pool: current[pool] + int(action[j]) - self.k for j, pool in enumerate(POOLS)}

    def clamp(self, want: dict[str, int], current: dict[str, int]) -> dict[str, int]:
        """``want`` within the floors and the GPU budget (see the class doc)."""
        g = self.gpus
        t = {pool: max(want[pool], self.floor[pool]) for pool in POOLS}
        out = {pool: min(t[pool], current[pool]) for pool in POOLS}
        used = sum(out[pool] * g[pool] for pool in POOLS)
        for pool in POOLS:
            if t[pool] > current[pool]:
                room = max(0, (self.budget - used) // g[pool])
                out[pool] = current[pool] + min(t[pool] - current[pool], room)
                used += (out[pool] - current[pool]) * g[pool]
        return out

    def from_targets(self, target: dict[str, int], current: dict[str, int]) -> np.ndarray:
        """The action that moves each pool towards ``target`` (as far as a step goes)."""
        k = self.k
        return np.array([min(max(target[p] - current[p], -k), k) + k for p in POOLS],
                        dtype=np.int64)

    def masks(self, current: dict[str, int]) -> np.ndarray:
        g = self.gpus
        out = []
        for j, pool in enumerate(POOLS):
            other = POOLS[1 - j]
            room = (self.budget - current[other] * g[other]) // g[pool]
            for i in range(2 * self.k + 1):
                t = current[pool] + i - self.k
                out.append(i == self.k or self.floor[pool] <= t <= room)
        return np.array(out, dtype=bool)
