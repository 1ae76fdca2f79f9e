"""Where independent simulations run: this machine's process pool, or Ray (the ``ray`` extra).

Every scale-out feature (``dynosim sweep --executor ray``, ``dynosim search``, ``dynosim train
--framework rllib``) goes through :func:`connect`, so they share one behaviour:

* without ``--ray-address`` a local Ray is started on demand (``ray.init``) with ``--jobs``
  CPUs (default: this machine's cores) and stopped at exit;
* ``--ray-address auto`` joins the cluster that ``ray start`` left on this machine,
  ``--ray-address HOST:PORT`` the head node's GCS at that address (``ray start --head
  --port PORT``); an address nobody answers at fails in at most ``CONNECT_TIMEOUT_S``
  with one line, never a hang;
* without the extra, asking for any of it is one line naming the install command (exit 2).

:func:`map_ordered` runs one function over a list of items -- each item a Ray task or a
process-pool job -- shows a progress bar counting finished items, and returns the results
in item order, not completion order, so outputs do not depend on the executor.
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import socket
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any, Callable, Sequence

from sim.errors import InputError

EXECUTORS = ("local", "ray")
INSTALL_HINT = "install the ray extra: pip install -e '.[ray]'"
CONNECT_TIMEOUT_S = 20.0      # bound on reaching a --ray-address (TCP probe, then ray.init)
CMDLINE = "command line"
#: Node IP of a Ray started here. Ray replaces 127.0.0.1/localhost by the host's network
#: address (services.resolve_ip_for_localhost); another loopback address keeps every
#: connection of a local Ray on this machine's loopback interface.
LOCAL_NODE_IP = "127.0.0.2"


def add_args(group, *, executor: bool = True,
             ray_help: str = "one Ray task per point") -> None:
    """``--executor`` (optional) and ``--ray-address`` on an argparse group; ``ray_help``
    says what ``--executor ray`` runs."""
    if executor:
        group.add_argument("--executor", choices=EXECUTORS, default="local",
                           help="local: a process pool on this machine (default); ray: "
                           f"{ray_help} (needs the ray extra)")
    group.add_argument("--ray-address", metavar="auto|HOST:PORT", default=None,
                       help="join a running Ray cluster (default: start a local Ray on "
                       "demand); 'auto' finds the one `ray start` left on this machine")


def require_ray(flag: str = "--executor"):
    """Import Ray, or one line naming the extra (an :class:`InputError`, exit 2)."""
    try:
        import ray
    except ImportError:
        raise InputError(f"Ray is not installed; {INSTALL_HINT}", file=CMDLINE,
                         field=flag) from None
    return ray


def _probe(address: str, timeout_s: float) -> None:
    """Fail fast when nothing listens at HOST:PORT (ray.init would retry for a minute)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"expected auto or HOST:PORT, got {address!r}", file=CMDLINE,
                         field="--ray-address")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        raise InputError(f"no Ray head node reachable at {address} "
                         f"({exc.strerror or type(exc).__name__ or exc}); start one with "
                         f"`ray start --head --port {port}` or check the address",
                         file=CMDLINE, field="--ray-address") from None


#: Asks for a GCS client in a child process: prints the error on one line, exits 1.
_GCS_PROBE = """import sys
from ray._raylet import GcsClient
try:
    GcsClient(address=sys.argv[1])
except Exception as exc:
    print(" ".join(str(exc).split()) or type(exc).__name__)
    sys.exit(1)
"""


def _gcs_probe(address: str, timeout_s: float, box: dict[str, Any]) -> None:
    """Is a Ray GCS answering at ``address``? Ray's client retries inside C++ calls that no
    signal interrupts, and its C++ logging writes warnings straight to the process's stderr
    ("Failed to connect to GCS ...", "Method not found!"), so the probe is a child process,
    killed on time-out, whose stderr is dropped (the error is ours, one line); ``box`` gets
    ``timeout`` or ``error``."""
    import subprocess
    try:
        res = subprocess.run([sys.executable, "-c", _GCS_PROBE, address], text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=timeout_s)
    except subprocess.TimeoutExpired:
        box["timeout"] = True
        return
    if res.returncode != 0:
        lines = (res.stdout.strip() or res.stderr.strip() or "").splitlines()
        box["error"] = RuntimeError(lines[-1] if lines else f"exit {res.returncode}")


@contextlib.contextmanager
def _native_stderr_held():
    """Hold what Ray's C++ core writes to file descriptor 2 (below Python's ``sys.stderr``)
    while joining a cluster; yields a dict whose ``text`` is what was written, once the
    block is over (the caller shows it on success, and on failure its one line replaces
    it). Only around a join: a Ray started here spawns processes that would inherit the
    descriptor."""
    sys.stderr.flush()
    saved = os.dup(2)
    out: dict[str, str] = {"text": ""}
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield out
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            out["text"] = held.read().decode("utf-8", "replace")


