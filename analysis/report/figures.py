"""The report's figures, drawn with matplotlib (Agg, no pyplot state) from plain
JSON-ready data — the same data ``report.json`` holds, so the file contains everything a
figure shows.

Each function takes plain lists of dicts (numbers, no arrays needed) and returns a
:class:`matplotlib.figure.Figure`; :func:`png_bytes` renders one to PNG.

Data shapes
-----------
scatter panel (``error_vs_bound``: ``measured`` and ``bound``, absolute errors in the
units of the values; ``predicted_vs_measured``: ``measured`` and ``predicted``, relative
errors)::

    {"title": str, "measured": [...], "bound" | "predicted": [...],
     "violations": [indices into the points], "zero_error": int, "spearman": float | None}

histogram layer (``kappa_distributions``)::

    {"index": k, "activation": "tanh", "kappa": HIST, "kappa_sigma": HIST}
    HIST = {"edges_log10": [...], "counts": [...], "zero": int, "inf": int}

sweep run (``tau_sweep``, ``recompute_fractions``): the objects of ``mixacc recompute
--json`` ``runs`` (method, criterion, tau, accuracy, median_rel_error, relative_cost,
recompute_fraction, layer_recompute_fraction, ...).

heat maps of a graph's sites: ``site_heatmap`` takes row labels (sites), column labels
and a matrix of values (None: no value); ``block_heatmap`` takes (block, role, value)
triples and lays them out blocks against roles.
"""

from __future__ import annotations

import io
import math
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..methods import GUIDED, METHODS, UNIFORM_HIGH, UNIFORM_LOW

__all__ = [
    "error_vs_bound", "predicted_vs_measured", "kappa_distributions", "tau_sweep", "recompute_fractions",
    "site_heatmap", "block_heatmap", "png_bytes",
]



def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as a 256-colour PNG (a third of the RGBA size, no visible change for
    line art; no timestamps or software tag, so reruns are byte-stable)."""
    from PIL import Image

    FigureCanvasAgg(fig)
    raw = io.BytesIO()
    fig.savefig(raw, format="png", dpi=dpi, metadata={"Software": None})
    image = Image.open(raw).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out = io.BytesIO()
    image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _figure(rows: int, cols: int, title: str, axes_size: tuple[float, float] = (2.7, 2.3),
            title_lines: int = 3, legend_width: float = 0.0, left: float = 0.85,
            bottom: float = 0.6) -> tuple[Figure, np.ndarray]:
    """A figure of rows x cols axes of ``axes_size`` inches with fixed margins (in inches)
    for tick labels, axis labels, panel titles of ``title_lines`` lines and a legend
    column of ``legend_width`` on the right, ``left`` and ``bottom`` margins for the tick labels — a
    fixed layout, several times faster to draw than matplotlib's constrained layout."""
    ax_w, ax_h = axes_size
    right, top, gap_w, gap_h = 0.25 + legend_width, 0.45, 0.95, 0.65
    head = 0.16 * title_lines + 0.1
    width = left + cols * ax_w + (cols - 1) * gap_w + right
    height = top + head + rows * ax_h + (rows - 1) * (gap_h + head) + bottom
    fig = Figure(figsize=(width, height))
    fig.subplots_adjust(left=left / width, right=1 - right / width, bottom=bottom / height,
                        top=1 - (top + head) / height, wspace=gap_w / ax_w, hspace=(gap_h + head) / ax_h)
    fig.suptitle(title, y=1 - 0.12 / height, va="top")
    return fig, fig.subplots(rows, cols, squeeze=False)


def _grid(count: int, title: str, columns: int = 4) -> tuple[Figure, list]:
    cols = min(columns, max(count, 1))
    rows = math.ceil(max(count, 1) / cols)
    fig, axes = _figure(rows, cols, title)
    axes = axes.ravel()
    for ax in axes[count:]:
        ax.set_axis_off()
    return fig, list(axes[:count])


def _log_log(ax) -> None:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.minorticks_off()


def _positive(*columns: Sequence[float]) -> tuple[np.ndarray, ...]:
    """The mask of rows where every column is finite and > 0 (log axes cannot show the
    rest), then each column restricted to it."""
    arrays = [np.asarray(c, dtype=float) for c in columns]
    keep = np.ones(arrays[0].shape, dtype=bool)
    for a in arrays:
        keep &= np.isfinite(a) & (a > 0)
    return (keep, *(a[keep] for a in arrays))


