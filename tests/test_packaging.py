"""Repository hygiene from issue 12: an editable install builds without setuptools' layout
warning, and test skip messages never name a path outside the repository."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_editable_build_has_no_setuptools_layout_warning(tmp_path: Path) -> None:
    """Build the editable wheel of a copy of the project (C parts off: DYNOSIM_NO_CYTHON and
    no compiler needed for the check) and look for setuptools' warnings on stderr."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".venv", ".peer-venv", ".git", "build", "out", "runs", "*.so", "*.c", "__pycache__",
        ".pytest_cache", ".hypothesis", "docs", "bench", "tests"))
    shutil.copy(REPO / "sim" / "_kvpool.c", src / "sim" / "_kvpool.c")
    code = ("import sys, setuptools.build_meta as b; "
            "b.build_editable(sys.argv[1])")
    r = subprocess.run([sys.executable, "-W", "always", "-c", code, str(tmp_path / "whl")],
                       cwd=src, capture_output=True, text=True, timeout=600,
                       env={"PATH": "/usr/bin:/bin", "DYNOSIM_NO_CYTHON": "1",
                            "HOME": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    assert list((tmp_path / "whl").glob("*.whl"))
    assert "folders in your working directory" not in r.stderr
    assert "Editable installation" not in r.stderr





def test_skip_messages_name_no_path_outside_the_repo() -> None:
    from conftest import PEER_MISSING
    texts = [PEER_MISSING]
    for path in sorted((REPO / "tests").glob("*.py")):
        texts += re.findall(r"pytest\.skip\(([^\n]*(?:\n[^\n]*){0,2})", path.read_text())
    for text in texts:
        assert "/work" not in text and "../" not in text and "shared/" not in text, text
