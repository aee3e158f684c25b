"""mixacc.analysis — condition numbers, bounds, verification, the recompute policy, the
cost model, reports and the ``mixacc`` command."""

__all__: list[str] = []