def _diagonal(ax, lo: float, hi: float, label: str) -> None:
    ax.plot([lo, hi], [lo, hi], color="0.3", linewidth=1, linestyle="--", label=label, zorder=1)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)


def _span(*arrays: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([a for a in arrays if a.size]) if any(a.size for a in arrays) else np.array([1.0])
    lo, hi = float(values.min()), float(values.max())
    return lo / 2, hi * 2


def _panel_title(panel: dict, extra: str = "") -> str:
    hidden = int(panel.get("zero_error", 0))
    lines = [panel["title"] + extra]
    if hidden:
        lines.append(f"{hidden} with zero error (not on log axes)")
    return "\n".join(lines)


def error_vs_bound(panels: list[dict], title: str, columns: int = 4) -> Figure:
    """Per panel (a layer, local or global error), log-log: the rigorous bound (x) against
    the measured absolute error (y) of every drawn component, the line y = x, and the
    components the data flags as violations (``panel['violations']``, indices into the
    points: measured > bound) as red crosses."""
    fig, axes = _grid(len(panels), title, columns)
    for ax, panel in zip(axes, panels):
        keep, bound, measured = _positive(panel["bound"], panel["measured"])
        violated = np.zeros(keep.size, dtype=bool)
        violated[np.asarray(panel["violations"], dtype=int)] = True
        violated = violated[keep]
        ax.scatter(bound[~violated], measured[~violated], s=6, alpha=0.5, color="#1f77b4", label="component", zorder=2)
        ax.scatter(bound[violated], measured[violated], s=30, marker="x", color="#d62728",
                   label=f"violation ({int(violated.sum())})", zorder=3)
        lo, hi = _span(bound, measured)
        _diagonal(ax, lo, hi, "measured = bound")
        _log_log(ax)
        ax.set_xlabel("bound on |error| (absolute, value units)")
        ax.set_ylabel("measured |error| (absolute, value units)")
        ax.set_title(_panel_title(panel), fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return fig


def predicted_vs_measured(panels: list[dict], title: str, columns: int = 4) -> Figure:
    """Per panel, log-log: the first-order predicted error (kappa_sigma kappa_i (c u +
    eps_in), relative) against the measured relative error, titled with Spearman's rho
    over every component of the layer."""
    fig, axes = _grid(len(panels), title, columns)
    for ax, panel in zip(axes, panels):
        _, predicted, measured = _positive(panel["predicted"], panel["measured"])
        ax.scatter(predicted, measured, s=6, alpha=0.5, color="#ff7f0e", label="component", zorder=2)
        lo, hi = _span(predicted, measured)
        _diagonal(ax, lo, hi, "measured = predicted")
        _log_log(ax)
        ax.set_xlabel("predicted error (relative, first order)")
        ax.set_ylabel("measured error (relative)")
        rho = panel.get("spearman")
        ax.set_title(_panel_title(panel, f"; Spearman rho = {'n/a' if rho is None else format(rho, '.3f')}"), fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return fig


def _histogram(ax, hist: dict, label: str, color: str) -> None:
    edges = np.asarray(hist["edges_log10"], dtype=float)
    counts = np.asarray(hist["counts"], dtype=float)
    extra = [f"{hist[k]} {k}" for k in ("zero", "inf") if hist.get(k)]
    if counts.size:
        ax.stairs(counts, 10.0**edges, fill=True, alpha=0.6, color=color, label=label + (f" (+{', '.join(extra)})" if extra else ""))
    ax.set_xscale("log")


def kappa_distributions(layers: list[dict], title: str) -> Figure:
    """Per layer, the distribution of kappa_i = (|b_i| + sum_j |w_ij||x_j|) / |y_i| and of
    kappa_sigma(y_i) = |y_i sigma'(y_i) / sigma(y_i)| over every component (log bins;
    values 0 and inf counted in the legend)."""
    fig, axes = _figure(len(layers), 2, title, axes_size=(3.4, 2.3), title_lines=1)
    for row, layer in zip(axes, layers):
        for ax, key, label, color in ((row[0], "kappa", "kappa_i", "#1f77b4"), (row[1], "kappa_sigma", "kappa_sigma", "#9467bd")):
            _histogram(ax, layer[key], label, color)
            ax.set_yscale("log")
            ax.set_ylim(bottom=0.7)
            ax.minorticks_off()
            ax.set_xlabel(f"{label} (dimensionless, log scale)")
            ax.set_ylabel("components (count)")
            ax.set_title(f"layer {layer['index']} ({layer['activation']}): {label}", fontsize=9)
            ax.legend(fontsize=7)
    return fig


_CRITERION_STYLES = [dict(marker="o", linestyle="-"), dict(marker="D", linestyle="--"), dict(marker="s", linestyle=":")]


def _series(runs: list[dict]) -> dict[tuple, list[dict]]:
    """Runs grouped by (method, criterion) — the matched baselines carry the criterion of
    the guided run they are matched to — each group sorted by recompute fraction."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["method"], r.get("criterion")), []).append(r)
    return {k: sorted(v, key=lambda r: (r["recompute_fraction"], r["relative_cost"])) for k, v in groups.items()}


def _style(method: str, criterion: "str | None", criteria: list) -> tuple[dict, str]:
    row = METHODS.get(method)
    style = dict(row.style)
    if criterion is not None and not row.uniform:
        style.update(_CRITERION_STYLES[criteria.index(criterion) % len(_CRITERION_STYLES)])
    label = method
    if row.matched and len(criteria) > 1:
        label = f"{method} (matched to {criterion})"
    elif not row.uniform and criterion is not None:
        label = f"{method} ({criterion})"
    return style, label


def _annotate_taus(ax, points: list[tuple[float, float, float]]) -> None:
    """Label guided points with their tau, skipping labels that would overlap one
    already placed (closer than 5% of the axes)."""
    placed: list[tuple[float, float]] = []
    ax.get_xlim(), ax.get_ylim()  # settle the autoscaled limits before mapping points
    to_axes = ax.transAxes.inverted()
    for tau, x, y in points:
        ax_x, ax_y = to_axes.transform(ax.transData.transform((x, y)))
        if all(abs(ax_x - px) > 0.05 or abs(ax_y - py) > 0.05 for px, py in placed):
            ax.annotate(f"tau={tau:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
            placed.append((ax_x, ax_y))


def tau_sweep(runs: list[dict], title: str, *, low: str, high: str) -> Figure:
    """Three panels, every method on the same axes: relative cost (against uniform
    ``high``) against the median output relative error (log) and against top-1
    accuracy, and the recompute fraction against the median output relative error (which
    set of components is recomputed, whatever it costs). Guided points carry their tau."""
    fig, axes = _figure(1, 3, title, axes_size=(4.1, 3.6), title_lines=1)
    ax_err, ax_acc, ax_frac = axes[0]
    have_accuracy = any(r.get("accuracy") is not None for r in runs)
    criteria = sorted({r["criterion"] for r in runs if r.get("criterion") is not None})
    labels_err, labels_frac = [], []
    for (method, criterion), group in _series(runs).items():
        style, label = _style(method, criterion, criteria)
        if method == UNIFORM_LOW:
            label = f"uniform low ({low})"
        elif method == UNIFORM_HIGH:
            label = f"uniform high ({high})"
        cost = [r["relative_cost"] for r in group]
        err = [r["median_rel_error"] for r in group]
        frac = [r["recompute_fraction"] for r in group]
        ax_err.plot(cost, err, label=label, **style)
        ax_frac.plot(frac, err, label=label, **style)
        if have_accuracy:
            ax_acc.plot(cost, [r.get("accuracy") for r in group], label=label, **style)
        if method == GUIDED:
            labels_err += [(r["tau"], x, y) for r, x, y in zip(group, cost, err)]
            labels_frac += [(r["tau"], x, y) for r, x, y in zip(group, frac, err)]
    for ax in (ax_err, ax_frac):
        if any(r["median_rel_error"] and r["median_rel_error"] > 0 for r in runs):
            ax.set_yscale("log")
            ax.minorticks_off()
        ax.set_ylabel("median output relative error vs exact")
    ax_err.set_xlabel("relative cost (1 = uniform high)")
    ax_err.set_title("cost against output error", fontsize=10)
    ax_frac.set_xlabel("components recomputed in high (fraction, all)")
    ax_frac.set_title("recompute fraction against output error", fontsize=10)
    ax_frac.legend(fontsize=7)
    ax_acc.set_xlabel("relative cost (1 = uniform high)")
    if have_accuracy:
        ax_acc.set_ylabel("top-1 accuracy (fraction of samples)")
        ax_acc.set_title("cost against accuracy", fontsize=10)
    else:
        ax_acc.set_axis_off()
        ax_acc.text(0.5, 0.5, "the data has no labels: no accuracy", ha="center", va="center")
    _annotate_taus(ax_err, labels_err)
    _annotate_taus(ax_frac, labels_frac)
    return fig


def recompute_fractions(runs: list[dict], title: str) -> Figure:
    """The fraction of components recomputed in high precision per layer, one bar group
    per layer and one bar per (criterion, tau) of the guided method."""
    guided = [r for r in runs if r["method"] == GUIDED]
    fig, axes = _figure(1, 1, title, axes_size=(7.5, 3.2), title_lines=0, legend_width=2.2)
    ax = axes[0, 0]
    if not guided:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no guided runs", ha="center", va="center")
        return fig
    layers = len(guided[0]["layer_recompute_fraction"])
    width = 0.8 / len(guided)
    criteria = {r.get("criterion") for r in guided}
    colors = _colors(len(guided))
    for j, (r, color) in enumerate(zip(guided, colors)):
        x = np.arange(layers) + (j - (len(guided) - 1) / 2) * width
        label = f"tau = {r['tau']:g}" + (f" ({r['criterion']})" if len(criteria) > 1 else "")
        ax.bar(x, r["layer_recompute_fraction"], width=width, color=color, label=label)
    ax.set_xticks(np.arange(layers), [f"layer {k}" for k in range(layers)])
    ax.set_ylabel("components recomputed (fraction, 0 to 1)")
    ax.set_xlabel("layer")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return fig


def _colors(count: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    return [cmap(t) for t in np.linspace(0.1, 0.9, count)] if count > 1 else [cmap(0.4)]


def site_heatmap(rows: Sequence[str], columns: Sequence[str], values: Sequence[Sequence["float | None"]], title: str,
                 label: str = "fraction recomputed (0 to 1)", log: bool = False, limits: "tuple | None" = (0.0, 1.0)) -> Figure:
    """A heat map of ``values[i][j]`` (row ``rows[i]``, column ``columns[j]``), each cell
    printed; missing values (None) left blank; ``log``: the colour is log10 of the value."""
    matrix = np.array([[np.nan if v is None else float(v) for v in row] for row in values], dtype=float).reshape(
        len(rows), len(columns))
    shown = np.log10(np.where(matrix > 0, matrix, np.nan)) if log else matrix
    cell_w, cell_h = max(0.55, 5.5 / max(len(columns), 1), 0.08 * len(title) / max(len(columns), 1)), 0.24
    longest = max((len(r) for r in rows), default=1)
    rotate = len(columns) > 6
    tallest = max((len(line) for c in columns for line in c.split("\n")), default=1) if rotate else 2
    fig, axes = _figure(1, 1, title, axes_size=(cell_w * max(len(columns), 1), cell_h * max(len(rows), 1) + 0.2),
                        title_lines=0, legend_width=0.9, left=0.3 + 0.06 * longest, bottom=0.3 + 0.07 * tallest)
    ax = axes[0, 0]
    vmin, vmax = (None, None) if log or limits is None else limits
    image = ax.imshow(np.ma.masked_invalid(shown), aspect="auto", cmap="viridis", vmin=vmin, vmax=vmax,
                      interpolation="nearest")
    ax.set_xticks(np.arange(len(columns)), columns, fontsize=7, rotation=90 if rotate else 0)
    ax.set_yticks(np.arange(len(rows)), rows, fontsize=7)
    for i in range(len(rows)):
        for j in range(len(columns)):
            if np.isfinite(matrix[i, j]):
                text = f"{matrix[i, j]:.2g}" if log else f"{matrix[i, j]:.2f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=6, color="white" if _dark(image, shown[i, j]) else "black")
    fig.colorbar(image, ax=ax, label=("log10 " if log else "") + label, fraction=0.05, pad=0.02)
    return fig


def _dark(image, value: float) -> bool:
    """Whether the colour ``image`` gives ``value`` is dark (white text on it)."""
    r, g, b, _ = image.cmap(image.norm(value))
    return 0.299 * r + 0.587 * g + 0.114 * b < 0.5


def block_heatmap(cells: Sequence[tuple[str, str, "float | None"]], label: str, title: str, log: bool = True) -> Figure:
    """``site_heatmap`` of (block, role, value) triples: one column per block (in order of
    appearance; "" for sites outside the blocks, shown as "-"), one row per role."""
    blocks = list(dict.fromkeys(b for b, _, _ in cells))
    roles = list(dict.fromkeys(r for _, r, _ in cells))
    grid: list[list] = [[None] * len(blocks) for _ in roles]
    for block, role, value in cells:
        grid[roles.index(role)][blocks.index(block)] = value
    return site_heatmap(roles, [b or "-" for b in blocks], grid, title, label=label, log=log, limits=None)
