"""``dynosim search`` (dynosim/studies/search.py): space/objective validation, a small local search
whose best candidate replays to the same numbers through ``dynosim simulate``, failed trials
recorded without aborting, an infeasible constraint, determinism, and the same on Ray."""
from __future__ import annotations

import csv
import json
import math
import shlex
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynosim.studies import search
from dynosim.cli import main
from sim.errors import InputError

REPO = Path(__file__).resolve().parents[1]
TRACE_LINES = 400          # the conversation trace's first ~2 minutes
RUNGS = "30,60"


@pytest.fixture(scope="module")
def small_trace(tmp_path_factory) -> str:
    src = REPO / "sim" / "data" / "conversation_trace.jsonl"
    lines = src.read_text().splitlines()[:TRACE_LINES]
    path = tmp_path_factory.mktemp("trace") / "head.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _space(tmp_path: Path, body: str, name: str = "space.yaml") -> str:
    p = tmp_path / name
    p.write_text(body)
    return str(p)


SPACE = """\
model: Qwen/Qwen3-32B
gpu: h200_sxm
backend: vllm
max_gpus: 8
space:
  tp: [1, 2]
  cluster.num_workers: {low: 1, high: 4}
  router.mode: [round_robin, kv]
  router.overlap_score_credit: {low: 0.0, high: 2.0}
  engine.block_size: [32, 64]
  planner: [none, load]
  planner.interval_s: {low: 5, high: 60, log: true}
"""
OBJ = "minimise totals.gpu_hours subject to latency_ms.ttft.p90 <= 100000"


def _search(trace, space, out, *extra, objective=OBJ):
    return main(["search", "--trace", trace, "--space", space, "--objective", objective,
                 "--out", str(out), "--rungs", RUNGS, "--quiet", *extra])


def _one_line(err: str) -> str:
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1, err
    return lines[0]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# -- bad input -----------------------------------------------------------------------------------

@pytest.mark.parametrize("body,needle,line", [
    ("space:\n  tp: [1]\n  cluster.workers: {low: 1, high: 2}\n", "unknown space key", 3),
    ("space:\n  cluster.num_workers: {low: 4, high: 2}\n", "empty range", 2),
    ("space:\n  router.mode: []\n", "empty list", 2),
    ("space:\n  tp: [3]\n", "no shipped table for TP 3", 2),
    ("space:\n  planner.interval_s: {low: 0, high: 5, log: true}\n", "log range", 2),
    ("space:\n  router.mode: {low: 1}\n", "{low, high", 2),
    ("spaces:\n  tp: [1]\n", "unknown key", 1),
    ("space:\n  planner: [none, sometimes]\n", "planner takes choices", 2),
])
def test_bad_space_is_one_line_with_file_line_key(tmp_path, capsys, body, needle, line):
    path = _space(tmp_path, body)
    with pytest.raises(InputError) as ei:
        search.load_space(path)
    assert needle in str(ei.value) and f"{path}:{line}" in str(ei.value)
    assert _search("bundled:mooncake_conversation", path, tmp_path / "o", "--trials", "1") == 2
    assert needle in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("objective,needle", [
    ("minimise totals.gpu_hour", "unknown report field 'totals.gpu_hour'"),
    ("minimise totals.gpu_hours subject to latency_ms.ttft.p97 <= 1", "unknown report field"),
    ("shrink totals.gpu_hours", "expected 'minimise FIELD"),
    ("minimise totals.gpu_hours subject to latency_ms.ttft.p90 ~ 3", "bad constraint"),
])
def test_bad_objective_is_one_line(tmp_path, capsys, small_trace, objective, needle):
    space = _space(tmp_path, SPACE)
    assert _search(small_trace, space, tmp_path / "o", "--trials", "1",
                   objective=objective) == 2
    line = _one_line(capsys.readouterr().err)
    assert needle in line and "--objective" in line


def test_a_non_empty_out_directory_is_said(tmp_path, capsys):
    from dynosim.studies.sweeps import _check_out
    _check_out(str(tmp_path / "o"))
    assert "not empty" not in capsys.readouterr().err
    (tmp_path / "o" / "trials.csv").write_text("x\n")
    _check_out(str(tmp_path / "o"))
    assert "--out " + str(tmp_path / "o") + " is not empty" in capsys.readouterr().err


