"""Retrieval over an item index: over-fetch, drop each user's seen items, and the
``Retriever`` that encodes users with the student's user tower first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from student.serving.index import ItemIndex, _check_int_arg


def _seen_rows(seen: Any, n_queries: int) -> list[np.ndarray]:
    """Normalise ``seen`` (None, CSR matrix, or per-query sets/arrays) to int64 arrays."""
    if seen is None:
        return [np.empty(0, np.int64)] * n_queries
    if sp.issparse(seen):
        csr = sp.csr_matrix(seen)
        if csr.shape[0] != n_queries:
            raise ValueError(
                f"seen: sparse matrix has {csr.shape[0]} rows, expected one per query ({n_queries})"
            )
        return [
            csr.indices[csr.indptr[i] : csr.indptr[i + 1]].astype(np.int64)
            for i in range(n_queries)
        ]
    if not isinstance(seen, Sequence) and not isinstance(seen, np.ndarray):
        raise ValueError(
            f"seen: expected None, a scipy sparse matrix or a list of item-row sets, got "
            f"{type(seen).__name__}"
        )
    if len(seen) != n_queries:
        raise ValueError(f"seen: has {len(seen)} entries, expected one per query ({n_queries})")
    out = []
    for i, s in enumerate(seen):
        arr = np.fromiter(s, dtype=np.int64) if isinstance(s, (set, frozenset)) else np.asarray(s)
        if arr.size and arr.dtype.kind not in "iu":
            raise ValueError(f"seen[{i}]: expected integer item rows, got dtype {arr.dtype}")
        out.append(np.unique(arr.astype(np.int64).ravel()))
    return out


def retrieve(
    query_emb: np.ndarray,
    k: int,
    seen: Any,
    index: ItemIndex,
) -> np.ndarray:
    """Top-k original item ids per query, excluding seen items.

    query_emb [B, D]; ``seen``: None, a scipy sparse matrix [B, N] of item rows, or a list of B
    sets/arrays of item ROWS. Over-fetches k + max seen count (capped at N), filters, and
    re-fetches more for a query that is still short. Returns ids [B, k] (dtype of the id map).
    """
    _check_int_arg("k", k)
    n = index.n
    seen_rows = _seen_rows(seen, len(np.asarray(query_emb)))
    for i, s in enumerate(seen_rows):
        if s.size and (s.min() < 0 or s.max() >= n):
            bad = int(s[(s < 0) | (s >= n)][0])
            raise ValueError(f"seen[{i}]: item row {bad} is outside the catalogue [0, {n})")
        if n - len(s) < k:
            raise ValueError(
                f"retrieve: query {i} has {len(s)} seen items; the catalogue of {n} items leaves "
                f"{n - len(s)} unseen, fewer than k={k}"
            )
    max_seen = max((len(s) for s in seen_rows), default=0)
    fetch = min(k + max_seen, n)
    _, rows = index.search(query_emb, fetch)
    out = np.empty((len(seen_rows), k), dtype=np.int64)
    short = []
    for i, s in enumerate(seen_rows):
        picked = _filter(rows[i], s, k)
        if len(picked) < k:
            short.append(i)
        else:
            out[i] = picked
    q_all = np.asarray(query_emb)
    while short:
        if fetch >= n:
            raise RuntimeError(
                f"retrieve: the index returned fewer than k={k} unseen items for query "
                f"{short[0]} even when asked for all {n}; raise nprobe / ef_search"
            )
        fetch = min(2 * fetch, n)
        _, rows = index.search(q_all[short], fetch)
        still = []
        for j, i in enumerate(short):
            picked = _filter(rows[j], seen_rows[i], k)
            if len(picked) < k:
                still.append(i)
            else:
                out[i] = picked
        short = still
    return index.item_ids[out]


def _filter(rows: np.ndarray, seen: np.ndarray, k: int) -> np.ndarray:
    keep = rows[(rows >= 0) & ~np.isin(rows, seen)]
    return keep[:k]


class Retriever:
    """The serving entry point: user indices -> top-k original item ids, seen items excluded.

    ``model`` is a two-tower student (anything with ``encode_users(user_idx, history)``),
    ``index`` an :class:`ItemIndex` built from its item tower, ``histories`` the
    ``[n_users, L]`` history matrix the user tower reads (padded with ``n_items``), and
    ``seen`` a ``[n_users, n_items]`` sparse matrix of items never to return.
    """

    def __init__(self, model: Any, index: ItemIndex, histories: np.ndarray, seen: Any) -> None:
        seen = sp.csr_matrix(seen)
        if seen.shape[1] != index.n:
            raise ValueError(
                f"seen has {seen.shape[1]} item columns but the index holds {index.n} items"
            )
        if len(histories) != seen.shape[0]:
            raise ValueError(f"histories has {len(histories)} users but seen has {seen.shape[0]}")
        self.model, self.index, self.seen = model, index, seen
        self.histories = np.asarray(histories, dtype=np.int64)

    def retrieve(self, user_idx: Any, k: int) -> np.ndarray:
        """user_idx [B] -> original item ids [B, k]."""
        import torch

        users = np.asarray(user_idx, dtype=np.int64).reshape(-1)
        if users.size and (users.min() < 0 or users.max() >= len(self.histories)):
            raise ValueError(
                f"user_idx must lie in [0, {len(self.histories) - 1}]; got {users.min()}..{users.max()}"
            )
        with torch.no_grad():
            emb = self.model.encode_users(
                torch.as_tensor(users), torch.as_tensor(self.histories[users])
            )
        return retrieve(emb.numpy().astype(np.float32), k, self.seen[users], self.index)
