"""Shared helpers for the core test suite (engine/replay oracles, invariants, bulk equivalence)."""
from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import pytest

from sim.engine import EngineConfig
from sim.request import Request
from sim.simulator import ClusterConfig, RunResult, Simulation
from sim.timing import PolynomialTiming, TimingModel
from sim.workloads import load_mooncake  # noqa: F401  (re-exported for the tests)

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DYNOSIM_SHARED") or REPO.parent / "shared")   # CI: ../shared
# The bundled copy of the Mooncake FAST'25 conversation trace (bundled:mooncake_conversation).
CONVERSATION_TRACE = REPO / "sim" / "data" / "conversation_trace.jsonl"

#: Dynamo's replay (ai-dynamo 1.6.1): the venv named by $DYNOSIM_PEER_VENV, else the repo's
#: ./.peer-venv (what `make peer` installs).
PEER_VENV_DEFAULT = REPO / ".peer-venv"
PEER_MISSING = ("Dynamo's replay (ai-dynamo 1.6.1) not installed: `make peer` puts it in "
                "./.peer-venv (or set DYNOSIM_PEER_VENV to a venv that has it)")

# Oracle tolerance: rel 1e-9 or abs 1e-6 ms, whichever is larger (pytest.approx semantics).
REL, ABS = 1e-9, 1e-6


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``dynosim ARGV`` in-process: (exit code, stdout, stderr)."""
    from dynosim.cli import main
    rc = main(list(argv))
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def one_line_error(rc: int, err: str, *needles: str) -> None:
    """The project's bad-input contract: exit 2, one stderr line, no traceback, naming
    each of ``needles``."""
    assert rc == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err, err
    for n in needles:
        assert n in err, (n, err)


def load_script(name: str):
    """``scripts/NAME.py`` (or ``bench/NAME.py`` when given as ``bench/NAME``) imported as a
    module: the scripts are not a package."""
    import importlib.util
    rel = name if "/" in name else f"scripts/{name}"
    path = Path(__file__).resolve().parents[1] / f"{rel}.py"
    spec = importlib.util.spec_from_file_location(Path(rel).name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def expected_residual_base(env, n: int, seconds: float, in_tokens: int, out_tokens: int) -> int:
    """The residual action's base (issue 11, round 7b) recomputed independently of the env:
    ``n`` requests of ``in_tokens`` / ``out_tokens`` in total over ``seconds``, as a rate over
    one engine's best SLA rate for their mean ISL/OSL (``sim.planner.agg_engine_capacity``,
    at the KV hit rate the planner's last tick recorded), ceiled; ``min_endpoint`` when
    none arrived."""
    from sim.planner import agg_engine_capacity
    u = env.unwrapped
    e, sla, sim = u.cfg.env, u.cfg.sim.sla, u.sim
    if not n:
        return e.min_endpoint
    hit = u._base_planner.ticks[-1]["kv_hit_rate"]
    rps = agg_engine_capacity(sim.timing, sim.engine_cfg, in_tokens / n, out_tokens / n,
                              sla.ttft_ms, sla.itl_ms, hit)["rps"]
    return max(math.ceil(n / seconds / rps - 1e-9), e.min_endpoint)


def random_episodes_digest(config: str, **overrides) -> str:
    """16 hex digits of the observations, rewards and info (less ``reward_terms`` and
    ``episode_summary``) of two seeded random-action ``DynoSim-v0`` episodes (seeds 0 and 3)
    on ``config``: a recorded digest pins the env's trajectories byte for byte."""
    import hashlib

    import gymnasium as gym
    import numpy as np

    import dynosim_gym  # noqa: F401  (registers the ids)
    env = gym.make("DynoSim-v0", config=config, **overrides)
    h = hashlib.sha256()
    for seed in (0, 3):
        obs, info = env.reset(seed=seed)
        rng = np.random.default_rng(seed)
        h.update(obs.tobytes())
        for _ in range(env.unwrapped.cfg.env.episode_steps):
            obs, r, _, _, info = env.step(int(rng.integers(env.action_space.n)))
            h.update(obs.tobytes())
            h.update(np.float64(r).tobytes())
            h.update(repr(sorted((k, v) for k, v in info.items()
                                 if k not in ("reward_terms", "episode_summary"))).encode())
    return h.hexdigest()[:16]


