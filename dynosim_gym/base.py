"""What both environments share: seeding an episode from ``np_random``, and the strict
action and episode-state checks of ``step``."""
from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from sim.errors import InputError

from .config import EnvConfig, load_env_config, require_sla
from .episodes import draw_episode_seed


class ResetNeeded(gym.error.ResetNeeded, RuntimeError):
    """``step`` before ``reset``, or after the episode ended (terminated or truncated)."""


EPISODE_OVER = "the episode is over (terminated or truncated); call reset() before step()"


def check_discrete(space: spaces.Discrete, action: Any) -> int:
    """``action`` as a Python int if ``space.contains`` accepts it and it is no bool, else
    ``ValueError`` naming the space and the value.

    Accepted (as Gymnasium's ``Discrete.contains``): a Python ``int``, a numpy integer
    scalar, or a 0-d numpy integer array (what SB3's ``predict`` returns for one
    observation), within ``[start, start + n)``. Rejected: bools (``True`` is an int to
    Python but not an action), floats (``1.0``, ``inf``, ``nan``), strings, lists and arrays
    of any other shape or dtype."""
    lo, n = int(space.start), int(space.n)
    kind = type(action)
    if kind is int or kind is np.int64:           # the common cases (SB3 gives np.int64)
        if lo <= action < lo + n:
            return int(action)
    elif (isinstance(action, (int, np.integer)) and not isinstance(action, bool)) or (
            isinstance(action, np.ndarray) and action.shape == ()
            and action.dtype.kind in "iu"):
        a = int(action)
        if lo <= a < lo + n:
            return a
    text = repr(action)
    if len(text) > 60:
        text = text[:57] + "..."
    raise ValueError(f"action {text} ({type(action).__name__}) is outside the action space "
                     f"{space} (an integer in [{lo}, {lo + n - 1}]: Python int, numpy "
                     "integer or 0-d integer array)")


class SimEnv(gym.Env):
    """``reset`` draws the episode seed from ``np_random`` and hands it to ``_begin``, which
    builds the episode (a pickle replays ``_begin`` with the same seed)."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return self._begin(draw_episode_seed(self.np_random), options)

    def _begin(self, ep_seed: int, options: dict[str, Any] | None):
        raise NotImplementedError

    def _configure(self, config: Any, default: str, render_mode: str | None,
                   overrides: dict[str, Any]) -> EnvConfig:
        """Check ``render_mode``, load and validate the config (SLA targets required)."""
        modes = self.metadata["render_modes"]
        if render_mode is not None and render_mode not in modes:
            raise InputError(f"unknown render_mode {render_mode!r}; expected one of "
                             f"{', '.join(modes)} or None", field="render_mode")
        self.render_mode = render_mode
        cfg = load_env_config(config, defaults=default, **overrides)
        require_sla(cfg)
        return cfg
