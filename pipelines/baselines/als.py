"""Implicit-feedback ALS (Hu, Koren, Volinsky 2008; the ``implicit`` package): the
collaborative baseline past EASE^R's memory budget, and its fold-in of new users' histories."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp

from pipelines.baselines.scorer import Scorer
from pipelines.core.metrics import evaluate

logger = logging.getLogger(__name__)


@dataclass
class ALSConfig:
    """Implicit ALS (the ``implicit`` package, CPU). Confidence = ``alpha`` x the binary train
    matrix; deterministic for a given ``seed``, whatever ``num_threads`` (each user's and
    item's solve is independent: at 100k x 100k x 5.4M train interactions 1 and 2 threads gave
    identical factors, 38 s and 18 s a fit)."""

    factors: int = field(default=64, metadata={"help": "latent dimension D"})
    regularization: float = field(
        default=100.0, metadata={"help": "L2 weight (the fallback when the grid is skipped)"}
    )
    alpha: float = field(default=1.0, metadata={"help": "confidence of an observed interaction"})
    iterations: int = field(default=15, metadata={"help": "ALS sweeps"})
    seed: int = field(default=0, metadata={"help": "random_state of the factor initialisation"})
    num_threads: int = field(
        default=0, metadata={"help": "implicit's solver threads (0 = every core)"}
    )

    def __post_init__(self):
        for name in ("factors", "iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"ALSConfig.{name}={getattr(self, name)!r}; expected >= 1")
        if self.num_threads < 0:
            raise ValueError(f"ALSConfig.num_threads={self.num_threads!r}; expected >= 0")
        for name in ("regularization", "alpha"):
            if not getattr(self, name) > 0:
                raise ValueError(f"ALSConfig.{name}={getattr(self, name)!r}; expected > 0")


class ALS(Scorer):
    """Implicit ALS fit on ``train`` [U, I] (binary). ``user_factors`` [U, D] and
    ``item_factors`` [I, D], float32; a score is their dot product."""

    kind = "als"
    scores_histories = True  # a history is folded in against the item factors

    def __init__(self, train: sp.csr_matrix | None, config: ALSConfig | None = None):
        self.config = config or ALSConfig()
        if train is None:  # filled in by from_factors
            return
        from implicit.als import AlternatingLeastSquares
        from threadpoolctl import threadpool_limits

        c = self.config
        X = train.tocsr().astype(np.float32)
        with threadpool_limits(1, "blas"):  # implicit runs its own threads; BLAS must not
            m = AlternatingLeastSquares(
                factors=c.factors,
                regularization=c.regularization,
                alpha=c.alpha,
                iterations=c.iterations,
                random_state=c.seed,
                num_threads=c.num_threads,
                use_gpu=False,
            )
            m.fit(X, show_progress=False)
        self.user_factors = np.ascontiguousarray(m.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(m.item_factors, dtype=np.float32)

    @classmethod
    def from_factors(cls, config: ALSConfig, user_factors, item_factors) -> ALS:
        """An ALS model from factors fit before (the fit cache)."""
        m = cls(None, config)
        m.user_factors = np.ascontiguousarray(user_factors, dtype=np.float32)
        m.item_factors = np.ascontiguousarray(item_factors, dtype=np.float32)
        return m

    @property
    def params(self) -> int:
        return int(self.user_factors.size + self.item_factors.size)

    @property
    def nbytes(self) -> int:
        return int(self.user_factors.nbytes + self.item_factors.nbytes)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        """[B] -> [B, I] float32."""
        return self.user_factors[np.asarray(users)] @ self.item_factors.T

    def score_pairs(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Pairs ``users`` [P], ``items`` [P] -> [P] float32, no dense rows."""
        u = self.user_factors[np.asarray(users)]
        return np.einsum("pd,pd->p", u, self.item_factors[np.asarray(items)])

    def fold_in(self, rows: sp.csr_matrix) -> np.ndarray:
        """[B, I] interaction rows (e.g. new users' histories) -> [B, D] user vectors."""
        return fold_in(self.item_factors, rows, self.config.regularization, self.config.alpha)

    def from_histories(self, rows: sp.csr_matrix) -> Callable[[np.ndarray], np.ndarray]:
        """Every row folded in once (train users too, so all are scored the same way)."""
        vectors = self.fold_in(rows)  # [U, D]
        return lambda users: vectors[np.asarray(users)] @ self.item_factors.T

    def user_vectors(self, rows: sp.csr_matrix) -> np.ndarray:
        return self.fold_in(rows)

    def content_targets(self) -> tuple[np.ndarray, np.ndarray]:
        return self.item_factors, self.user_factors


