"""`recdistill generate-labels --engine ray`: score the soft-label shards on Ray Data.

The driver (``pipelines.labels.generate_labels.run``) prepares the data, split and candidates and fits
the teacher's mix on validation exactly as the local engine does; this module then scores the
shards that are not done yet:

- one input row per shard (``shard_users`` users with all their candidates, so a causal LM
  still shares each user's prompt prefix over that user's candidates);
- ``map_batches`` with ``ShardScorer``, a callable class run by a fixed pool of
  ``ray_concurrency`` actors (``ray_num_cpus`` / ``ray_num_gpus`` each). Each actor loads the
  teacher once, replays the driver's validation encoding (``Part.warm_users``) and scores one
  shard per call with ``generate_labels.score_shard``, the function the local engine uses;
- the driver streams the scored rows back (Ray Data does not keep order: every row carries its
  shard id) and writes each finished shard to ``<out>.partial/shard-NNNNN.parquet`` through a
  temporary file and ``os.replace``. A shard is written only when all its rows are in, so a
  killed driver leaves complete shards only and a rerun skips them.

The driver writes the shards, not the actors, so the workers need no file system shared with
the driver: on a cluster only the teacher model must be readable on every node.

Ray is an optional extra (``pip install 'recdistill[ray]'``); ``import_ray`` says so when it is
missing. The driver joins ``ray_address`` (or ``$RAY_ADDRESS``) when given, uses an already
initialised Ray as it is, and otherwise starts a local Ray that it shuts down at the end.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from common.config import from_dict
from common.io import atomic_write
from pipelines.core import ray_cluster
from pipelines.data import InteractionData, Split
from pipelines.labels.config import SLEEP_ENV, GenerateLabelsConfig
from pipelines.labels.fit import FittedTeacher, build_text_part
from pipelines.labels.schema import features
from pipelines.labels.shards import STAMP_KEY, score_shard, shard_name

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'recdistill[ray]'  (or: pip install 'ray[data]==2.60.0')"
# Columns the actors add to each scored shard for the driver (shard id, wall-clock start and
# end of its scoring, actor process id); never written.
SHARD_COL, START_COL, END_COL, ACTOR_COL = "_shard", "_start", "_end", "_actor"
EXTRA_COLS = (SHARD_COL, START_COL, END_COL, ACTOR_COL)


def import_ray():
    """``ray`` with Ray Data, or an ``ImportError`` that says how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ImportError(
            f"generate-labels --engine ray needs Ray Data, which is not installed here ({e}); "
            f"install it with: {INSTALL_HINT}, or run with --engine local"
        ) from e
    return ray


@dataclass(frozen=True)
class RayPool:
    """The actor pool: ``concurrency`` actors of ``num_cpus`` CPUs (also their torch threads)
    and ``num_gpus`` GPUs each (> 0: the teacher runs on CUDA), on the cluster at ``address``
    (default ``$RAY_ADDRESS``, else a local Ray)."""

    concurrency: int
    num_cpus: float
    num_gpus: float
    address: str | None = None

    @classmethod
    def from_config(cls, c: GenerateLabelsConfig) -> RayPool:
        return cls(c.ray_concurrency, c.ray_num_cpus, c.ray_num_gpus, c.ray_address)

    @property
    def threads(self) -> int:
        """torch threads in each actor: the CPUs it was given (at least one)."""
        return max(1, int(self.num_cpus))

    @property
    def device(self) -> str:
        return "cuda" if self.num_gpus > 0 else "cpu"


@dataclass
class RayJob:
    """What the Ray engine needs from the driver: the pool, the label job's config as a dict
    (each actor rebuilds the LLM part from it), the fitted teacher, the data and split, the
    candidate rows of each shard to score (by shard id), each shard's stamp (see
    ``shards.shard_stamp``) and the folder the shards are written to."""

    pool: RayPool
    config: dict
    fitted: FittedTeacher
    data: InteractionData
    split: Split
    subs: dict[int, pd.DataFrame]
    stamps: dict[int, dict]
    partial: Path


