"""Benchmark section 'accumulation' (not built yet)."""

from __future__ import annotations

TITLE = "accumulation"


def run(quick: bool) -> list:
    return []
