"""Content -> collaborative map for items without interactions (CB2CF / ALDI's reference point).

A ridge regression, fit on the warm items (those with train interactions), from each item's
content (genres, year, and optionally the LLM's item embedding) onto its collaborative target
``t_j`` and its log train count. The target is the item's EASE^R column ``B[:, j]`` (so
``targets = B.T``) or its ALS item factor; a user's score for a cold item ``c`` is
``r_u . t_c`` with ``r_u`` the user's representation in that model (EASE^R: the train row
``x_u``; ALS: the user factor), on the scale of the model's own scores, and the predicted log
count stands in for its popularity::

    phi_j = [genres, year, year known, (LLM embedding)],  mu = mean of phi over warm items
    W = (Phi_w^T Phi_w + lambda I)^-1 Phi_w^T (Y_w - y_bar),  Y_j = [t_j, log(1 + n_j)]
    y_c = (phi_c - mu) W + y_bar

Only train interactions and content go in; lambda is chosen on the cold-validation items
(``fit_content_map``), never on test.
"""

from __future__ import annotations

import copy
import logging

import numpy as np
import scipy.sparse as sp

from pipelines.baselines.scorer import Scorer

logger = logging.getLogger(__name__)

LAMBDAS = (0.3, 1.0, 3.0, 10.0, 30.0, 100.0, 300.0)
DEFAULT_LAMBDA = 3.0  # chosen on cold-validation on every MovieLens-100K seed tried


def content_features(item_features: np.ndarray, text_emb: np.ndarray | None) -> np.ndarray:
    """[I, F] float64: the student's item features, then the (unit-norm) LLM embedding."""
    parts = [np.asarray(item_features, dtype=np.float64)]
    if text_emb is not None:
        parts.append(np.asarray(text_emb, dtype=np.float64))
    return np.concatenate(parts, axis=1)