class ShardScorer:
    """Ray Data actor: loads the teacher once, then scores one shard per call.

    ``shared`` is ``[ObjectRef]`` of the dict built by ``_scored_shards`` (config, data, split,
    the fitted non-text parts, the mix, the validation users and each shard's candidates)."""

    def __init__(self, shared: list, sleep: float = 0.0):
        import ray
        import torch

        s = ray.get(shared[0])
        c = from_dict(GenerateLabelsConfig, s["config"])
        pool = RayPool.from_config(c)
        torch.set_num_threads(pool.threads)
        text = build_text_part(c, s["data"], s["split"], pool.device, s["item_emb"])
        text.warm_users([s["valid_users"]])
        self.parts = [text, *s["parts"]]
        self.mix = s["mix"]
        self.data = s["data"]
        self.subs: dict[int, pd.DataFrame] = s["subs"]
        self.sleep = sleep

    def __call__(self, batch: dict[str, np.ndarray]):
        """``batch["shard"]``: ``[B]`` shard ids -> their scored rows (label schema plus
        ``EXTRA_COLS``) as one ``pyarrow.Table``."""
        import pyarrow as pa

        tables = []
        for i in batch["shard"].tolist():
            start = time.time()
            table = score_shard(self.subs[i], self.parts, self.mix, self.data)
            n = len(table)
            table = table.append_column(SHARD_COL, pa.array(np.full(n, i, np.int32)))
            table = table.append_column(START_COL, pa.array(np.full(n, start)))
            table = table.append_column(END_COL, pa.array(np.full(n, time.time())))
            table = table.append_column(ACTOR_COL, pa.array(np.full(n, os.getpid(), np.int64)))
            tables.append(table)
            if self.sleep:
                time.sleep(self.sleep)
        return pa.concat_tables(tables)


def connect(pool: RayPool) -> bool:
    """Make sure Ray is initialised (``pipelines.core.ray_cluster.connect``) with at least the
    CPUs the actor pool asks for; True when this call started it."""
    return ray_cluster.connect(
        import_ray(),
        pool.address,
        pool.concurrency * pool.num_cpus,
        f"ray_concurrency={pool.concurrency} x ray_num_cpus={pool.num_cpus:g}",
    )


def _check_resources(ray, pool: RayPool, n_actors: int, started: bool) -> None:
    have = ray.cluster_resources()
    need = {"CPU": n_actors * pool.num_cpus, "GPU": n_actors * pool.num_gpus}
    short = {k: v for k, v in need.items() if v > have.get(k, 0.0) + 1e-9}
    if not short:
        return
    msg = (
        f"ray engine: {n_actors} actors x (ray_num_cpus={pool.num_cpus}, "
        f"ray_num_gpus={pool.num_gpus}) need {need['CPU']:g} CPUs and {need['GPU']:g} GPUs, "
        f"but the Ray cluster has {have.get('CPU', 0.0):g} CPUs and {have.get('GPU', 0.0):g} "
        "GPUs; lower --ray-concurrency, --ray-num-cpus or --ray-num-gpus"
    )
    if started:
        raise ValueError(msg)
    logger.warning("%s (waiting in case an autoscaler adds nodes)", msg)


def write_parquet(path: Path, table, stamp: dict | None = None) -> None:
    """Write ``table`` to ``path`` atomically (see ``common.io.atomic_write``), with
    the shard's ``stamp`` in the schema metadata."""
    import pyarrow.parquet as pq

    if stamp is not None:
        table = table.replace_schema_metadata(
            {**(table.schema.metadata or {}), STAMP_KEY: json.dumps(stamp).encode()}
        )
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def score_shards(job: RayJob) -> tuple[int, dict]:
    """Score the shards ``job.subs`` on a Ray Data actor pool and write each to
    ``job.partial/shard-NNNNN.parquet``. Returns ``(pairs scored, engine info for the
    metadata)``."""
    ray = import_ray()
    pool = job.pool
    info: dict = {
        "name": "ray",
        "ray_version": ray.__version__,
        "concurrency": pool.concurrency,
        "num_cpus": pool.num_cpus,
        "num_gpus": pool.num_gpus,
        "actor_threads": pool.threads,
        "device": pool.device,
        "shards_scored": len(job.subs),
    }
    if not job.subs:
        return 0, info
    expected = {i: len(sub) for i, sub in job.subs.items()}
    t0 = time.time()
    started = connect(pool)
    ctx = ray.data.DataContext.get_current()
    bars = ctx.enable_progress_bars
    try:
        info["address"] = ray.get_runtime_context().gcs_address
        info["started_local_ray"] = started and not (pool.address or os.environ.get("RAY_ADDRESS"))
        n_actors = info["actors"] = min(pool.concurrency, len(job.subs))
        _check_resources(ray, pool, n_actors, started)
        ctx.enable_progress_bars = False  # tqdm below counts pairs instead
        scored = _scored_shards(ray, job, n_actors)
        n_scored, starts, ends, by_actor = _collect(scored, expected, job.partial, job.stamps)
    finally:
        ctx.enable_progress_bars = bars
        if started:
            ray.shutdown()
    info["startup_seconds"] = min(starts) - t0
    info["scoring_seconds"] = max(ends) - min(starts)
    info["scoring_pairs_per_second"] = n_scored / max(1e-9, info["scoring_seconds"])
    info["shards_per_actor"] = sorted(by_actor.values(), reverse=True)
    return n_scored, info


