"""The library versions an artifact records (one list for every writer)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

PACKAGES = (
    "recdistill",
    "torch",
    "transformers",
    "datasets",
    "peft",
    "sentence-transformers",
    "safetensors",
    "faiss-cpu",
    "numpy",
)


def versions() -> dict[str, str]:
    """``{package: version}`` of the installed packages that shape artifacts, plus Python's
    (a package that is not installed is left out). Read from package metadata: nothing is
    imported."""
    out = {"python": platform.python_version()}
    for pkg in PACKAGES:
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out
