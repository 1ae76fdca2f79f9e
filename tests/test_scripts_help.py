"""``scripts/*.py --help`` (s8 polish): the whole module docstring, not its first line cut
mid-sentence; help text on every option, with its default shown; and the scripts that
draw figures or write result files default to the untracked ``out/``, so a plain run never
rewrites a committed file (the README's commands that regenerate shipped files pass
``--out docs/...`` explicitly)."""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from tests.conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (REPO / "scripts").glob("*.py"))


def _parser(name: str, monkeypatch) -> argparse.ArgumentParser:
    """The script's parser, caught at ``parse_args`` (nothing runs)."""
    mod = load_script(name)
    seen = {}

    class Caught(Exception):
        pass

    def grab(self, *args, **kwargs):
        seen["parser"] = self
        raise Caught

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", grab)
    with pytest.raises(Caught):
        mod.main([])
    return seen["parser"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_help_is_whole_with_every_option_explained(name: str, monkeypatch) -> None:
    ap = _parser(name, monkeypatch)
    mod = load_script(name)
    text = ap.format_help()
    doc_words = " ".join(mod.__doc__.split())
    assert doc_words[-60:] in " ".join(text.split()), f"{name}: --help cuts the docstring"
    for action in ap._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{name}: {action.option_strings or action.dest} has no help"
        shown = ap._get_formatter()._get_help_string(action)
        if action.option_strings and action.default not in (None, argparse.SUPPRESS):
            assert "default" in shown.lower(), f"{name}: {action.option_strings} hides its default"


@pytest.mark.parametrize("name", ["plot_learned", "plot_heldout_front", "learned_benchmark"])
def test_figure_and_result_scripts_default_to_untracked_out(name: str, monkeypatch) -> None:
    ap = _parser(name, monkeypatch)
    out = next(a for a in ap._actions if "--out" in a.option_strings)
    assert re.match(r"out(/|$)", str(out.default)), out.default
    assert "docs/" not in str(out.default)