def schedule_teacher_keys(monkeypatch, tmp_path, envs) -> tuple[list[str], list]:
    """Each env's ``oracle:schedule-floor`` teacher built with the search mocked (the plan:
    one worker per step): ``(the cache file names, the action sections of the envs the
    plans were made on)``. For tests that an env key leaves cached schedules' keys alone."""
    from unittest import mock

    from agents import router_train
    monkeypatch.setenv("DYNOSIM_CACHE", str(tmp_path))
    keys, planned_on = [], []

    def fake_best(plain, *args, **kw):
        planned_on.append(plain.unwrapped.cfg.env.action)
        return {"targets": [1] * 6}
    for env in envs:
        with mock.patch("agents.oracle.best_schedule", fake_best):
            pol = router_train._schedule_teacher(env, {"split": "train"}, 7,
                                                 "oracle:schedule-floor")
        keys.append(pol.cache_file.name)
        pol.cache_file.unlink()
    return keys, planned_on


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


# -- Dynamo's replay as a peer ------------------------------------------------------------------

def find_peer_python() -> Path | None:
    """The interpreter of a venv that imports ``dynamo.replay`` ($DYNOSIM_PEER_VENV, else
    ./.peer-venv), or None."""
    env = os.environ.get("DYNOSIM_PEER_VENV")
    for venv in ([Path(env)] if env else []) + [PEER_VENV_DEFAULT]:
        py = venv / "bin" / "python"
        if not py.is_file():
            continue
        try:
            ok = subprocess.run([str(py), "-c", "import dynamo.replay"], capture_output=True,
                                timeout=120, env={**os.environ, "DYN_LOG": "warn"}).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            ok = False
        if ok:
            return py
    return None


@pytest.fixture(scope="session")
def peer_python() -> Path:
    """Dynamo's replay interpreter; the test skips (naming no machine path) without it."""
    py = find_peer_python()
    if py is None:
        pytest.skip(PEER_MISSING)
    return py


# Runs inside the peer venv: one replay through Dynamo's public SDK, JSON on stdout.
_PEER_DRIVER = """
import json, sys
from dynamo.replay import run_trace_replay
a = json.loads(sys.argv[1])
eng = {"timing_model": {"type": "fixed", "prefill_ms": a["prefill_ms"],
                        "decode_ms": a["decode_ms"]}}
r = run_trace_replay([a["trace"]], extra_engine_args={"engine": eng},
                     num_workers=a["num_workers"], router_mode="round_robin",
                     capture_per_request=True, **a["sla"])
print(json.dumps({"summary": r.summary, "per_request": r.per_request}))
"""


def run_peer(py: Path, trace: Path, *, num_workers: int = 1, prefill_ms: float = 10.0,
             decode_ms: float = 5.0, sla: dict[str, float] | None = None) -> dict[str, Any]:
    """Replay ``trace`` (Mooncake JSONL) in Dynamo with fixed timing and round robin:
    ``{"summary": {...}, "per_request": [...]}``, or ``{"error": message}`` if Dynamo
    refuses the trace."""
    arg = json.dumps({"trace": str(trace), "num_workers": num_workers,
                      "prefill_ms": prefill_ms, "decode_ms": decode_ms,
                      "sla": {f"sla_{k}": v for k, v in (sla or {}).items()}})
    r = subprocess.run([str(py), "-c", _PEER_DRIVER, arg], capture_output=True, text=True,
                       timeout=300, env={**os.environ, "DYN_LOG": "warn"})
    if r.returncode:
        lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
        return {"error": lines[-1] if lines else f"exit {r.returncode}"}
    return json.loads(r.stdout)


