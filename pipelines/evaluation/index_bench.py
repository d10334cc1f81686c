"""`python -m pipelines.evaluation.index_bench`: the index benchmark at catalogue scale.

Runs ``pipelines.evaluation.index_scale.run_scale`` on seeded synthetic catalogues and writes a
JSON of everything it measured::

    python -m pipelines.evaluation.index_bench --sizes 100000 --out runs/bench/scale.json
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

from pipelines.evaluation.index_scale import run_scale

logger = logging.getLogger(__name__)


def _int_list(text: str) -> list[int]:
    try:
        return [int(float(t)) for t in text.split(",") if t.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from e


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m pipelines.evaluation.index_bench",
        description="Scale benchmark of FAISS item indexes on synthetic embeddings.",
    )
    p.add_argument(
        "--sizes",
        type=_int_list,
        default=[100_000, 1_000_000],
        help="comma-separated catalogue sizes (default 100000,1000000)",
    )
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--queries", type=int, default=1000, help="queries for recall / batch QPS")
    p.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=1, help="faiss search threads")
    p.add_argument("--build-threads", type=int, default=2, help="faiss build threads")
    p.add_argument(
        "--sigma",
        type=float,
        default=0.5,
        help="log-normal norm sigma for the un-normalised case (0 = skip it)",
    )
    p.add_argument(
        "--lognormal-sizes",
        type=_int_list,
        default=None,
        help="sizes that also run the log-normal case (default: smallest size)",
    )
    p.add_argument("--nprobe", type=_int_list, default=[8, 16, 32, 64, 128, 256])
    p.add_argument("--ef", type=_int_list, default=[16, 32, 64, 128, 256])
    p.add_argument("--ef-construction", type=int, default=40)
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=2, help="timings are the best of N passes")
    p.add_argument("--out", default="runs/bench/scale.json", help="output JSON path")
    return p


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)  # unknown flags are an error
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    report = run_scale(
        sizes=args.sizes,
        dim=args.dim,
        n_queries=args.queries,
        n_single=args.single,
        k=args.k,
        threads=args.threads,
        build_threads=args.build_threads,
        lognormal_sigma=args.sigma,
        lognormal_sizes=args.lognormal_sizes,
        nprobes=args.nprobe,
        ef_searches=args.ef,
        ef_construction=args.ef_construction,
        hnsw_m=args.hnsw_m,
        seed=args.seed,
        repeats=args.repeats,
        out=args.out,
    )
    for case in report["results"]:
        for name, r in case["indexes"].items():
            logger.info(
                "n=%d sigma=%.1f %-22s recall@%d=%.4f qps_b1=%8.0f qps_b256=%8.0f MB=%.1f",
                case["n_items"],
                case["norm_sigma"],
                name,
                args.k,
                r[f"recall@{args.k}_vs_exact"],
                r.get("qps_batch1", float("nan")),
                r.get("qps_batch256", float("nan")),
                r["bytes"] / 1e6,
            )
    logger.info("wrote %s (%.1fs)", args.out, report["wall_s"])
    return report


if __name__ == "__main__":
    main()
