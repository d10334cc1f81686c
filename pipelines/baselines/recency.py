"""The collaborative model read from a recency-weighted user row.

The collaborative model stays as fit on train (EASE^R or ALS, ``fit_collab``); only the user's
row changes: each item of the user's input weighs ``decay^k`` instead of 1, ``k`` its
position from the end of the input (0: the most recent; an item met twice adds both). EASE^R
scores ``x_u B`` with that row; ALS folds the row in (confidence ``alpha * weight``). Decay 1
is the model itself. The input is a frame in split order (train for validation, train +
validation for test: ``Split.known_before``); ``fit_recency`` chooses ``decay`` on validation.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.baselines.scorer import Scorer
from pipelines.baselines.transition import from_end, valid_sample_size
from pipelines.core.metrics import evaluate, sample_users

logger = logging.getLogger(__name__)

RECENCY_DECAYS = (0.7, 0.8, 0.9, 0.95, 0.98, 0.99, 1.0)


def recency_rows(frame: pd.DataFrame, n_users: int, n_items: int, decay: float) -> sp.csr_matrix:
    """[n_users, n_items] float32: item ``j`` of user ``u`` weighs ``decay^k`` for each of its
    rows in ``frame``, ``k`` the row's position from the end of ``u``'s rows."""
    users, items, back = from_end(frame)
    w = np.power(float(decay), back.astype(np.float64)).astype(np.float32)
    m = sp.csr_matrix((w, (users, items)), shape=(n_users, n_items))
    m.sum_duplicates()
    return m


class RecencyCollab(Scorer):
    """``model`` (EASE^R or ALS) scoring each user from :func:`recency_rows` of ``frame``.

    Its user representation ``rep`` is the weighted row (EASE^R, [U, I] sparse) or the row
    folded in (ALS, [U, D]); scores are ``rep @ targets.T`` with ``targets`` the model's
    ``content_targets`` (EASE^R ``B.T``, ALS the item factors), so a content map's predicted
    targets score items without train interactions the same way (``score_cold_matrix``)."""

    kind = "recency"
    scores_sequences = True

    def __init__(self, model: Scorer, frame: pd.DataFrame, n_users: int, decay: float):
        if not 0 < decay <= 1:
            raise ValueError(f"RecencyCollab decay={decay}; expected in (0, 1]")
        self.model, self.decay, self.n_users = model, float(decay), int(n_users)
        self.targets, user_factors = model.content_targets()
        self.folds = user_factors is not None  # ALS: a row is folded in against item factors
        self.rep = self.represent(frame)

    def represent(self, frame: pd.DataFrame):
        rows = recency_rows(frame, self.n_users, len(self.targets), self.decay)
        return self.model.fold_in(rows) if self.folds else rows

    @property
    def params(self) -> int:
        return self.model.params

    @property
    def nbytes(self) -> int:
        return self.model.nbytes

    def __call__(self, users: np.ndarray) -> np.ndarray:
        return np.asarray(self.rep[np.asarray(users)] @ self.targets.T, dtype=np.float32)

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if sp.issparse(self.rep):  # EASE^R: one dense row per distinct user
            return super().score_pairs(users, items)
        u, t = self.rep[np.asarray(users)], self.targets[np.asarray(items)]
        return np.einsum("pd,pd->p", u, t).astype(np.float32)

    def score_cold_matrix(self, users: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """[B, n_cold]: the cold items' predicted targets ``columns`` [n_cold, D] (a content
        map's) scored with the weighted representation."""
        return np.asarray(self.rep[np.asarray(users)] @ columns.T, dtype=np.float32)

    def score_cold_pairs(self, users: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """Pairs: ``users`` [P] with the predicted targets ``columns`` [P, D] of their items."""
        x = self.rep[np.asarray(users)]
        if sp.issparse(x):
            return np.asarray(x.multiply(columns).sum(1)).ravel().astype(np.float32)
        return np.einsum("pd,pd->p", x, columns).astype(np.float32)

    def from_sequences(self, frame: pd.DataFrame) -> RecencyCollab:
        """The same model and decay with each user read from ``frame`` instead (a scorer:
        ``users [B] -> [B, I]``)."""
        other = copy.copy(self)
        other.rep = self.represent(frame)
        return other


def fit_recency(model: Scorer, split, decays=RECENCY_DECAYS, metric: str = "ndcg@10"):
    """``(RecencyCollab of train, info)`` with ``decay`` chosen from ``decays`` by validation
    ``metric`` over a seeded sample of at most :func:`valid_sample_size` validation users."""
    split = split.training_view()
    truth, exclude = split.matrix("valid"), split.seen_for("valid")
    users = sample_users(truth, valid_sample_size(split.n_items), seed=0)
    known = split.known_before("valid")
    sample = known[known["user"].isin(users)]  # only the sampled users' rows are folded in
    best, best_v, scores = None, -1.0, {}
    for decay in decays:
        scorer = RecencyCollab(model, sample, split.n_users, decay)
        scores[f"{decay:g}"] = v = evaluate(scorer, truth, exclude, users=users)[metric]
        logger.info("recency decay=%g valid %s=%.4f", decay, metric, v)
        if v > best_v:
            best, best_v = decay, v
    info = {"decay": best, "valid": scores, "valid_users": int(len(users)), "metric": metric}
    return RecencyCollab(model, known, split.n_users, best), info
