"""Write a report directory atomically: ``report.html`` (self-contained), ``report.md``,
the figures as PNG and ``report.json``. The directory appears whole or not at all; an
existing one is replaced only once the new one is complete."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import atomic_directory, to_jsonable
from ..verdict import report_verdict
from .compose import compose
from .render import render_html, render_markdown

__all__ = ["write_report", "REPORT_FILES"]

REPORT_FILES = ("report.html", "report.md", "report.json")


def write_report(report: dict, out: "str | os.PathLike") -> Path:
    """Render ``report`` (the data of ``report.json``) into the directory ``out``; its
    ``verdict`` is computed again from the data, so it always matches the tables."""
    out = Path(out)
    report = {**report, "verdict": report_verdict(report)}
    document, images = compose(report)
    data = to_jsonable({**report, "figures": [{"file": f.file, "caption": f.caption} for f in document.figures()]})
    text = json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n"
    with atomic_directory(out) as tmp:
        tmp.chmod(0o755)  # mkdtemp makes it private; a report is meant to be read
        for name, png in images.items():
            (tmp / name).write_bytes(png)
        (tmp / "report.html").write_text(render_html(document, images), encoding="utf-8")
        (tmp / "report.md").write_text(render_markdown(document), encoding="utf-8")
        (tmp / "report.json").write_text(text, encoding="utf-8")
    return out
