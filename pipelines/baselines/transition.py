"""First-order transitions: item -> next item, counted over consecutive train interactions.

Fit on a frame of interactions in split order (``Split`` parts are: rows grouped by user, each
user's rows in time order, ties in the split's tie order): every consecutive pair (i, j) of one
user counts once in ``C[i, j]``, and ``P`` is ``C`` row-normalised (an item never followed by
another has an empty row). A user is scored from their last ``window`` known items ``h_0``
(the most recent), ``h_1``, ...::

    s_u = sum_{k < window} decay^k P[h_k]

so a user is read from an input frame, in order (:meth:`Transition.from_sequences`: train when
scoring validation, train + validation when scoring test, ``Split.known_before``), not from an
interaction matrix. ``fit_transition`` chooses ``window`` and ``decay`` by validation NDCG@10.
Items without train interactions score 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.baselines.scorer import Scorer
from pipelines.core.metrics import evaluate, sample_users

logger = logging.getLogger(__name__)

# (window, decay) tried on validation; window 1 reads the last item only (decay unused)
TRANSITION_GRID = ((1, 1.0), (2, 0.3), (2, 0.6), (3, 0.3), (3, 0.6), (5, 0.3), (5, 0.6))
VALID_USERS = 5000  # validation users (seeded sample) a choice on validation ranks for
VALID_CELLS = 10**9  # ... fewer (at least MIN_VALID_USERS) past 10^9 user x catalogue cells
MIN_VALID_USERS = 1000


def valid_sample_size(n_items: int) -> int:
    """How many validation users a grid point ranks the catalogue for: ``VALID_USERS`` up to
    200k items, then ``VALID_CELLS / n_items`` (at least ``MIN_VALID_USERS``): 1,000 at 1M
    items, where 5,000 users took minutes a point."""
    return min(VALID_USERS, max(MIN_VALID_USERS, VALID_CELLS // max(1, n_items)))


def from_end(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(users, items, back)`` [N] of ``frame``'s rows grouped by user (stable: each user's
    rows keep the frame's order); ``back`` is 0 for a user's last row, 1 for the one before."""
    users = frame["user"].to_numpy()
    order = np.argsort(users, kind="stable")
    users, items = users[order], frame["item"].to_numpy()[order]
    end = np.searchsorted(users, users, side="right")
    return users, items, end - 1 - np.arange(len(users))


def last_items(frame: pd.DataFrame, n_users: int, window: int, pad: int) -> np.ndarray:
    """[n_users, window] int64: each user's last ``window`` items of ``frame``, most recent
    first, padded with ``pad``."""
    out = np.full((n_users, window), pad, dtype=np.int64)
    users, items, back = from_end(frame)
    keep = back < window
    out[users[keep], back[keep]] = items[keep]
    return out


def transition_matrix(frame: pd.DataFrame, n_items: int) -> sp.csr_matrix:
    """[I, I] float32: row ``i`` the distribution of the item that follows ``i`` in one user's
    rows of ``frame`` (consecutive rows of a user; an item never followed: an empty row)."""
    users, items, _ = from_end(frame)
    same = users[1:] == users[:-1]
    c = sp.csr_matrix(
        (np.ones(int(same.sum()), np.float32), (items[:-1][same], items[1:][same])),
        shape=(n_items, n_items),
    )
    c.sum_duplicates()
    total = np.asarray(c.sum(1)).ravel()
    inv = np.where(total > 0, 1.0 / np.maximum(total, 1e-12), 0.0).astype(np.float32)
    return (sp.diags(inv) @ c).tocsr().astype(np.float32)


