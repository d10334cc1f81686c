"""The one atomic folder writer of ``student`` (``student`` imports nothing of ``pipelines``,
so it keeps its own; ``pipelines.core.io`` follows the same rule).

A folder is built at a temporary path beside its target and moved into place. Replacing an
existing folder takes two renames (target -> ``.NAME.<id>.old``, temp -> target); if a crash
falls between them, the next write to the same path moves the ``.old`` copy back first.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _siblings(path: Path, suffix: str) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.*{suffix}"), key=lambda p: p.stat().st_mtime)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it becomes ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    olds = _siblings(path, ".old")
    if olds and not path.exists():
        os.replace(olds.pop(), path)  # a crash between the two renames: restore the copy
    for p in olds + _siblings(path, ".tmp"):
        shutil.rmtree(p, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        os.chmod(tmp, 0o755)
        yield tmp
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
