"""Native parts, all optional; everything else is in pyproject.toml.

* ``sim/_kvpool.c``: the KV block pool and decode-stretch timing in C.
* The simulator's hot modules compiled with Cython from their plain-Python sources
  (``sim/engines/*.pxd`` type the engines' sequence state). The ``.py`` files stay the
  reference and run as they are when nothing is compiled; ``tests/test_compiled.py``
  checks that both give byte-identical results.

``optional=True``: without a C compiler (or Cython) the package still installs and runs in
pure Python (same results, slower). ``-ffp-contract=off``: no fused multiply-adds, so float
results equal the Python reference bit for bit; ``-O3`` (Python's own flags end in ``-O2``)
adds inlining and loop optimisations but no float reassociation (no ``-ffast-math``), so the
bits stay the same (``tests/test_compiled.py``). ``DYNOSIM_NO_CYTHON=1`` skips the Cython
modules (e.g. while editing them: an editable install imports the compiled module, not the
edited ``.py``, until it is rebuilt; ``make`` rebuilds when a source changes).
"""
import os

from setuptools import Extension, setup

C_FLAGS = ["-O3", "-ffp-contract=off"]

# Modules compiled with Cython: (module, extra directives). The engine cores get C-typed locals
# (infer_types) and its annotations typed (``s: Seq``), the event loop C-typed locals; the
# rest keep Python semantics exactly (annotations ignored) and only lose the interpreter's
# dispatch overhead. Not timing.py: its rounding relies on Python's round().
COMPILED = [
    ("sim.engine", {}),
    ("sim.engines.base", {"infer_types": True, "annotation_typing": True}),
    ("sim.engines.vllm", {"infer_types": True, "annotation_typing": True}),
    ("sim.engines.trtllm", {}),
    ("sim.engines.sglang", {}),
    ("sim.radix_cache", {}),
    ("sim.simulator", {"infer_types": True}),
    ("sim.kv_cache", {}),
    ("sim.host_tier", {}),
    ("sim.metrics", {}),
    ("sim.timing", {}),
    ("sim.gpu_timing", {}),
    ("sim.router", {}),
    ("sim.workloads.synthetic", {}),
    ("sim.workloads.base", {}),
    ("sim.workloads.traces", {}),
    ("sim.workloads.window", {}),
    ("sim.request", {}),
    ("dynosim_gym.monitor", {}),
    ("dynosim_gym.observations", {}),
    ("dynosim_gym.autoscaling_env", {}),
    ("dynosim_gym.base", {}),
    ("dynosim_gym.episodes", {}),
    ("dynosim_gym.actions", {}),
]


def cython_extensions() -> list:
    if os.environ.get("DYNOSIM_NO_CYTHON"):
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        return []
    exts = []
    for mod, directives in COMPILED:
        ext = Extension(mod, [mod.replace(".", "/") + ".py"], extra_compile_args=C_FLAGS,
                        optional=True)
        exts += cythonize([ext], quiet=True, compiler_directives={
            "language_level": 3, "annotation_typing": False, "binding": True, **directives})
    return exts


setup(ext_modules=[Extension("sim._kvpool", ["sim/_kvpool.c"], extra_compile_args=C_FLAGS,
                             optional=True)] + cython_extensions())
