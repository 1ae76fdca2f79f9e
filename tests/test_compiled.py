"""The Cython-compiled modules (setup.py) against their plain-Python sources.

The ``.py`` files are the reference; compiled, they must give the same bytes. A subprocess
runs the same replay and environment episode from a copy of the sources without the compiled
modules (the C KV pool is kept: ``tests/test_kv_pool_native.py`` covers it), and the outputs
are compared exactly.
"""
from __future__ import annotations

import ast
import importlib.machinery
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO



def compiled_modules() -> list[str]:
    """The modules setup.py compiles (its COMPILED list, read without running setup())."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "COMPILED":
            return [ast.literal_eval(elt.elts[0]) for elt in node.value.elts]
    raise AssertionError("setup.py has no COMPILED list")

RUN = r'''
import hashlib, json, sys
import numpy as np
import gymnasium as gym
import dynosim_gym
from sim.engine import EngineConfig
from sim.gpu_timing import load_gpu_timing
from sim.simulator import ClusterConfig, Simulation
from sim.workloads import lognormal, poisson, synthetic

out = {"engine_file": __import__("sim.engine").engine.__file__}
t = load_gpu_timing("Qwen/Qwen3-32B", "h200_sxm", "vllm", 2)
for router in ("round_robin", "kv"):
    wl = synthetic(np.random.default_rng(4), arrival=poisson(5.0), isl=lognormal(3000, 0.9, 20000),
                   osl=lognormal(150, 0.8, 600), num_requests=200, num_prefix_groups=4,
                   shared_prefix_blocks=3)
    eng = EngineConfig(block_size=64, num_gpu_blocks=900, max_num_batched_tokens=2048)
    res = Simulation(wl, engine=eng, timing=t, cluster=ClusterConfig(num_workers=3),
                     router=router, seed=2, max_sim_time_ms=40000.0).run()
    cols = {k: v.tobytes().hex() for k, v in res.metrics.columns().items()}
    out[router] = hashlib.sha256(json.dumps([res.summary, cols], sort_keys=True,
                                            default=str).encode()).hexdigest()
from sim.disagg import DisaggConfig
wl = synthetic(np.random.default_rng(5), arrival=poisson(4.0), isl=lognormal(3000, 0.9, 20000),
               osl=lognormal(150, 0.8, 600), num_requests=200, num_prefix_groups=4,
               shared_prefix_blocks=3)
eng = EngineConfig(block_size=64, num_gpu_blocks=900, max_num_batched_tokens=2048)
d = DisaggConfig(num_prefill_workers=2, num_decode_workers=2, prefill_engine=eng,
                 decode_engine=eng, prefill_router="kv", decode_router="kv",
                 kv_transfer_bandwidth=8.0, kv_bytes_per_token=100000,
                 kv_transfer_timing_mode="destination_missing")
res = Simulation(wl, engine=eng, timing=t, disagg=d, seed=2, max_sim_time_ms=40000.0).run()
cols = {k: v.tobytes().hex() for k, v in res.metrics.columns().items()}
out["disagg"] = hashlib.sha256(json.dumps([res.summary, cols, res.metrics.handoffs],
                                          sort_keys=True, default=str).encode()).hexdigest()
env = gym.make("DynoSim-v0", config="autoscale_tiny")
obs, info = env.reset(seed=3)
rng = np.random.default_rng(0)
traj = [obs.tobytes().hex(), json.dumps(info, sort_keys=True, default=str)]
for _ in range(20):
    obs, r, term, trunc, info = env.step(int(rng.integers(env.action_space.n)))
    traj += [obs.tobytes().hex(), repr(r), term, trunc, json.dumps(info, sort_keys=True, default=str)]
    if term or trunc:                 # stepping on after the end raises ResetNeeded
        obs, info = env.reset()
        traj += [obs.tobytes().hex(), json.dumps(info, sort_keys=True, default=str)]
out["env"] = hashlib.sha256(json.dumps(traj).encode()).hexdigest()
print(json.dumps(out))
'''


def _compiled(module: str) -> bool:
    mod = sys.modules.get(module) or __import__(module, fromlist=["_"])
    return any(mod.__file__.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)


def test_hot_modules_are_compiled() -> None:
    """What the README's speed figures assume: setup.py compiled every listed module."""
    if os.environ.get("DYNOSIM_NO_CYTHON"):
        pytest.skip("DYNOSIM_NO_CYTHON is set")
    missing = [m for m in compiled_modules() if not _compiled(m)]
    assert not missing, f"not compiled (is Cython in the build requirements?): {missing}"


def _run(pythonpath: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    out = subprocess.run([sys.executable, "-c", RUN], capture_output=True, text=True, env=env,
                         cwd=str(pythonpath), timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


EXT_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def pure_copy(tmp_path: Path) -> Path:
    """A copy of the packages without their Cython-compiled modules (the native KV pool
    kept): importing from it runs the plain-Python sources."""
    pure = tmp_path / "pure"
    suffixes = EXT_SUFFIXES
    for pkg in ("sim", "dynosim_gym", "envs_configs"):
        shutil.copytree(REPO / pkg, pure / pkg, ignore=lambda d, names: [
            n for n in names if n == "__pycache__" or n.endswith(".c")
            or (n.endswith(suffixes) and not n.startswith("_kvpool"))])
    return pure


def test_compiled_and_pure_python_give_identical_results(tmp_path: Path) -> None:
    if not _compiled("sim.engine"):
        pytest.skip("the simulator is not compiled here: nothing to compare")
    pure = pure_copy(tmp_path)
    compiled = _run(REPO)
    reference = _run(pure)
    assert compiled.pop("engine_file").endswith(EXT_SUFFIXES)
    assert reference.pop("engine_file").endswith(".py")
    assert compiled == reference