class ContentMap(Scorer):
    """Ridge map from content to collaborative targets, fit on warm items. ``train`` [U, I]
    (binary), ``targets`` [I, D] (EASE^R: ``B.T``; ALS: the item factors), ``features``
    [I, F]; ``users`` [U, D] the users' representation (default: their ``train`` rows, as
    EASE^R scores ``x_u B``). Scores cold items only: warm ones are the collaborative
    model's."""

    kind = "content_map"
    scores_warm = False
    scores_cold = True

    def __init__(
        self,
        train: sp.csr_matrix,
        targets: np.ndarray,
        features: np.ndarray,
        lam: float,
        users: np.ndarray | None = None,
    ):
        if lam <= 0:
            raise ValueError(f"ContentMap lambda={lam}; expected > 0")
        if features.shape[0] != targets.shape[0]:
            raise ValueError(
                f"features has {features.shape[0]} rows; targets has {targets.shape[0]} items"
            )
        self.lam = float(lam)
        self.train = train.tocsr().astype(np.float32)
        if users is not None and users.shape != (self.train.shape[0], targets.shape[1]):
            raise ValueError(
                f"users has shape {users.shape}; expected (users, target dim) = "
                f"{(self.train.shape[0], targets.shape[1])}"
            )
        self.users = self.train if users is None else np.asarray(users, dtype=np.float32)
        counts = np.asarray(self.train.sum(0)).ravel()
        self.warm = counts > 0
        self.cold = np.flatnonzero(~self.warm)
        X = np.asarray(features, dtype=np.float64)
        mu = X[self.warm].mean(0)
        Xw = X[self.warm] - mu
        Y = np.concatenate([targets[self.warm], np.log1p(counts[self.warm])[:, None]], axis=1)
        y_bar = Y.mean(0)
        A = Xw.T @ Xw + self.lam * np.eye(X.shape[1])
        W = np.linalg.solve(A, Xw.T @ (Y - y_bar))
        pred = (X[self.cold] - mu) @ W + y_bar  # [n_cold, D + 1]
        self.columns = pred[:, :-1].astype(np.float32)  # predicted targets of the cold items
        self.log_count = pred[:, -1].astype(np.float32)  # predicted log(1 + count)
        self._row = np.full(len(counts), -1, dtype=np.int64)
        self._row[self.cold] = np.arange(len(self.cold))

    def with_users(self, users: np.ndarray | sp.spmatrix) -> ContentMap:
        """The same map with the users read from ``users`` [U, D] (e.g. the collaborative
        model's ``user_vectors`` of the histories known at test time) instead of train."""
        if users.shape != self.users.shape:
            raise ValueError(
                f"ContentMap.with_users: users has shape {users.shape}; expected {self.users.shape}"
            )
        m = copy.copy(self)
        m.users = users.tocsr() if sp.issparse(users) else np.asarray(users, dtype=np.float32)
        return m

    def is_cold(self, items: np.ndarray) -> np.ndarray:
        return ~self.warm[np.asarray(items)]

    def score_cold(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Pairs (``users`` [P], cold ``items`` [P]) -> predicted collaborative scores [P]."""
        rows = self._row[np.asarray(items)]
        if (rows < 0).any():
            raise ValueError(
                "score_cold got items with train interactions; score them with the "
                "collaborative model"
            )
        x = self.users[np.asarray(users)]
        if sp.issparse(x):
            return np.asarray(x.multiply(self.columns[rows]).sum(1)).ravel().astype(np.float32)
        return np.einsum("pd,pd->p", x, self.columns[rows]).astype(np.float32)

    score_pairs = score_cold

    def score_cold_matrix(self, users: np.ndarray) -> np.ndarray:
        """[B, n_cold]: every cold item for ``users`` (columns in ``self.cold`` order)."""
        return np.asarray(self.users[np.asarray(users)] @ self.columns.T, dtype=np.float32)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        """[B, I] scores: the cold items' predicted collaborative scores, 0 for warm items (only
        meaningful when ranking the cold items alone, as the lambda search does)."""
        out = np.zeros((len(users), len(self.warm)), dtype=np.float32)
        out[:, self.cold] = self.score_cold_matrix(users)
        return out


def collab_targets(model) -> tuple[np.ndarray, np.ndarray | None]:
    """``(targets [I, D], users [U, D] or None)`` of a collaborative model for
    :class:`ContentMap` (its ``content_targets``: ALS's item and user factors, EASE^R's ``B.T``
    with users read from their train rows). ``model`` may be an EASE^R ``B`` [I, I] itself."""
    if isinstance(model, np.ndarray):
        return model.T, None
    if isinstance(model, Scorer):
        return model.content_targets()
    raise ValueError(
        f"fit_content_map: model {type(model).__name__} is neither EASE^R (or its B) nor ALS"
    )


def fit_content_map(
    split, model, features: np.ndarray, lambdas=LAMBDAS, k: int = 20
) -> tuple[ContentMap, dict]:
    """Fit a :class:`ContentMap` onto ``model``'s targets (an EASE^R or ALS model from
    ``pipelines.baselines.collab``, or an EASE^R ``B`` [I, I]); lambda by cold-validation NDCG@k
    when the split has a cold-validation part (``cold_items`` protocol), else
    ``DEFAULT_LAMBDA``."""
    from pipelines.core.metrics import evaluate

    train = split.matrix("train")
    targets, users = collab_targets(model)
    if not split.is_cold:
        m = ContentMap(train, targets, features, DEFAULT_LAMBDA, users)
        return m, {"lambda": DEFAULT_LAMBDA}
    truth = cold_truth(split, "cold_valid")
    items = split.cold_items("cold_valid")
    best, scores = None, {}
    for lam in lambdas:
        m = ContentMap(train, targets, features, lam, users)
        scores[lam] = evaluate(m, truth, None, ks=(k,), items=items)[f"ndcg@{k}"]
        logger.info("content map lambda=%g cold-valid ndcg@%d=%.4f", lam, k, scores[lam])
        if best is None or scores[lam] > scores[best.lam]:
            best = m
    return best, {"lambda": best.lam, "cold_valid": {str(k_): v for k_, v in scores.items()}}


def cold_truth(split, part: str) -> sp.csr_matrix:
    """Interactions of cold ``part`` for the users with at least one warm train interaction
    (the users a cold-item metric ranks for); other rows empty."""
    t = split.matrix(part).tocsr()
    has_train = (np.diff(split.matrix("train").indptr) > 0).astype(np.float32)
    return (sp.diags(has_train) @ t).tocsr()
