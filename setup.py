"""Build the optional native KV pool (sim/_kvpool.c); everything else is in pyproject.toml.

``optional=True``: without a C compiler the package still installs and uses the
pure-Python pool (same results, slower on small-pool replays). ``-ffp-contract=off``: no
fused multiply-adds, so float results equal the Python reference bit for bit.
"""
from setuptools import Extension, setup

setup(ext_modules=[Extension("sim._kvpool", ["sim/_kvpool.c"], extra_compile_args=["-O2", "-ffp-contract=off"],
                             optional=True)])
