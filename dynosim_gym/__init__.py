"""Gymnasium environments over the ``sim`` core.

* ``DynoSim-v0`` (:class:`~dynosim_gym.autoscaling_env.DynoSimEnv`): autoscale an aggregated
  worker pool every decision interval; on a config with a ``disagg`` section
  (``autoscale_disagg``), a prefill and a decode pool
  (:class:`~dynosim_gym.autoscaling_env.DynoSimDisaggEnv`, one delta per pool).
* ``DynoSimRouting-v0`` (:class:`~dynosim_gym.routing_env.DynoSimRoutingEnv`): pick the worker
  for each arriving request.

Importing the package registers both ids (idempotently); ``gym.make("dynosim_gym:DynoSim-v0")``
imports it for you, which is what subprocess vector envs and Ray workers need.
"""
from __future__ import annotations

from gymnasium.envs.registration import register, registry

ENV_IDS = ("DynoSim-v0", "DynoSimRouting-v0")


def _register() -> None:
    if "DynoSim-v0" not in registry:
        register(id="DynoSim-v0", entry_point="dynosim_gym.autoscaling_env:DynoSimEnv")
    if "DynoSimRouting-v0" not in registry:
        register(id="DynoSimRouting-v0", entry_point="dynosim_gym.routing_env:DynoSimRoutingEnv")


_register()

__all__ = ["ENV_IDS"]
