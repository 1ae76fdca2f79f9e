"""Every option of every ``dynosim`` command has help text that shows its default (issue 12):
the test walks all argparse parsers, so a new option without help fails here."""
from __future__ import annotations

import argparse
from typing import Iterator

import pytest

from dynosim.cli import build_parser, main


def walk(parser: argparse.ArgumentParser, name: str = "dynosim"
         ) -> Iterator[tuple[str, argparse.ArgumentParser, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from walk(sub, f"{name} {sub_name}")
        elif not isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            yield name, parser, action


OPTIONS = [(name, action) for name, _, action in walk(build_parser()) if action.option_strings]


def test_walk_sees_every_command() -> None:
    commands = {name for name, _ in OPTIONS}
    assert {"dynosim simulate", "dynosim train", "dynosim evaluate", "dynosim models",
            "dynosim bench"} <= commands and len(OPTIONS) > 60


@pytest.mark.parametrize("name,action", OPTIONS,
                         ids=[f"{n.split()[-1]}{'/'.join(a.option_strings)}" for n, a in OPTIONS])
def test_every_option_has_help_showing_its_default(name: str, action: argparse.Action) -> None:
    parser = next(p for n, p, a in walk(build_parser()) if n == name)
    formatter = parser._get_formatter()
    shown = formatter._expand_help(action) if action.help else ""
    assert shown.strip(), f"{name} {action.option_strings}: no help text"
    assert action.required or "default" in shown.lower(), \
        f"{name} {action.option_strings}: help does not show the default: {shown!r}"


def test_help_renders_for_every_command(capsys) -> None:
    for name in sorted({n for n, _ in OPTIONS}):
        assert main([*name.split()[1:], "--help"]) == 0
        out = capsys.readouterr().out
        assert "default" in out
