"""The docs name the tests that prove their promises: every test they name exists.

A promise in docs/ (or the README) names its test as ``tests/<path>.py``,
``tests/<path>.py::<test>[<case>]``, or, after a full path in the same sentence,
``<file>.py::<test>`` and ``::<test>``. A test renamed or removed without the doc would
leave a promise with no proof, so this fails until the doc is corrected.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md"])
FULL = re.compile(r"((?:tests|agents|bench)/[\w/]+\.(?:py|go))(?:::(\w+))?")
SHORT = re.compile(r"(?<![\w/])(\w+\.py)?::(\w+)")


@cache
def defined() -> dict[str, set[str]]:
    """The functions every test module (Python and Go) defines, by file name."""
    names: dict[str, set[str]] = {}
    for path in [*ROOT.glob("tests/**/*.py"), *ROOT.glob("agents/**/*_test.go"), *ROOT.glob("bench/**/*_test.go")]:
        found = re.findall(r"^\s*(?:async\s+)?def (\w+)\(|^func (\w+)\(", path.read_text(), re.M)
        names.setdefault(path.name, set()).update(a or b for a, b in found)
    return names


def named_tests() -> list[tuple[str, str, str]]:
    """(page, file or "", test or "") for every test a page names."""
    found = []
    for page in PAGES:
        text = page.read_text()
        found.extend((page.name, full.group(1), full.group(2) or "") for full in FULL.finditer(text))
        rest = FULL.sub("", text)  # what is left names tests by their file, or after a file named before
        found.extend((page.name, short.group(1) or "", short.group(2)) for short in SHORT.finditer(rest))
    return found


@pytest.mark.parametrize(("page", "file", "test"), named_tests())
def test_every_test_the_docs_name_exists(page: str, file: str, test: str) -> None:
    if "/" in file:
        assert (ROOT / file).is_file(), f"{page} names {file}, which does not exist"
    if not test:
        return
    where = [Path(file).name] if file else list(defined())
    assert any(test in defined().get(name, set()) for name in where), f"{page} names {file}::{test}, which no test defines"


def test_the_docs_name_tests_at_all() -> None:
    assert len(named_tests()) > 100, "the patterns no longer find the docs' tests"