def test_bad_compare_file_is_refused_before_the_search(tmp_path, capsys, small_trace):
    """--compare must be a `sweep pareto` CSV: a JSON or a CSV without its columns is a
    one-line error before any candidate runs (it used to leave the overlay out, silently)."""
    space = _space(tmp_path, SPACE)
    (tmp_path / "x.json").write_text('{"a": 1}\n')
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    (tmp_path / "empty.csv").write_text("kind,gpu_hours,p90_ttft_ms\nother,1,2\n")
    for name, needle in (("x.json", "no kind, gpu_hours, p90_ttft_ms columns"),
                         ("x.csv", "no kind, gpu_hours, p90_ttft_ms columns"),
                         ("empty.csv", "no rows of kind static/load/throughput")):
        assert _search(small_trace, space, tmp_path / name.replace(".", "_"), "--trials", "1",
                       "--compare", str(tmp_path / name)) == 2
        line = _one_line(capsys.readouterr().err)
        assert needle in line and "'--compare'" in line
        assert not (tmp_path / name.replace(".", "_") / "trials.csv").exists()
    assert len(search.read_compare(str(REPO / "docs" / "sweeps" / "pareto.csv"))) > 0


def test_rungs_and_address_flags(tmp_path, capsys, small_trace):
    space = _space(tmp_path, SPACE)
    assert _search(small_trace, space, tmp_path / "o", "--trials", "1", "--rungs", "60,30") == 2
    assert "--rungs" in _one_line(capsys.readouterr().err)
    assert _search(small_trace, space, tmp_path / "o", "--trials", "1", "--ray-address",
                   "auto") == 2
    assert "needs --executor ray" in _one_line(capsys.readouterr().err)


# -- a search ----------------------------------------------------------------------------------

def test_local_search_best_yaml_replays_to_the_same_numbers(tmp_path, capsys, small_trace):
    space = _space(tmp_path, SPACE)
    out = tmp_path / "out"
    assert _search(small_trace, space, out, "--trials", "10", "--seed", "3") == 0
    rows = _rows(out / "trials.csv")
    assert len(rows) == 10 and {r["status"] for r in rows} <= set(search.STATUSES)
    assert any(r["status"] == "complete" for r in rows)
    front = _rows(out / "front.csv")
    assert front and all(any(r["trial"] == f["trial"] and r["status"] == "complete"
                             for r in rows) for f in front)
    assert (out / "front.png").stat().st_size > 10_000
    info = json.loads((out / "search.json").read_text())
    assert info["trials"] == 10 and info["run_info"]["simulated_requests"] > 0
    best = info["best"]
    assert best["feasible"]
    # The best candidate's YAML + flags replay, in one piece, to the numbers the search got
    # from its chunked (rung by rung) replay: survivors are exact.
    head = (out / "best.yaml").read_text().splitlines()
    cmd = next(x for x in head if x.startswith("# run it: ")).removeprefix("# run it: ")
    argv = shlex.split(cmd)[1:]                      # drop "dynosim"
    argv[argv.index("best.yaml")] = str(out / "best.yaml")
    # the console's "run it:" names the file as given from here (the header: its directory)
    said = next(x for x in capsys.readouterr().out.splitlines() if "run it: " in x)
    assert shlex.split(said.split("run it: ", 1)[1])[1:] == argv
    exe = shlex.split(said.split("run it: ", 1)[1])[0]      # this environment's own script
    assert Path(exe).name == "dynosim" and Path(exe).is_file()
    assert main([*argv, "--json", "--quiet"]) == 0
    summary = json.loads(capsys.readouterr().out)
    fields = search.report_fields(summary)
    for f, v in best["values"].items():
        assert fields[f] == v, f


def test_progress_lines_and_cpu_without_a_terminal(tmp_path, capsys, small_trace):
    """A search logging to a file (no terminal) still shows progress, one line per 5 %
    of the trials; search.json records the CPU of the replays and per trial."""
    space = _space(tmp_path, SPACE)
    assert main(["search", "--trace", small_trace, "--space", space, "--objective", OBJ,
                 "--out", str(tmp_path / "o"), "--trials", "3"]) == 0
    err = capsys.readouterr().err
    assert [x for x in err.splitlines() if x.startswith("search: ")] == [
        f"search: {n}/3 trials, 0 failed" + x.split("failed", 1)[1]
        for n, x in zip((1, 2, 3), [x for x in err.splitlines() if x.startswith("search: ")])]
    run = json.loads((tmp_path / "o" / "search.json").read_text())["run_info"]
    assert 0 < run["trials_cpu_s"] <= run["process_cpu_s"]
    assert run["cpu_s_per_trial"] == pytest.approx(run["process_cpu_s"] / 3, abs=0.01)


def test_local_search_is_deterministic(tmp_path, small_trace):
    space = _space(tmp_path, SPACE)
    for name in ("a", "b"):
        assert _search(small_trace, space, tmp_path / name, "--trials", "6") == 0
    assert (tmp_path / "a" / "trials.csv").read_bytes() == \
        (tmp_path / "b" / "trials.csv").read_bytes()


