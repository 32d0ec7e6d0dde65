"""Datadriven interaction scripts (tests/core/testdata/*.txt); `pytest --rewrite` regenerates them."""

from pathlib import Path

import pytest

from .harness import run_file

DATA = Path(__file__).parent / "testdata"
SCRIPTS = sorted(DATA.glob("*.txt"))


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_interaction(path, request):
    rewrite = request.config.getoption("--rewrite")
    mismatches = run_file(str(path), rewrite)
    if rewrite:
        return
    if mismatches:
        line, cmds, want, got = mismatches[0]
        pytest.fail(f"{path.name}:{line}: {cmds}\n--- want\n{want}\n--- got\n{got}")