def fold_in(
    item_factors: np.ndarray, rows: sp.csr_matrix, regularization: float, alpha: float
) -> np.ndarray:
    """ALS's user step for ``rows`` [B, I] against fixed ``item_factors`` Y [I, D] -> [B, D].

    With confidences c = alpha * r on a row's items (implicit's convention):
    x = (Y^T Y + reg I + sum_i (c_i - 1) y_i y_i^T)^-1 sum_i c_i y_i; an empty row gives 0."""
    Y = np.asarray(item_factors, dtype=np.float64)
    rows = sp.csr_matrix(rows)
    if rows.shape[1] != len(Y):
        raise ValueError(f"fold_in: rows have {rows.shape[1]} items; item_factors has {len(Y)}")
    base = Y.T @ Y + regularization * np.eye(Y.shape[1])
    out = np.zeros((rows.shape[0], Y.shape[1]), dtype=np.float32)
    for r in range(rows.shape[0]):
        lo, hi = rows.indptr[r], rows.indptr[r + 1]
        if lo == hi:
            continue
        y = Y[rows.indices[lo:hi]]
        c = alpha * rows.data[lo:hi].astype(np.float64)
        A = base + (y * (c - 1.0)[:, None]).T @ y
        out[r] = np.linalg.solve(A, y.T @ c)
    return out


# Chosen on MovieLens-100K validation (random split, seed 0; factors 32/64/128 x alpha
# 1/2/5/20 x regularization 0.1..100): NDCG@10 rises with regularization up to 10-30 and
# falls at 100; alpha 1 and 64 factors were best or near it (0.254 at reg 10).
# the best of the old grid (3, 10, 30) sat on its edge: at 100k x 100k x 5.4M train
# interactions 10 gave validation NDCG@10 0.035 (below popularity), 100 gave 0.111
ALS_REGULARIZATIONS = (3.0, 10.0, 30.0, 100.0, 300.0)
ALS_GRID_MAX_NNZ = 20_000_000  # above this many train interactions, no grid: the default only
ALS_VALID_USERS = 5000  # validation users (seeded sample) the grid ranks the catalogue for


def fit_als(
    split,
    config: ALSConfig | None = None,
    regularizations=ALS_REGULARIZATIONS,
    metric: str = "ndcg@10",
) -> tuple[ALS, dict]:
    """Fit ALS on train, choosing the regularization by validation ``metric`` (at most
    ``len(regularizations)`` fits, skipped past ``ALS_GRID_MAX_NNZ`` train interactions)."""
    config = config or ALSConfig()
    train = split.matrix("train")
    regs = tuple(regularizations) if train.nnz <= ALS_GRID_MAX_NNZ else ()
    regs = regs or (config.regularization,)
    truth, exclude = split.matrix("valid").tocsr(), split.seen_for("valid")
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    if len(users) > ALS_VALID_USERS:
        keep = np.zeros(truth.shape[0], dtype=np.float32)
        keep[np.random.default_rng(config.seed).choice(users, ALS_VALID_USERS, replace=False)] = 1
        truth = (sp.diags(keep) @ truth).tocsr()
    best, scores = None, {}
    for reg in regs:
        model = ALS(train, ALSConfig(**{**asdict(config), "regularization": float(reg)}))
        scores[reg] = evaluate(model, truth, exclude)[metric] if truth.nnz else float("nan")
        logger.info("ALS regularization=%g valid %s=%.4f", reg, metric, scores[reg])
        if best is None or scores[reg] > scores[best.config.regularization]:
            best = model
    return best, {
        **asdict(best.config),
        "valid": {str(k): v for k, v in scores.items()},
        "valid_users": int(np.count_nonzero(np.diff(truth.indptr))),
    }