FAILING = SPACE + "  engine.max_num_seqs: [0, 64]\n"      # 0 is refused by the config


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_raising_trial_is_recorded_and_search_goes_on(tmp_path, small_trace, jobs):
    out = tmp_path / "out"
    assert _search(small_trace, _space(tmp_path, FAILING), out, "--trials", "8",
                   "--jobs", jobs, objective="minimise totals.gpu_hours") == 0
    rows = _rows(out / "trials.csv")
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(rows) == 8 and failed and len(failed) < 8
    assert all(r["engine.max_num_seqs"] == "0" and "max_num_seqs" in r["error"]
               for r in failed)


def test_infeasible_constraint_says_so_and_shows_the_closest(tmp_path, capsys, small_trace):
    out = tmp_path / "out"
    assert _search(small_trace, _space(tmp_path, SPACE), out, "--trials", "4", "--check-s", "10",
                   objective="minimise totals.gpu_hours subject to latency_ms.ttft.p90 <= "
                   "0.001") == 2
    line = _one_line(capsys.readouterr().err)
    assert "no candidate meets latency_ms.ttft.p90 <= 0.001" in line and "closest: trial" in line
    assert (out / "best.yaml").read_text().startswith("# dynosim search: closest")
    # The bound rule stops every candidate early; the closest few are replayed in full, so
    # the closest reported is a full replay.
    rows = _rows(out / "trials.csv")
    closest = int(line.split("closest: trial ")[1].split()[0])
    row = next(r for r in rows if int(r["trial"]) == closest)
    assert row["status"] == "complete" and row["stopped_because"].startswith("replayed in full")


# -- the bound rule: exact early stopping ----------------------------------------------------

def test_bound_rule_keeps_the_full_replay_front_and_best(tmp_path, small_trace):
    """Random sampling draws the same candidates whatever the early stopping, so the search
    with the bound rule must give the front and best of replaying every candidate in full,
    while stopping some of them."""
    space = _space(tmp_path, SPACE)
    objective = "minimise totals.gpu_hours subject to latency_ms.ttft.p90 <= 100000"
    runs = {}
    for early in ("none", "bound"):
        out = tmp_path / early
        assert _search(small_trace, space, out, "--trials", "24", "--sampler", "random",
                       "--early-stop", early, "--check-s", "15", objective=objective) == 0
        runs[early] = (_rows(out / "trials.csv"), (out / "front.csv").read_bytes(),
                       json.loads((out / "search.json").read_text())["best"])
    (full, front_full, best_full), (cut, front_cut, best_cut) = runs["none"], runs["bound"]
    assert [r["tp"] for r in full] == [r["tp"] for r in cut]          # same candidates
    assert front_cut == front_full and best_cut == best_full
    stopped = [r for r in cut if r["status"] == "pruned"]
    assert stopped and all(r["stopped_because"].startswith(
        ("infeasible", "dominated", "same candidate as trial")) for r in stopped)
    done = {r["trial"]: r for r in full}
    for r in stopped:          # a stopped candidate's recorded bounds hold for its full replay
        for f in ("totals.gpu_hours", "latency_ms.ttft.p90"):
            assert float(r[f]) <= float(done[r["trial"]][f])
    assert sum(float(r["sim_s"]) for r in cut) < sum(float(r["sim_s"]) for r in full)
    # A candidate drawn again is not replayed: it has the numbers of its first draw.
    repeats = [r for r in full if r["stopped_because"].startswith("same candidate as trial")]
    assert repeats
    for r in repeats:
        first = done[r["stopped_because"].split()[-1]]
        assert {k: v for k, v in r.items() if k not in ("trial", "stopped_because")} == \
            {k: v for k, v in first.items() if k not in ("trial", "stopped_because")}


def test_parallel_local_search_is_exact_and_deterministic(tmp_path, small_trace):
    """``--jobs 2`` locally: two processes replay while the study asks ahead
    (``search_pool``). With random sampling it draws the candidates of ``--jobs 1`` and
    keeps the front and best of replaying them all in full; with TPE (constant liar) the
    same seed gives the same bytes, whichever replay finishes first."""
    space = _space(tmp_path, SPACE)
    objective = "minimise totals.gpu_hours subject to latency_ms.ttft.p90 <= 100000"
    common = ("--trials", "16", "--check-s", "15")
    assert _search(small_trace, space, tmp_path / "full", *common, "--sampler", "random",
                   "--early-stop", "none", objective=objective) == 0
    assert _search(small_trace, space, tmp_path / "pool", *common, "--sampler", "random",
                   "--jobs", "2", objective=objective) == 0
    full, pool = _rows(tmp_path / "full" / "trials.csv"), _rows(tmp_path / "pool" / "trials.csv")
    keys = [k for k in full[0] if k in search.SPACE_KEYS]
    assert [[r[k] for k in keys] for r in pool] == [[r[k] for k in keys] for r in full]
    assert (tmp_path / "pool" / "front.csv").read_bytes() == \
        (tmp_path / "full" / "front.csv").read_bytes()
    info = {d: json.loads((tmp_path / d / "search.json").read_text()) for d in ("full", "pool")}
    assert info["pool"]["best"] == info["full"]["best"]
    assert any(r["status"] == "pruned" for r in pool)
    run = info["pool"]["run_info"]
    assert run["cpus"] == 2 and run["workers_cpu_s"] >= run["trials_cpu_s"] > 0
    for name in ("a", "b"):
        assert _search(small_trace, space, tmp_path / name, *common, "--jobs", "2",
                       objective=objective) == 0
    assert (tmp_path / "a" / "trials.csv").read_bytes() == \
        (tmp_path / "b" / "trials.csv").read_bytes()


