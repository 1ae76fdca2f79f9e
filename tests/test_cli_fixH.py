"""New-user trial findings (s9-fixH): each test fails without its fix."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import one_line_error, run_cli as run

REPO = Path(__file__).resolve().parent.parent


def _trace(tmp_path: Path, n: int = 150, gap_ms: int = 1000) -> str:
    """A Mooncake trace of ``n`` requests, one every ``gap_ms``."""
    path = tmp_path / "t.jsonl"
    path.write_text("".join(json.dumps({"timestamp": k * gap_ms, "input_length": 300,
                                        "output_length": 40, "hash_ids": [k]}) + "\n"
                            for k in range(n)))
    return str(path)


# -- 1. evaluate --trace --windows all: the tail after the last whole window is counted --------

def test_trace_tail_is_reported_not_dropped(capsys, tmp_path: Path) -> None:
    trace = _trace(tmp_path)          # arrivals 0..149 s: windows [0,60), [60,120); 30 left
    out = tmp_path / "ev.json"
    rc, stdout, err = run(capsys, "evaluate", "--policy", "heuristic:static", "--trace", trace,
                          "--window-s", "60", "--windows", "all", "--out", str(out), "--quiet")
    assert rc == 0, err
    plan = json.loads(out.read_text())["episodes_plan"]
    assert plan["windows"] == 2
    assert plan["requests_in_trace"] == 150 and plan["requests_unscored"] == 30
    assert "30 of the trace's 150 requests in no window, not scored" in stdout
    assert "30 of 150 trace requests arrive at or after 120 s" in err


def test_trace_whole_windows_leave_nothing_unscored(capsys, tmp_path: Path) -> None:
    trace = _trace(tmp_path)
    out = tmp_path / "ev.json"
    rc, stdout, err = run(capsys, "evaluate", "--policy", "heuristic:static", "--trace", trace,
                          "--window-s", "0", "--out", str(out), "--quiet")
    assert rc == 0, err
    assert json.loads(out.read_text())["episodes_plan"]["requests_unscored"] == 0
    assert "not scored" not in stdout.split("in flight")[-1] and "no scored window" not in err

