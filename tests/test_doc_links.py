"""Every relative link and image path in README.md and docs/**/*.md resolves to a file or
directory in the repository (README restructure, s8: the learned-autoscaler rounds moved to
``docs/benchmark/learning_rounds.md``, so their paths became relative to that file).

A link target is read as CommonMark does for the inline forms ``[text](target)`` and
``![alt](target)`` (an optional ``"title"`` after the target ignored, ``<...>`` unwrapped);
http(s), mailto and pure ``#anchor`` targets are skipped, and a ``#fragment`` after a path is
dropped before the path is checked. Fenced code blocks and inline code spans are not links
and are skipped."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

REPO = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(```|~~~).*?^\1[ \t]*$", re.S | re.M)
CODE_SPAN = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
SKIP = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|#)", re.I)


def markdown_files() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def relative_targets(text: str) -> list[str]:
    """The relative link and image targets of a markdown text, in order (see the module
    docstring for what is skipped)."""
    text = CODE_SPAN.sub("", FENCE.sub("", text))
    out = []
    for m in LINK.finditer(text):
        target = m.group(1)
        if target.startswith("<"):
            target = target[1:-1]
        if SKIP.match(target):
            continue
        out.append(target)
    return out


def test_relative_targets_reads_links_images_and_skips_the_rest() -> None:
    text = ("[a](docs/x.md) ![b](img/p.png \"title\") [c](https://e.org/y) [d](#anchor)\n"
            "[e](../up.md#frag) [f](<with space.md>) `[g](in/code.md)`\n"
            "```bash\n[h](in/fence.md)\n```\n[i [nested]](n.md) [j](mailto:x@y.z)\n")
    assert relative_targets(text) == ["docs/x.md", "img/p.png", "../up.md#frag",
                                      "with space.md", "n.md"]


def test_the_checker_sees_the_moved_rounds_and_their_plots() -> None:
    """Not vacuous: README links the rounds file and round 8's plots, and the rounds file
    links plots relative to itself."""
    readme = relative_targets((REPO / "README.md").read_text(encoding="utf-8"))
    assert "docs/benchmark/learning_rounds.md" in readme
    assert "docs/benchmark/learned_r8_replicas_vs_load_ramp.png" in readme
    rounds = relative_targets((REPO / "docs/benchmark/learning_rounds.md")
                              .read_text(encoding="utf-8"))
    assert "learned_r5_replicas_vs_load.png" in rounds
    assert any(t.startswith("../../README.md") for t in rounds)


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(md: Path) -> None:
    missing = []
    for target in relative_targets(md.read_text(encoding="utf-8")):
        path = unquote(target.split("#", 1)[0])
        if path and not (md.parent / path).exists():
            missing.append(target)
    assert not missing, f"{md.relative_to(REPO)}: links to missing files: {missing}"


def _slug(heading: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(md: Path) -> set[str]:
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", FENCE.sub("", md.read_text(
        encoding="utf-8")), re.M)}


def test_slug_is_githubs() -> None:
    assert _slug("First run (`make demo`)") == "first-run-make-demo"
    assert _slug("Held-out leaderboard (v0.2 default, families never used for training or "
                 "tuning)") == ("held-out-leaderboard-v02-default-families-never-used-for-"
                               "training-or-tuning")


@pytest.mark.parametrize("md", markdown_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_anchors_resolve(md: Path) -> None:
    """``#anchor`` links (the README's contents map, cross-links into the rounds file) name a
    heading of the file they point to (sections were moved and renamed in s8)."""
    text = CODE_SPAN.sub("", FENCE.sub("", md.read_text(encoding="utf-8")))
    missing = []
    for m in LINK.finditer(text):
        target = m.group(1).strip("<>")
        if SKIP.match(target) and not target.startswith("#"):
            continue
        path, _, anchor = target.partition("#")
        if not anchor:
            continue
        file = (md.parent / unquote(path)) if path else md
        if file.suffix == ".md" and file.is_file() and anchor not in _anchors(file):
            missing.append(target)
    assert not missing, f"{md.relative_to(REPO)}: anchors with no heading: {missing}"