def test_parallel_local_asha_is_refused(tmp_path, capsys, small_trace):
    assert _search(small_trace, _space(tmp_path, SPACE), tmp_path / "o", "--trials", "2",
                   "--jobs", "2", "--early-stop", "asha") == 2
    assert "--jobs" in _one_line(capsys.readouterr().err)


@pytest.mark.parametrize("params", [
    {"tp": 1, "cluster.num_workers": 1, "router.mode": "round_robin", "planner": "none"},
    {"tp": 2, "cluster.num_workers": 3, "router.mode": "kv", "planner": "none",
     "engine.block_size": 32},
    {"tp": 1, "cluster.num_workers": 2, "router.mode": "kv", "planner": "load",
     "planner.interval_s": 10.0},
])
def test_lower_bounds_hold_at_every_check(tmp_path, small_trace, params):
    space = search.load_space(_space(tmp_path, SPACE))
    fields = ["totals.gpu_hours", "totals.provisioned_worker_seconds", "latency_ms.ttft.p90",
              "latency_ms.ttft.median", "latency_ms.ttft.max", "latency_ms.e2e_latency.p99"]
    obj = search.Objective(fields[0], False, [(f, "<=", 1e12) for f in fields[1:]])
    setup = search.Setup(small_trace, space, obj, (30.0,), early_stop="bound", check_s=5.0)
    seen: list[dict] = []
    res = search.run_candidate(setup, params, lambda step, v, s: seen.append(v) or None)
    assert res["status"] == "complete" and len(seen) > 5
    assert any(v["latency_ms.ttft.p90"] > 0 for v in seen)           # the bound says something
    for v in seen:
        for f in fields:
            assert v[f] <= res["values"][f], (f, v[f], res["values"][f])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 1e5), min_size=1, max_size=60), st.data())
def test_quantile_lower_bound_is_sound(final, data):
    """Whatever part of the final sample is seen now and however many requests are still
    to come or get rejected, the bound is at most the final nearest-rank quantile."""
    import numpy as np
    from sim.metrics import describe
    n_total = len(final) + data.draw(st.integers(0, 40), label="rejected later")
    seen = data.draw(st.lists(st.sampled_from(range(len(final))), unique=True), label="seen")
    desc = np.sort(np.array([final[i] for i in seen]))[::-1]
    stats = describe(np.array(final))
    for name, q in (("median", 0.5), ("p75", 0.75), ("p90", 0.9), ("p99", 0.99), ("max", None)):
        assert search._quantile_lb(desc, q, n_total) <= stats[name]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 1e5), min_size=1, max_size=60), st.data())
def test_quantile_lower_bound_with_requests_in_flight_is_sound(final, data):
    """Requests still in flight enter the bound at a lower bound on their final value
    (e.g. TTFT >= now - arrival): whatever those values and whichever other requests are
    completed now, to come, or rejected later, the bound is at most the final quantile."""
    import numpy as np
    from sim.metrics import describe
    n_total = len(final) + data.draw(st.integers(0, 40), label="rejected later")
    order = data.draw(st.permutations(range(len(final))), label="order")
    n_done = data.draw(st.integers(0, len(final)), label="completed now")
    n_flight = data.draw(st.integers(0, len(final) - n_done), label="in flight")
    done = [final[i] for i in order[:n_done]]
    flight = [final[i] * data.draw(st.floats(0, 1), label="lower by") for i in
              order[n_done:n_done + n_flight]]
    values = np.array(done + flight)                     # in any order
    stats = describe(np.array(final))
    for name, q in (("median", 0.5), ("p75", 0.75), ("p90", 0.9), ("p99", 0.99), ("max", None)):
        assert search._quantile_lb(values, q, n_total) <= stats[name]


class _KeepSim:
    """Keeps the simulations ``search.run_candidate`` builds (to inspect at a check)."""

    def __init__(self, monkeypatch):
        from sim import config as sim_config
        self.sims: list = []
        build = sim_config.build_simulation

        def keep(*a, **kw):
            self.sims.append(build(*a, **kw))
            return self.sims[-1]
        monkeypatch.setattr(sim_config, "build_simulation", keep)


