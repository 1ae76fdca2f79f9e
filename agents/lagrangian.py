"""Lagrangian PPO's dual update: an SB3 callback for ``reward.mode: lagrangian``.

With ``reward.mode: lagrangian`` the env's SLA term is ``multiplier x (met - sla_target x
decided) / request_scale``: the Lagrangian of "minimise GPU cost subject to pooled SLA
attainment >= sla_target". The policy ascends it; this callback does projected gradient
descent on the multiplier: after each rollout, with the rollout's pooled attainment
``A = met / decided`` (every request decided during the rollout, all envs),
``multiplier <- max(0, multiplier + multiplier_lr x (sla_target - A))``, and pushes the new
value to every env (``set_multiplier``). The value is logged as ``lagrangian/multiplier``
and ``lagrangian/attainment`` (TensorBoard).
"""
from __future__ import annotations

from stable_baselines3.common.callbacks import BaseCallback


class LagrangeMultiplierCallback(BaseCallback):
    def __init__(self, sla_target: float, lr: float, initial: float) -> None:
        super().__init__()
        self.target, self.lr, self.multiplier = sla_target, lr, initial
        self._met = self._decided = 0
        self.history: list[tuple[int, float, float]] = []   # (timesteps, attainment, multiplier)

    def _on_training_start(self) -> None:
        self.training_env.env_method("set_multiplier", self.multiplier)

    def _on_step(self) -> bool:
        for info in self.locals.get("infos", ()):
            self._met += info.get("requests_met", 0)
            self._decided += info.get("requests_decided", 0)
        return True

    def _on_rollout_end(self) -> None:
        if not self._decided:
            return
        attainment = self._met / self._decided
        self.multiplier = max(0.0, self.multiplier + self.lr * (self.target - attainment))
        self.training_env.env_method("set_multiplier", self.multiplier)
        self.logger.record("lagrangian/multiplier", self.multiplier)
        self.logger.record("lagrangian/attainment", attainment)
        self.history.append((int(self.num_timesteps), attainment, self.multiplier))
        self._met = self._decided = 0
