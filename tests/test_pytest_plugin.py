"""The pytest plugin: loaded through its entry point in every session, cheap to import,
its fixtures and assert_accumulation_safe with a readable failure message."""

from __future__ import annotations

import subprocess
import sys

pytest_plugins = ("pytester",)


def test_plugin_is_registered_and_imports_nothing_heavy():
    code = ("import sys; import analysis.pytest_plugin as p; "
            "print(all(m not in sys.modules for m in ('analysis.validation', 'analysis.bounds', 'analysis.conditioning')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "True"


def test_option_listed_in_help(pytester):
    result = pytester.runpytest("--help")
    result.stdout.fnmatch_lines(["*--mixacc-samples=N*"])


def test_passing_and_failing_checks(pytester):
    pytester.makepyfile(
        """
        from analysis.pytest_plugin import assert_accumulation_safe

        def test_fp32_safe(accumulation_safe):
            result = accumulation_safe("digits-relu", acc="fp32", max_flip_rate=0.0, max_rel_error=1e-3)
            assert result.samples == 8 and result.violations == 0

        def test_fixtures(mixacc_model, mixacc_data):
            net = mixacc_model("digits-tanh")
            data = mixacc_data("digits", samples=5)
            assert_accumulation_safe(net, data, acc="fp16", max_rel_error=None, max_flip_rate=1.0, samples=5)

        def test_bf16_not_safe(accumulation_safe):
            accumulation_safe("digits-tanh", "digits", acc="bf16", max_flip_rate=0.0, max_rel_error=1e-6)
        """
    )
    result = pytester.runpytest("--mixacc-samples", "8", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, failed=1)
    result.stdout.fnmatch_lines([
        "*accumulation bf16:recursive is not safe for digits-tanh on digits (8 samples):*",
        "*output relative error * > max_rel_error 1e-06 at layer 2 (identity), component *, sample *: computed *, "
        "exact * (off by *)*",
        "*layer 0 (tanh, 64->128): largest local relative error*",
    ])