#: The objective and the never-binding constraints of :func:`_bound_setup`.
BOUND_FIELDS = ["totals.gpu_hours", "latency_ms.ttft.p90", "latency_ms.ttft.max",
                "latency_ms.e2e_latency.p90"]


def _bound_setup(tmp, trace, space_text: str):
    """A bound-rule search setup whose constraints never bind (every bound is checked, none
    stops a replay), checking every 4 simulated seconds."""
    space = search.load_space(_space(tmp, space_text))
    fields = BOUND_FIELDS
    obj = search.Objective(fields[0], False, [(f, "<=", 1e12) for f in fields[1:]])
    return search.Setup(trace, space, obj, (30.0,), early_stop="bound", check_s=4.0)


@settings(max_examples=8, deadline=None)
@given(tp=st.sampled_from([1, 2]), workers=st.integers(1, 3),
       mode=st.sampled_from(["round_robin", "kv"]), block=st.sampled_from([16, 64]),
       budget=st.sampled_from([512, 2048, 8192]), kv_tokens=st.sampled_from([0, 12_000]),
       planner=st.sampled_from(["none", "load"]))
def test_requests_counted_in_flight_complete_no_sooner_than_their_bound(
        tmp_path_factory, small_trace, tp, workers, mode, block, budget, kv_tokens, planner):
    """Every request :func:`pending_lower_bounds` counts at a check ends completed, with a
    TTFT and E2E no lower than its bounds then, and every bound holds at every check,
    including on a KV pool small enough (``kv_tokens``) that the longest prompts are
    rejected when they reach the head of the queue: those must not be counted."""
    setup = _bound_setup(tmp_path_factory.mktemp("inflight"), small_trace, SPACE)
    fields = BOUND_FIELDS
    params = {"tp": tp, "cluster.num_workers": workers, "router.mode": mode,
              "engine.block_size": block, "engine.max_num_batched_tokens": budget,
              "planner": planner, **({"planner.interval_s": 10.0} if planner != "none" else {})}
    if kv_tokens:
        params["engine.num_gpu_blocks"] = kv_tokens // block
    counted: list[tuple] = []
    seen: list[dict] = []
    with pytest.MonkeyPatch.context() as mp:
        kept = _KeepSim(mp)

        def report(step, values, score):
            counted.append(search.pending_lower_bounds(kept.sims[-1]))
            seen.append(values)
        res = search.run_candidate(setup, params, report)
    assert res["status"] == "complete"
    for v in seen:
        for f in fields:
            assert v[f] <= res["values"][f], (f, v[f], res["values"][f])
    from sim.metrics import STATUS_COMPLETED
    cols = kept.sims[-1].metrics.columns()
    pos = {int(i): k for k, i in enumerate(cols["request_index"])}
    for idx, ttft_lb, e2e_lb in counted:
        for i, t_lb, e_lb in zip(idx, ttft_lb, e2e_lb):
            k = pos[int(i)]
            assert cols["status"][k] == STATUS_COMPLETED, int(i)
            arrival = cols["arrival_time_ms"][k]
            assert cols["first_token_ms"][k] - arrival >= t_lb
            assert cols["last_token_ms"][k] - arrival >= e_lb
    if kv_tokens:
        assert (cols["status"] != STATUS_COMPLETED).any()     # rejections are exercised


def test_requests_in_flight_sharpen_the_bound_of_an_overloaded_deployment(monkeypatch,
                                                                          tmp_path,
                                                                          small_trace):
    """One TP1 worker is overloaded by the trace's first minutes: counting the requests
    still waiting proves the TTFT limit broken at a check where the completed requests
    alone do not (and the full replay confirms it is broken)."""
    import numpy as np
    from sim.metrics import STATUS_COMPLETED
    space = search.load_space(_space(tmp_path, SPACE))
    limit = 2000.0
    obj = search.Objective("totals.gpu_hours", False, [("latency_ms.ttft.p90", "<=", limit)])
    setup = search.Setup(small_trace, space, obj, (30.0,), early_stop="bound", check_s=5.0)
    params = {"tp": 1, "cluster.num_workers": 1, "router.mode": "round_robin",
              "planner": "none"}
    kept = _KeepSim(monkeypatch)
    completed_only: list[float] = []

    def report(step, values, score):
        c = kept.sims[-1].metrics.columns()
        sel = (c["status"] == STATUS_COMPLETED) & (c["output_length"] > 0)
        ttft = np.sort(c["first_token_ms"][sel] - c["arrival_time_ms"][sel])[::-1]
        completed_only.append(search._quantile_lb(ttft, 0.9, TRACE_LINES))
        return search.bound_stop(obj, values, [])
    res = search.run_candidate(setup, params, report)
    assert res["status"] == "pruned" and res["reason"].startswith("infeasible")
    assert completed_only[-1] <= limit < res["values"]["latency_ms.ttft.p90"]
    assert search.run_candidate(setup, params)["values"]["latency_ms.ttft.p90"] > limit


