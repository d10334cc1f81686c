"""Full-catalogue ranking metrics as plain numpy functions.

Definitions (binary relevance, ``rel`` = the user's held-out items):
- Recall@K = |top-K ∩ rel| / |rel|
- NDCG@K = sum_{r<=K, hit} 1/log2(r+1) / sum_{r<=min(K,|rel|)} 1/log2(r+1)
- MRR@K = 1 / rank of the first hit within K (0 if none)
- HitRate@K = 1 if any hit within K
Cross-checked against ranx in tests.

Ties: equal scores are ordered by a seeded random order of the items (:func:`tie_ranks`,
``tie_seed``, default 0), the same for every user and every ranking the project makes (the
benchmark, the teacher's saved top-k, the index benchmark's exact search), not by the lower
item index: in MovieLens a lower index is a more popular film, so index order would give a
scorer with many ties popularity it does not have.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import scipy.sparse as sp

KS = (10, 20)
METRICS = ("recall", "ndcg", "mrr", "hit_rate")
RANKING_TIES = "seeded_item_order"  # the rule of tie_ranks, as reports name it


@lru_cache(maxsize=8)
def tie_ranks(n_items: int, tie_seed: int = 0) -> np.ndarray:
    """[n_items] int64, read-only: item ``j``'s place in the seeded tie order (a permutation of
    ``0..n_items-1``); among equal scores the lower place ranks first."""
    order = np.random.default_rng(tie_seed).permutation(n_items)
    ranks = np.empty(n_items, dtype=np.int64)
    ranks[order] = np.arange(n_items)
    ranks.flags.writeable = False
    return ranks


@lru_cache(maxsize=8)
def tie_order(n_items: int, tie_seed: int = 0) -> np.ndarray:
    """[n_items] int64, read-only: the items in the seeded tie order (the inverse of
    :func:`tie_ranks`)."""
    order = np.empty(n_items, dtype=np.int64)
    order[tie_ranks(n_items, tie_seed)] = np.arange(n_items)
    order.flags.writeable = False
    return order


def topk(
    scores: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    rows=None,
    overwrite: bool = False,
    tie_seed: int = 0,
) -> np.ndarray:
    """Indices of the ``k`` best items per row of ``scores`` [B, I], best first; equal scores
    in the seeded tie order of the items (:func:`tie_ranks` of ``tie_seed``), not by index.

    ``exclude`` [n_users, I] marks items never to return; ``rows`` [B] are the users of
    ``scores`` in it (default: 0..B-1). ``overwrite``: ``scores`` (float32) may be changed in
    place (the excluded cells set to -inf) instead of copied.

    Rows are cut down before any sort: split into ``m >= k`` blocks, the k-th largest of
    the block maxima is a score that at least k items reach, so every item of the top k (ties
    included) scores at least that. One pass of block maxima and one of comparisons replace
    numpy's single-threaded ``argpartition`` over the whole block and its [B, I] int64 index
    array (512 MB for a block of 64M scores); the result is the same. A row whose bound many
    items tie (a sparse scorer: most items score 0) is not sorted whole but read in tie order
    (:func:`_wide_row_topk`), with the same result."""
    if overwrite and isinstance(scores, np.ndarray) and scores.dtype == np.float32:
        s = scores
    else:
        s = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None:
        rows = np.arange(len(s)) if rows is None else np.asarray(rows)
        ex = exclude[rows].tocoo()
        s[ex.row, ex.col] = -np.inf
    n_rows, n_cols = s.shape
    k = min(k, n_cols)
    if k == 0 or n_rows == 0:
        return np.zeros((n_rows, k), dtype=np.int64)
    ranks = tie_ranks(n_cols, tie_seed)
    m = max(k, min(1024, n_cols // 8))  # blocks a row: at least k, of 8 or more items if it can
    width = n_cols // m
    if width < 2:  # fewer than 2k items a row: sort them whole
        order = np.lexsort((np.broadcast_to(ranks, s.shape), -s), axis=1)[:, :k]
        return order.astype(np.int64, copy=False)
    block_max = s[:, : m * width].reshape(n_rows, m, width).max(axis=2)  # [B, m]
    bound = -np.partition(-block_max, k - 1, axis=1)[:, k - 1]  # k-th largest block maximum
    at_least = s >= bound[:, None]
    wide = at_least.sum(1) > WIDE_ROW * k  # e.g. a sparse scorer: most of a row ties at 0
    out = np.empty((n_rows, k), dtype=np.int64)
    for row in np.flatnonzero(wide):
        out[row] = _wide_row_topk(s[row], k, bound[row], ranks, tie_order(n_cols, tie_seed))
    narrow = np.flatnonzero(~wide)
    if len(narrow):
        rows_at_least = at_least[narrow] if len(narrow) < n_rows else at_least
        r, c = np.nonzero(rows_at_least)  # row-major: rows ascending, items ascending
        v = s[narrow[r], c]
        order = np.lexsort((ranks[c], -v, r))  # by row, then score descending, then tie order
        r, c = r[order], c[order]
        starts = np.searchsorted(r, np.arange(len(narrow)))
        pick = starts[:, None] + np.arange(k)  # every row has at least k candidates
        out[narrow] = c[pick]
    return out


WIDE_ROW = 64  # a row with more than 64 k items at or above its bound: _wide_row_topk


def _wide_row_topk(
    row: np.ndarray, k: int, bound: float, ranks: np.ndarray, order: np.ndarray
) -> np.ndarray:
    """:func:`topk` of one row [I] whose bound (a score at least ``k`` items reach) is tied by
    many items, without sorting them all: the items above ``bound`` (fewer than ``k``: they
    all belong, by score then tie order), then the items at ``bound`` with the lowest tie
    places. Looks among the first items of the tie order before it scans the whole row. With
    ``k`` or more items above ``bound``, only those are sorted."""
    above = np.flatnonzero(row > bound)
    if len(above) >= k:
        return above[np.lexsort((ranks[above], -row[above]))[:k]]
    above = above[np.lexsort((ranks[above], -row[above]))]
    need = k - len(above)
    head = order[: min(len(order), 4 * need + 256)]
    tied = head[row[head] == bound]  # in tie order already
    if len(tied) < need:  # too few in the head: all tied items, by tie place
        tied = np.flatnonzero(row == bound)
        tied = tied[np.argsort(ranks[tied], kind="stable")]
    return np.concatenate([above, tied[:need]])


def block_users(n_items: int, batch_size: int = 1024, max_cells: int = 2**26) -> int:
    """Users per scoring block: ``batch_size``, fewer when ``batch_size x n_items`` passes
    ``max_cells`` (64M cells: a 256 MB float32 block)."""
    return max(1, min(batch_size, max_cells // max(1, n_items)))


def sample_users(truth: sp.csr_matrix, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` users drawn (seeded, without replacement) from the users with a
    held-out item in ``truth`` [n_users, I]; all of them when ``n`` is 0 or not smaller."""
    truth = truth.tocsr()
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    if n < 0:
        raise ValueError(f"sample_users: n={n}; expected >= 0 (0 = all users)")
    if n == 0 or n >= len(users):
        return users
    return np.sort(np.random.default_rng(seed).choice(users, n, replace=False))


