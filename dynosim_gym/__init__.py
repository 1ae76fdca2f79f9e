"""Gymnasium environments over the ``sim`` core (DynoSim-v0, DynoSimRouting-v0).

The environments are the subject of a later issue; this package exists so the
distribution's layout is stable.
"""
