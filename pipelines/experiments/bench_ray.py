"""Benchmark: soft-label throughput in-process vs on Ray Data with 1 and 2 actors.

    recdistill bench-ray --out runs/bench/ray.json

Runs ``generate-labels`` on MovieLens-100K users with the packaged teachers: the embedding
teacher (MiniLM, ``--users`` users with the default ~120 candidates each) and the causal-LM
teacher (SmolLM2, ``--causal-users`` users x ``--causal-candidates`` candidates), each with the
local engine at every ``--threads`` count and with the Ray engine at every ``--actors`` count
(``ray_num_cpus=1`` each, so one torch thread per actor). Writes, per run:

- ``pairs_per_second``: pairs / seconds of the scoring phase as the job records it. Local: the
  teacher is already loaded. Ray: includes starting the actors and loading one teacher each.
- ``scoring_pairs_per_second`` (Ray): pairs / (first shard start to last shard end on the
  actors), i.e. with the actors warm; compare this one with the local figure.
- ``identical_to_local`` and ``max_abs_score_diff``: each run's labels against the first
  local run's.
- ``shards_per_actor`` (Ray): how the shards spread over the actors.

One Ray (``ray.init(num_cpus=os.cpu_count())``) serves all Ray runs; its start is timed apart.
Timings depend on the machine and its load (recorded as ``loadavg``); they are never asserted
in tests.
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from common.io import write_json

logger = logging.getLogger(__name__)


def _compare(path_a: str, path_b: str) -> dict[str, Any]:
    from pipelines.labels.schema import COLUMNS, columns, load_labels

    a, _ = load_labels(path_a)
    b, _ = load_labels(path_b)
    ta, tb = columns(a), columns(b)
    same = len(a) == len(b) and all((ta[k] == tb[k]).all() for k in COLUMNS)
    diff = float(np.abs(ta["score"] - tb["score"]).max()) if len(a) == len(b) else None
    return {"identical_to_local": bool(same), "max_abs_score_diff": diff}


def bench_teacher(
    teacher: str,
    workdir: Path,
    *,
    users: int,
    n_negatives: int,
    max_positives: int,
    eval_users: int,
    eval_negatives: int,
    shard_users: int,
    actors: tuple[int, ...] = (1, 2),
    threads: tuple[int, ...] = (1, 2),
    dataset: str = "ml-100k",
) -> list[dict[str, Any]]:
    """One local run per thread count and one Ray run per actor count for ``teacher``;
    returns one dict each."""
    from pipelines.labels.generate_labels import GenerateLabelsConfig, run

    base = dict(
        dataset=dataset,
        teacher=teacher,
        max_users=users,
        n_negatives=n_negatives,
        max_positives=max_positives,
        eval_users=eval_users,
        eval_negatives=eval_negatives,
        shard_users=shard_users,
    )
    settings = [("local", t, 0) for t in threads] + [("ray", 1, n) for n in actors]
    rows: list[dict[str, Any]] = []
    local_out = None
    for engine, n_threads, n_actors in settings:
        out = workdir / f"{teacher}-{engine}-{n_actors}-{n_threads}"
        cfg = GenerateLabelsConfig(
            **base,
            engine=engine,
            threads=n_threads,
            ray_concurrency=max(1, n_actors),
            ray_num_cpus=1.0,
            out=str(out),
        )
        logger.info("%s teacher, %s engine, %d actors", teacher, engine, n_actors)
        start = time.perf_counter()
        meta = run(cfg)
        row: dict[str, Any] = {
            "teacher": teacher,
            "engine": engine,
            "actors": n_actors or None,
            "threads_per_worker": n_threads,
            "pairs": meta["n_pairs"],
            "users": meta["n_users"],
            "shards": -(-meta["n_users"] // shard_users),
            "wall_seconds": time.perf_counter() - start,
            "pairs_per_second": meta["pairs_per_second"],
        }
        if engine == "ray":
            e = meta["engine"]
            row.update(
                startup_seconds=e["startup_seconds"],
                scoring_seconds=e["scoring_seconds"],
                scoring_pairs_per_second=e["scoring_pairs_per_second"],
                shards_per_actor=e["shards_per_actor"],
            )
        if local_out is None:
            local_out = str(out)
        else:
            row.update(_compare(local_out, str(out)))
        logger.info("%s", row)
        rows.append(row)
    return rows


def run_bench(
    *,
    users: int = 200,
    causal_users: int = 8,
    causal_candidates: int = 20,
    actors: tuple[int, ...] = (1, 2),
    threads: tuple[int, ...] = (1, 2),
    teachers: tuple[str, ...] = ("embedding", "causal_lm"),
) -> dict[str, Any]:
    """Benchmark the teachers in ``teachers``; returns the JSON-ready result."""
    import ray

    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_before": os.getloadavg(),
        },
        "ray_version": ray.__version__,
        "runs": [],
    }
    start = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    result["ray_init_seconds"] = time.perf_counter() - start
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp:
            if "embedding" in teachers:
                result["runs"] += bench_teacher(
                    "embedding",
                    Path(tmp),
                    users=users,
                    n_negatives=100,
                    max_positives=20,
                    eval_users=100,
                    eval_negatives=50,
                    shard_users=max(1, users // 8),
                    actors=actors,
                    threads=threads,
                )
            if "causal_lm" in teachers:
                pos = max(1, causal_candidates // 4)
                result["runs"] += bench_teacher(
                    "causal_lm",
                    Path(tmp),
                    users=causal_users,
                    n_negatives=causal_candidates - pos,
                    max_positives=pos,
                    eval_users=4,
                    eval_negatives=10,
                    shard_users=max(1, causal_users // 4),
                    actors=actors,
                    threads=threads,
                )
    finally:
        ray.shutdown()
    result["machine"]["loadavg_after"] = os.getloadavg()
    return result


@dataclass
class BenchRayConfig:
    out: str = field(default="runs/bench/ray.json", metadata={"help": "JSON file to write"})
    users: int = field(default=200, metadata={"help": "embedding teacher: users"})
    causal_users: int = field(default=8, metadata={"help": "causal-LM teacher: users"})
    causal_candidates: int = field(
        default=20, metadata={"help": "causal-LM teacher: candidates/user"}
    )
    actors: tuple[int, ...] = field(default=(1, 2), metadata={"help": "Ray actor counts"})
    threads: tuple[int, ...] = field(
        default=(1, 2), metadata={"help": "local engine: torch threads"}
    )
    teachers: tuple[Literal["embedding", "causal_lm"], ...] = field(
        default=("embedding", "causal_lm"), metadata={"help": "teachers to benchmark"}
    )

    def __post_init__(self):
        for name in ("users", "causal_users", "causal_candidates"):
            if getattr(self, name) < 1:
                raise ValueError(f"BenchRayConfig.{name}={getattr(self, name)}; expected >= 1")
        for name in ("actors", "threads", "teachers"):
            if not getattr(self, name):
                raise ValueError(f"BenchRayConfig.{name} is empty; give at least one")
        for name in ("actors", "threads"):
            if min(getattr(self, name)) < 1:
                raise ValueError(
                    f"BenchRayConfig.{name}={getattr(self, name)}; expected counts >= 1"
                )


def run(config: BenchRayConfig) -> dict[str, Any]:
    """Run the benchmark; returns (and writes to ``config.out``) its result."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    result = run_bench(
        users=config.users,
        causal_users=config.causal_users,
        causal_candidates=config.causal_candidates,
        actors=tuple(config.actors),
        threads=tuple(config.threads),
        teachers=tuple(config.teachers),
    )
    write_json(config.out, result)
    logger.info("wrote %s", config.out)
    return result
