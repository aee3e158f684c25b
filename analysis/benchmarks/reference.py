"""Benchmark section 'reference' (not built yet)."""

from __future__ import annotations

TITLE = "reference"


def run(quick: bool) -> list:
    return []
