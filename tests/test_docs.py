"""The documentation says what the code does and holds together: the strategies page's example is
the project's example module byte for byte and its table lists exactly the built-in strategies with
their defaults; every relative link of the README and of docs/*.md reaches a file, a folder or a
heading; the README stays short enough to read in five minutes and links every docs page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from backtest import strategy
from backtest.strategies import builtins
from tests.support import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"
STRATEGIES_PAGE = DOCS / "strategies.md"
EXAMPLE = REPO / "strategies" / "vwma_trend.py"
README_MAX_LINES = 250

FENCE = re.compile(r"^```.*?^```[^\n]*$", flags=re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]\n]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", flags=re.MULTILINE)
EXTERNAL = re.compile(r"^(https?|mailto):", flags=re.IGNORECASE)


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(text: str) -> str:
    """The text outside fenced code blocks (a link or a heading in a code block is not one)."""
    return FENCE.sub("", text)


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: its text without links' targets and markup, lowercased,
    punctuation other than `-` and `_` dropped, each space a `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return "".join("-" if char == " " else char for char in text if char.isalnum() or char in " -_")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on the page, repeated headings numbered as GitHub does (`-1`, `-2`)."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(prose(page.read_text())):
        slug = anchor(heading)
        found.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return found


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text()))


def broken_links(page: Path) -> list[str]:
    """The page's relative links whose file or folder is missing, or whose `#anchor` is no heading there."""
    broken = []
    for target in links(page):
        if EXTERNAL.match(target):
            continue
        path, _, fragment = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target}: no such file or folder")
        elif fragment and (resolved.suffix != ".md" or fragment not in anchors(resolved)):
            broken.append(f"{target}: no heading with the anchor #{fragment} in {resolved.name}")
    return broken


def test_github_anchors_are_computed_as_github_does():
    assert anchor('A run\'s date: "as of D 00:00 UTC"') == "a-runs-date-as-of-d-0000-utc"
    assert anchor("The job: `python -m backtest`") == "the-job-python--m-backtest"
    assert anchor("Several strategies in one run (the DAG)") == "several-strategies-in-one-run-the-dag"
    assert anchor("check_strategy and [the DAG](x.md)") == "check_strategy-and-the-dag"


@pytest.mark.parametrize("page", pages(), ids=lambda page: page.relative_to(REPO).as_posix())
def test_every_relative_link_reaches_a_file_or_a_heading(page):
    assert links(page), f"{page.name} has no links"
    assert broken_links(page) == []


def test_a_broken_link_or_anchor_is_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Some section\n\n```\n## not a heading\n```\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md) [ok](other.md#some-section) [ok](#here) [web](https://example.com/x#y)\n"
        "## Here\n"
        "[missing](nowhere.md) [bad anchor](other.md#no-section) [code](other.md#not-a-heading)\n"
        "```\n[in code](ignored.md)\n```\n"
    )
    assert broken_links(page) == [
        "nowhere.md: no such file or folder",
        "other.md#no-section: no heading with the anchor #no-section in other.md",
        "other.md#not-a-heading: no heading with the anchor #not-a-heading in other.md",
    ]


def test_the_readme_is_at_most_250_lines():
    lines = len(README.read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move the rest into docs/"


def test_the_readme_links_every_docs_page_and_every_page_links_back():
    linked = {(README.parent / target.partition("#")[0]).resolve() for target in links(README)}
    docs = sorted(DOCS.glob("*.md"))
    assert docs, "no docs pages"
    assert [page.name for page in docs if page.resolve() not in linked] == []
    for page in docs:
        assert "../README.md" in links(page), f"{page.name} does not link back to the README"


def test_the_readme_example_is_the_example_module():
    blocks = re.findall(r"```python\n(.*?)```", STRATEGIES_PAGE.read_text(), flags=re.DOTALL)
    assert EXAMPLE.read_text() in blocks


def test_the_readme_table_lists_every_built_in_with_its_defaults():
    rows = re.findall(r"^\| `(\w+)\(([^)]*)\)`", STRATEGIES_PAGE.read_text(), flags=re.MULTILINE)
    built_in = {
        name: entry
        for name, entry in ((n, strategy.get(n)) for n in strategy.names())
        if type(entry).__module__ == builtins.__name__
    }
    assert sorted(name for name, _ in rows) == sorted(built_in)
    for name, defaults in rows:
        shown = dict(item.split("=") for item in defaults.split(", "))
        declared = {p.name: p for p in built_in[name].params}
        assert shown.keys() == declared.keys(), name
        for key, value in shown.items():
            assert declared[key].parse(value) == declared[key].parse(declared[key].default), (name, key)