def per_user_metrics(top: np.ndarray, relevant: list[np.ndarray], ks=KS) -> dict[str, np.ndarray]:
    """``top`` [U, >=max(ks)] ranked item indices; ``relevant`` list of U arrays of item
    indices. Returns ``{"ndcg@10": [U], ...}``."""
    U = len(top)
    if len(relevant) != U:
        raise ValueError(f"top has {U} rows but relevant has {len(relevant)}")
    kmax = max(ks)
    if top.shape[1] < kmax:
        raise ValueError(f"top has {top.shape[1]} columns; need at least max(ks)={kmax}")
    hits = np.zeros((U, kmax), dtype=bool)
    n_rel = np.zeros(U)
    for u, rel in enumerate(relevant):
        hits[u] = np.isin(top[u, :kmax], rel)
        n_rel[u] = len(rel)
    if (n_rel == 0).any():
        raise ValueError("a user with no relevant items was passed; drop such users first")
    disc = 1.0 / np.log2(np.arange(2, kmax + 2))
    out = {}
    for k in ks:
        h = hits[:, :k]
        out[f"recall@{k}"] = h.sum(1) / n_rel
        ideal = np.array([disc[: int(min(k, n))].sum() for n in n_rel])
        out[f"ndcg@{k}"] = (h * disc[:k]).sum(1) / ideal
        first = np.where(h.any(1), h.argmax(1) + 1, np.inf)
        out[f"mrr@{k}"] = np.where(np.isfinite(first), 1.0 / first, 0.0)
        out[f"hit_rate@{k}"] = h.any(1).astype(float)
    return out


