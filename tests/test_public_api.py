"""The public surface is pinned: adding or removing a name is a deliberate change here."""

import ast
from pathlib import Path

import analysis
import emulator

EMULATOR_API = {
    "ACTIVATIONS", "Accumulation", "Activation", "DataError", "Dataset", "ExactForward", "FORMATS", "Format",
    "FormatSpecError", "ForwardResult", "Layer", "MixaccError", "ModelFileError", "Network", "ORDERS",
    "ROUNDING_MODES", "RoundingMode", "ShapeError", "UnknownNameError", "bundled_models", "exact_forward",
    "exact_layer", "exact_linear", "format_names", "from_onnx", "from_sklearn", "from_torch", "get_activation",
    "get_format", "get_rounding", "linear", "load_data", "load_model", "parse_accumulation", "round_to", "save_model",
    "accuracy", "flip_rate", "predicted_class", "relative_error",
}
ANALYSIS_API = {
    "ratio", "absolute_sums", "condition_numbers", "activation_condition", "activation_derivative",
    "max_abs_derivative", "gamma", "gamma_tilde", "model_constant", "local_bound", "global_bound", "parse_bound",
    "validate", "Validation", "layer_components", "LayerComponents", "recompute", "recompute_multilevel",
    "recompute_static", "CRITERIA", "uniform_low", "uniform_high", "random_selection", "local_oracle_selection", "sweep",
    "sweep_record", "Sweep", "RunSummary", "output_metrics", "COST_MODELS", "Cost", "CostModel", "get_cost_model",
    "ReportConfig", "build_report", "write_report", "MixedRun", "mixed_forward", "METHODS", "Method", "PRESETS",
    "Preset", "emulate", "Emulation", "certify", "Certification", "CertifyPolicy", "size_layers", "check_sizing",
    "size_graph", "check_graph_sizing",
}


def test_emulator_api_is_pinned_and_resolves():
    assert set(emulator.__all__) == EMULATOR_API
    for name in emulator.__all__:
        assert getattr(emulator, name) is not None


def test_analysis_api_is_pinned_and_resolves():
    assert set(analysis.__all__) == ANALYSIS_API
    for name in analysis.__all__:
        assert getattr(analysis, name) is not None


def test_emulator_never_imports_analysis():
    root = Path(emulator.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n == "analysis" or n.startswith("analysis.")]
    assert offenders == []


def _package_imports(package) -> dict[str, set[str]]:
    """Module -> modules of the same package it imports (anywhere in its body)."""
    root = Path(package.__file__).parent
    name = package.__name__
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        rel = path.relative_to(root).with_suffix("")
        parts = [name, *rel.parts] if rel.name != "__init__" else [name, *rel.parts[:-1]]
        module = ".".join(parts)
        here = parts if rel.name == "__init__" else parts[:-1]
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join([*here[:len(here) - node.level + 1], *([base] if base else [])])
                if base == name or base.startswith(name + "."):
                    deps.add(base)
                    deps.update(f"{base}.{a.name}" for a in node.names)
        graph[module] = deps
    packages = {".".join([name, *p.relative_to(root).parent.parts]).rstrip(".") for p in root.rglob("__init__.py")}
    return {m: {d for d in deps if d in graph and d != m and d not in packages} for m, deps in graph.items()
            if m not in packages}


def test_no_import_cycles_between_modules():
    """No module imports itself through others (packages' re-exports aside)."""
    for package in (emulator, analysis):
        graph = _package_imports(package)
        for start in graph:
            seen, stack = set(), list(graph[start])
            while stack:
                module = stack.pop()
                assert module != start, f"{start} imports itself through {sorted(seen)}"
                if module not in seen:
                    seen.add(module)
                    stack.extend(graph[module])
