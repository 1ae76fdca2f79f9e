"""Shared helpers for the core test suite (engine/replay oracles, invariants, bulk equivalence)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import pytest

from sim.engine import EngineConfig
from sim.request import Request
from sim.simulator import ClusterConfig, RunResult, Simulation
from sim.timing import PolynomialTiming, TimingModel
from sim.workloads import load_mooncake  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DYNOSIM_SHARED") or REPO.parent / "shared")   # CI: ../shared
CONVERSATION_TRACE = SHARED / "data" / "traces" / "mooncake_fast25" / "conversation_trace.jsonl"

# Oracle tolerance: rel 1e-9 or abs 1e-6 ms, whichever is larger (pytest.approx semantics).
REL, ABS = 1e-9, 1e-6


def stale_compiled_modules() -> list[str]:
    """Compiled modules (setup.py) older than their ``.py``/``.pxd``: Python would import the
    old compiled code, not the edited source."""
    import importlib.machinery
    out = []
    for py in sorted([*(REPO / "sim").rglob("*.py"), *(REPO / "dynosim_gym").rglob("*.py")]):
        pxd = py.with_suffix(".pxd")
        newest = max(py.stat().st_mtime, pxd.stat().st_mtime if pxd.exists() else 0.0)
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            so = py.with_name(py.stem + suffix)
            if so.exists() and so.stat().st_mtime < newest:
                out.append(str(py.relative_to(REPO)))
    return out


def pytest_sessionstart(session) -> None:
    stale = stale_compiled_modules()
    if stale:
        pytest.exit(f"compiled modules are older than their sources ({', '.join(stale)}): "
                    "rebuild with `make install` or `.venv/bin/pip install -e .`", returncode=2)


def ms(x: float):
    return pytest.approx(x, rel=REL, abs=ABS)


class ListWorkload:
    """A fixed list of open-loop requests (iterated in arrival order, ties in list order)."""

    def __init__(self, reqs: Sequence[Request]) -> None:
        self.reqs = sorted(reqs, key=lambda r: r.arrival_ms)   # stable: ties keep list order

    def __iter__(self):
        return iter(self.reqs)

    def on_complete(self, req: Request, now: float) -> list[Request]:
        return []

    def describe(self) -> dict:
        return {"name": "list", "num_requests": len(self.reqs)}


def req(index: int, arrival: float, isl: int, osl: int, hash_ids: Iterable[int] | None = None,
        tbs: int = 512) -> Request:
    if hash_ids is None:            # distinct ids per request, enough to cover the prompt
        n = -(-isl // tbs)
        hash_ids = [1_000_000 + index * 1000 + j for j in range(n)]
    return Request(index, float(arrival), isl, osl, hash_ids=tuple(hash_ids),
                   trace_block_size=tbs)


def write_jsonl(path: Path, rows: Sequence[tuple]) -> Path:
    """Rows ``(timestamp, isl, osl, hash_ids)`` as a Mooncake JSONL trace."""
    with open(path, "w") as fh:
        for ts, isl, osl, ids in rows:
            fh.write(json.dumps({"timestamp": ts, "input_length": isl, "output_length": osl,
                                 "hash_ids": list(ids)}) + "\n")
    return path


def simulate(workload, *, exact: bool, block_size: int = 64, num_gpu_blocks: int = 16384,
             max_num_batched_tokens: int = 8192, max_num_seqs: int = 256,
             timing: TimingModel | None = None, num_workers: int = 1,
             router: str = "round_robin", seed: int = 0, check_invariants: bool = True,
             **kw) -> RunResult:
    if isinstance(workload, (list, tuple)):
        workload = ListWorkload(workload)
    eng = EngineConfig(block_size=block_size, num_gpu_blocks=num_gpu_blocks,
                       max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens)
    return Simulation(workload, engine=eng, timing=timing or PolynomialTiming(),
                      cluster=ClusterConfig(num_workers=num_workers), router=router, seed=seed,
                      exact=exact, check_invariants=check_invariants, **kw).run()


@pytest.fixture(params=[False, True], ids=["bulk", "exact"])
def exact(request) -> bool:
    return request.param
