"""The benchmark's index part: the distilled student's item embeddings in each FAISS index
kind, recall against exact search, speed, size, and NDCG@10 through the index (the server's
query path) for the test segment's users."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from pipelines.core.metrics import per_user_metrics
from pipelines.data import histories
from pipelines.evaluation.segments import Segment

logger = logging.getLogger(__name__)


def bench_indexes(model, split, data, seg: Segment, c: Any) -> dict:
    """The student's item embeddings in each index kind of ``c.indexes`` (``c``: the
    benchmark's config: ``indexes``, ``n_single``, ``threads``, ``tie_seed``; with
    ``index_shards`` K > 1 also ``sharded_kind`` over K shards, as row ``"<kind> xK shards"``):
    recall against exact search, speed, size, and NDCG@10 through the index for ``seg``'s users
    (read from train + valid, seen filtered)."""
    from pipelines.evaluation.index_eval import bench_index, exact_topk, sweep
    from student.serving import IndexConfig, ItemIndex, Retriever

    known = split.known_before("test")
    hist = torch.as_tensor(histories(known, data.n_users, model.config.history_len, data.n_items))
    users = torch.as_tensor(seg.users)
    with torch.no_grad():
        items = model.encode_items(torch.arange(data.n_items)).numpy().astype(np.float32)
        queries = model.index_queries(model.encode_users(users, hist[users])).numpy()
    _, exact = exact_topk(items, queries, 10, tie_seed=c.tie_seed)
    timing = {"k": 10, "n_single": c.n_single, "threads": c.threads}
    pos = {iid: j for j, iid in enumerate(data.items.item_id)}
    out = {}
    space = {"normalize": model.config.normalize, "bias": model.config.item_bias}
    rows = [(kind, IndexConfig(kind=kind, **space)) for kind in c.indexes]
    shards = c.index_shards
    if shards > 1:  # the same measurements of the kind over K shards (IndexShards)
        kind = c.sharded_kind
        rows.append((f"{kind} x{shards} shards", IndexConfig(kind=kind, shards=shards, **space)))
    for kind, cfg in rows:
        t_build = time.perf_counter()
        index = ItemIndex.build(items, data.items.item_id.to_numpy(), cfg, threads=c.threads)
        build_seconds = time.perf_counter() - t_build
        m = bench_index(index, queries, exact, **timing)
        entry = {k: m.get(k) for k in INDEX_REPORT_KEYS}
        entry["build_seconds"] = build_seconds
        entry["items_per_second_indexed"] = len(items) / build_seconds
        # ranking quality through the index, seen items filtered out: the server's query path
        ids = Retriever(model, index, hist.numpy(), seg.exclude).retrieve(seg.users, 10)
        rows = np.vectorize(pos.get)(ids)
        per = per_user_metrics(rows, [seg.truth[u].indices for u in seg.users], ks=(10,))
        entry["ndcg@10"] = float(per["ndcg@10"].mean())
        entry["config"] = cfg.to_dict()
        if cfg.is_ivf or cfg.is_hnsw:
            param, values = ("nprobe", IVF_SWEEP) if cfg.is_ivf else ("ef_search", HNSW_SWEEP)
            entry["sweep"] = sweep(index, queries, exact, param, list(values), **timing)
        out[kind] = entry
        logger.info("index %s: recall@10 vs exact %.4f", kind, entry["recall@10_vs_exact"])
    return out


INDEX_REPORT_KEYS = ("recall@10_vs_exact", "qps_batch1", "qps_batch256", "p50_ms", "p99_ms",
                     "bytes")  # fmt: skip
IVF_SWEEP = (1, 2, 4, 8, 16, 32)
HNSW_SWEEP = (8, 16, 32, 64, 128)
