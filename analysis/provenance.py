"""What produced a result: configuration, seed, package versions, platform."""

from __future__ import annotations

import datetime as _dt
import platform
import sys
from importlib import metadata

__all__ = ["provenance", "package_versions"]

_PACKAGES = ("mixacc", "numpy", "numba", "mpmath", "sympy", "scipy", "scikit-learn", "matplotlib", "mnist1d")


def package_versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in (*_PACKAGES, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(config: dict, seed: int | None = None) -> dict:
    """A JSON-ready record: the configuration, seed, versions, Python and platform, and
    the cluster that ran the tasks (None in-process)."""
    from .distributed import cluster_record

    return {
        "config": config,
        "seed": seed,
        "versions": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "command": " ".join(sys.argv),
        "cluster": cluster_record(),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
