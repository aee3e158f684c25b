"""The few lines ``mixacc report`` and ``mixacc demo`` print about a report."""

from __future__ import annotations

from pathlib import Path

from ..methods import GUIDED, LAMP, METHODS
from ..verdict import flip_rate_of, is_policy, worst_output_error

__all__ = ["summary_lines"]


def _pct(value: "float | None") -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _sci(value: "float | None") -> str:
    return "n/a" if value is None else f"{value:.2e}"


def summary_lines(report: dict, out: "str | Path") -> list[str]:
    """Model and data, one line per validated format (violations, worst output error,
    flip rate, Spearman per layer or its median over a graph's sites), one per policy run
    of the sweep, the path. The verdict (``analysis.verdict.verdict_lines``) follows."""
    model, data = report["model"], report["data"]
    lines = [f"{model['name']} ({model['architecture']}) on {data['spec']} {data['split']}, {data['samples']} samples"]
    for v in report["validations"]:
        rho = [layer["local"]["spearman_predicted_vs_measured"] for layer in v["layers"]]
        rho_text = ", ".join("n/a" if r is None else f"{r:.2f}" for r in rho)
        if "sites" in v:
            known = [r for r in rho if r is not None]
            rho_text = f"median over {len(known)} sites {sorted(known)[len(known) // 2]:.2f}" if known else "n/a"
        lines.append(
            f"  {v['accumulation']['spec']:<24} bound violations {v['violations']:>3}  max output rel. error "
            f"{_sci(worst_output_error(v))}  flip rate {_pct(flip_rate_of(v))}  Spearman (local) {rho_text}"
        )
    sweep = report.get("sweep")
    if sweep:
        lines.append(f"  tau sweep, low {sweep['low']} / high {sweep['high']} ({sweep['cost_model']} cost):")
        several = len(sweep["criterion"]) > 1
        for r in sweep["runs"]:
            if is_policy(r["method"]) or METHODS.get(r["method"]).uniform:
                tau = "" if r["tau"] is None else f" tau={r['tau']:g}"
                tau += f" ({r['criterion']})" if (several and r["method"] == GUIDED) or r["method"] == LAMP else ""
                lines.append(
                    f"    {r['method'] + tau:<32} recomputed {_pct(r['recompute_fraction']):>6}  cost {r['relative_cost']:.3f}"
                    f"  accuracy {_pct(r['accuracy'])}  median output rel. error {_sci(r['median_rel_error'])}"
                )
    lines.append(f"report: {Path(out) / 'report.html'}")
    return lines
