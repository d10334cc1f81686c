"""FAISS index evaluation: exact search (the oracle), recall against it, QPS and latency
percentiles, parameter sweeps. Plain functions, arrays in, numbers out (in the spirit of faiss
``contrib/evaluation.py``); timings use ``time.perf_counter`` after a warm-up, with faiss
limited to ``threads`` OpenMP threads. Tests never use the timings for their numbers."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from student.serving import ItemIndex
from student.serving.kinds import faiss_threads

logger = logging.getLogger(__name__)

ANN_RECALL_TARGET = 0.95


# ------------------------------------------------------------------------ oracle
def exact_topk(
    items: np.ndarray, queries: np.ndarray, k: int, batch: int = 64, tie_seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product (numpy BLAS), the recall oracle.

    items [N, D], queries [B, D] -> (scores [B, k] float32, rows [B, k] int64), equal scores
    in the seeded tie order of the rows (``pipelines.core.metrics.topk``, ``tie_seed``), as
    every ranking of the benchmark.
    """
    from pipelines.core.metrics import topk

    items = np.ascontiguousarray(items, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if items.ndim != 2 or queries.ndim != 2 or items.shape[1] != queries.shape[1]:
        raise ValueError(
            f"exact_topk: items {items.shape} and queries {queries.shape} must be [N, D], [B, D]"
        )
    k_eff = min(k, len(items))
    scores = np.empty((len(queries), k_eff), np.float32)
    rows = np.empty((len(queries), k_eff), np.int64)
    for start in range(0, len(queries), batch):
        s = queries[start : start + batch] @ items.T
        top = topk(s, k_eff, overwrite=True, tie_seed=tie_seed)  # nothing excluded: s kept
        rows[start : start + batch] = top
        scores[start : start + batch] = np.take_along_axis(s, top, axis=1)
    return scores, rows


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean |approx[:k] & exact[:k]| / k over queries, k = exact_ids.shape[1]; -1 never counts."""
    approx_ids = np.asarray(approx_ids)
    exact_ids = np.asarray(exact_ids)
    if approx_ids.ndim != 2 or exact_ids.ndim != 2 or len(approx_ids) != len(exact_ids):
        raise ValueError(
            f"recall_at_k: approx {approx_ids.shape} and exact {exact_ids.shape} must be [B, k] "
            "with the same B"
        )
    k = exact_ids.shape[1]
    if k == 0 or len(exact_ids) == 0:
        raise ValueError("recall_at_k: exact_ids is empty")
    hits = 0
    for a, e in zip(approx_ids[:, :k], exact_ids, strict=True):
        hits += np.intersect1d(a[a >= 0], e).size
    return hits / (k * len(exact_ids))


# ------------------------------------------------------------------------ timing
@contextlib.contextmanager
def blas_threshold(value: int | None) -> Iterator[None]:
    """Temporarily set ``faiss.cvar.distance_compute_blas_threshold`` (None = leave as is).

    Flat search uses BLAS only when n_queries * dim >= threshold (faiss default 128000, i.e.
    2000 queries at 64-d); 0 makes every batch use BLAS.
    """
    old = faiss.cvar.distance_compute_blas_threshold
    if value is not None:
        faiss.cvar.distance_compute_blas_threshold = int(value)
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = old


def bench_index(
    index: ItemIndex,
    queries: np.ndarray,
    exact_ids: np.ndarray,
    k: int = 10,
    batch_sizes: Sequence[int] = (1, 256),
    n_single: int = 200,
    threads: int = 1,
    warmup: int = 10,
    blas: int | None = None,
    repeats: int = 1,
) -> dict[str, Any]:
    """Recall@k vs exact, QPS per batch size, batch-1 p50/p99 latency (ms) and bytes.

    queries [B, D]; exact_ids [B, >=k] item rows from :func:`exact_topk`. Batch-1 timings use
    the first ``n_single`` queries one at a time; larger batches time all queries (and the
    largest batch's results give the recall). ``blas`` overrides faiss's BLAS threshold.
    With ``repeats > 1`` each query (batch 1) or batch is timed that many times and its best
    time kept, which damps interference from other processes on a shared machine. Timings go
    through ``ItemIndex.search``, so they include its input checks and normalisation (the real
    serving path; a few microseconds per call).
    """
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"bench_index: repeats={repeats!r}; expected an int >= 1")
    if k > exact_ids.shape[1]:
        raise ValueError(f"bench_index: k={k} exceeds exact_ids width {exact_ids.shape[1]}")
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    out: dict[str, Any] = {}
    with faiss_threads(threads), blas_threshold(blas):
        for q in queries[:warmup]:
            index.search(q[None], k)
        rows = None
        for b in sorted(set(batch_sizes)):
            if b == 1:
                qs = queries[:n_single]
                lat = np.full(len(qs), np.inf)
                for _ in range(repeats):
                    for i in range(len(qs)):
                        t0 = time.perf_counter()
                        index.search(qs[i : i + 1], k)
                        lat[i] = min(lat[i], time.perf_counter() - t0)
                out["qps_batch1"] = float(len(qs) / lat.sum())
                out["p50_ms"] = float(np.percentile(lat, 50) * 1e3)
                out["p99_ms"] = float(np.percentile(lat, 99) * 1e3)
                continue
            starts = range(0, len(queries), b)
            best = np.full(len(starts), np.inf)
            for _ in range(repeats):
                parts = []
                for j, start in enumerate(starts):
                    t0 = time.perf_counter()
                    parts.append(index.search(queries[start : start + b], k)[1])
                    best[j] = min(best[j], time.perf_counter() - t0)
            out[f"qps_batch{b}"] = float(len(queries) / best.sum())
            rows = np.vstack(parts)
        if rows is None:
            rows = index.search(queries, k)[1]
    metrics = {f"recall@{k}_vs_exact": recall_at_k(rows, exact_ids[:, :k])}
    metrics.update(out)
    metrics["bytes"] = index.nbytes()
    metrics["threads"] = threads
    metrics["repeats"] = repeats
    return metrics


def sweep(
    index: ItemIndex,
    queries: np.ndarray,
    exact_ids: np.ndarray,
    param: str,
    values: Sequence[int],
    **bench_kwargs: Any,
) -> list[dict[str, Any]]:
    """Recall vs QPS over ``param`` ("nprobe", "ef_search" or "refine_factor") values.

    Returns one dict per value: {"param", "value", "recall", "qps" (batch 1), ...bench_index}.
    The index's search parameter is restored afterwards.
    """
    if param not in ("nprobe", "ef_search", "refine_factor"):
        raise ValueError(f"sweep: param={param!r}; allowed: nprobe, ef_search, refine_factor")
    k = bench_kwargs.get("k", 10)
    old = getattr(index.config, param)
    points = []
    try:
        for v in tqdm(values, desc=f"sweep {param}", leave=False):
            index.set_search_params(**{param: int(v)})
            m = bench_index(index, queries, exact_ids, **bench_kwargs)
            points.append(
                {
                    "param": param,
                    "value": int(v),
                    "recall": m[f"recall@{k}_vs_exact"],
                    "qps": m.get("qps_batch1"),
                    **m,
                }
            )
            logger.info(
                "%s=%s recall=%.4f qps_batch1=%.0f",
                param,
                v,
                m[f"recall@{k}_vs_exact"],
                m.get("qps_batch1", float("nan")),
            )
    finally:
        index.set_search_params(**{param: old})
    return points


def pick_operating_point(
    points: list[dict[str, Any]], recall_target: float = ANN_RECALL_TARGET
) -> dict[str, Any]:
    """The fastest sweep point (batch-1 QPS) reaching ``recall_target``, else the best recall."""
    ok = [p for p in points if p["recall"] >= recall_target]
    if ok:
        return max(ok, key=lambda p: p["qps"] or 0.0)
    return max(points, key=lambda p: p["recall"])
