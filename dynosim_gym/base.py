"""What both environments share: seeding an episode from ``np_random``."""
from __future__ import annotations

from typing import Any

import gymnasium as gym

from sim.errors import InputError

from .config import EnvConfig, load_env_config


class SimEnv(gym.Env):
    """``reset`` draws the episode seed from ``np_random`` and hands it to ``_begin``, which
    builds the episode (a pickle replays ``_begin`` with the same seed)."""

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        return self._begin(int(self.np_random.integers(2**63)), options)

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
        sla = cfg.sim.sla
        if sla.ttft_ms is None or sla.itl_ms is None:
            file, line = cfg.sim.locate("sla")
            raise InputError("the environment needs SLA targets: set sla.ttft_ms and "
                             "sla.itl_ms", file=file, line=line, field="sla")
        return cfg
