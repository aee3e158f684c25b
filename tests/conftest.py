"""Shared fixtures: ``run_cli`` runs ``python -m analysis.cli ARGS...`` as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def run_cli():
    """``run_cli(*args, timeout=120, cwd=None) -> (returncode, stdout, stderr)`` of
    ``python -m analysis.cli *args``, run from the repository root unless ``cwd`` is given."""

    def run(*args: str, timeout: float = 120, cwd: "str | Path | None" = None) -> tuple[int, str, str]:
        proc = subprocess.run([sys.executable, "-m", "analysis.cli", *map(str, args)], capture_output=True,
                              text=True, timeout=timeout, cwd=cwd or REPO, stdin=subprocess.DEVNULL)
        return proc.returncode, proc.stdout, proc.stderr

    return run