def test_shared_trace_replays_like_a_fresh_one(tmp_path, small_trace):
    """Candidates in one process share the parsed trace: a candidate replayed after others
    gets the numbers of a replay from a freshly parsed trace."""
    from sim.config import build_planner, build_simulation
    space = search.load_space(_space(tmp_path, SPACE))
    setup = search.Setup(small_trace, space, search.parse_objective(OBJ, [
        "totals.gpu_hours", "latency_ms.ttft.p90"]), (30.0,), early_stop="none")
    a = {"tp": 1, "cluster.num_workers": 2, "router.mode": "kv", "planner": "load",
         "planner.interval_s": 10.0, "engine.block_size": 32}
    b = {"tp": 2, "cluster.num_workers": 1, "router.mode": "round_robin", "planner": "none"}
    first = search.run_candidate(setup, a)
    search.run_candidate(setup, b)
    again = search.run_candidate(setup, a)
    cfg, _, _ = search.candidate_config(setup, a)
    sim = build_simulation(cfg)                       # parses the trace anew
    build_planner(cfg).attach(sim)
    fresh = search.report_fields(sim.run().summary)
    for f in ("totals.gpu_hours", "latency_ms.ttft.p90", "latency_ms.e2e_latency.p99",
              "totals.completed_requests", "latency_ms.tpot.p90"):
        assert first["values"][f] == again["values"][f] == fresh[f], f


def test_bound_stop_reasons():
    o = search.Objective("totals.gpu_hours", False, [("latency_ms.ttft.p90", "<=", 1500.0)])
    lb = {"totals.gpu_hours": 4.0, "latency_ms.ttft.p90": 1600.0}
    assert search.bound_stop(o, lb, []).startswith("infeasible: latency_ms.ttft.p90")
    lb["latency_ms.ttft.p90"] = 900.0
    assert search.bound_stop(o, lb, []) is None
    assert search.bound_stop(o, lb, [(3.9, 900.0)]).startswith("dominated")
    assert search.bound_stop(o, lb, [(4.0, 800.0)]) is None     # could still tie on GPU-h
    assert search.bound_stop(o, lb, [(3.9, 901.0)]) is None
    o_max = search.Objective("totals.output_throughput_tok_s", True, [])
    assert search.bound_stop(o_max, {"totals.output_throughput_tok_s": 5.0}, [(1, 1)]) is None


def test_kv_router_weights_only_for_the_kv_router(tmp_path):
    import optuna
    space = search.load_space(_space(tmp_path, SPACE))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    modes = set()
    for _ in range(40):
        p = space.suggest(study.ask())
        modes.add(p["router.mode"])
        assert ("router.overlap_score_credit" in p) == (p["router.mode"] == "kv")
    assert modes == {"kv", "round_robin"}


# -- invariants ------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20)), min_size=1, max_size=30))
def test_pareto_mask_is_the_non_dominated_set(points):
    xs, ys = [float(p[0]) for p in points], [float(p[1]) for p in points]
    mask = search.pareto_mask(xs, ys)

    def dominates(a, b):
        return a[0] <= b[0] and a[1] <= b[1] and a != b
    for i, p in enumerate(points):
        dominated = any(dominates(q, p) for q in points)
        assert mask[i] == (not dominated)


@given(st.floats(0, 1e4), st.floats(1, 1e4))
def test_feasible_always_beats_infeasible(obj, ttft):
    o = search.Objective("totals.gpu_hours", False, [("latency_ms.ttft.p90", "<=", 1500.0)])
    s_ok, v_ok = o.score({"totals.gpu_hours": obj, "latency_ms.ttft.p90": min(ttft, 1500.0)})
    s_bad, v_bad = o.score({"totals.gpu_hours": 0.0, "latency_ms.ttft.p90": 1500.0 + ttft})
    assert v_ok == 0 and v_bad > 0 and s_ok < s_bad
    assert math.isfinite(s_bad)


# -- on Ray ------------------------------------------------------------------------------------

@pytest.mark.ray
@pytest.mark.xdist_group("ray")
def test_ray_search_records_failures_and_finds_a_front(tmp_path, small_trace):
    pytest.importorskip("ray", reason="the ray extra is not installed")
    import ray
    ray.shutdown()
    out = tmp_path / "out"
    try:
        rc = _search(small_trace, _space(tmp_path, FAILING), out, "--trials", "8",
                     "--executor", "ray", "--jobs", "2", objective="minimise totals.gpu_hours")
    finally:
        ray.shutdown()
    assert rc == 0
    rows = _rows(out / "trials.csv")
    assert len(rows) == 8 and any(r["status"] == "failed" for r in rows)
    assert all("max_num_seqs" in r["error"] for r in rows if r["status"] == "failed")
    assert _rows(out / "front.csv")
    info = json.loads((out / "search.json").read_text())
    assert info["run_info"]["executor"] == "ray" and info["run_info"]["cpus"] == 2


