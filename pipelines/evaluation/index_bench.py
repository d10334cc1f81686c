"""`recdistill index-bench`: the index benchmark at catalogue scale.

Runs ``pipelines.evaluation.index_scale.run_scale`` on seeded synthetic catalogues and writes a
JSON of everything it measured::

    recdistill index-bench --sizes 100000 --out runs/bench/scale.json
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pipelines.core.args import ThreadArgs

logger = logging.getLogger(__name__)


@dataclass
class IndexBenchConfig(ThreadArgs):
    defaults: ClassVar[dict[str, Any]] = {"threads": 1}

    sizes: tuple[int, ...] = field(
        default=(100_000, 1_000_000), metadata={"help": "catalogue sizes (100000 1000000)"}
    )
    dim: int = field(default=64, metadata={"help": "embedding size"})
    queries: int = field(default=1000, metadata={"help": "queries for recall / batch QPS"})
    single: int = field(default=200, metadata={"help": "queries timed one at a time"})
    k: int = field(default=10, metadata={"help": "recall@k"})
    build_threads: int = field(default=2, metadata={"help": "faiss build threads"})
    sigma: float = field(
        default=0.5,
        metadata={"help": "log-normal norm sigma for the un-normalised case (0 = skip it)"},
    )
    lognormal_sizes: tuple[int, ...] | None = field(
        default=None,
        metadata={"help": "sizes that also run the log-normal case (default: smallest size)"},
    )
    nprobe: tuple[int, ...] = field(
        default=(8, 16, 32, 64, 128, 256), metadata={"help": "IVF nprobe sweep"}
    )
    ef: tuple[int, ...] = field(
        default=(16, 32, 64, 128, 256), metadata={"help": "HNSW efSearch sweep"}
    )
    ef_construction: int = field(default=40, metadata={"help": "HNSW efConstruction"})
    hnsw_m: int = field(default=32, metadata={"help": "HNSW M"})
    seed: int = field(default=0, metadata={"help": "seed"})
    repeats: int = field(default=2, metadata={"help": "timings are the best of N passes"})
    shards: tuple[int, ...] = field(
        default=(),
        metadata={"help": "also --shard-kinds over each K shards (unit norm), e.g. 2 4 8"},
    )
    shard_kinds: tuple[str, ...] = field(  # str, not IndexKind: --help imports no faiss
        default=("ivf_sq8",),
        metadata={"help": "the kinds measured sharded (IndexConfig.kind names)"},
    )
    settings: tuple[str, ...] = field(
        default=(),
        metadata={"help": "only these settings, by report name, e.g. flat ivf_sq8 (default all)"},
    )
    out: str = field(default="runs/bench/scale.json", metadata={"help": "output JSON path"})


def run(config: IndexBenchConfig) -> dict[str, Any]:
    """Run the scale benchmark; returns (and writes to ``config.out``) its report."""
    from pipelines.evaluation.index_scale import run_scale

    c = config
    report = run_scale(
        sizes=c.sizes,
        dim=c.dim,
        n_queries=c.queries,
        n_single=c.single,
        k=c.k,
        threads=c.threads,
        build_threads=c.build_threads,
        lognormal_sigma=c.sigma,
        lognormal_sizes=c.lognormal_sizes,
        nprobes=c.nprobe,
        ef_searches=c.ef,
        ef_construction=c.ef_construction,
        hnsw_m=c.hnsw_m,
        seed=c.seed,
        repeats=c.repeats,
        out=c.out,
        shards=c.shards,
        shard_kinds=c.shard_kinds,
        settings=c.settings,
    )
    for case in report["results"]:
        for name, r in case["indexes"].items():
            logger.info(
                "n=%d sigma=%.1f %-22s recall@%d=%.4f qps_b1=%8.0f qps_b256=%8.0f MB=%.1f",
                case["n_items"],
                case["norm_sigma"],
                name,
                c.k,
                r[f"recall@{c.k}_vs_exact"],
                r.get("qps_batch1", float("nan")),
                r.get("qps_batch256", float("nan")),
                r["bytes"] / 1e6,
            )
    logger.info("wrote %s (%.1fs)", c.out, report["wall_s"])
    return report
