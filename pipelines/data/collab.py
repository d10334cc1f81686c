"""The collaborative model, chosen by catalogue size: EASE^R while its dense fit fits a memory
budget, else implicit-feedback ALS (Hu, Koren, Volinsky 2008; the ``implicit`` package).

EASE^R holds an I x I float64 Gram matrix, its inverse and the weights at once
(:func:`ease_bytes`: about 32.5 I^2 bytes, 2.6 GB at 9k items, 325 GB at 100k), so past a few
tens of thousands of items it cannot be fit at all. ALS keeps two factor matrices, [U, D] and
[I, D], and scores a (user, item) pair with one dot product. ``fit_collab`` picks between them
against a fixed budget (``DEFAULT_MEMORY_GB``), never against the memory free right now, so
the same data gives the same model on every machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import scipy.sparse as sp

from common.io import atomic_write
from pipelines.core.metrics import evaluate
from pipelines.data.baselines import EASE, EASE_LAMBDAS, fit_ease

logger = logging.getLogger(__name__)

CollabKind = Literal["auto", "ease", "als"]
COLLAB_KINDS: tuple[str, ...] = get_args(CollabKind)

DEFAULT_MEMORY_GB = 4.0  # fixed, so the auto choice is the same on every machine

# Peak resident memory of one EASE^R fit above the process's resident memory before it, per
# I^2, measured with ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` in a fresh process per size
# (4000 users, 200k random interactions, numpy/OpenBLAS, one thread): 32.9 at 3000 items
# (296 MB), 32.5 at 6000 (1.17 GB), 32.3 at 9000 (2.62 GB). It is the float32 Gram densified
# and cast to float64 (12), the float64 Gram, its inverse and -P / diag(P) alive together (24)
# plus the float32 B (4). Rounded up to 33.
EASE_BYTES_PER_ITEM2 = 33.0
EASE_BYTES_FIXED = 64 * 2**20  # sparse train matrix, Gram in sparse form, small temporaries


def ease_bytes(n_items: int) -> int:
    """Estimated peak bytes of fitting EASE^R on ``n_items`` items (see the constant's note)."""
    if n_items < 0:
        raise ValueError(f"ease_bytes(n_items={n_items}); expected >= 0")
    return int(EASE_BYTES_PER_ITEM2 * float(n_items) ** 2 + EASE_BYTES_FIXED)


def physical_memory_bytes() -> int:
    """The machine's physical memory (``os.sysconf``, else /proc/meminfo MemTotal)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    raise OSError("cannot read the physical memory size (os.sysconf or /proc/meminfo)")


class CollabMemoryError(ValueError):
    """EASE^R was asked for on a catalogue whose dense fit cannot fit in this machine."""


def check_ease_fits(n_items: int) -> None:
    """Raise :class:`CollabMemoryError` before allocating when EASE^R's estimated peak exceeds
    the physical memory."""
    need, have = ease_bytes(n_items), physical_memory_bytes()
    if need > have:
        raise CollabMemoryError(
            f"EASE^R on {n_items} items needs about {need / 1e9:.1f} GB (an I x I float64 "
            f"Gram, its inverse and the weights) but this machine has {have / 1e9:.1f} GB: "
            "use --collab als (or --collab auto) for a catalogue this size"
        )


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


class ALS:
    """Implicit ALS fit on ``train`` [U, I] (binary). ``user_factors`` [U, D] and
    ``item_factors`` [I, D], float32; a score is their dot product."""

    kind = "als"

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


CACHE_VERSION = 1  # bump when a fit's result would change for the same inputs


def _hash_csr(h, m: sp.csr_matrix) -> None:
    m = m.tocsr()
    m.sort_indices()
    h.update(repr(m.shape).encode())
    for a in (m.indptr, m.indices, m.data):
        h.update(np.ascontiguousarray(a).tobytes())


def fit_key(split, kind: str, als: ALSConfig | None = None, ease_lambdas=EASE_LAMBDAS) -> str:
    """What a fit of ``kind`` ('ease' or 'als') depends on: the train and validation
    interactions (never test), the hyperparameters and their grid, the library version."""
    h = hashlib.sha256()
    if kind == "ease":
        params = {"lambdas": [float(x) for x in ease_lambdas]}
    else:
        import implicit

        params = {
            # threads do not change the fit (see ALSConfig), so jobs with other threads share it
            "als": {k: v for k, v in asdict(als or ALSConfig()).items() if k != "num_threads"},
            "grid": [float(x) for x in ALS_REGULARIZATIONS],
            "grid_max_nnz": ALS_GRID_MAX_NNZ,
            "valid_users": ALS_VALID_USERS,
            "implicit": implicit.__version__,
        }
    meta = {"version": CACHE_VERSION, "kind": kind, "metric": "ndcg@10", **params}
    h.update(json.dumps(meta, sort_keys=True).encode())
    _hash_csr(h, split.matrix("train"))
    _hash_csr(h, split.matrix("valid"))
    return h.hexdigest()[:20]


def _save_fit(path: Path, model, info: dict) -> None:
    arrays = (
        {"B": model.B}
        if model.kind == "ease"
        else {"user_factors": model.user_factors, "item_factors": model.item_factors}
    )

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, info=np.array(json.dumps(info)), **arrays)

    atomic_write(path, write)


def _load_fit(path: Path, split, kind: str):
    with np.load(path, allow_pickle=False) as z:
        info = json.loads(str(z["info"]))
        if kind == "ease":
            model = EASE.from_weights(split.matrix("train"), z["B"], info["lambda"])
        else:
            cfg = ALSConfig(**{k: info[k] for k in ALSConfig.__dataclass_fields__})
            model = ALS.from_factors(cfg, z["user_factors"], z["item_factors"])
    n_items = model.B.shape[0] if kind == "ease" else len(model.item_factors)
    if n_items != split.n_items:
        raise ValueError(f"holds a model of {n_items} items, expected {split.n_items}")
    return model, info


def fit_collab(
    split,
    kind: str = "auto",
    memory_gb: float = DEFAULT_MEMORY_GB,
    als: ALSConfig | None = None,
    ease_lambdas=EASE_LAMBDAS,
    cache: str | Path | None = None,
):
    """The collaborative model for ``split``: ``kind`` 'ease', 'als', or 'auto' (EASE^R when
    :func:`ease_bytes` of the catalogue is within ``memory_gb``, else ALS).

    Returns ``(model, info)``: ``model(users [B]) -> [B, I]`` and ``model.score_pairs(users
    [P], items [P]) -> [P]``; ``info`` names the model (``kind``), why it was chosen
    (``chosen_by``), its hyperparameters and validation scores. EASE^R past the physical
    memory raises :class:`CollabMemoryError` before anything is allocated.

    ``cache``: a folder where the fit (with its validation grid) is kept under
    :func:`fit_key`, so the jobs of one chain (``prepare``, ``generate-labels``,
    ``benchmark``) fit it once; ``info["cache"]`` says whether it was a hit."""
    if kind not in COLLAB_KINDS:
        raise ValueError(f"fit_collab kind={kind!r}; expected one of {COLLAB_KINDS}")
    if not memory_gb > 0:
        raise ValueError(f"fit_collab memory_gb={memory_gb!r}; expected > 0")
    # the fit is training-side (generate-labels reads it from the shared cache) whichever job
    # asks for it: it gets the split without its test parts, so a read of them raises LeakError
    split = split.training_view()
    n_items = split.n_items
    need_gb = ease_bytes(n_items) / 1e9
    if kind == "auto":
        kind = "ease" if need_gb <= memory_gb else "als"
        verdict = "within" if kind == "ease" else "over"
        chosen_by = (
            f"auto: EASE^R needs {need_gb:.2f} GB for {n_items} items, {verdict} the "
            f"{memory_gb:g} GB budget"
        )
    else:
        chosen_by = f"forced: collab={kind!r}"
    logger.info("collaborative model: %s (%s)", kind, chosen_by)
    base = {"kind": kind, "chosen_by": chosen_by, "n_items": int(n_items),
            "ease_gb_estimate": round(need_gb, 3), "memory_gb": float(memory_gb)}  # fmt: skip
    if kind == "ease":
        check_ease_fits(n_items)
    path = None
    if cache is not None:
        key = fit_key(split, kind, als, ease_lambdas)
        path = Path(cache) / f"{kind}-{key}.npz"
        if path.exists():
            try:
                model, info = _load_fit(path, split, kind)
            except (OSError, ValueError, KeyError, TypeError) as e:
                logger.warning("%s: unreadable cached fit (%s); fitting again", path, e)
            else:
                logger.info("collaborative model: %s fit read from the cache %s", kind, path)
                return model, {**base, **info, "cache": {"path": str(path), "hit": True}}
    if kind == "ease":
        model, info = fit_ease(split, lambdas=ease_lambdas)
    else:
        model, info = fit_als(split, als)
    if path is not None:
        _save_fit(path, model, info)
        logger.info("collaborative model: fit written to the cache %s", path)
    cached = {"cache": {"path": str(path), "hit": False}} if path is not None else {}
    return model, {**base, **info, **cached}
