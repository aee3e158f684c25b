"""The project documents itself: code cites docs/method.md by heading anchor, every cited
anchor exists, and nothing points at documents or trackers outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
METHOD = ROOT / "docs" / "method.md"
SCANNED = ("emulator", "analysis", "tests", "docs")
TOP_LEVEL = ("README.md", "ARCHITECTURE.md")

CITATION = re.compile(r"docs/method\.md#([A-Za-z0-9_-]+)")
LOCAL_LINK = re.compile(r"\]\(#([A-Za-z0-9_-]+)\)")
FORBIDDEN = {
    "the founding notes' file name": re.compile(re.escape("DESIGN" + ".md")),
    "an issue number": re.compile(r"\bissues?\s*(?:#|no\.?\s*|number\s*)?\d", re.IGNORECASE),
}


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped (letters, digits,
    '_', '-' and spaces kept), spaces turned into '-'."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """The heading anchors of a Markdown text (outside fenced code), with GitHub's -1, -2
    suffixes for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if fenced or not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        out.add(slug if count == 0 else f"{slug}-{count}")
    return out


def text_files() -> list[Path]:
    files = [ROOT / name for name in TOP_LEVEL]
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                files.append(path)
    out = []
    for path in files:
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        out.append(path)
    return out


@pytest.fixture(scope="module")
def texts() -> dict[Path, str]:
    return {path: path.read_text(encoding="utf-8") for path in text_files()}


def test_github_slug():
    assert github_slug("The exact reference") == "the-exact-reference"
    assert github_slug("The mpmath path (the definition)") == "the-mpmath-path-the-definition"
    assert github_slug("Stochastic rounding in round_to") == "stochastic-rounding-in-round_to"
    assert anchors("# A\n## B c\n```\n# not a heading\n```\n## B c\n") == {"a", "b-c", "b-c-1"}


def test_no_outside_documents_or_issue_numbers(texts):
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {what}: {line.strip()}"
        for path, text in texts.items() if path != Path(__file__).resolve()
        for number, line in enumerate(text.splitlines(), 1)
        for what, pattern in FORBIDDEN.items() if pattern.search(line)
    ]
    assert offenders == []


def test_forbidden_patterns_catch_what_they_should():
    hits = ["Target (issue 3): fast", "see issue #12", "Issues 4 and 5", "DESIGN" + ".md \"Formats\""]
    misses = ["the issue", "issued 3 times", "designs", "docs/method.md#formats"]
    assert all(any(p.search(t) for p in FORBIDDEN.values()) for t in hits)
    assert not any(p.search(t) for p in FORBIDDEN.values() for t in misses)


def test_every_cited_anchor_exists(texts):
    known = anchors(METHOD.read_text(encoding="utf-8"))
    cited = {(path, anchor) for path, text in texts.items() for anchor in CITATION.findall(text)}
    cited |= {(METHOD, anchor) for anchor in LOCAL_LINK.findall(texts[METHOD])}
    assert len({p for p, _ in cited if p.suffix == ".py"}) >= 10  # the code does cite the document
    missing = sorted(f"{path.relative_to(ROOT)}: #{anchor}" for path, anchor in cited if anchor not in known)
    assert missing == []


@pytest.mark.parametrize("anchor", [
    "formats", "rounding", "overflow", "accumulation-models", "spec-grammar", "random-bits-of-stochastic-rounding",
    "storage-formats", "the-exact-reference", "error-measures", "condition-numbers", "bounds", "path-counts",
    "probabilistic-bound", "global-propagation", "validation", "the-recompute-policy", "multi-level", "baselines",
    "the-cost-model", "references",
])
def test_method_has_section(anchor):
    assert anchor in anchors(METHOD.read_text(encoding="utf-8"))