@pytest.mark.ray
@pytest.mark.xdist_group("ray")
def test_ray_bound_rule_keeps_the_full_replay_front(tmp_path, small_trace):
    """On Ray the cross-trial half of the bound rule is Tune's scheduler: with random
    sampling its front is the one of replaying every candidate in full."""
    pytest.importorskip("ray", reason="the ray extra is not installed")
    import ray
    space = _space(tmp_path, SPACE)
    objective = "minimise totals.gpu_hours subject to latency_ms.ttft.p90 <= 100000"
    common = ("--trials", "16", "--sampler", "random", "--check-s", "15")
    assert _search(small_trace, space, tmp_path / "full", *common, "--early-stop", "none",
                   objective=objective) == 0
    ray.shutdown()
    try:
        assert _search(small_trace, space, tmp_path / "ray", *common, "--executor", "ray",
                       "--jobs", "2", objective=objective) == 0
    finally:
        ray.shutdown()

    def points(d):
        return sorted((r["totals.gpu_hours"], r["latency_ms.ttft.p90"])
                      for r in _rows(tmp_path / d / "front.csv"))
    assert points("ray") == points("full")
    rows = _rows(tmp_path / "ray" / "trials.csv")
    assert any(r["status"] == "pruned" for r in rows)
    assert all(r["stopped_because"].startswith(("infeasible", "dominated"))
               for r in rows if r["status"] == "pruned")


# -- TTFT floors of requests still to arrive ----------------------------------------------------

def _shipped_tables():
    from sim.gpu_timing import list_tables, load_gpu_timing
    return [load_gpu_timing(r["model"], r["gpu"], r["backend"], int(r["tp"]))
            for r in list_tables()]


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_prefill_floor_is_below_any_passes_that_prefill_the_tokens(data):
    """Over every shipped GPU table: however a request's ``U`` uncached prompt tokens are cut
    into chunks (each at most the batch budget) and whatever else shares each pass (more new
    tokens, cached context, sequences), the passes' prefill times add up to at least the
    floor. The tables are not monotone in new or cached tokens (a few per cent at small
    sizes), so the floor must not assume it."""
    tables = _shipped_tables()
    timing = data.draw(st.sampled_from(tables), label="table")
    budget = data.draw(st.sampled_from([256, 2048, 8192, 16384]), label="budget")
    max_seqs = data.draw(st.sampled_from([1, 64, 256]), label="max_num_seqs")
    max_cached = data.draw(st.sampled_from([0, 4096, 200_000]), label="max cached")
    floor = search.prefill_floor(timing, budget, max_seqs, max_cached)
    assert floor is not None
    chunks = data.draw(st.lists(st.integers(1, budget), min_size=1, max_size=6), label="chunks")
    total = 0.0
    for c in chunks:
        t = data.draw(st.integers(c, budget + max_seqs), label="new tokens in the pass")
        p = data.draw(st.integers(0, max_cached), label="cached tokens in the pass")
        n = data.draw(st.integers(1, max_seqs), label="sequences in the pass")
        total += timing.prefill_ms(t, p, n)
    u = data.draw(st.integers(1, sum(chunks)), label="uncached tokens")
    assert float(floor([u])[0]) <= total


def test_prefill_floor_grows_with_the_tokens_and_says_something():
    import numpy as np
    for timing in _shipped_tables():
        f = search.prefill_floor(timing, 8192, 256, 10**6)(np.arange(1, 70_000, 97))
        assert (np.diff(f) >= -1e-9).all() and f[-1] > 1000.0, timing.describe()