class Transition(Scorer):
    """``P`` [I, I] (:func:`transition_matrix` of train) and the users' last ``window`` train
    items; ``decay`` weighs the k-th most recent by ``decay^k``."""

    kind = "transition"
    scores_sequences = True  # a user read from an ordered input frame (from_sequences)

    def __init__(
        self,
        train: pd.DataFrame,
        n_users: int,
        n_items: int,
        window: int = 1,
        decay: float = 1.0,
        P: sp.csr_matrix | None = None,
    ):
        if window < 1:
            raise ValueError(f"Transition window={window}; expected >= 1")
        if not 0 < decay <= 1:
            raise ValueError(f"Transition decay={decay}; expected in (0, 1]")
        self.n_users, self.n_items = int(n_users), int(n_items)
        self.window, self.decay = int(window), float(decay)
        self.P = transition_matrix(train, n_items) if P is None else P  # P: of this train
        self.last = last_items(train, n_users, window, n_items)
        self._keys: np.ndarray | None = None

    @property
    def params(self) -> int:
        return int(self.P.nnz)

    @property
    def nbytes(self) -> int:
        return int(self.P.data.nbytes + self.P.indices.nbytes + self.P.indptr.nbytes)

    def score_last(self, last: np.ndarray) -> np.ndarray:
        """``last`` [B, window] (most recent first, ``n_items`` = padding) -> [B, I] float32."""
        b, w = last.shape
        rows = np.repeat(np.arange(b), w)
        cols = last.reshape(-1)
        weight = np.tile(self.decay ** np.arange(w, dtype=np.float64), b).astype(np.float32)
        keep = cols < self.n_items
        m = sp.csr_matrix((weight[keep], (rows[keep], cols[keep])), shape=(b, self.n_items))
        return np.asarray((m @ self.P).toarray(), dtype=np.float32)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        return self.score_last(self.last[np.asarray(users)])

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Pairs -> [P]: one lookup in ``P`` per pair and history step, no dense rows (a
        binary search of ``row x I + column`` among ``P``'s sorted cells)."""
        users, items = np.asarray(users), np.asarray(items)
        out = np.zeros(len(users), dtype=np.float32)
        for k in range(self.window):
            h = self.last[users, k]
            ok = h < self.n_items
            if ok.any():
                out[ok] += self.decay**k * self.lookup(h[ok], items[ok])
        return out

    def lookup(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """``P[rows, cols]`` [N] float32 (0 where ``P`` holds no cell)."""
        P = self.P
        if self._keys is None:
            P.sort_indices()  # cells of a row by column: the keys below ascend
            row_of = np.repeat(np.arange(P.shape[0], dtype=np.int64), np.diff(P.indptr))
            self._keys = row_of * self.n_items + P.indices
        want = np.asarray(rows, dtype=np.int64) * self.n_items + np.asarray(cols, np.int64)
        if not len(self._keys):
            return np.zeros(len(want), dtype=np.float32)
        at = np.minimum(np.searchsorted(self._keys, want), len(self._keys) - 1)
        return np.where(self._keys[at] == want, P.data[at], 0).astype(np.float32)

    def from_sequences(self, frame: pd.DataFrame) -> Callable[[np.ndarray], np.ndarray]:
        """``users [B] -> [B, I]`` with each user's last items read from ``frame`` (in split
        order, e.g. ``split.known_before("test")``) instead of train."""
        last = last_items(frame, self.n_users, self.window, self.n_items)
        return lambda users: self.score_last(last[np.asarray(users)])


def fit_transition(split, grid=TRANSITION_GRID, metric: str = "ndcg@10") -> tuple[Transition, dict]:
    """Fit on train, choosing ``(window, decay)`` from ``grid`` by validation ``metric`` over a
    seeded sample of at most :func:`valid_sample_size` validation users (input: train)."""
    split = split.training_view()
    truth, exclude = split.matrix("valid"), split.seen_for("valid")
    users = sample_users(truth, valid_sample_size(split.n_items), seed=0)
    best, best_v, scores = None, -1.0, {}
    P = transition_matrix(split.train, split.n_items)  # the same for every grid point
    for window, decay in grid:
        model = Transition(split.train, split.n_users, split.n_items, window, decay, P)
        fn = model.from_sequences(split.known_before("valid"))
        v = evaluate(fn, truth, exclude, users=users)[metric]
        scores[f"window={window},decay={decay:g}"] = v
        logger.info("transition window=%d decay=%g valid %s=%.4f", window, decay, metric, v)
        if v > best_v:
            best, best_v = model, v
    info = {"window": best.window, "decay": best.decay, "valid": scores,
            "valid_users": int(len(users)), "metric": metric}  # fmt: skip
    return best, info
