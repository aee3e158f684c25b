"""mixacc.analysis — condition numbers, bounds, verification, the recompute policy, the
cost model, reports and the ``mixacc`` command."""

__all__: list[str] = []

# condition numbers, bounds and validation load on first use (the pytest plugin imports this package)
_LAZY = {
    **dict.fromkeys(("absolute_sums", "condition_numbers", "activation_condition", "activation_derivative",
                     "max_abs_derivative"), "conditioning"),
    **dict.fromkeys(("gamma", "gamma_tilde", "model_constant", "local_bound", "global_bound", "parse_bound"), "bounds"),
    **dict.fromkeys(("validate", "Validation"), "validation"),
}
__all__ += list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# reports (matplotlib) load on first use as well
_LAZY.update(dict.fromkeys(("ReportConfig", "build_report", "write_report"), "report"))
__all__ += ["ReportConfig", "build_report", "write_report"]

# the recompute policy, its baselines, the sweep and the cost model load on first use too
_LAZY.update({
    **dict.fromkeys(("recompute", "recompute_multilevel", "recompute_static", "CRITERIA"), "policy"),
    **dict.fromkeys(("uniform_low", "uniform_high", "random_selection", "oracle_selection"), "baselines"),
    **dict.fromkeys(("sweep", "Sweep", "RunSummary", "output_metrics"), "sweep"),
    **dict.fromkeys(("COST_MODELS", "Cost", "CostModel", "get_cost_model"), "cost"),
})
__all__ += ["recompute", "recompute_multilevel", "recompute_static", "CRITERIA", "uniform_low", "uniform_high",
            "random_selection", "oracle_selection", "sweep", "Sweep", "RunSummary", "output_metrics", "COST_MODELS",
            "Cost", "CostModel", "get_cost_model"]