def compare_requests(c: dict, peer: list[dict], until_ms: float = math.inf) -> int:
    """Per-request parity with Dynamo's replay: our record columns ``c`` against the peer's
    per-request JSON records, for requests arriving before ``until_ms``. Records match on
    (arrival, isl, osl) - the peer's order among equal arrivals is random - and on the
    worker where that key is ambiguous; worker, prefix reuse, output length and admission,
    first- and last-token times must agree. Returns how many requests were compared."""
    by_key: dict[tuple, list[dict]] = {}
    for r in peer:
        by_key.setdefault((r["arrival_time_ms"], r["input_length"],
                           r["requested_output_length"]), []).append(r)
    assert len(peer) == len(c["request_index"])
    n = 0
    for i in range(len(c["request_index"])):
        if float(c["arrival_time_ms"][i]) >= until_ms:
            continue
        key = (float(c["arrival_time_ms"][i]), int(c["input_length"][i]),
               int(c["requested_output_length"][i]))
        cands = by_key[key]
        if len(cands) > 1:
            cands = [r for r in cands if r["decode_worker_idx"] == int(c["worker"][i])]
        assert len(cands) == 1, (i, key)
        r = cands[0]
        assert r["terminal_status"] == "completed" and int(c["status"][i]) == 0
        assert int(c["worker"][i]) == r["decode_worker_idx"], (i, key)
        assert int(c["reused_input_tokens"][i]) == r["reused_input_tokens"], (i, key)
        assert int(c["output_length"][i]) == r["output_length"], (i, key)
        for col in ("first_admit_ms", "first_token_ms", "last_token_ms"):
            assert float(c[col][i]) == ms(r[col]), (i, key, col)
        n += 1
    return n


LATENCY_METRICS = ("ttft", "itl", "e2e_latency")
LATENCY_STATS = ("mean", "median", "p90", "p99")


def replay_beside_peer(cmd: list[str], ours: Callable[[], RunResult], out_dir: Path, *,
                       timeout: float = 1800) -> tuple[RunResult, dict[str, Any]]:
    """Start Dynamo's replay ``cmd`` (it prints its report as JSON) and run ``ours()`` while
    it runs, so both see the same machine; ``(our result, the peer's "metrics")``. A failed
    peer fails the test with the tail of its stderr."""
    out, err = out_dir / "peer.json", out_dir / "peer.err"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe,
                                env={**os.environ, "DYN_LOG": "warn"})
        try:
            result = ours()
            rc = proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert rc == 0, f"peer failed ({rc}): {err.read_text()[-2000:]}"
    return result, json.loads(out.read_text())["metrics"]


def latency_mismatches(ours: dict[str, Any], peer: dict[str, Any], tol: float) -> list[str]:
    """Every TTFT/ITL/E2E mean/p50/p90/p99 of our summary more than ``tol`` (relative) from
    the peer's, as ``"metric.stat: ours X peer Y"`` lines (empty: within tolerance)."""
    bad = []
    for metric in LATENCY_METRICS:
        for stat in LATENCY_STATS:
            got, want = ours["latency_ms"][metric][stat], peer["latency_ms"][metric][stat]
            if abs(got - want) > tol * abs(want):
                bad.append(f"{metric}.{stat}: ours {got:.6g} peer {want:.6g} "
                           f"({abs(got - want) / abs(want):.2%} > {tol:.0%})")
    return bad


def assert_values_not_options(capsys, flags, values) -> None:
    """Each ``(subcommand path, flag)`` given each of ``values`` reaches the flag's own
    check: argparse never reports "expected one argument" (it took a value starting with
    '-' for an option before dynosim.options.Parser's negative-number rule)."""
    from dynosim.cli import build_parser
    for path, flag in flags:
        for value in values:
            try:
                build_parser().parse_known_args([*path, flag, value])
            except SystemExit:
                pass
            err = capsys.readouterr().err
            assert "expected one argument" not in err, (path, flag, value, err)


def draw_requests(draw, n: int, tbs: int, prefixes: list[list[int]], gaps: list[float],
                  max_osl: int) -> list:
    """Hypothesis (inside an ``@st.composite``): ``n`` requests, each arriving a gap drawn
    from ``gaps`` (ms) after the last, with 1-3,000 prompt tokens as ``tbs``-token hash
    blocks (half the time starting with one of ``prefixes``, a shared prefix) and 1-
    ``max_osl`` output tokens."""
    from hypothesis import strategies as st

    from sim.request import Request
    t = 0.0
    reqs = []
    for i in range(n):
        t += draw(st.sampled_from(gaps))
        isl = draw(st.integers(1, 3000))
        osl = draw(st.integers(1, max_osl))
        need = -(-isl // tbs)
        ids: list[int] = []
        if prefixes and draw(st.booleans()):
            ids = list(draw(st.sampled_from(prefixes)))[:need]
        ids += [1_000_000 + 1000 * i + j for j in range(need - len(ids))]
        reqs.append(Request(i, t, isl, osl, hash_ids=tuple(ids), trace_block_size=tbs))
    return reqs
