"""The soft-label dataset: schema, metadata, and the checks a reader runs on load.

A soft-label dataset is a Hugging Face ``datasets`` dataset saved with ``save_to_disk`` in a
folder that also holds ``recdistill_labels.json`` (the metadata below). One row per scored
(user, candidate item) pair; rows are sorted by ``user`` then ``rank``.

| column    | dtype   | meaning |
|-----------|---------|---------|
| user_id   | string  | original user id |
| item_id   | string  | original item id |
| user      | int32   | user index in the dataset (0..n_users-1) |
| item      | int32   | item index in the dataset (0..n_items-1) |
| score     | float32 | teacher score in logit units (log-odds, or a calibrated similarity) |
| prob      | float32 | sigmoid(score): the Platt-calibrated probability that a *validation pair* is a positive (see below), not P(like) |
| observed  | bool    | the pair is a train interaction |
| rank      | int32   | position of the candidate in the user's list by teacher score (0 = best) |
| source    | string  | how the candidate was drawn (positive, uniform, popularity, hard, teacher) |

``prob`` and the level of ``score``: the teacher's mix is Platt-calibrated on the validation
pairs, each validation user's held-out positives against ``eval_negatives`` sampled items
(default 50: about 1:50 under the temporal protocol, about 1:5 on ML-100K's random split).
The Platt intercept absorbs that sampling ratio, so ``prob`` is P(positive | a pair drawn like
the validation pairs); another ratio shifts every ``score`` by about the same constant and
leaves each user's ranking unchanged. Use differences within a user's list (the student's
listwise KL, and its soft BCE under ``teacher_norm="list"``, do) or correct the prior before
reading ``prob`` as a like rate.

Metadata (``recdistill_labels.json``): ``schema_version``, ``teacher`` (kind, model, adapter,
template and its hash, parts and weights for a hybrid teacher), ``candidates`` (config),
``dataset`` (name, fingerprint), ``split`` (protocol, seed, fingerprint), ``seed``,
``versions`` (library versions), ``teacher_quality`` (AUC, NDCG@10 on validation), and
optional ``item_embeddings`` (file name of a ``[n_items, D]`` float32 ``.npy`` beside it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from common.io import read_json

SCHEMA_VERSION = 1
META_FILE = "recdistill_labels.json"
COLUMNS: dict[str, str] = {
    "user_id": "string",
    "item_id": "string",
    "user": "int32",
    "item": "int32",
    "score": "float32",
    "prob": "float32",
    "observed": "bool",
    "rank": "int32",
    "source": "string",
}


class LabelError(ValueError):
    """A soft-label dataset is missing, malformed, or made for other data."""


def features():
    """The ``datasets.Features`` of the schema."""
    from datasets import Features, Value

    return Features({name: Value(dtype) for name, dtype in COLUMNS.items()})


def validate_table(ds, where: str, n_users: int | None = None, n_items: int | None = None) -> None:
    """Check columns, dtypes and values of a labels dataset (or shard)."""
    have = {name: str(f.dtype) for name, f in ds.features.items()}
    for name, dtype in COLUMNS.items():
        if name not in have:
            raise LabelError(f"{where}: missing column {name!r}; expected columns {list(COLUMNS)}")
        if have[name] != dtype:
            raise LabelError(f"{where}: column {name!r} has dtype {have[name]}; expected {dtype}")
    if len(ds) == 0:
        raise LabelError(f"{where}: no rows")
    t = columns(ds, ("user", "item", "score", "prob"))
    score = t["score"]
    prob = t["prob"]
    if not np.isfinite(score).all():
        i = int(np.flatnonzero(~np.isfinite(score))[0])
        raise LabelError(f"{where}: row {i} has a non-finite teacher score {float(score[i])}")
    if ((prob < 0) | (prob > 1) | ~np.isfinite(prob)).any():
        i = int(np.flatnonzero(~((prob >= 0) & (prob <= 1)))[0])
        raise LabelError(f"{where}: row {i} has prob {float(prob[i])}; expected a value in [0, 1]")
    for col, n in (("user", n_users), ("item", n_items)):
        v = t[col]
        if v.min() < 0 or (n is not None and v.max() >= n):
            raise LabelError(f"{where}: column {col!r} holds index {int(v.max())} outside [0, {n})")


def columns(ds, names=None) -> dict[str, np.ndarray]:
    """The dataset's columns (all, or ``names``) as numpy arrays in row order, read one column
    at a time from Arrow (strings become object arrays). Never one pandas frame: for millions
    of rows with string columns that costs many times the table's size."""
    arrow = ds.with_format("arrow")
    names = ds.column_names if names is None else names
    return {name: arrow[name].to_numpy() for name in names}


def load_labels(
    path: str | Path,
    *,
    dataset_fingerprint: str | None = None,
    split_fingerprint: str | None = None,
    n_users: int | None = None,
    n_items: int | None = None,
):
    """Load and check a soft-label dataset; refuse labels made for other data.

    Returns ``(datasets.Dataset, metadata dict)``."""
    from datasets import load_from_disk

    path = Path(path)
    meta_path = path / META_FILE
    if not meta_path.exists():
        raise LabelError(
            f"{path}: not a soft-label dataset ({META_FILE} missing); create one with "
            "`recdistill generate-labels`"
        )
    meta = read_json(meta_path, "the metadata written by generate-labels")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise LabelError(
            f"{meta_path}: schema_version {meta.get('schema_version')!r}; this recdistill reads {SCHEMA_VERSION}"
        )
    got = meta.get("dataset", {}).get("fingerprint")
    if dataset_fingerprint is not None and got != dataset_fingerprint:
        config = meta.get("config")
        made_for = (config.get("dataset") if isinstance(config, dict) else None) or meta.get(
            "dataset", {}
        ).get("name")
        raise LabelError(
            f"{path}: labels were made for --dataset {made_for!r} (dataset fingerprint {got!r}), "
            f"but the data here has {dataset_fingerprint!r}; pass the same data flags "
            "as generate-labels had (--dataset with --items/--users/--columns/--item-columns/"
            "--user-columns/--genre-sep, or that string as --dataset), or regenerate the labels "
            "for this dataset"
        )
    got = meta.get("split", {}).get("fingerprint")
    if split_fingerprint is not None and got != split_fingerprint:
        setting = meta.get("split", {}).get("cold_setting")
        made = f" ({setting} cold items)" if setting else ""
        raise LabelError(
            f"{path}: labels were made for split fingerprint {got!r}{made}, but this split has "
            f"{split_fingerprint!r} (another protocol, seed or --cold-setting?); regenerate the "
            "labels"
        )
    try:
        ds = load_from_disk(str(path))
        validate_table(ds, str(path), n_users, n_items)
    except LabelError:
        raise
    except (ValueError, OSError, FileNotFoundError) as exc:  # pyarrow's ArrowInvalid is one
        raise LabelError(
            f"{path}: the label table is unreadable or truncated ({' '.join(str(exc).split())}); "
            "regenerate the labels with `recdistill generate-labels --overwrite`"
        ) from exc
    return ds, meta
