"""The library versions an artifact records (one list for every writer), and the source
commit a run records (``source_commit``)."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

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


def source_commit(root: str | Path | None = None) -> str:
    """The git commit of the recdistill source tree at ``root`` (default: the one this module
    is in), short, with ``+dirty`` when a tracked file differs from it; ``"unknown"`` when
    ``root`` is not the top of a git checkout (an installed wheel) or git is missing."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[1]

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True,
                                  text=True, timeout=30)  # fmt: skip
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != root.resolve():
        return "unknown"  # not a checkout of its own (site-packages inside another repo)
    head = git("rev-parse", "--short", "HEAD")
    if not head:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no")
    return f"{head}+dirty" if dirty else head
