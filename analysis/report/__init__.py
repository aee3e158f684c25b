"""Reports a person can look at: ``mixacc report`` and ``mixacc demo``.

:func:`build_report` runs the analyses (validation per accumulation format, the tau
sweep of the recompute policy, on an MLP or a graph model) and returns the report data,
the content of ``report.json``, with the verdict (:mod:`analysis.verdict`) that opens the
report; :func:`write_report` renders that data into a directory (self-contained
HTML, Markdown, PNG figures, JSON), atomically. ``python -m analysis.report.bundled``
regenerates the committed reports under ``reports/``.
"""

from .build import SCHEMA, ReportConfig, ReportError, build_report, load_inputs
from .summary import summary_lines
from .write import REPORT_FILES, write_report

__all__ = ["REPORT_FILES", "SCHEMA", "ReportConfig", "ReportError", "build_report", "load_inputs", "summary_lines",
           "write_report"]