def _scored_shards(ray, job: RayJob, n_actors: int):
    """The lazy Ray dataset of scored rows: one input row per shard, mapped by
    ``ShardScorer`` on a fixed pool of ``n_actors``."""
    pool, fitted = job.pool, job.fitted
    shared = {
        "config": job.config,
        "data": job.data,
        "split": job.split,
        "parts": fitted.parts[1:],
        # the driver's item text embeddings: an actor encodes no item (1M items: ~30 min each)
        "item_emb": fitted.parts[0].item_embeddings(),
        "mix": fitted.mix,
        "valid_users": fitted.valid_users,
        "subs": job.subs,
    }
    sleep = float(os.environ.get(SLEEP_ENV, "0") or 0)
    remote = {"num_cpus": pool.num_cpus}
    if pool.num_gpus > 0:
        remote["num_gpus"] = pool.num_gpus
    todo = sorted(job.subs)
    # a fixed pool; one shard in flight per actor, so that an actor that starts first does
    # not queue shards that a slower-starting one could take
    strategy = ray.data.ActorPoolStrategy(size=n_actors, max_tasks_in_flight_per_actor=1)
    scored = ray.data.from_items(
        [{"shard": i} for i in todo], override_num_blocks=len(todo)
    ).map_batches(
        ShardScorer,
        fn_constructor_kwargs={"shared": [ray.put(shared)], "sleep": sleep},
        batch_size=1,
        batch_format="numpy",
        compute=strategy,
        **remote,
    )
    logger.info(
        "ray engine: %d shards on %d actors (num_cpus=%g, num_gpus=%g each)",
        len(todo),
        n_actors,
        pool.num_cpus,
        pool.num_gpus,
    )
    return scored


def _collect(
    scored, expected: dict[int, int], partial: Path, stamps: dict[int, dict] | None = None
) -> tuple[int, list[float], list[float], dict[int, int]]:
    """Stream the actors' output; write each shard once all its rows are in. Returns pairs
    written, each shard's scoring start and end times, and shards per actor process."""
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = features().arrow_schema
    pending: dict[int, list] = {}
    starts: list[float] = []
    ends: list[float] = []
    by_actor: dict[int, int] = {}
    n_scored = 0
    with tqdm(
        total=sum(expected.values()), unit="pair", desc="soft labels (ray)", disable=None
    ) as bar:
        for batch in scored.iter_batches(batch_size=None, batch_format="pyarrow"):
            for i in np.unique(batch[SHARD_COL].to_numpy()).tolist():
                piece = batch.filter(pc.equal(batch[SHARD_COL], i))
                pending.setdefault(i, []).append(piece)
                have = sum(len(p) for p in pending[i])
                if have > expected.get(i, -1):
                    raise RuntimeError(
                        f"ray engine: shard {i} came back with {have} rows; expected "
                        f"{expected.get(i)} (was it scored twice?)"
                    )
                if have < expected[i]:
                    continue
                table = pa.concat_tables(pending.pop(i))
                starts.append(pc.min(table[START_COL]).as_py())
                ends.append(pc.max(table[END_COL]).as_py())
                actor = pc.min(table[ACTOR_COL]).as_py()
                by_actor[actor] = by_actor.get(actor, 0) + 1
                table = table.drop_columns(list(EXTRA_COLS)).cast(schema)
                write_parquet(partial / f"{shard_name(i)}.parquet", table, (stamps or {}).get(i))
                n_scored += len(table)
                bar.update(len(table))
                expected_done = expected.pop(i)
                logger.debug("shard %d: %d pairs written", i, expected_done)
    if expected or pending:
        raise RuntimeError(
            f"ray engine: shards {sorted(expected)} never came back complete; rerun to resume"
        )
    return n_scored, starts, ends, by_actor
