"""dynosim core: a discrete-event simulator of an LLM serving cluster.

Importable without gymnasium or torch. Main entry points: ``sim.simulator.Simulation`` and
``sim.config.load_config``. The ``dynosim`` command line and the studies live outside the
core, in the ``dynosim`` package; the core never imports them.
"""
__version__ = "0.1.0"
