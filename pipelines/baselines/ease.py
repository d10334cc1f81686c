"""EASE^R (Steck 2019): the collaborative baseline while its dense fit fits in memory."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from pipelines.baselines.scorer import Scorer
from pipelines.core.metrics import evaluate

logger = logging.getLogger(__name__)

EASE_LAMBDAS = (50.0, 100.0, 200.0, 300.0, 500.0, 1000.0, 2000.0)


class EASE(Scorer):
    """EASE^R: closed-form item-item model B = I - P / diag(P), P = (X^T X + lambda I)^-1.

    Quadratic in the catalogue (an I x I dense matrix): exact and cheap at MovieLens size,
    which is why a small student replaces it in serving."""

    kind = "ease"
    scores_histories = True  # x_u B for any row x_u

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

    def from_histories(self, rows: sp.csr_matrix) -> Callable[[np.ndarray], np.ndarray]:
        return lambda users: np.asarray(rows[users] @ self.B)

    def user_vectors(self, rows: sp.csr_matrix) -> sp.csr_matrix:
        return sp.csr_matrix(rows, dtype=np.float32)

    def content_targets(self) -> tuple[np.ndarray, None]:
        return self.B.T, None


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