def evaluate(
    score_fn: Callable[[np.ndarray], np.ndarray],
    truth: sp.csr_matrix,
    exclude: sp.csr_matrix | None,
    ks=KS,
    batch_size: int = 1024,
    return_per_user: bool = False,
    return_topk: bool = False,
    items: np.ndarray | None = None,
    users: np.ndarray | None = None,
    max_cells: int = 2**26,
    tie_seed: int = 0,
) -> dict:
    """Rank the full catalogue (or only ``items``) for every user with a held-out item (or
    those of ``users``, e.g. from :func:`sample_users`).

    ``score_fn(users [B]) -> scores [B, I]``; ``truth`` [n_users, I] held-out items;
    ``exclude`` items to skip (train, plus validation when testing); ``items`` (indices) the
    only columns that may be ranked (e.g. the cold-test items), held-out items outside them
    do not count; ``users`` restricts the evaluation to those users (ones without a held-out
    item are dropped). Blocks hold at most ``batch_size`` users and ``max_cells`` scores
    (:func:`block_users`); the block size does not change the result. Equal scores rank in
    the seeded tie order of ``tie_seed`` (:func:`topk`). Returns the mean of
    each metric, ``users`` (count) and optionally per-user arrays (``user_index`` [U]) and the
    top-K lists [U, max(ks)]."""
    truth = truth.tocsr()
    allowed = None
    if items is not None:
        allowed = np.zeros(truth.shape[1], dtype=bool)
        allowed[np.asarray(items, dtype=np.int64)] = True
        truth = (truth @ sp.diags(allowed.astype(np.float32))).tocsr()
        truth.eliminate_zeros()
    has = np.diff(truth.indptr) > 0
    if users is None:
        users = np.flatnonzero(has)
    else:
        users = np.asarray(users, dtype=np.int64)
        if len(users) and (users.min() < 0 or users.max() >= truth.shape[0]):
            raise ValueError(
                f"evaluate: users must lie in [0, {truth.shape[0]}); got {users.min()}..{users.max()}"
            )
        users = users[has[users]]
    kmax = max(ks)
    step = block_users(truth.shape[1], batch_size, max_cells)
    tops = []
    for s in range(0, len(users), step):
        b = users[s : s + step]
        raw = score_fn(b)
        scores = np.asarray(raw, dtype=np.float32)
        owned = scores is not raw  # converted here: ours to change; else maybe the caller's
        if scores.shape != (len(b), truth.shape[1]):
            raise ValueError(
                f"score_fn returned shape {scores.shape}; expected ({len(b)}, {truth.shape[1]})"
            )
        if not np.isfinite(scores).all():
            raise ValueError("score_fn returned NaN or infinite scores")
        if allowed is not None:
            scores, owned = np.where(allowed, scores, np.float32(-np.inf)), True
        tops.append(topk(scores, kmax, exclude, rows=b, overwrite=owned, tie_seed=tie_seed))
    top = np.concatenate(tops) if tops else np.zeros((0, kmax), dtype=np.int64)
    relevant = [truth.indices[truth.indptr[u] : truth.indptr[u + 1]] for u in users]
    per = per_user_metrics(top, relevant, ks)
    out: dict = {name: float(v.mean()) for name, v in per.items()}
    out["users"] = int(len(users))
    if return_per_user:
        out["per_user"] = per
        out["user_index"] = users
    if return_topk:
        out["topk"] = top
    return out


def bootstrap_ci(values: np.ndarray, n: int = 1000, seed: int = 0, alpha: float = 0.05):
    """Mean and a percentile bootstrap interval over users."""
    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), (n, len(v)))].mean(1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(v.mean()), float(lo), float(hi)


def paired_bootstrap(
    a: np.ndarray, b: np.ndarray, n: int = 1000, seed: int = 0, alpha: float = 0.05
):
    """Mean of ``a - b`` (paired per user) and its bootstrap interval."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    return bootstrap_ci(a - b, n=n, seed=seed, alpha=alpha)


def topk_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Mean |a_u ∩ b_u| / k over users for two [U, k] top-k lists."""
    if a.shape != b.shape:
        raise ValueError(f"top-k lists differ in shape: {a.shape} vs {b.shape}")
    k = a.shape[1]
    return float(np.mean([len(np.intersect1d(x, y)) / k for x, y in zip(a, b)]))
