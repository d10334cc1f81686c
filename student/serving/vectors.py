"""Item and query vectors for the index: checked, normalised, padded, MIPS-augmented, and
fingerprinted (numpy in, numpy out).

With ``IndexConfig.bias`` the last column is a score bias (the student's ``item_bias``): an
item vector is ``[v, b]`` and a query ``[w, 1]`` (``TwoTower.index_queries``: the user vector
times the model's scale), so the inner product is ``w . v + b``, the model's score. Normalising
then touches only the items' ``v`` (the bias column is never normalised away) and never the
queries: a query's norm is what weighs the dot product against the bias.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import faiss
import numpy as np

from student.serving.config import NORM_SPREAD_WARN

logger = logging.getLogger(__name__)


def embedding_fingerprint(emb: np.ndarray) -> str:
    """sha256 of a float32 C-contiguous copy of ``emb`` and its shape (hex)."""
    arr = np.ascontiguousarray(emb, dtype=np.float32)
    h = hashlib.sha256(str(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def as_matrix(x: np.ndarray, name: str, dim: int | None = None) -> np.ndarray:
    """Validate a [N, D] finite float array and return a float32 C-contiguous copy."""
    arr = np.asarray(x)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-d array [N, D], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise ValueError(f"{name}: expected a real numeric array, got dtype {arr.dtype}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name}: dimension {arr.shape[1]} does not match the index dim {dim}")
    arr = np.array(arr, dtype=np.float32, order="C", copy=True)
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{name}: row {row} has a NaN or inf value ({int(bad.sum())} rows)")
    return arr


def normalize_rows(x: np.ndarray, name: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1)
    zero = norms == 0
    if zero.any():
        row = int(np.flatnonzero(zero)[0])
        raise ValueError(f"{name}: row {row} has zero norm and cannot be normalised")
    faiss.normalize_L2(x)
    return x


def as_ids(item_ids: Any, n: int) -> np.ndarray:
    ids = np.asarray(item_ids)
    if ids.ndim != 1 or len(ids) != n:
        raise ValueError(f"item_ids: expected a 1-d array of length {n}, got shape {ids.shape}")
    if ids.dtype.kind == "O":
        ids = ids.astype(str)
    if ids.dtype.kind not in "iuU":
        raise ValueError(f"item_ids: expected integer or string ids, got dtype {ids.dtype}")
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1][0].item()
        raise ValueError(f"item_ids: id {dup!r} appears {int(counts[counts > 1][0])} times")
    return ids


def pad_columns(x: np.ndarray, width: int) -> np.ndarray:
    """[N, d] -> [N, width] with zero columns appended (inner products and L2 unchanged)."""
    if x.shape[1] == width:
        return x
    return np.hstack([x, np.zeros((len(x), width - x.shape[1]), dtype=np.float32)])


def mips_augment(x: np.ndarray, max_norm: float | None = None) -> tuple[np.ndarray, float]:
    """MIPS -> L2: [N, D] -> ([N, D+1] with extra coordinate sqrt(M^2 - |x|^2)); M = the
    given ``max_norm`` (an index's own, for a sample of its rows), else x's max norm."""
    norms2 = np.einsum("ij,ij->i", x, x).astype(np.float64)
    max_norm = float(np.sqrt(norms2.max())) if max_norm is None else float(max_norm)
    extra = np.sqrt(np.maximum(max_norm**2 - norms2, 0.0)).astype(np.float32)
    return np.hstack([x, extra[:, None]]), max_norm


def index_items(
    x: np.ndarray, config: Any, max_norm: float | None = None
) -> tuple[np.ndarray, float | None]:
    """Checked item vectors [N, D] as ``config`` (an ``IndexConfig``) stores them, before
    padding: normalised (with ``bias``, all but the last column), then MIPS-augmented
    (radius ``max_norm``, else their own). Returns (vectors, the MIPS radius or None)."""
    if config.normalize and config.bias:
        x = np.hstack([normalize_rows(np.ascontiguousarray(x[:, :-1]), "item_emb"), x[:, -1:]])
    elif config.normalize:
        x = normalize_rows(x, "item_emb")
    if not config.mips_transform:
        return x, None
    return mips_augment(x, max_norm)


def index_queries(q: np.ndarray, config: Any, max_norm: float | None) -> np.ndarray:
    """Checked queries [B, D] in the index's space, before padding: normalised (not with
    ``bias``: see the module note); with the MIPS transform put on the sphere of radius
    ``max_norm`` that holds the augmented items (zero extra coordinate): the per-query ranking
    is unchanged, but IVF probing and HNSW routing by L2 then see the query where the data is."""
    if config.normalize and not config.bias:
        q = normalize_rows(q, "query")
    if not config.mips_transform:
        return q
    q = q if config.normalize and not config.bias else normalize_rows(q, "query")
    return np.hstack([q * max_norm, np.zeros((len(q), 1), dtype=np.float32)])


def check_norms(x: np.ndarray, config: Any) -> None:
    """Warn about setups measured to lose recall on vectors whose norms spread.

    Measured on log-normal norms (sigma 0.5, 100k x 64, see pipelines/index_bench.py): IVF over
    inner product collapses (recall@10 0.38 at nprobe 8, 0.85 at 128 where unit-norm data gets
    0.98); the MIPS transform roughly halves the nprobe needed. HNSW over inner product held
    (0.99 at efSearch 128) but HNSW over the MIPS transform did not (0.77).
    """
    norms = np.linalg.norm(x, axis=1)
    mean = float(norms.mean())
    spread = float(norms.std() / mean) if mean > 0 else 0.0
    if (config.normalize and not config.bias) or config.spec.exact or spread <= NORM_SPREAD_WARN:
        return
    if config.is_ivf and not config.mips_transform:
        advice = "IVF over inner product on such vectors loses recall badly; set mips_transform"
    elif config.is_hnsw and config.mips_transform:
        advice = "HNSW over the MIPS transform lost recall in our measurements; use it without"
    else:
        logger.info("item norms spread (std/mean=%.3f); normalize=False keeps raw IP", spread)
        return
    logger.warning(
        "item norms spread (std/mean=%.3f > %.2f) with normalize=False and kind=%r: %s, or "
        "use normalize=True for cosine-trained embeddings, and measure recall against exact "
        "search (pipelines.index_bench)",
        spread,
        NORM_SPREAD_WARN,
        config.kind,
        advice,
    )
