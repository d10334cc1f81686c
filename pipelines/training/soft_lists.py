"""Per-user soft-label lists read from a label dataset, padded to one length for batched
distillation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.io import artifact_path, load_npy
from pipelines.data import InteractionData, Split
from pipelines.labels.schema import columns, load_labels


@dataclass
class SoftLists:
    """Per-user candidate lists from a soft-label dataset, padded to L with mask False."""

    items: np.ndarray  # [n_users, L] int64 (0 where padded)
    scores: np.ndarray  # [n_users, L] float32
    probs: np.ndarray  # [n_users, L] float32
    observed: np.ndarray  # [n_users, L] bool
    mask: np.ndarray  # [n_users, L] bool
    users: np.ndarray  # users with at least one candidate
    item_embeddings: np.ndarray | None


def soft_lists(
    path: str,
    data: InteractionData,
    split: Split,
    keep_observed: bool = True,
    source: str | None = None,
) -> tuple[SoftLists, dict]:
    """Each user's candidates (only those of candidate ``source``, e.g. "cold", if given)."""
    ds, meta = load_labels(
        path,
        dataset_fingerprint=data.fingerprint(),
        split_fingerprint=split.fingerprint(),
        n_users=data.n_users,
        n_items=data.n_items,
    )
    t = columns(ds)
    user, item = t["user"].astype(np.int64), t["item"].astype(np.int64)
    score, prob, obs, rank = t["score"], t["prob"], t["observed"], t["rank"]
    keep = np.ones(len(user), bool) if keep_observed else ~obs
    if source is not None:
        keep &= t["source"] == source
    user, item, score, prob, obs, rank = (a[keep] for a in (user, item, score, prob, obs, rank))
    order = np.lexsort((rank, user))
    user, item, score, prob, obs = (a[order] for a in (user, item, score, prob, obs))
    counts = np.bincount(user, minlength=data.n_users)
    L = int(counts.max())
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    col = np.arange(len(user)) - starts[user]
    shape = (data.n_users, L)
    out = SoftLists(
        items=np.zeros(shape, np.int64),
        scores=np.zeros(shape, np.float32),
        probs=np.zeros(shape, np.float32),
        observed=np.zeros(shape, bool),
        mask=np.zeros(shape, bool),
        users=np.flatnonzero(counts > 0),
        item_embeddings=None,
    )
    out.items[user, col] = item
    out.scores[user, col] = score
    out.probs[user, col] = prob
    out.observed[user, col] = obs
    out.mask[user, col] = True
    emb_name = meta.get("item_embeddings")
    if emb_name:
        out.item_embeddings = load_npy(artifact_path(path, emb_name, "item_embeddings")).astype(
            np.float32
        )
    return out, meta


def label_item_embeddings(path: str, dataset_fingerprint: str | None = None) -> np.ndarray | None:
    """The teacher's frozen item embeddings [I, D] of a label folder (content, not labels), or
    None when it has none; the folder's schema is checked as for the labels, and labels made
    for another dataset (``dataset_fingerprint``) are refused."""
    _, meta = load_labels(path, dataset_fingerprint=dataset_fingerprint)
    name = meta.get("item_embeddings")
    return (
        load_npy(artifact_path(path, name, "item_embeddings")).astype(np.float32) if name else None
    )
