"""The documentation pages: structure checks the strict MkDocs build does not make."""

from __future__ import annotations

from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.rglob("*.md")) + [DOCS.parent / "README.md"]


def repeated_headings(text: str) -> list[str]:
    """Headings that occur twice under the same parent heading (a section pasted twice)."""
    seen: set[tuple[tuple[str, ...], str]] = set()
    parents: list[str] = []
    repeats = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        level = len(line) - len(line.lstrip("#"))
        title = line[level:].strip()
        parents = parents[: level - 1] + [""] * max(0, level - 1 - len(parents))
        key = (tuple(parents), title)
        if key in seen:
            repeats.append("#" * level + " " + title)
        seen.add(key)
        parents.append(title)
    return repeats


def test_repeated_headings_are_found():
    page = "# A\n## S\n### T\n## Q\n### T\n```\n# not a heading\n# not a heading\n```\n## S\n"
    assert repeated_headings(page) == ["## S"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS.parent)))
def test_no_section_appears_twice(page: Path):
    assert repeated_headings(page.read_text(encoding="utf-8")) == []
