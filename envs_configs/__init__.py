"""YAML scenarios for ``dynosim simulate`` and the ``dynosim_gym`` environments.

A package only so the files ship in wheels: ``gym.make("DynoSim-v0", config="NAME")``
finds ``NAME.yaml`` here.
"""
