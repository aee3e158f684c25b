"""Benchmark section 'rounding' (not built yet)."""

from __future__ import annotations

TITLE = "rounding"


def run(quick: bool) -> list:
    return []
