"""The configurations of ``mixacc demo`` and of the committed reports under ``reports/``
(one per bundled model), as data."""

from __future__ import annotations

from ..presets import PRESETS
from .build import ReportConfig

__all__ = ["DEMO", "BUNDLED", "preset_report"]

_FORMATS = ("fp16", "bf16", "fp8-e4m3fn")
_SWEEP = dict(low="bf16", high="fp32", taus=(30.0, 10.0, 3.0, 1.0, 0.3, 0.1), criteria=("kappa", "kappa-prime"))

DEMO = ReportConfig(
    model="mnist1d-tanh", samples=1000, accs=_FORMATS, point_samples=100, **_SWEEP,
    title="mixacc demo: mnist1d-tanh with fp16, bf16 and fp8 accumulation",
)
"""``mixacc demo``: the bundled ``mnist1d-tanh`` on its whole test split (1000 samples),
validated in fp16, bf16 and fp8-e4m3fn accumulation; the tau sweep with low bf16 / high
fp32 and both criteria, where guided selection clearly beats random selection at the same
recompute fraction."""


_PAPER = PRESETS.get("paper")


def _model(name: str) -> ReportConfig:
    return ReportConfig(model=name, samples=None, accs=_FORMATS, **_SWEEP)


def _paper(name: str) -> ReportConfig:
    """The authors' configuration (the ``paper`` preset's) on model ``name``."""
    return ReportConfig(
        model=name, samples=None, weights_storage=_PAPER.weights, accs=(_PAPER.low, _PAPER.high, "fp8-e4m3fn"),
        low=_PAPER.low, high=_PAPER.high, taus=_PAPER.taus, criteria=_PAPER.criteria, point_samples=50,
        title=f"mixacc report: {name} in the authors' configuration (e4m3 storage, e4m3 / fp16 accumulation)",
    )


def preset_report(name: str, model: str, *, graph: bool) -> ReportConfig:
    """The report of a recompute preset (``mixacc recompute --preset NAME``, ``mixacc
    report --preset NAME``) on ``model`` (a graph when ``graph``: the preset's storage on
    graphs), on its whole test split."""
    row = PRESETS.get(name)
    storage = row.storage_for(graph)
    return ReportConfig(model=model, samples=None, weights_storage=row.weights, storage=storage,
                        accs=row.validated, low=row.low, high=row.high, taus=row.taus, criteria=row.criteria,
                        point_samples=50,
                        title=f"mixacc report: {model}, preset {name} ({row.low} / {row.high}, storage {storage})")


_GRAPH_SWEEP = dict(low="fp8-e4m3fn", high="fp32", criteria=("kappa",))

BUNDLED: dict[str, ReportConfig] = {
    **{name: _model(name) for name in ("mnist1d-tanh", "mnist1d-relu", "digits-tanh", "digits-relu")},
    **{name: _paper(name) for name in ("paper-mlp", _PAPER.model)},
    "digits-cnn": ReportConfig(model="digits-cnn", samples=None, accs=("bf16", "fp8-e4m3fn"),
                               taus=(30.0, 10.0, 3.0, 1.0, 0.3, 0.1), point_samples=100, **_GRAPH_SWEEP),
    "digits-transformer": ReportConfig(model="digits-transformer", samples=120, accs=("bf16", "fp8-e4m3fn"),
                                       taus=(3.0, 1.0, 0.3), point_samples=50, **_GRAPH_SWEEP),
    "h100-fp8": preset_report("h100-fp8", "mnist1d-tanh", graph=False),
    "h100-fp8-transformer": preset_report("h100-fp8", "digits-transformer", graph=True),
    "all-minilm-l6-v2": ReportConfig(model="all-minilm-l6-v2", data="sentences:16", samples=None,
                                     accs=("bf16", "fp8-e4m3fn"), taus=(3.0, 1.0, 0.3), point_samples=4,
                                     **_GRAPH_SWEEP),
}
"""One report per bundled model, ``reports/<name>/``, on the model's whole test split:
the same formats and sweep as the demo, except ``paper-mlp`` (the stand-in on MNIST-1D)
and ``paper-mlp-mnist`` (the authors' network on MNIST digits), which follow the authors'
configuration (``mixacc recompute --preset paper``: weights and biases rounded to e4m3
saturating, low e4m3 / high fp16 accumulation with the bias added last,
tau 1, 0.5, 0.3, 0.1, criterion kappa-prime); the graph models ``digits-cnn`` and
``digits-transformer`` (the first 120 test samples: its exact and bound passes make the
whole split a quarter of an hour; bf16 and fp8-e4m3fn validated per site; the policy with low
fp8-e4m3fn / high fp32: guided against LAMP, random and local-oracle selection at equal
recompute fractions); and ``h100-fp8``, the deployment question of the recompute preset
of that name: fp8 storage on H100 tensor cores with and without promotion every 128
(and bf16 accumulation of the same fp8 operands), on ``mnist1d-tanh`` and, as
``h100-fp8-transformer``, on ``digits-transformer`` (the outputs of its sums stored in
fp8 too, ``fp8-e4m3fn:sums``; its plain sums in fp32); and the pretrained
``all-minilm-l6-v2`` (extra ``minilm``) on the first 16 shipped sentences, as the
transformer graph above."""

