"""The one atomic writer of every package: files and folders are built at a temporary path
beside their target and moved into place, so a crash or a full disk never leaves a
half-written artifact where a reader looks.

Replacing an existing folder takes two renames (target -> ``.NAME.<id>.old``, temp -> target).
Recovery rule for a crash between them: the next :func:`atomic_dir` (or :func:`recover`) on the
same path finds the target missing and the ``.old`` copy present, and moves that copy back
before it does anything else; stale ``.tmp`` folders of the same target are removed.

An operating-system error while writing (a full disk, a permission) is raised again as the
same ``OSError`` kind naming the target, not the hidden temporary path. :class:`ArtifactError`
is the error of a reader that finds an artifact missing, truncated or of another kind.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"
OLD_SUFFIX = ".old"
# the step graph's record of the step that made a folder (``pipelines.experiments.steps``):
# every job's output folder may hold it beside the job's own files
STEP_FILE = "recdistill_step.json"


class ArtifactError(ValueError):
    """An artifact on disk is missing, truncated, of another kind or made for other data."""


def _named(exc: OSError, path: Path) -> OSError:
    """``exc`` again, naming ``path`` (the target) instead of a temporary file."""
    err = type(exc)(exc.errno, exc.strerror or str(exc), str(path))
    err.__cause__ = exc
    return err


def _siblings(path: Path, suffix: str) -> list[Path]:
    """``.NAME.<token>SUFFIX`` beside ``path``, oldest first. The token (tempfile's random
    part) has no dot, so another target whose name starts with ``NAME.`` (``labels`` and
    ``labels.v2``) never claims these: no glob, which would also read ``[`` in NAME."""
    if not path.parent.exists():
        return []
    head = f".{path.name}."
    found = [
        p
        for p in path.parent.iterdir()
        if p.name.startswith(head)
        and p.name.endswith(suffix)
        and len(p.name) > len(head) + len(suffix)
        and "." not in p.name[len(head) : -len(suffix)]
    ]
    return sorted(found, key=lambda p: p.stat().st_mtime)


def recover(path: str | Path) -> Path:
    """Undo a crash between the two renames of a folder swap, and remove stale temporaries.

    If ``path`` is missing and a ``.NAME.*.old`` copy exists, the newest copy is moved back
    (it is the only complete artifact left); otherwise leftover ``.old`` copies are deleted.
    Stale ``.NAME.*.tmp`` files and folders (a kill during a save) are deleted too."""
    path = Path(path)
    olds = _siblings(path, OLD_SUFFIX)
    if olds and not path.exists():
        os.replace(olds.pop(), path)
    for p in olds + _siblings(path, TMP_SUFFIX):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return path


def _mode(p: Path, folder: bool) -> None:
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(p, (0o777 if folder else 0o666) & ~mask)  # mkdtemp/mkstemp make 0700/0600


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    A crash (or full disk) leaves the old file untouched and no partial file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    os.close(fd)
    try:
        write(Path(tmp))
        _mode(Path(tmp), folder=False)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno is not None:
            raise _named(exc, path) from exc
        raise
    return path


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; on success it becomes ``path``.

    An existing ``path`` is replaced (see the module docstring for the recovery rule). On an
    error the temporary folder is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover(path)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX))
    try:
        _mode(tmp, folder=True)
        yield tmp
        if path.exists():
            old = Path(
                tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=OLD_SUFFIX)
            )
            os.replace(path, old)  # replaces the empty placeholder folder
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(exc, OSError) and exc.errno is not None:
            if exc.filename is None or str(tmp) in str(exc.filename):
                raise _named(exc, path) from exc
        raise


def artifact_path(folder: str | Path, name: str, field: str = "file") -> Path:
    """``folder / name`` for a file name read from an artifact's metadata; a name that is
    absolute or climbs out of ``folder`` (``..``) is refused: an artifact reads only its own
    files."""
    p = Path(str(name))
    if not str(name) or p.is_absolute() or ".." in p.parts:
        raise ArtifactError(
            f"{folder}: metadata field {field!r} names {name!r}; expected a file name inside the "
            "folder (no absolute path, no '..')"
        )
    return Path(folder) / p


def portable_path(path: str | Path, folder: str | Path) -> str:
    """How a metadata file in ``folder`` records ``path``: relative to ``folder`` when it lies
    inside ``folder``'s parent (the run ``folder`` is a step of: ``../student_distilled/model``
    from ``compressed/``), else absolute. A run copied or moved whole, or read from another
    working folder, then still finds its parts (:func:`resolve_recorded`). A value that names
    no existing file or folder (a hub id) is kept as given."""
    if not Path(path).exists():
        return str(path)
    p, f = Path(path).resolve(), Path(folder).resolve()
    if p == f or f.parent in p.parents:
        return Path(os.path.relpath(p, f)).as_posix()
    return str(p)


def portable_paths(record: dict[str, Any], folder: str | Path, keys: tuple[str, ...]) -> dict:
    """``record`` (a job's config as a dict) with the paths under ``keys`` recorded by
    :func:`portable_path`; empty values (an input not given) stay as they are."""
    return {k: portable_path(v, folder) if k in keys and v else v for k, v in record.items()}


def resolve_recorded(recorded: str | Path, folder: str | Path) -> Path:
    """The path a metadata file in ``folder`` recorded (see :func:`portable_path`): a relative
    one is read against ``folder``; one recorded before paths were portable (relative to the
    job's working folder) is taken as it was when only that exists."""
    p = Path(str(recorded))
    if p.is_absolute():
        return p
    mine = Path(os.path.normpath(Path(folder) / p))
    return p if not mine.exists() and p.exists() else mine


def claim_output(
    path: str | Path,
    marker: str | tuple[str, ...],
    *,
    overwrite: bool,
    what: str,
    only: frozenset[str] | None = None,
) -> Path:
    """Check, before any work, that a job may write its artifact folder ``path``.

    Nothing a user did not make is deleted: a missing or empty folder is fine; a folder
    holding ``marker`` (this job's metadata file, or one of several) is replaced only with
    ``overwrite``; any
    other folder is refused, ``--overwrite`` or not, and so is one holding names outside
    ``only`` when given (names or ``fnmatch`` patterns: a model folder holds nothing but model
    files, a label folder nothing but its dataset and teacher files). Stale temporaries of ``path`` (a kill
    during the final save left ``.NAME.*.tmp`` beside it) are removed first."""
    path = Path(path)
    recover(path)
    if not path.exists():
        return path
    if not path.is_dir():
        raise ArtifactError(f"{path}: exists and is not a folder; choose another --out")
    if not any(path.iterdir()):
        return path
    markers = (marker,) if isinstance(marker, str) else marker
    if any((path / m).exists() for m in markers):
        extra = sorted(
            p.name
            for p in path.iterdir()
            if only is not None
            and p.name != STEP_FILE
            and not any(fnmatch.fnmatchcase(p.name, o) for o in only)
        )
        if extra:
            raise ArtifactError(
                f"{path} holds files that are not {what}: {extra[:5]}; recdistill replaces only "
                "its own artifacts (--overwrite too): move them away or choose another --out"
            )
        if overwrite:
            return path
        raise ArtifactError(
            f"{path} already holds {what} ({' or '.join(markers)}); pass --overwrite to replace it, or choose "
            "another --out"
        )
    found = sorted(p.name for p in path.iterdir())[:5]
    raise ArtifactError(
        f"{path} holds files that are not {what} (no {' or '.join(markers)}; found {found}); recdistill "
        "replaces only its own artifacts: choose another --out (--overwrite does not apply)"
    )


def read_json(path: str | Path, what: str) -> dict[str, Any]:
    """The JSON object in ``path`` (an artifact's metadata file): a missing file is a
    ``FileNotFoundError``, a corrupt one or one holding no object an :class:`ArtifactError`;
    both name the path (and the line and column of a syntax error) and ``what`` was expected."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; expected {what}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(
            f"{path}: not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}); expected "
            f"{what}; re-run the job that wrote it"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable ({exc}); expected {what}") from None
    if not isinstance(data, dict):
        raise ArtifactError(
            f"{path}: holds a JSON {type(data).__name__}, expected an object ({what}); re-run "
            "the job that wrote it"
        )
    return data


def refuse_out_inside(out: str | Path, inputs: dict[str, str | Path | None]) -> None:
    """Refuse, before any work, an output folder ``out`` that is (or lies inside) one of the
    job's input folders (``{flag: path}``; ``None`` and absent ones are skipped) or holds one of
    them: replacing ``out`` would then delete or change the job's own input."""
    o = Path(out).resolve()
    for flag, p in inputs.items():
        if p is None or str(p) == "" or not Path(p).exists():
            continue  # not given, or not on disk (a hub id; a missing input fails on reading)
        i = Path(p).resolve()
        if o == i or i in o.parents or o in i.parents:
            raise ArtifactError(
                f"--out {out} is inside (or holds) the input {flag} {p}; writing it would "
                f"replace the job's own input: choose an --out outside {p}"
            )


def load_npy(path: str | Path, what: str = "an array written by recdistill"):
    """``np.load`` (no pickle) with a missing or truncated file raised as :class:`ArtifactError`
    naming it."""
    import numpy as np

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; expected {what}")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        raise ArtifactError(
            f"{path}: unreadable or truncated .npy file ({exc}); expected {what}; re-run the job "
            "that wrote it"
        ) from exc


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (see :func:`atomic_write`)."""
    text = json.dumps(data, indent=2, default=_json_default) + "\n"
    return atomic_write(path, lambda p: p.write_text(text))


def write_text(path: str | Path, text: str) -> Path:
    """Write text atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda p: p.write_text(text))


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
