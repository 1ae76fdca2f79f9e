"""dynosim core: a discrete-event simulator of an LLM serving cluster.

Importable without gymnasium or torch. Main entry points: ``sim.simulator.Simulation``,
``sim.config.load_config`` and the ``dynosim`` CLI (``sim.cli``).
"""
__version__ = "0.1.0"
