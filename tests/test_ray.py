"""Scale-out on Ray (dynosim/executors.py, --executor ray, --framework rllib).

* Without the extra: one line naming it, exit 2 (runs whether Ray is installed or not).
* With it (CI installs it; these skip cleanly without): a sweep as Ray tasks gives a CSV
  byte-identical to the local executor, on a local Ray started on demand and on a two-node
  cluster started here (``ray start --head`` + ``ray start --address``, 1 CPU each, stopped
  at the end); an unreachable --ray-address fails in bounded time with one line; a short
  RLlib PPO run across both nodes whose checkpoint scores through ``dynosim evaluate``.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dynosim.cli import main

WINDOW_S = "20"
# The environment before any Ray session of this process: ray.init sets variables that
# child processes inherit (RAY_AUTH_MODE=token among them, which then disagrees with the test
# cluster's), so every Ray process this module starts gets this copy.
ENV0 = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
HAS_RAY = True
try:
    import ray  # noqa: F401
except ImportError:
    HAS_RAY = False
needs_ray = pytest.mark.skipif(not HAS_RAY, reason="the ray extra is not installed "
                               "(pip install -e '.[ray]')")


def _one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _sweep(out: Path, *extra: str) -> int:
    return main(["sweep", "interval", "--quick", "--max-sim-time-s", WINDOW_S, "--out",
                 str(out), *extra])


def test_missing_extra_is_one_line(tmp_path, capsys, monkeypatch):
    """Ray absent (import fails): each Ray feature says how to get it, exit 2."""
    for mod in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, mod)
    monkeypatch.setitem(sys.modules, "ray", None)       # import ray -> ImportError
    for argv in (["sweep", "interval", "--quick", "--executor", "ray", "--out",
                  str(tmp_path / "s")],
                 ["train", "--framework", "rllib", "--algo", "ppo", "--timesteps", "10",
                  "--out", str(tmp_path / "t")]):
        assert main(argv) == 2
        line = _one_line(capsys.readouterr().err)
        assert "install the ray extra" in line and "pip install -e '.[ray]'" in line
    assert not (tmp_path / "s" / "interval.csv").exists()


def test_ray_address_needs_ray_executor(tmp_path, capsys):
    assert _sweep(tmp_path, "--ray-address", "auto") == 2
    assert "--ray-address" in _one_line(capsys.readouterr().err)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def no_ray_session():
    """Each test connects afresh (a process holds one Ray connection)."""
    import ray
    ray.shutdown()
    yield
    ray.shutdown()


def _dynosim(*argv: str, timeout: float = 1200) -> subprocess.CompletedProcess:
    return subprocess.run([str(Path(sys.executable).with_name("dynosim")), *argv],
                          capture_output=True, text=True, timeout=timeout, env=ENV0)


# Every Ray client of this test is its own process (the cluster's readiness probe, the sweep,
# the training), as a user runs them, with the environment from before any Ray session here
# (ENV0): after a local Ray session in this process, RLlib's env runners failed to start on
# the cluster (IndexError in get_spaces) because the training process inherited
# RAY_AUTH_MODE=token. So the test passes in any order.
@pytest.mark.ray
@pytest.mark.xdist_group("ray")
def test_two_node_cluster_sweep_and_rllib(tmp_path, capsys):
    """One cluster (its start-up is the slow part): a sweep as Ray tasks on both nodes gives
    the local executor's bytes; PPO's env runners on both nodes train ~1,000 steps and the
    checkpoint scores through ``dynosim evaluate`` like an SB3 model."""
    if shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the ray extra is not installed (pip install -e '.[ray]')")
    cluster = LocalCluster(tmp_path)
    out = tmp_path / "rllib"
    try:
        cluster.start()
        assert _sweep(tmp_path / "local", "--jobs", "1") == 0
        p = _dynosim("sweep", "interval", "--quick", "--max-sim-time-s", WINDOW_S, "--out",
                     str(tmp_path / "ray"), "--executor", "ray", "--ray-address",
                     cluster.address)
        assert p.returncode == 0, p.stderr[-2000:]
        assert cluster.alive_nodes() == 2
        assert (tmp_path / "local" / "interval.csv").read_bytes() == \
            (tmp_path / "ray" / "interval.csv").read_bytes()
        info = json.loads((tmp_path / "ray" / "interval.run.json").read_text())
        assert info["cpus"] == 2 and info["ray_address"] == cluster.address

        p = _dynosim("train", "--framework", "rllib", "--algo", "ppo", "--num-env-runners",
                     "2", "--timesteps", "1000", "--ray-address", cluster.address, "--out",
                     str(out), "--quiet")
        assert p.returncode == 0, p.stderr[-2000:]
        run = json.loads((out / "run.json").read_text())
        assert run["framework"] == "rllib" and run["ray"]["nodes"] == 2
        assert run["steps"] >= 1000 and run["curve"]
        assert (out / "learning_curve.png").is_file()
    finally:
        cluster.stop()
    capsys.readouterr()
    assert main(["evaluate", "--policy", str(out), "--episodes", "1", "--json",
                 "--quiet"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["policy"] == str(out) and res["episodes"] == 1
    assert 0.0 <= res["sla_attainment"] <= 1.0 and res["gpu_hours"] > 0



@needs_ray
@pytest.mark.xdist_group("ray")
def test_unreachable_address_fails_fast(tmp_path, capsys, no_ray_session):
    port = _free_port()                # nothing listens there: the TCP probe says so
    assert _sweep(tmp_path, "--executor", "ray", "--ray-address", f"127.0.0.1:{port}") == 2
    line = _one_line(capsys.readouterr().err)
    assert "--ray-address" in line and f"127.0.0.1:{port}" in line
    with socket.socket() as srv:       # something listens, but no Ray GCS answers
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        addr = f"127.0.0.1:{srv.getsockname()[1]}"
        assert _sweep(tmp_path, "--executor", "ray", "--ray-address", addr) == 2
    line = _one_line(capsys.readouterr().err)
    assert "--ray-address" in line and "no answer from Ray" in line
    assert _sweep(tmp_path, "--executor", "ray", "--ray-address", "nonsense") == 2
    assert "HOST:PORT" in _one_line(capsys.readouterr().err)


@needs_ray
@pytest.mark.xdist_group("ray")
def test_sweep_on_local_ray_is_byte_identical(tmp_path, no_ray_session):
    assert _sweep(tmp_path / "local", "--jobs", "1") == 0
    assert _sweep(tmp_path / "ray", "--executor", "ray", "--jobs", "2") == 0
    assert (tmp_path / "local" / "interval.csv").read_bytes() == \
        (tmp_path / "ray" / "interval.csv").read_bytes()
    info = json.loads((tmp_path / "ray" / "interval.run.json").read_text())
    assert info["executor"] == "ray" and info["cpus"] == 2
    # the pareto study's disaggregated (xPyD, TP per role) points too
    for out, extra in (("local", ["--jobs", "1"]), ("ray", ["--executor", "ray"])):
        assert main(["sweep", "pareto", "--quick", "--max-sim-time-s", WINDOW_S, "--out",
                     str(tmp_path / out), *extra]) == 0
    local = (tmp_path / "local" / "pareto.csv").read_bytes()
    assert b",disagg," in local
    assert local == (tmp_path / "ray" / "pareto.csv").read_bytes()


# -- a two-node cluster on this machine --------------------------------------------------------

class LocalCluster:
    """``ray start --head`` and one ``ray start --address`` worker node, 1 CPU each, each in
    the foreground (``--block``) so that stopping means signalling exactly these two."""

    def __init__(self, tmp: Path) -> None:
        self.ray_bin = str(Path(sys.executable).with_name("ray"))
        from dynosim.executors import LOCAL_NODE_IP
        self.ip = LOCAL_NODE_IP                 # loopback only (see dynosim.executors)
        self.port = _free_port()
        self.address = f"{self.ip}:{self.port}"
        self.procs: list[subprocess.Popen] = []
        self.logs = tmp

    def _start(self, name: str, args: list[str]) -> None:
        # Worker ports apart from a local Ray's default range (10002-19999), which another
        # test process may be using at the same time.
        base = 20000 + 1000 * len(self.procs)
        ports = ["--min-worker-port", str(base), "--max-worker-port", str(base + 999),
                 "--node-manager-port", str(_free_port()), "--object-manager-port",
                 str(_free_port()), "--metrics-export-port", str(_free_port()),
                 "--dashboard-agent-listen-port", str(_free_port()),
                 "--dashboard-agent-grpc-port", str(_free_port()),
                 "--runtime-env-agent-port", str(_free_port())]
        log = open(self.logs / f"{name}.log", "w")
        # Loopback-only test cluster: no token authentication (`ray start`'s default; a
        # driver process picks its auth mode once, when Ray loads).
        self.procs.append(subprocess.Popen(
            [self.ray_bin, "start", *args, "--num-cpus", "1", "--block",
             "--disable-usage-stats", *ports], stdout=log, stderr=subprocess.STDOUT, env=ENV0,
            start_new_session=True))

    def start(self) -> "LocalCluster":
        self._start("head", ["--head", "--node-ip-address", self.ip, "--port",
                             str(self.port), "--include-dashboard", "false"])
        self._wait(1)
        self._start("worker", ["--address", self.address, "--node-ip-address", self.ip])
        self._wait(2)
        return self

    def alive_nodes(self) -> int:
        """Nodes alive in the cluster, asked by a separate driver process (0: no answer)."""
        code = ("import ray, sys; ray.init(address=sys.argv[1], _node_ip_address=sys.argv[2], "
                "logging_level='ERROR', log_to_driver=False); "
                "print(sum(bool(n.get('Alive')) for n in ray.nodes()))")
        try:
            p = subprocess.run([sys.executable, "-c", code, self.address, self.ip],
                               capture_output=True, text=True, timeout=60, env=ENV0)
        except subprocess.TimeoutExpired:
            return 0
        lines = p.stdout.split()
        return int(lines[-1]) if p.returncode == 0 and lines and lines[-1].isdigit() else 0

    def _wait(self, nodes: int, timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self.procs):
                break
            if self.alive_nodes() >= nodes:
                return
            time.sleep(1.0)
        self.stop()
        logs = "; ".join((self.logs / f).read_text()[-400:] for f in ("head.log", "worker.log")
                         if (self.logs / f).exists())
        raise RuntimeError(f"local Ray cluster did not come up with {nodes} nodes: {logs}")

    def stop(self) -> None:
        for p in reversed(self.procs):         # worker first, then head
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()
        self.procs.clear()
        # `ray stop` would remove the "auto" address file; a signalled --block node leaves it.
        current = Path("/tmp/ray/ray_current_cluster")
        if current.is_file() and current.read_text().strip() == self.address:
            current.unlink()


def test_rllib_flags_are_checked(tmp_path, capsys):
    for argv, needle in ((["--num-env-runners", "2"], "needs --framework rllib"),
                         (["--ray-address", "auto"], "needs --framework rllib"),
                         (["--framework", "rllib", "--algo", "a2c"], "supports ppo")):
        algo = [] if "--algo" in argv else ["--algo", "ppo"]
        assert main(["train", *algo, *argv, "--out", str(tmp_path)]) == 2
        assert needle in _one_line(capsys.readouterr().err)


@pytest.mark.ray
@pytest.mark.xdist_group("ray")
def test_rllib_training_shows_progress_per_iteration(tmp_path):
    """s8-fixE: an RLlib run printed nothing until it ended. On a non-terminal stderr (this
    pipe) each training iteration prints one line: iteration, env steps, episode return
    mean, elapsed. The smallest run: 1,000 steps (2 iterations of 4 x 128), rollouts in the
    driver, a local Ray started on demand."""
    if shutil.which("ray", path=str(Path(sys.executable).parent)) is None:
        pytest.skip("the ray extra is not installed (pip install -e '.[ray]')")
    p = _dynosim("train", "--framework", "rllib", "--algo", "ppo", "--num-env-runners", "0",
                 "--timesteps", "1000", "--out", str(tmp_path / "rllib"))
    assert p.returncode == 0, p.stderr[-2000:]
    lines = [x for x in p.stderr.splitlines() if x.startswith("dynosim: train (rllib) ")]
    run = json.loads((tmp_path / "rllib" / "run.json").read_text())
    assert len(lines) == len(run["curve"]) >= 2, p.stderr[-2000:]
    # s8-fixG: the run's status as SB3 runs record it, and the rounding note SB3 prints
    assert run["status"] == "completed"
    assert "dynosim: note: 1,000 timesteps train as 1,024 (RLlib PPO collects whole train " \
        "batches of 512 steps)" in p.stderr, p.stderr[-2000:]
    for i, (line, point) in enumerate(zip(lines, run["curve"]), 1):
        assert f"iteration {i}: {point['steps']:,}/1,000 env steps, episode return mean " \
            in line, line
        assert line.endswith(" s elapsed"), line


def test_rllib_iteration_line_says_when_no_episode_ended():
    from agents.rllib_train import iteration_line
    assert iteration_line(3, 1536, 12000, float("nan"), 42.4) == (
        "iteration 3: 1,536/12,000 env steps, episode return mean n/a (no episode ended "
        "yet), 42 s elapsed")
    assert "episode return mean -12.346, 1,234 s elapsed" in iteration_line(
        9, 4608, 12000, -12.3456, 1234.0)
