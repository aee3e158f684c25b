"""pytest plugin (entry point ``pytest11``): precision-emulation tests for your models.

Loaded in every pytest session, so it imports nothing heavy until used. It gives

* :func:`assert_accumulation_safe` — run the model on data with emulated accumulation,
  compare with the exact forward pass, and fail with a readable message (which layer,
  which component, how far) when the output's relative error or the flip rate exceeds
  its threshold, or when a rigorous bound is violated;
* fixtures ``mixacc_model`` (load a model: a path or a bundled name), ``mixacc_data``
  (load data: a spec, default split ``test``) and ``accumulation_safe`` (the assertion,
  with the sample count of ``--mixacc-samples``).

Example::

    def test_fp16_is_safe(accumulation_safe):
        accumulation_safe("digits-relu", "digits", acc="fp16", max_flip_rate=0.0, max_rel_error=1e-2)
"""

from __future__ import annotations

import pytest

__all__ = ["assert_accumulation_safe", "DEFAULT_SAMPLES"]

DEFAULT_SAMPLES = 1000


def pytest_addoption(parser) -> None:
    group = parser.getgroup("mixacc", "mixacc precision emulation")
    group.addoption("--mixacc-samples", type=int, default=DEFAULT_SAMPLES, metavar="N",
                    help=f"samples used by the accumulation_safe fixture (default {DEFAULT_SAMPLES})")


def _load(model, data, samples):
    from emulator.data import Dataset, load_model_data
    from emulator.modelio import load_model

    net = load_model(model) if isinstance(model, str) else model
    if data is None or isinstance(data, str):
        data = load_model_data(net, data)
    if not isinstance(data, Dataset):
        import numpy as np

        data = Dataset(np.asarray(data, dtype=np.float64), None, "array", "given")
    return net, data.head(samples)


def _where(result, layer: int, which: dict) -> str:
    act = result.layers[layer].activation
    return (f"layer {layer} ({act}), component {which['component']}, sample {which['sample']}: computed "
            f"{which['computed']:.6g}, exact {which['exact']:.6g}")


def _failures(result, max_flip_rate, max_rel_error) -> list[str]:
    out = []
    if result.violations:
        for layer in result.layers:
            for kind, s in (("local", layer.local), ("global", layer.global_)):
                if s.violations and s.closest:
                    c = s.closest
                    out.append(f"{s.violations} certain {kind} bound violations in layer {layer.index}; worst at "
                               f"component {c['component']}, sample {c['sample']}: error {c['measured']:.3g} > bound "
                               f"{c['bound']:.3g} (the bound or the emulator is wrong)")
    s = result.output
    if max_rel_error is not None and s.max_rel_error > max_rel_error:
        w = s.worst_relative
        out.append(f"output relative error {s.max_rel_error:.3g} > max_rel_error {max_rel_error:g} at "
                   f"{_where(result, len(result.layers) - 1, w)} (off by {abs(w['computed'] - w['exact']):.3g})")
    if max_flip_rate is not None and result.flip_rate > max_flip_rate:
        out.append(f"flip rate {result.flip_rate:.3%} ({result.flips} of {result.samples} samples change class) > "
                   f"max_flip_rate {max_flip_rate:.3%}")
    return out


def _diagnosis(result) -> list[str]:
    lines = []
    for layer in result.layers:
        s = layer.local
        if s.worst_relative is not None:
            w = s.worst_relative
            lines.append(f"  layer {layer.index} ({layer.activation}, {layer.inputs}->{layer.outputs}): largest local "
                         f"relative error {s.max_rel_error:.3g} at component {w['component']}, sample {w['sample']}; "
                         f"output error up to {layer.global_.max_rel_error:.3g} relative")
    return lines


def assert_accumulation_safe(model, data=None, acc="fp16", max_flip_rate: "float | None" = 0.0,
                             max_rel_error: "float | None" = 1e-2, *, storage=None, samples: "int | None" = DEFAULT_SAMPLES,
                             bound: str = "deterministic"):
    """Fail (AssertionError) unless accumulating ``model`` in ``acc`` keeps the output's
    largest relative error <= ``max_rel_error`` and the fraction of samples whose class
    changes <= ``max_flip_rate`` against the exact pass (None skips a check), and the
    rigorous bounds hold. ``model``: a Network, a path or a bundled name; ``data``: a
    spec (default: the model's own test data), a Dataset or an (N, n) array; ``samples``:
    the first N. Returns the :class:`analysis.validation.Validation`."""
    __tracebackhide__ = True
    from .validation import validate

    net, ds = _load(model, data, samples)
    result = validate(net, ds.x, acc, bound, storage, labels=ds.y, data_name=ds.name)
    failures = _failures(result, max_flip_rate, max_rel_error)
    if failures:
        head = (f"accumulation {result.accumulation['spec']} is not safe for {net.name or 'the model'} on {ds.name} "
                f"({result.samples} samples{', storage ' + result.storage if result.storage else ''}):")
        raise AssertionError("\n".join([head, *(f"- {f}" for f in failures), *_diagnosis(result)]))
    return result


@pytest.fixture
def mixacc_model():
    """``mixacc_model(spec)``: a model from a path or a bundled name."""
    from emulator.modelio import load_model

    return load_model


@pytest.fixture
def mixacc_data():
    """``mixacc_data(spec, split="test", samples=None)``: a Dataset (first ``samples``)."""
    from emulator.data import load_data

    def load(spec, split: str = "test", samples: "int | None" = None, n_inputs: "int | None" = None):
        return load_data(spec, split, n_inputs=n_inputs).head(samples)

    return load


@pytest.fixture
def accumulation_safe(request):
    """:func:`assert_accumulation_safe` with ``samples`` from ``--mixacc-samples``."""
    default = request.config.getoption("mixacc_samples", DEFAULT_SAMPLES)

    def check(model, data=None, acc="fp16", max_flip_rate=0.0, max_rel_error=1e-2, **kwargs):
        __tracebackhide__ = True
        kwargs.setdefault("samples", default)
        return assert_accumulation_safe(model, data, acc, max_flip_rate, max_rel_error, **kwargs)

    return check
