"""The folder of a saved :class:`~student.serving.index.ItemIndex`: its file names,
``meta.json`` (written, read back with each field's type checked), the id map, and the
single FAISS file read against its recorded sha256 (a sharded index's files:
``student.serving.shards``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from common.io import ArtifactError, read_json
from student.serving.config import factory_string
from student.serving.kinds import read_faiss
from student.serving.shards import file_sha256

FORMAT_NAME = "recdistill.item_index"
FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
IDS_FILE = "item_ids.npy"
META_FILE = "meta.json"


def index_meta(
    config, dim, index_dim, ids, fingerprint, mips_max_norm, provenance
) -> dict[str, Any]:
    """meta.json of an index (without its files' checksums)."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": config.to_dict(),
        "factory": factory_string(config, config.nlist),
        "dim": dim,
        "index_dim": index_dim,
        "n": len(ids),
        "id_dtype": str(ids.dtype),
        "fingerprint": fingerprint,
        "mips_max_norm": mips_max_norm,
        "faiss_version": faiss.__version__,
        "numpy_version": np.__version__,
        "provenance": provenance,
    }


def save_target(directory: str | os.PathLike) -> Path:
    """``directory`` if an index may be saved there: new, empty, or an index folder."""
    target = Path(directory)
    if target.exists():
        if not target.is_dir():
            raise ValueError(f"ItemIndex.save: {target} exists and is not a directory")
        if any(target.iterdir()) and not (target / META_FILE).exists():
            raise ValueError(
                f"ItemIndex.save: {target} is a non-empty folder without {META_FILE}; "
                "refusing to replace it (choose an empty or new folder)"
            )
    return target


def write_rest(tmp: Path, ids: np.ndarray, meta: dict[str, Any]) -> None:
    """The id map and meta.json beside the FAISS file(s) in ``tmp``."""
    np.save(tmp / IDS_FILE, ids, allow_pickle=False)
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))


def read_single(src: Path, meta: dict[str, Any], mmap: bool) -> tuple[faiss.Index, str]:
    """``index.faiss`` of ``src``, checked against meta.json's sha256; (index, its sha256)."""
    if not (src / INDEX_FILE).is_file():
        raise FileNotFoundError(f"ItemIndex.load: {src / INDEX_FILE} is missing")
    want, got = meta.get("index_sha256"), file_sha256(src / INDEX_FILE)
    if not isinstance(want, str):
        raise ValueError(
            f"{src / INDEX_FILE}: {src / META_FILE} records no index_sha256 (computed "
            f"{got}); an index without its checksum is refused; rebuild the index"
        )
    if got != want:
        raise ValueError(
            f"{src / INDEX_FILE}: sha256 differs from the one meta.json recorded at save time "
            f"(recorded {want}, computed {got}: a truncated, edited or swapped file); "
            "rebuild the index"
        )
    try:
        index = read_faiss(src / INDEX_FILE, mmap)
    except RuntimeError as exc:  # faiss raises RuntimeError on a truncated file
        raise ValueError(
            f"{src / INDEX_FILE}: unreadable or truncated FAISS index "
            f"({str(exc).splitlines()[0] if str(exc) else 'read failed'}); rebuild the index"
        ) from exc
    return index, got


# the fields ``load`` reads from meta.json, with the JSON types each may hold
_META_FIELDS: dict[str, tuple[type, ...]] = {
    "dim": (int,),
    "index_dim": (int,),
    "n": (int,),
    "fingerprint": (str,),
    "config": (dict,),
    "mips_max_norm": (int, float, type(None)),
}


def read_meta(path: Path) -> dict[str, Any]:
    """``meta.json`` of a saved index, each field ``load`` reads present with its JSON type;
    else an ``ArtifactError`` naming the file and the field."""
    meta = read_json(path, "the meta.json written by ItemIndex.save")
    for name, types in _META_FIELDS.items():
        if name not in meta:
            raise ArtifactError(f"{path}: no field {name!r}; rebuild the index")
        value = meta[name]
        if not isinstance(value, types) or isinstance(value, bool):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ArtifactError(
                f"{path}: field {name!r} is {value!r}; expected {want}; rebuild the index"
            )
    return meta


def check_same_ids(src: Path, ids: np.ndarray, expected: np.ndarray) -> None:
    if len(ids) != len(expected):
        raise ValueError(
            f"{src}: id map has {len(ids)} items, expected {len(expected)} items "
            "(the catalogue changed; rebuild the index)"
        )
    if ids.dtype.kind != expected.dtype.kind and not (
        ids.dtype.kind in "iu" and expected.dtype.kind in "iu"
    ):
        raise ValueError(
            f"{src}: id map dtype {ids.dtype} does not match expected ids dtype {expected.dtype}"
        )
    diff = np.flatnonzero(ids != expected)
    if len(diff):
        row = int(diff[0])
        raise ValueError(
            f"{src}: id map differs from the expected ids at row {row}: index has "
            f"{ids[row].item()!r}, expected {expected[row].item()!r} ({len(diff)} rows differ)"
        )