def test_uncached_tokens_match_the_block_keys(small_trace):
    """The trie's shared prefix agrees with the engine's own block keys: a request's leading
    blocks whose keys another request of the trace has."""
    import collections

    import numpy as np
    from sim.config import build_workload
    from sim.kv_cache import block_keys
    from dynosim.options import config_from_args, simulate_parser
    cfg = config_from_args(simulate_parser().parse_args(["--trace", small_trace, "--quiet"]))
    wl = build_workload(cfg)
    reqs = sorted(wl._firsts, key=lambda r: r.index)
    for bs in (16, 64):
        keys = [block_keys(r.hash_ids, r.trace_block_size, bs, r.input_length // bs)
                for r in reqs]
        count = collections.Counter(k for ks in keys for k in ks)
        want = []
        for r, ks in zip(reqs, keys):
            shared = sum(1 for k in ks if count[k] > 1) * bs
            want.append(r.input_length - min(shared, (r.input_length - 1) // bs * bs))
        got = search.uncached_prompt_tokens(wl, bs)
        assert (got == np.array(want)).all() and (got < np.array(
            [r.input_length for r in reqs])).any()


@settings(max_examples=8, deadline=None)
@given(tp=st.sampled_from([1, 2, 4]), workers=st.integers(1, 3),
       mode=st.sampled_from(["round_robin", "kv"]), block=st.sampled_from([16, 64]),
       budget=st.sampled_from([512, 2048, 8192]), kv_tokens=st.sampled_from([0, 12_000]))
def test_requests_still_to_arrive_complete_no_sooner_than_their_floor(
        tmp_path_factory, small_trace, tp, workers, mode, block, budget, kv_tokens):
    """Every request :func:`future_ttft_floors` counts ends completed with a TTFT no lower
    than its floor (real replays, static deployments; a small KV pool makes the longest
    prompts rejected: those must not be counted), and the bounds hold at every check."""
    setup = _bound_setup(tmp_path_factory.mktemp("future"), small_trace,
                         SPACE.replace("tp: [1, 2]", "tp: [1, 2, 4]"))
    fields = BOUND_FIELDS
    params = {"tp": tp, "cluster.num_workers": workers, "router.mode": mode,
              "engine.block_size": block, "engine.max_num_batched_tokens": budget,
              "planner": "none"}
    if kv_tokens:
        params["engine.num_gpu_blocks"] = kv_tokens // block
    seen: list[dict] = []
    with pytest.MonkeyPatch.context() as mp:
        kept = _KeepSim(mp)
        res = search.run_candidate(setup, params, lambda step, v, s: seen.append(v) or None)
        sim = kept.sims[-1]
    assert res["status"] == "complete"
    for v in seen:
        for f in fields:
            assert v[f] <= res["values"][f], (f, v[f], res["values"][f])
    cfg, _, _ = search.candidate_config(setup, params)
    arrival, floors, index = search.future_ttft_floors(sim, search._workload(cfg))
    from sim.metrics import STATUS_COMPLETED
    cols = sim.metrics.columns()
    pos = {int(i): k for k, i in enumerate(cols["request_index"])}
    assert len(index) and floors.max() > 0
    for i, fl in zip(index, floors):
        k = pos[int(i)]
        assert cols["status"][k] == STATUS_COMPLETED, int(i)
        assert cols["first_token_ms"][k] - cols["arrival_time_ms"][k] >= fl, int(i)
    if kv_tokens:
        assert (cols["status"] != STATUS_COMPLETED).any()     # rejections are exercised


def test_future_floors_raise_the_bound_and_only_for_static_runs(monkeypatch, tmp_path,
                                                                 small_trace):
    """At the first check most of the trace is still to arrive: its long prompts' floors
    lift the TTFT max bound above what the requests seen so far give; with a planner (its
    workers come and go) no floor is used."""
    space = search.load_space(_space(tmp_path, SPACE))
    obj = search.Objective("totals.gpu_hours", False, [("latency_ms.ttft.max", "<=", 1e12)])
    setup = search.Setup(small_trace, space, obj, (30.0,), early_stop="bound", check_s=5.0)
    kept = _KeepSim(monkeypatch)
    got = {}
    for planner in ("none", "load"):
        params = {"tp": 1, "cluster.num_workers": 4, "router.mode": "round_robin",
                  "planner": planner, **({"planner.interval_s": 10.0}
                                         if planner != "none" else {})}

        def report(step, values, score):
            sim = kept.sims[-1]
            got[planner] = (values["latency_ms.ttft.max"], search.lower_bounds(
                sim, ["latency_ms.ttft.max"], TRACE_LINES)["latency_ms.ttft.max"])
            return "stop"
        search.run_candidate(setup, params, report)
    with_floors, without = got["none"]
    assert with_floors > without
    assert got["load"][0] == got["load"][1]


def test_best_yaml_names_a_bundled_trace_by_name(tmp_path):
    """``best.yaml`` of a search over ``bundled:NAME`` records that name, not this machine's
    path to the file, and loads back to the same config (the same trace file)."""
    import yaml
    from sim.config import load_config
    space = search.load_space(_space(tmp_path, SPACE))
    obj = search.Objective("totals.gpu_hours", False, [("latency_ms.ttft.p90", "<=", 3000.0)])
    setup = search.Setup("bundled:mooncake_conversation", space, obj, (30.0,))
    params = {"tp": 2, "cluster.num_workers": 3, "router.mode": "kv", "planner": "none"}
    rec = {"trial": 0, "params": params, "values": {"totals.gpu_hours": 1.0,
                                                    "latency_ms.ttft.p90": 2000.0}}
    path = tmp_path / "best.yaml"
    search.write_best(setup, rec, path, True)
    data = yaml.safe_load(path.read_text())
    assert data["workload"]["path"] == "bundled:mooncake_conversation"
    cfg, _, _ = search.candidate_config(setup, params)
    assert load_config(path).to_dict() == cfg.to_dict()
    assert Path(cfg.workload["path"]).is_absolute()     # what it resolves to here
