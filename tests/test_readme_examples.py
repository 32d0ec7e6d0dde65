"""Every ```python block of README.md is a whole program: it runs on its own and exits 0.

Each block runs in a fresh interpreter (``python FILE``) in an empty temporary folder, with
this checkout first on ``PYTHONPATH``, and must finish within ``DEADLINE_S``. FILE is padded
so that the line numbers of a traceback are README.md's. A block that truly
cannot run is skipped only when the line just before its fence (blank lines aside) is
``<!-- readme-test: skip: REASON -->`` with a reason.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DEADLINE_S = 60
OUTPUT_TAIL = 6000  # characters of a failing block's output shown in the failure

_OPEN = re.compile(r"^(\s*)```python\s*$")
_CLOSE = re.compile(r"^\s*```\s*$")
_SKIP = re.compile(r"^\s*<!--\s*readme-test:\s*skip\s*:(.*?)-->\s*$")

pytestmark = pytest.mark.timeout(DEADLINE_S + 30)


class Block(NamedTuple):
    line: int  # 1-based line of the opening fence in README.md
    code: str
    skip: str | None  # the reason given in a skip marker, or None

    @property
    def first_line(self) -> str:
        return next((s for s in self.code.splitlines() if s.strip()), "")


def python_blocks(text: str) -> list[Block]:
    """The README's ```python blocks, in order, dedented, with any skip marker's reason."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        if not _OPEN.match(lines[i]):
            i += 1
            continue
        start = i
        j = i + 1
        while j < len(lines) and not _CLOSE.match(lines[j]):
            j += 1
        if j == len(lines):
            raise AssertionError(f"README.md:{start + 1}: a ```python block is never closed")
        prev = start - 1
        while prev >= 0 and not lines[prev].strip():
            prev -= 1
        marker = _SKIP.match(lines[prev]) if prev >= 0 else None
        skip = marker.group(1).strip() if marker else None
        if marker and not skip:
            raise AssertionError(f"README.md:{start + 1}: a skip marker must give a reason")
        blocks.append(Block(start + 1, textwrap.dedent("\n".join(lines[start + 1 : j])) + "\n", skip))
        i = j + 1
    return blocks


BLOCKS = python_blocks(README.read_text(encoding="utf-8"))


def test_the_readme_has_python_examples():
    assert len([b for b in BLOCKS if b.skip is None]) >= 3, "README.md should show runnable Python examples"


@pytest.mark.parametrize("block", BLOCKS, ids=[f"README.md:{b.line}" for b in BLOCKS])
def test_readme_python_block_runs(block: Block, tmp_path: Path):
    if block.skip is not None:
        pytest.skip(f"README.md:{block.line}: {block.skip}")
    script = tmp_path / "readme_example.py"
    script.write_text("\n" * block.line + block.code, encoding="utf-8")  # tracebacks give README lines
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    where = f"README.md:{block.line} (the block starting {block.first_line!r})"
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=DEADLINE_S,
        )
        failure = None if proc.returncode == 0 else f"exited {proc.returncode}"
        output = proc.stdout
    except subprocess.TimeoutExpired as e:  # run() has killed the child by then
        failure, output = f"did not finish within {DEADLINE_S} s", e.output
    if failure is not None:
        pytest.fail(f"{where} {failure}; its output:\n{_tail(output)}", pytrace=False)


def _tail(output: bytes | str | None) -> str:
    if output is None:
        return "(none)"
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output
    return text if len(text) <= OUTPUT_TAIL else "...\n" + text[-OUTPUT_TAIL:]
