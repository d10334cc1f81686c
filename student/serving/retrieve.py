"""Retrieval over an item index: over-fetch, drop each user's seen items, and the
``Retriever`` that encodes users with the student's user tower first."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from common.config import check_int
from student.serving.index import ItemIndex


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
    return_scores: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Top-k original item ids per query, excluding seen items.

    query_emb [B, D]; ``seen``: None, a scipy sparse matrix [B, N] of item rows, or a list of B
    sets/arrays of item ROWS. Over-fetches k + max seen count (capped at N), filters, and
    re-fetches more for a query that is still short. Returns ids [B, k] (dtype of the id map),
    and with ``return_scores`` also their index scores [B, k] float32.
    """
    check_int("", "k", k, 1)
    q = np.asarray(query_emb)
    seen_rows = _seen_rows(seen, len(q))
    rows, scores = search_excluding(q, [k] * len(seen_rows), seen_rows, index)
    out = np.array(rows, dtype=np.int64).reshape(len(seen_rows), k)
    ids = index.item_ids[out]
    if return_scores:
        return ids, np.array(scores, dtype=np.float32).reshape(len(seen_rows), k)
    return ids


def search_excluding(
    query_emb: np.ndarray, ks: Sequence[int], seen_rows: Sequence[np.ndarray], index: ItemIndex
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """One batched search for queries that each want their own k and exclude their own rows.

    query_emb [B, D], ``ks`` [B] ints >= 1, ``seen_rows`` B int64 arrays of item rows (sorted,
    unique). Returns per query the item rows [k_i] and scores [k_i], best first. Fetches
    ``k_i + |seen_i|`` rounded up to a power of two (capped at N), one search per fetch size,
    then re-fetches twice as many for the queries still short (an approximate index may reach
    fewer items than asked).
    """
    n = index.n
    for i, (k, s) in enumerate(zip(ks, seen_rows)):
        if s.size and (s.min() < 0 or s.max() >= n):
            bad = int(s[(s < 0) | (s >= n)][0])
            raise ValueError(f"seen[{i}]: item row {bad} is outside the catalogue [0, {n})")
        if n - len(s) < k:
            raise ValueError(
                f"retrieve: query {i} has {len(s)} seen items; the catalogue of {n} items leaves "
                f"{n - len(s)} unseen, fewer than k={k}"
            )
    b = len(seen_rows)
    out_rows: list[np.ndarray] = [np.empty(0, np.int64)] * b
    out_scores: list[np.ndarray] = [np.empty(0, np.float32)] * b
    if b == 0:
        return out_rows, out_scores
    q_all = np.asarray(query_emb)
    # one search per fetch size (k + |seen| rounded up to a power of two): a user with few seen
    # items is not fetched as deep as the batch's heaviest one
    fetch = {i: min(1 << max(k + len(s) - 1, 0).bit_length(), n) for i, (k, s) in enumerate(zip(ks, seen_rows))}  # fmt: skip
    todo = list(range(b))
    while todo:
        groups: dict[int, list[int]] = {}
        for i in todo:
            groups.setdefault(fetch[i], []).append(i)
        todo = []
        for f, group in groups.items():
            scores, rows = index.search(q_all if len(group) == b else q_all[group], f)
            for j, i in enumerate(group):
                keep = (rows[j] >= 0) & ~_member(rows[j], seen_rows[i])
                picked = np.flatnonzero(keep)[: ks[i]]
                if len(picked) == ks[i]:
                    out_rows[i], out_scores[i] = rows[j][picked], scores[j][picked]
                elif f >= n:
                    raise RuntimeError(
                        f"retrieve: the index returned fewer than k={ks[i]} unseen items for "
                        f"query {i} even when asked for all {n}; raise nprobe / ef_search"
                    )
                else:
                    fetch[i] = min(2 * f, n)
                    todo.append(i)
    return out_rows, out_scores


def _member(rows: np.ndarray, sorted_rows: np.ndarray) -> np.ndarray:
    """``np.isin(rows, sorted_rows)`` for a sorted unique ``sorted_rows``, without sorting."""
    if not sorted_rows.size:
        return np.zeros(rows.shape, dtype=bool)
    pos = np.searchsorted(sorted_rows, rows).clip(max=len(sorted_rows) - 1)
    return sorted_rows[pos] == rows


@dataclass
class Query:
    """One retrieval request.

    ``user``: a known user index (the user tower reads its id and its stored history); or
    None for a new user described by ``history`` (item rows, most recent first; the first
    ``history_len`` of them enter the tower). An empty ``history`` is answered by popularity.
    ``exclude_seen`` drops the user's seen items (a known user's ``seen`` row, a new user's
    history); ``exclude`` rows are never returned either.
    """

    user: int | None = None
    history: Sequence[int] | np.ndarray | None = None
    k: int = 10
    exclude: Sequence[int] | np.ndarray = ()
    exclude_seen: bool = True


@dataclass
class Result:
    """One query's answer: item ``rows`` [k] into the index, original ``ids`` [k], ``scores``
    [k] (index inner products, or train interaction counts when ``source == "popularity"``)."""

    rows: np.ndarray
    ids: np.ndarray
    scores: np.ndarray
    source: str


class Retriever:
    """The serving entry point: users (known or new) -> top-k original item ids.

    ``model`` is a two-tower student (anything with ``encode_users(user_idx, history)``),
    ``index`` an :class:`ItemIndex` built from its item tower, ``histories`` the
    ``[n_users, L]`` history matrix the user tower reads (padded with ``n_items``), ``seen`` a
    ``[n_users, n_items]`` sparse matrix of each known user's items never to return, and
    ``popularity`` [n_items] (e.g. train interaction counts) ranks items for an empty history.

    :meth:`run` is the one query path: known users are encoded in one tower call, new users
    (``encode_users(None, history)``) in another, and all queries share one batched search.
    """

    def __init__(
        self,
        model: Any,
        index: ItemIndex,
        histories: np.ndarray,
        seen: Any,
        popularity: np.ndarray | None = None,
    ) -> None:
        seen = sp.csr_matrix(seen, copy=True)
        seen.sum_duplicates()  # sorted unique columns per row: a row slice is an exclusion list
        if seen.shape[1] != index.n:
            raise ValueError(
                f"seen has {seen.shape[1]} item columns but the index holds {index.n} items"
            )
        if len(histories) != seen.shape[0]:
            raise ValueError(f"histories has {len(histories)} users but seen has {seen.shape[0]}")
        self.model, self.index, self.seen = model, index, seen
        self._seen_rows = seen.indices.astype(np.int64)
        self.histories = np.asarray(histories, dtype=np.int64)
        self.n_users, self.n_items = seen.shape
        self.popularity = None
        if popularity is not None:
            pop = np.asarray(popularity, dtype=np.float32).reshape(-1)
            if len(pop) != index.n:
                raise ValueError(f"popularity has {len(pop)} items, the index holds {index.n}")
            self.popularity = pop
            self._pop_order = np.argsort(-pop, kind="stable")
        cfg = getattr(model, "config", None)
        self.history_len = int(getattr(cfg, "history_len", self.histories.shape[1]))
        self.user_vectors: np.ndarray | None = None  # [n_users, D] once precompute_users ran

    def precompute_users(self, chunk: int = 1) -> np.ndarray:
        """Encode every known user once (their tower inputs, id and stored history, do not
        change until the next load); :meth:`run` then looks them up instead of running the
        tower. ``chunk`` users per tower call: 1 (the default) gives each user exactly the
        vector a query of that user alone got, so answers do not change. Returns [n_users, D].
        """
        import torch

        check_int("precompute_users", "chunk", chunk, 1)
        parts = []
        with torch.no_grad():
            for s in range(0, self.n_users, chunk):
                users = np.arange(s, min(s + chunk, self.n_users), dtype=np.int64)
                hist = torch.as_tensor(self.histories[users])
                parts.append(self.model.encode_users(torch.as_tensor(users), hist).numpy())
        self.user_vectors = np.concatenate(parts).astype(np.float32, copy=False)
        return self.user_vectors

    # ------------------------------------------------------------------ one query path
    def excluded_rows(self, q: Query) -> np.ndarray:
        """Sorted unique item rows ``q`` must not get back."""
        parts = [np.asarray(q.exclude, dtype=np.int64).ravel()]
        if q.exclude_seen:
            if q.user is not None:
                lo, hi = self.seen.indptr[q.user], self.seen.indptr[q.user + 1]
                if not parts[0].size:  # already sorted and unique: no per-request rebuild
                    return self._seen_rows[lo:hi]
                parts.append(self._seen_rows[lo:hi])
            elif q.history is not None:
                parts.append(np.asarray(q.history, dtype=np.int64).ravel())
        return np.unique(np.concatenate(parts))

    def run(self, queries: Sequence[Query]) -> list[Result]:
        """Answer ``queries`` (each its own k and exclusions); see :class:`Query`."""
        import torch

        for i, q in enumerate(queries):
            self._check(i, q)
        excluded = [self.excluded_rows(q) for q in queries]
        known = [i for i, q in enumerate(queries) if q.user is not None]
        new = [i for i, q in enumerate(queries) if q.user is None and len(q.history) > 0]
        popular = [i for i, q in enumerate(queries) if q.user is None and len(q.history) == 0]
        out: list[Result | None] = [None] * len(queries)
        embs, order = [], []
        with torch.no_grad():
            if known:
                users = np.array([queries[i].user for i in known], dtype=np.int64)
                if self.user_vectors is not None:
                    emb = torch.from_numpy(self.user_vectors[users])
                else:
                    hist = torch.as_tensor(self.histories[users])
                    emb = self.model.encode_users(torch.as_tensor(users), hist)
                embs.append(self._queries(emb, new_users=False))
                order += known
            if new:
                hist = np.full((len(new), self.history_len), self.n_items, dtype=np.int64)
                for r, i in enumerate(new):
                    h = np.asarray(queries[i].history, dtype=np.int64)[: self.history_len]
                    hist[r, : len(h)] = h
                emb = self.model.encode_users(None, torch.as_tensor(hist))
                embs.append(self._queries(emb, new_users=True))
                order += new
        if order:
            emb = torch.cat(embs).numpy().astype(np.float32, copy=False)
            rows, scores = search_excluding(
                emb, [queries[i].k for i in order], [excluded[i] for i in order], self.index
            )
            for j, i in enumerate(order):
                out[i] = Result(rows[j], self.index.item_ids[rows[j]], scores[j], "model")
        for i in popular:
            keep = self._pop_order[~np.isin(self._pop_order, excluded[i])][: queries[i].k]
            out[i] = Result(keep, self.index.item_ids[keep], self.popularity[keep], "popularity")
        return out  # type: ignore[return-value]

    def _queries(self, user_emb: Any, new_users: bool) -> Any:
        """User vectors -> the index's queries: ``[user x scale, bias weight]`` for a student
        with an item bias (``TwoTower.index_queries``), else as they are."""
        to_query = getattr(self.model, "index_queries", None)  # any user encoder may serve
        return user_emb if to_query is None else to_query(user_emb, new_users=new_users)

    def _check(self, i: int, q: Query) -> None:
        check_int(f"queries[{i}]", "k", q.k, 1)
        if q.user is not None:
            if not 0 <= int(q.user) < self.n_users:
                raise ValueError(f"queries[{i}].user={q.user} must lie in [0, {self.n_users - 1}]")
            return
        if q.history is None:
            raise ValueError(f"queries[{i}]: give a known user index or a history of item rows")
        h = np.asarray(q.history)
        if h.size and (h.dtype.kind not in "iu" or h.min() < 0 or h.max() >= self.n_items):
            raise ValueError(f"queries[{i}].history: expected item rows in [0, {self.n_items - 1}]")
        if h.size and self.history_len == 0:
            raise ValueError(
                "this model reads no history (history_len=0); it cannot score new users"
            )
        if not h.size and self.popularity is None:
            raise ValueError(
                f"queries[{i}]: empty history and no popularity given to the Retriever"
            )

    # ------------------------------------------------------------------ conveniences
    def retrieve(
        self,
        user_idx: Any,
        k: int,
        exclude: Sequence[Sequence[int]] | None = None,
        exclude_seen: bool = True,
        return_scores: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """user_idx [B] -> original item ids [B, k] (and scores [B, k] with return_scores).

        ``exclude``: B lists of item rows to drop besides the user's seen items."""
        users = np.asarray(user_idx, dtype=np.int64).reshape(-1)
        if users.size and (users.min() < 0 or users.max() >= len(self.histories)):
            raise ValueError(
                f"user_idx must lie in [0, {len(self.histories) - 1}]; got {users.min()}..{users.max()}"
            )
        ex = _per_query(exclude, len(users))
        res = self.run(
            [
                Query(user=int(u), k=k, exclude=e, exclude_seen=exclude_seen)
                for u, e in zip(users, ex)
            ]
        )
        return _stack(res, k, return_scores, self.index)

    def retrieve_histories(
        self,
        histories: Sequence[Sequence[int]],
        k: int,
        exclude: Sequence[Sequence[int]] | None = None,
        exclude_seen: bool = True,
        return_scores: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """New users from their histories (B lists of item rows, most recent first) ->
        original item ids [B, k] (and scores). An empty history gets the popularity ranking."""
        ex = _per_query(exclude, len(histories))
        res = self.run(
            [
                Query(
                    history=np.asarray(h, dtype=np.int64), k=k, exclude=e, exclude_seen=exclude_seen
                )
                for h, e in zip(histories, ex)
            ]
        )
        return _stack(res, k, return_scores, self.index)


def _per_query(exclude: Any, n: int) -> list:
    if exclude is None:
        return [()] * n
    if len(exclude) != n:
        raise ValueError(f"exclude: has {len(exclude)} entries, expected one per query ({n})")
    return list(exclude)


def _stack(res: list[Result], k: int, return_scores: bool, index: ItemIndex):
    if not res:
        ids = index.item_ids[np.empty((0, k), np.int64)]
        return (ids, np.empty((0, k), np.float32)) if return_scores else ids
    ids = np.stack([r.ids for r in res])
    return (ids, np.stack([r.scores for r in res]).astype(np.float32)) if return_scores else ids
