"""Label shards: score one shard of candidates with the fitted teacher, write and read it
atomically (``<out>.partial/shard-NNNNN``); both engines use these."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from common.io import atomic_dir, read_json
from pipelines.core.progress import Progress
from pipelines.labels.config import SLEEP_ENV
from pipelines.labels.schema import (
    LabelError,
    features,
)
from pipelines.labels.teacher import (
    Mix,
)

logger = logging.getLogger(__name__)
STAMP_FILE = "recdistill_shard.json"  # in a local shard's folder; Parquet schema metadata key
STAMP_KEY = b"recdistill_shard"


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def shard_stamp(job_hash: str, users) -> dict:
    """What a shard was scored from: the job hash (config, dataset and split fingerprints) and
    a hash of the shard's users. A shard whose stamp differs is rescored."""
    users = np.ascontiguousarray(np.asarray(users, dtype=np.int64))
    return {"job_hash": job_hash, "users": hashlib.sha256(users.tobytes()).hexdigest()[:16]}


def read_stamp(partial: Path, i: int) -> dict | None:
    """The stamp a finished shard recorded (``None`` if it recorded none)."""
    name = shard_name(i)
    if (partial / name / "dataset_info.json").exists():
        f = partial / name / STAMP_FILE
        return read_json(f, "a label shard's stamp") if f.exists() else None
    import pyarrow.parquet as pq

    meta = pq.read_schema(partial / f"{name}.parquet").metadata or {}
    return json.loads(meta[STAMP_KEY]) if STAMP_KEY in meta else None


def shard_done(partial: Path, i: int, stamp: dict | None = None) -> bool:
    """A complete shard: a ``datasets`` folder (local engine) or a Parquet file (ray engine).
    With ``stamp``, a shard scored from other inputs (or recording none) is not done: it is
    deleted (it sits in the job's own ``.partial`` folder) and rescored."""
    name = shard_name(i)
    folder, parquet = partial / name, partial / f"{name}.parquet"
    done = (folder / "dataset_info.json").exists() or parquet.exists()
    if not done or stamp is None:
        return done
    got = read_stamp(partial, i)
    if got == stamp:
        return True
    logger.warning(
        "%s: scored from other inputs (stamp %s, now %s); rescoring it", name, got, stamp
    )
    if folder.exists():
        shutil.rmtree(folder)
    parquet.unlink(missing_ok=True)
    return False


def load_shard(partial: Path, i: int):
    """Shard ``i`` as a ``datasets.Dataset`` in the label schema, whichever engine wrote it."""
    from datasets import Dataset, DatasetInfo, load_from_disk

    name = shard_name(i)
    if (partial / name / "dataset_info.json").exists():
        return load_from_disk(str(partial / name))
    import pyarrow.parquet as pq

    path = partial / f"{name}.parquet"
    table = pq.read_table(path)
    schema = features().arrow_schema
    if table.schema.names != schema.names:
        raise LabelError(f"{path}: columns {table.schema.names}; expected {schema.names}")
    return Dataset(table.cast(schema), info=DatasetInfo(features=features()))


def score_local(partial: Path, subs, parts, mix, data, stamps=None) -> int:
    """The local engine: score and write shards in this process. ``subs`` yields ``(i,
    candidate rows of shard i)`` (e.g. lazily from ``iter_candidates``, one shard in memory);
    each shard is written with its ``stamps[i]`` (see :func:`shard_stamp`). Returns pairs."""
    sleep = float(os.environ.get(SLEEP_ENV, "0") or 0)
    t_score = time.perf_counter()
    n_scored = 0
    with Progress(desc="soft labels", unit="pair") as bar:
        for i, sub in subs:
            write_shard(partial / shard_name(i), sub, parts, mix, data, (stamps or {}).get(i))
            n_scored += len(sub)
            bar.update(len(sub))
            bar.set_postfix(
                pairs_per_s=f"{n_scored / max(1e-9, time.perf_counter() - t_score):.0f}"
            )
            if sleep:
                time.sleep(sleep)
    return n_scored


def score_shard(sub: pd.DataFrame, parts, mix: Mix, data):
    """Score one shard: ``sub`` holds candidate rows (``user``, ``item``, ``observed``,
    ``source``; all candidates of each of its users). Returns a ``pyarrow.Table`` in the label
    schema (``features()``), one row per row of ``sub``, in the same order; ``rank`` is the
    position in the user's list by score (0 = best, ties by row order)."""
    import pyarrow as pa

    u, i = sub.user.to_numpy(), sub.item.to_numpy()
    scores = mix.score({p.name: p.score(u, i) for p in parts}, items=i)
    if not np.isfinite(scores).all():
        bad = int(np.flatnonzero(~np.isfinite(scores))[0])
        raise LabelError(
            f"teacher gave a non-finite score for user {data.users.user_id.iat[u[bad]]!r}, item {data.items.item_id.iat[i[bad]]!r}"
        )
    frame = pd.DataFrame({"user": u, "score": scores})
    rank = (
        frame.groupby("user")["score"]
        .rank(ascending=False, method="first")
        .to_numpy()
        .astype(np.int32)
        - 1
    )
    columns = {
        # .iloc takes the shard's ids only (to_numpy() first would convert all ids of the
        # catalogue, 2M Python strings a shard at 1M users and items)
        "user_id": data.users.user_id.iloc[u].tolist(),
        "item_id": data.items.item_id.iloc[i].tolist(),
        "user": u.astype(np.int32),
        "item": i.astype(np.int32),
        "score": scores,
        "prob": (1.0 / (1.0 + np.exp(-scores.astype(np.float64)))).astype(np.float32),
        "observed": sub.observed.to_numpy(),
        "rank": rank,
        "source": sub.source.tolist(),
    }
    return pa.table(columns, schema=features().arrow_schema)


@contextlib.contextmanager
def quiet_datasets():
    """No per-shard "Saving the dataset" bars: the job has its own progress bar."""
    from datasets.utils import logging as ds_logging

    was = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            ds_logging.enable_progress_bar()


def write_shard(path: Path, sub: pd.DataFrame, parts, mix, data, stamp: dict | None = None) -> None:
    from datasets import Dataset, DatasetInfo

    ds = Dataset(score_shard(sub, parts, mix, data), info=DatasetInfo(features=features()))
    with quiet_datasets(), atomic_dir(path) as tmp:
        ds.save_to_disk(str(tmp))
        if stamp is not None:
            (tmp / STAMP_FILE).write_text(json.dumps(stamp))
