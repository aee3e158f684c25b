"""mixacc.analysis — condition numbers, bounds, verification, the recompute policy, the
cost model, reports and the ``mixacc`` command.

Names load on first use: the pytest plugin imports this package in every pytest run,
and reports pull in matplotlib.
"""

import importlib

_LAZY = {
    **dict.fromkeys(("ratio", "absolute_sums", "condition_numbers", "activation_condition", "activation_derivative",
                     "max_abs_derivative"), "conditioning"),
    **dict.fromkeys(("gamma", "gamma_tilde", "model_constant", "local_bound", "global_bound", "parse_bound"), "bounds"),
    **dict.fromkeys(("validate", "Validation", "layer_components", "LayerComponents"), "validation"),
    **dict.fromkeys(("recompute", "recompute_multilevel", "recompute_static", "CRITERIA"), "policy"),
    **dict.fromkeys(("MixedRun", "mixed_forward"), "mixed"),
    **dict.fromkeys(("METHODS", "Method"), "methods"),
    **dict.fromkeys(("PRESETS", "Preset"), "presets"),
    **dict.fromkeys(("emulate", "Emulation"), "emulation"),
    **dict.fromkeys(("certify", "Certification", "CertifyPolicy"), "certification"),
    **dict.fromkeys(("size_layers",), "sizing"),
    **dict.fromkeys(("size_graph",), "graph_sizing"),
    **dict.fromkeys(("check_sizing", "check_graph_sizing"), "sizing_checks"),
    **dict.fromkeys(("uniform_low", "uniform_high", "random_selection", "local_oracle_selection"), "baselines"),
    **dict.fromkeys(("sweep", "sweep_record", "Sweep", "RunSummary", "output_metrics"), "sweep"),
    **dict.fromkeys(("COST_MODELS", "Cost", "CostModel", "get_cost_model"), "cost"),
    **dict.fromkeys(("ReportConfig", "build_report", "write_report"), "report"),
}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
