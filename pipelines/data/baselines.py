"""Baselines that every report includes: popularity and EASE^R (Steck 2019)."""

from __future__ import annotations

import logging

import numpy as np
import scipy.sparse as sp

from pipelines.core.metrics import evaluate

logger = logging.getLogger(__name__)

EASE_LAMBDAS = (50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0)


class Popularity:
    """Scores every item by its train interaction count."""

    def __init__(self, train: sp.csr_matrix):
        self.counts = np.asarray(train.sum(0)).ravel().astype(np.float32)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.counts, (len(users), len(self.counts)))


class EASE:
    """EASE^R: closed-form item-item model B = I - P / diag(P), P = (X^T X + lambda I)^-1.

    Quadratic in the catalogue (an I x I dense matrix): exact and cheap at MovieLens size,
    which is why a small student replaces it in serving."""

    kind = "ease"

    def __init__(self, train: sp.csr_matrix, lam: float = 500.0):
        if lam <= 0:
            raise ValueError(f"EASE lambda={lam}; expected > 0")
        self.lam = float(lam)
        self.X = train.tocsr().astype(np.float32)
        G = (self.X.T @ self.X).toarray().astype(np.float64)
        G[np.diag_indices_from(G)] += lam
        P = np.linalg.inv(G)
        B = -P / np.diag(P)
        B[np.diag_indices_from(B)] = 0.0
        self.B = B.astype(np.float32)

    @classmethod
    def from_weights(cls, train: sp.csr_matrix, B: np.ndarray, lam: float) -> EASE:
        """An EASE^R model from weights ``B`` [I, I] fit before (the fit cache)."""
        m = cls.__new__(cls)
        m.lam, m.X = float(lam), train.tocsr().astype(np.float32)
        m.B = np.asarray(B, dtype=np.float32)
        return m

    @property
    def params(self) -> int:
        return int(self.B.size)

    @property
    def nbytes(self) -> int:
        return int(self.B.nbytes)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        """[B] -> [B, I] float32."""
        return np.asarray(self.X[users] @ self.B)

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Pairs ``users`` [P], ``items`` [P] -> [P]: one dense row per distinct user."""
        users, items = np.asarray(users), np.asarray(items)
        out = np.empty(len(users), dtype=np.float32)
        for u in np.unique(users):
            idx = np.flatnonzero(users == u)
            out[idx] = self(np.array([u]))[0, items[idx]]
        return out


def fit_ease(split, lambdas=EASE_LAMBDAS, metric: str = "ndcg@10") -> tuple[EASE, dict]:
    """Fit EASE^R on train, choosing lambda by validation ``metric``."""
    train = split.matrix("train")
    truth, exclude = split.matrix("valid"), split.seen_for("valid")
    best, scores = None, {}
    for lam in lambdas:
        model = EASE(train, lam)
        scores[lam] = evaluate(model, truth, exclude)[metric]
        logger.info("EASE lambda=%g valid %s=%.4f", lam, metric, scores[lam])
        if best is None or scores[lam] > scores[best.lam]:
            best = model
    return best, {"lambda": best.lam, "valid": {str(k): v for k, v in scores.items()}}