def connect(address: str | None = None, *, num_cpus: int | None = None,
            timeout_s: float = CONNECT_TIMEOUT_S, flag: str = "--executor"):
    """Initialise Ray once per process and return the module.

    Args:
        address: None (start a local Ray, or reuse ``RAY_ADDRESS`` if set), ``"auto"``, or
            ``"HOST:PORT"`` of a head node's GCS.
        num_cpus: CPUs of a locally started Ray (None: all cores); ignored when joining.
        timeout_s: bound on reaching ``address``.

    Raises:
        InputError: Ray missing, the address malformed or unreachable (one line each).
    """
    ray = require_ray(flag)
    if ray.is_initialized():
        return ray
    if address not in (None, "auto"):
        _probe(address, min(timeout_s, 5.0))
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False,
                              "include_dashboard": False, "configure_logging": True}
    if address is None and not os.environ.get("RAY_ADDRESS"):
        # Ray nices its workers (15) by default; here they are the work, not background.
        os.environ.setdefault("RAY_worker_niceness", "0")
        kwargs.update(address="local",      # a new local Ray, not one `ray start` left
                      num_cpus=num_cpus or os.cpu_count() or 1,
                      object_store_memory=256 * 1024 ** 2, _node_ip_address=LOCAL_NODE_IP)
    elif address is not None:
        kwargs["address"] = address
        host = address.rpartition(":")[0]
        if host.startswith("127."):       # a cluster on this machine's loopback
            kwargs["_node_ip_address"] = host
    box: dict[str, Any] = {}
    if address not in (None, "auto"):
        _gcs_probe(address, timeout_s, box)
    if not box:
        with (_native_stderr_held() if address is not None else
              contextlib.nullcontext({"text": ""})) as held:
            try:
                ray.init(**kwargs)   # in the main thread: Ray binds its GCS client to it
            except Exception as exc:     # noqa: BLE001 - reported below, one line
                box["error"] = exc
        if "error" not in box and held["text"]:
            sys.stderr.write(held["text"])      # joined: nothing Ray said is hidden
    where = address or "a local Ray"
    if box.get("timeout"):
        raise InputError(f"no answer from Ray at {where} within {timeout_s:g} s",
                         file=CMDLINE, field="--ray-address")
    if "error" in box:
        exc = box["error"]
        msg = " ".join(str(exc).split())[:300] or type(exc).__name__
        if "auth" in msg.lower() and os.environ.get("RAY_AUTH_MODE") != "token":
            msg = ("the cluster uses token authentication (Ray's default for `ray start`): "
                   "set RAY_AUTH_MODE=token here too")
        field = "--ray-address" if address is not None else flag
        raise InputError(f"cannot connect to {where}: {msg}", file=CMDLINE, field=field)
    return ray


def cluster_cpus(ray) -> int:
    """CPUs the connected Ray cluster offers (all nodes)."""
    return int(ray.cluster_resources().get("CPU", 1))


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="point", file=sys.stderr, dynamic_ncols=True,
                leave=False)


def map_ordered(fn: Callable[[Any], Any], items: Sequence[Any], *, executor: str = "local",
                jobs: int = 1, ray_address: str | None = None, desc: str = "points",
                progress: bool | None = None) -> list[Any]:
    """``[fn(x) for x in items]``, run in parallel; results in item order.

    Args:
        fn: a picklable module-level function (runs in another process or node).
        executor: ``local`` (a process pool of ``jobs`` workers; in-process when
            ``jobs == 1``) or ``ray`` (one Ray task of 1 CPU per item, on a local Ray with
            ``jobs`` CPUs or on the cluster at ``ray_address``).
        progress: show a tqdm bar of finished items on stderr (default: when it is a tty).

    Raises:
        InputError: unknown executor, or Ray unavailable/unreachable. An exception raised
            by ``fn`` propagates (Ray's wrapper is unwrapped to the original exception).
    """
    if executor not in EXECUTORS:
        raise InputError(f"unknown executor {executor!r}; expected one of "
                         f"{', '.join(EXECUTORS)}", file=CMDLINE, field="--executor")
    if progress is None:
        progress = sys.stderr.isatty()
    bar = _bar(len(items), desc, progress and len(items) > 0)
    out: list[Any] = [None] * len(items)
    try:
        if executor == "ray":
            ray = connect(ray_address, num_cpus=jobs)
            task = ray.remote(num_cpus=1, max_retries=0)(fn)
            index = {task.remote(x): i for i, x in enumerate(items)}
            pending = list(index)
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        out[index[ref]] = ray.get(ref)
                    except ray.exceptions.RayTaskError as exc:
                        cause = getattr(exc, "cause", None)
                        raise (cause if isinstance(cause, BaseException) else exc) from None
                    if bar is not None:
                        bar.update(1)
        elif jobs <= 1 or len(items) <= 1:
            for i, x in enumerate(items):
                out[i] = fn(x)
                if bar is not None:
                    bar.update(1)
        else:
            with ProcessPoolExecutor(max_workers=min(jobs, len(items))) as ex:
                futs = {ex.submit(fn, x): i for i, x in enumerate(items)}
                for f in as_completed(futs):
                    out[futs[f]] = f.result()
                    if bar is not None:
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return out


def check_args(args: argparse.Namespace) -> None:
    """``--ray-address`` needs ``--executor ray`` (it would be silently ignored otherwise)."""
    if getattr(args, "ray_address", None) is not None and getattr(args, "executor",
                                                                  "ray") != "ray":
        raise InputError("needs --executor ray", file=CMDLINE, field="--ray-address")
