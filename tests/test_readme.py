"""The README's ``console`` examples run as written and print what the README shows (issue
12). Each block is ``$ .venv/bin/dynosim ...`` followed by its stderr then stdout; only the
wall-time line (machine-dependent) is not compared. Outputs under ``out/`` go to a temporary
directory."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from dynosim.cli import main

REPO = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```console\n(.*?)```", re.S)


def examples() -> list[tuple[str, list[str]]]:
    out = []
    for block in BLOCK.findall((REPO / "README.md").read_text(encoding="utf-8")):
        lines = block.rstrip("\n").split("\n")
        assert lines[0].startswith("$ .venv/bin/dynosim "), lines[0]
        out.append((lines[0][2:], lines[1:]))
    return out


EXAMPLES = examples()


def _comparable(lines: list[str]) -> list[str]:
    return [x for x in lines if not x.strip().startswith("wall time")]


def test_readme_has_console_examples() -> None:
    assert len(EXAMPLES) >= 3


@pytest.mark.parametrize("command,expected", EXAMPLES, ids=[str(i) for i in range(len(EXAMPLES))])
def test_readme_example_prints_what_the_readme_shows(command: str, expected: list[str],
                                                     tmp_path: Path, capsys,
                                                     monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    argv = [a.replace("out/", f"{tmp_path}/") for a in shlex.split(command)[1:]]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    got = (err + out).replace(f"{tmp_path}/", "out/").rstrip("\n").split("\n")
    assert _comparable(got) == _comparable(expected)


def _quick_start_python() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the Quick start has one Python snippet"
    return blocks[0]


def test_readme_quick_start_snippet_runs(monkeypatch, capsys) -> None:
    """The Quick start's Python runs as written: one full episode, then its summary."""
    monkeypatch.chdir(REPO)
    code = _quick_start_python()
    assert 'gym.make("dynosim_gym:DynoSim-v0")' in code and "episode_summary()" in code
    scope: dict = {}
    exec(compile(code, "README.md:quick-start", "exec"), scope)
    out = capsys.readouterr().out
    assert "'sla_attainment'" in out and "'gpu_hours'" in out
    assert scope["truncated"] is True
    summary = scope["env"].unwrapped.episode_summary()
    assert summary["steps"] == scope["env"].unwrapped.cfg.env.episode_steps
    scope["env"].close()


def test_readme_regenerate_command_is_the_shipped_checkpoints_record() -> None:
    """The README's command that regenerates ``pretrained:autoscaler`` is, character for
    character, the ``command`` its run record holds (they drifted once: the README's lacked
    ``--hyperparams agents/hyperparams/archive/ppo_round3.yml``)."""
    import json

    record = json.loads((REPO / "agents/pretrained/autoscaler.json").read_text(encoding="utf-8"))
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n#### Shipping rule and pretrained checkpoint\n", 1)[1]
    section = section.split("\n#### ", 1)[0]
    commands = [b.strip() for b in re.findall(r"```bash\n(.*?)```", section, re.S)
                if b.lstrip().startswith("dynosim train ")]
    assert commands == [record["command"]]
