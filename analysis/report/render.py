"""A report document rendered two ways: one self-contained HTML file (figures embedded
as base64 PNG, inline CSS, no script and no external reference of any kind) and Markdown
that references the PNG files written next to it.

The document is plain data: a title, lead paragraphs and sections, each holding
paragraphs, tables and figures in order.
"""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

__all__ = ["Figure", "Table", "Section", "Document", "render_html", "render_markdown", "format_number", "anchor"]


@dataclass(frozen=True)
class Figure:
    """A PNG written next to the report as ``file``."""

    file: str
    caption: str


@dataclass(frozen=True)
class Table:
    caption: str
    columns: Sequence[str]
    rows: Sequence[Sequence[object]]


Block = Union[str, Figure, Table]


@dataclass(frozen=True)
class Section:
    heading: str
    blocks: Sequence[Block] = field(default_factory=tuple)


@dataclass(frozen=True)
class Document:
    title: str
    lead: Sequence[str]
    sections: Sequence[Section]

    def figures(self) -> list[Figure]:
        return [b for s in self.sections for b in s.blocks if isinstance(b, Figure)]


def format_number(value: object) -> str:
    """Cells: floats in 4 significant digits (scientific below 1e-3 or from 1e5), None as
    an en dash, everything else as str."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "nan"
        if value in (float("inf"), float("-inf")):
            return "inf" if value > 0 else "-inf"
        if value == 0:
            return "0"
        return f"{value:.3e}" if abs(value) < 1e-3 or abs(value) >= 1e5 else f"{value:.4g}"
    return str(value)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1200px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.6em; } h2 { font-size: 1.3em; border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .85em; }
caption { caption-side: top; text-align: left; font-weight: 600; padding-bottom: .4em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: left; }
td { overflow-wrap: break-word; } td.n { white-space: nowrap; text-align: right; } .scroll { overflow-x: auto; }
nav.toc { border: 1px solid #ddd; background: #fafafa; padding: .4em 1em; margin: 1em 0; display: inline-block; }
nav.toc ol { margin: .3em 0; padding-left: 1.4em; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #444; margin-top: .3em; }
code, pre { background: #f6f6f6; padding: 0 .2em; }
"""


_NUMBER = re.compile(r"^(-?\d[\d.]*(e[+-]\d+)?|-?inf|nan|–)$")


def _breakable(text: str) -> str:
    """Escaped ``text`` with line-break opportunities (``<wbr>``) after . : _ / , and inside
    CamelCase, so long site names and specs wrap instead of widening the table."""
    escaped = html.escape(text)
    return re.sub(r"([a-z])(?=[A-Z])", r"\1<wbr>", re.sub(r"([.:_/,])", r"\1<wbr>", escaped))


def _html_cell(value: object) -> str:
    """A cell; numbers (as :func:`format_number` writes them) never wrap (class ``n``),
    text may."""
    text = format_number(value)
    if _NUMBER.match(text):
        return f'<td class="n">{html.escape(text)}</td>'
    return f"<td>{_breakable(text)}</td>"


def _html_table(t: Table) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in t.columns)
    body = "\n".join("<tr>" + "".join(_html_cell(v) for v in row) + "</tr>" for row in t.rows)
    return (f'<div class="scroll"><table>\n<caption>{html.escape(t.caption)}</caption>\n<thead><tr>{head}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody>\n</table></div>")


def _html_figure(f: Figure, images: Mapping[str, bytes]) -> str:
    data = base64.b64encode(images[f.file]).decode("ascii")
    caption = html.escape(f.caption)
    return f'<figure>\n<img src="data:image/png;base64,{data}" alt="{caption}">\n<figcaption>{caption}</figcaption>\n</figure>'


def _html_block(block: Block, images: Mapping[str, bytes]) -> str:
    if isinstance(block, Figure):
        return _html_figure(block, images)
    if isinstance(block, Table):
        return _html_table(block)
    return f"<p>{html.escape(block)}</p>"


def anchor(heading: str) -> str:
    """The id of a section: its heading in lower case, runs of other characters as ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", heading.lower()).strip("-") or "section"


def _toc(doc: Document) -> str:
    items = "".join(f'<li><a href="#{anchor(s.heading)}">{html.escape(s.heading)}</a></li>' for s in doc.sections)
    return f'<nav class="toc"><strong>Contents</strong><ol>{items}</ol></nav>'


def render_html(doc: Document, images: Mapping[str, bytes]) -> str:
    """One HTML file; ``images[f.file]`` holds the PNG bytes of every figure. A table of
    contents links every section (``id`` from :func:`anchor`)."""
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(doc.title)}</title>", f"<style>{_CSS}</style>", "</head>", "<body>",
        f"<h1>{html.escape(doc.title)}</h1>", *(f"<p>{html.escape(p)}</p>" for p in doc.lead), _toc(doc),
    ]
    for section in doc.sections:
        parts.append(f'<h2 id="{anchor(section.heading)}">{html.escape(section.heading)}</h2>')
        parts.extend(_html_block(b, images) for b in section.blocks)
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def _md_cell(value: object) -> str:
    return format_number(value).replace("|", "\\|").replace("\n", " ")


def _md_table(t: Table) -> str:
    lines = [f"**{t.caption}**", "", "| " + " | ".join(_md_cell(c) for c in t.columns) + " |",
             "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(t.columns))) + "|"]
    lines += ["| " + " | ".join(_md_cell(v) for v in row) + " |" for row in t.rows]
    return "\n".join(lines)


def _md_block(block: Block) -> str:
    if isinstance(block, Figure):
        alt = block.file.rsplit(".", 1)[0]
        return f"![{alt}]({block.file})\n\n*{block.caption}*"
    if isinstance(block, Table):
        return _md_table(block)
    return block


def render_markdown(doc: Document) -> str:
    """Markdown whose only links are the figures' PNG files (relative, next to it)."""
    parts = [f"# {doc.title}", *doc.lead]
    for section in doc.sections:
        parts.append(f"## {section.heading}")
        parts.extend(_md_block(b) for b in section.blocks)
    return "\n\n".join(parts) + "\n"
