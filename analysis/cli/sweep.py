"""``mixacc sweep CONFIG.toml``: a declarative study (``analysis.study``), every
configuration one task, one JSON per configuration and a summary table; configurations
whose JSON exists with the same configuration hash are kept, not run again."""

from __future__ import annotations

from pathlib import Path

from ..atomic import write_json, write_text
from ..provenance import provenance
from ..sweep_config import load_study, run_study, summary_rows

HELP = "run a declarative study (TOML: models, data, accumulations, storage, taus, criteria) as one set of tasks"


def add_arguments(parser) -> None:
    parser.add_argument("config", metavar="CONFIG.toml", help="the study file (see docs/method.md#scale-out)")
    parser.add_argument("--out", metavar="DIR", help="where the JSON files go (default: CONFIG's name beside it)")


def _cell(value) -> str:
    if value is None:
        return "-"
    return format(value, ".4g") if isinstance(value, float) else str(value)


def table_lines(rows: list[dict]) -> list[str]:
    """The summary as a Markdown table (columns: the union of the rows' keys, in order)."""
    head = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(row.get(k)) for k in head) + " |" for row in rows]
    return lines


def run(args) -> int:
    study = load_study(args.config)
    out = Path(args.out) if args.out else Path(args.config).with_suffix("")
    results = run_study(study, out, lambda: provenance({"config": str(args.config)}))
    rows = summary_rows(results)
    lines = table_lines(rows)
    write_json(out / "summary.json", {"configurations": rows})
    write_text(out / "summary.md", "\n".join(lines) + "\n")
    ran = sum(r for _, _, r in results)
    print("\n".join(lines))
    print(f"{len(results)} configurations in {out}: {ran} run, {len(results) - ran} kept (same configuration hash)")
    return 0
