"""Bad input to ``scripts/*.py`` (s9 polish): the project's one-line error, exit 2, no
traceback, as the ``dynosim`` CLI gives (``dynosim.cli.guarded``). ``learned_benchmark.py
--set`` was the hole: an unknown key, an out-of-range value or a value of the wrong type
reached ``train()`` and ended in a traceback (and only after the output directory was made).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import load_script, one_line_error


@pytest.fixture
def no_training(monkeypatch):
    """Any training or scoring fails the test at once (the checks must come first)."""
    import agents.evaluate
    import agents.train

    def boom(*args, **kwargs):
        raise AssertionError("bad flags reached training or scoring")
    monkeypatch.setattr(agents.train, "train", boom)
    monkeypatch.setattr(agents.evaluate, "evaluate", boom)


@pytest.mark.parametrize("mode", [[], ["--score-only"]])
@pytest.mark.parametrize("bad, needles", [
    ("env.no_such_key=1", ["--set env.no_such_key", "no_such_key"]),
    ("env.action.max_step=-3", ["--set env.action.max_step", "-3"]),
    ("env.action.type=sideways", ["--set env.action.type", "sideways"]),
    ("env.action.max_step=two", ["--set env.action.max_step", "two"]),
    ("env.reward.sla_target=1.5", ["--set env.reward.sla_target", "1.5"]),
])
def test_learned_benchmark_bad_set_is_one_line_before_any_work(
        bad: str, needles: list[str], mode: list[str], tmp_path: Path, capsys,
        no_training) -> None:
    mod = load_script("learned_benchmark")
    out = tmp_path / "out"
    rc = mod.main(["--algo", "ppo", "--seeds", "0", "--runs", str(tmp_path / "runs"),
                   "--out", str(out), "--set", bad, *mode])
    one_line_error(rc, capsys.readouterr().err, *needles)
    assert not out.exists()                    # checked before the output directory


def test_learned_benchmark_bad_recipe_and_algo_are_one_line(tmp_path: Path, capsys,
                                                            no_training) -> None:
    mod = load_script("learned_benchmark")
    rc = mod.main(["--algo", "ppo", "--out", str(tmp_path / "o"),
                   "--hyperparams", str(tmp_path / "missing.yml")])
    one_line_error(rc, capsys.readouterr().err, "missing.yml", "not found")
    rc = mod.main(["--algo", "dqn_nope", "--out", str(tmp_path / "o")])
    one_line_error(rc, capsys.readouterr().err, "--algo", "dqn_nope")


@pytest.mark.parametrize("flags, needle", [
    (["--seeds", "3-1"], "--seeds"), (["--seeds", "a,b"], "--seeds"),
    (["--seeds", "-1"], "--seeds"), (["--timesteps", "0"], "--timesteps"),
    (["--timesteps", "-5"], "--timesteps")])
def test_learned_benchmark_bad_seeds_and_timesteps_are_usage_errors(
        flags: list[str], needle: str, capsys) -> None:
    mod = load_script("learned_benchmark")
    with pytest.raises(SystemExit) as exc:
        mod.main(["--algo", "ppo", *flags])
    one_line_error(exc.value.code, capsys.readouterr().err, needle)


def test_learned_benchmark_seeds_parse_ranges_and_lists() -> None:
    mod = load_script("learned_benchmark")
    assert mod.seeds("0-4") == [0, 1, 2, 3, 4]
    assert mod.seeds("3") == [3]
    assert mod.seeds("0,3") == [0, 3]


def test_teacher_segments_missing_recipe_is_one_line(tmp_path: Path, capsys) -> None:
    mod = load_script("teacher_segments")
    rc = mod.main(["--teacher", "oracle:schedule-greedy", "--seeds", "10000-10000",
                   "--hyperparams", str(tmp_path / "missing.yml")])
    one_line_error(rc, capsys.readouterr().err, "missing.yml")


def test_plot_heldout_front_empty_bench_is_one_line(tmp_path: Path, capsys) -> None:
    mod = load_script("plot_heldout_front")
    rc = mod.main(["--bench", str(tmp_path), "--out", str(tmp_path / "f.png")])
    one_line_error(rc, capsys.readouterr().err, "--bench", "no result files")


def test_extract_silicon_rows_missing_csv_is_one_line(tmp_path: Path, capsys) -> None:
    mod = load_script("extract_silicon_rows")
    rc = mod.main(["--csv", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o.csv")])
    one_line_error(rc, capsys.readouterr().err, "nope.csv")


# -- a corrupt result file read back by a script (s10 polish4): one line naming the file, its
# line and column, exit 2 (json.loads raised a JSONDecodeError traceback past `guarded`) ------

def _leaderboard(tmp: Path, mod, monkeypatch) -> tuple[list[str], Path]:
    (tmp / "lb").mkdir()
    return [str(tmp / "lb")], tmp / "lb" / "leaderboard.json"


def _search_front(tmp: Path, mod, monkeypatch) -> tuple[list[str], Path]:
    (tmp / "run").mkdir()
    (tmp / "run" / "trials.csv").write_text("trial,status\n")
    return [str(tmp / "run"), "--compare", ""], tmp / "run" / "search.json"


def _heldout_front(tmp: Path, mod, monkeypatch) -> tuple[list[str], Path]:
    return (["--bench", str(tmp), "--out", str(tmp / "f.png")],
            tmp / next(iter(mod.HEURISTICS)))


def _learned_summary(tmp: Path, mod, monkeypatch) -> tuple[list[str], Path]:
    return (["--algo", "ppo", "--name", "x", "--seeds", "0", "--out", str(tmp),
             "--summary-only"], tmp / "learned_x_s0.json")


def _silicon_tables(tmp: Path, mod, monkeypatch) -> tuple[list[str], Path]:
    (tmp / "tables").mkdir()
    monkeypatch.setattr(mod, "TABLE_DIR", tmp / "tables")     # the shipped GPU tables it reads
    (tmp / "s.csv").write_text("model,gpu\n")
    return ["--csv", str(tmp / "s.csv"), "--out", str(tmp / "o.csv")], tmp / "tables" / "t.json"


def _gpu_tables_check(tmp: Path, mod, monkeypatch) -> tuple[list[str], Path]:
    # --verbose: without it the script sends fd 2 to /dev/null (aiconfigurator's logs)
    return ["--check", "--out", str(tmp), "--verbose"], tmp / "t.json"


def _scale_out_analyse(tmp: Path, mod, monkeypatch) -> tuple[list[str], Path]:
    (tmp / "run").mkdir()
    return ["analyse", str(tmp / "run"), "--out", str(tmp / "o")], tmp / "run" / "search.json"


RESULT_READERS = {"replot_leaderboard": (_leaderboard, "array"),
                  "bench/scale_out": (_scale_out_analyse, "object"),
                  "gen_gpu_tables": (_gpu_tables_check, "object"),
                  "replot_search_front": (_search_front, "object"),
                  "plot_heldout_front": (_heldout_front, "object"),
                  "learned_benchmark": (_learned_summary, "object"),
                  "extract_silicon_rows": (_silicon_tables, "object")}


@pytest.mark.parametrize("script", sorted(RESULT_READERS))
@pytest.mark.parametrize("content, needles", [
    (b'{"a": 1,\n "b": ', ["not valid JSON", ":2", "column 7"]),       # truncated
    (b"", ["not valid JSON", ":1", "column 1"]),                        # empty
    (b"[1, 2]\n{", ["not valid JSON", ":2", "Extra data"]),
    (b"\xff\xfe{}", ["not UTF-8 text", "byte 0"]),
    (b'"a string"', ["expected a JSON", "got string"]),
])
def test_a_corrupt_result_file_is_one_line_naming_it(script: str, content: bytes,
                                                     needles: list[str], tmp_path: Path,
                                                     capsys, monkeypatch) -> None:
    mod = load_script(script)
    layout, kind = RESULT_READERS[script]
    argv, bad = layout(tmp_path, mod, monkeypatch)
    bad.write_bytes(content)
    rc = mod.main(argv)
    err = capsys.readouterr().err
    one_line_error(rc, err, str(bad), *needles)
    if needles[0] == "expected a JSON":
        assert f"expected a JSON {kind}" in err


def test_scripts_read_result_json_through_read_json() -> None:
    """No script parses a JSON file with a bare json.load / json.loads(...read_text()): a
    corrupt file would be a traceback (dynosim.options.read_json names it, line, column)."""
    import re
    root = Path(__file__).resolve().parents[1] / "scripts"
    bare = re.compile(r"json\.load\(|json\.loads\([^)]*read_text\(")
    offenders = [f"{p.name}:{n}" for p in sorted(root.glob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1) if bare.search(line)]
    assert not offenders, offenders
