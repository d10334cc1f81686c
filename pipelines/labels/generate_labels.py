"""`recdistill generate-labels`: the offline soft-label generation job.

Scores each user's candidates (train positives plus sampled negatives) with the teacher and
writes a Hugging Face ``datasets`` dataset to ``out`` (schema: ``pipelines.labels.schema``).

Sharded and resumable: users are processed in shards of ``shard_users``; each finished shard
is written to ``<out>.partial/shard-NNNNN`` through a temporary folder and an atomic rename,
so a crash (even ``kill -9``) leaves only complete shards. A rerun with the same config skips
them and gives the same result as an uninterrupted run. The final dataset is assembled in a
temporary folder and renamed to ``out``. An ``out`` made by another teacher or config is
refused unless ``--overwrite``; the same config on the same data (``job_hash`` covers the
dataset and split fingerprints) reuses it.

Two engines score the shards with the same code (``score_shard``): ``local`` (in this
process, the default) and ``ray`` (a Ray Data actor pool, ``pipelines.labels.ray_engine``; shards
are written as ``shard-NNNNN.parquet``). The engine does not change the result, so it is not
part of ``job_hash`` and either engine resumes shards the other left.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from common.config import to_dict
from common.io import ArtifactError, atomic_dir, claim_output, recover, write_json
from pipelines.core import provenance
from pipelines.data import load_dataset, training_split
from pipelines.labels.candidates import CandidateConfig, candidate_plan, iter_candidates
from pipelines.labels.config import (
    GenerateLabelsConfig,
)
from pipelines.labels.fit import (
    TOPK,
    TOPK_COLD,
    fit_teacher,
    teacher_topk,
    topk_sample,
    warm_text_part,
)
from pipelines.labels.schema import (
    META_FILE,
    SCHEMA_VERSION,
    LabelError,
    features,
    validate_table,
    versions,
)
from pipelines.labels.shards import (
    load_shard,
    score_local,
    shard_done,
    shard_stamp,
)
from pipelines.labels.teacher import (
    COLLAB_PARTS,
    EmbeddingPart,
)

logger = logging.getLogger(__name__)
ADAPTER_META = "adapt_teacher.json"  # written by adapt-teacher beside the adapter


def run(config: GenerateLabelsConfig) -> dict:
    c = config
    if c.engine == "ray":
        from pipelines.labels.ray_engine import import_ray

        import_ray()  # fail before any work, with the command that installs Ray
    import torch

    torch.set_num_threads(c.threads)
    t0 = time.perf_counter()
    out = Path(c.out)
    partial = out.with_name(out.name + ".partial")
    # the data first (cheap): the job hash covers its fingerprints, so edited data is redone
    data = load_dataset(c.dataset)
    split = training_split(data, c.protocol, c.split_seed)
    job_hash = c.job_hash(data.fingerprint(), split.fingerprint())
    if c.adapter and Path(c.adapter).is_dir():  # an adapter fit on another split would leak
        info = Path(c.adapter) / ADAPTER_META
        recorded = json.loads(info.read_text()) if info.exists() else None
        provenance.check(c.adapter, recorded, data, split, what="the adapter")
    if (out / META_FILE).exists():
        meta = json.loads((out / META_FILE).read_text())
        if meta.get("job_hash") == job_hash:
            logger.info("%s already holds these labels (job %s); reusing them", out, job_hash)
            return {**meta, "reused": True}
        if not c.overwrite:
            old_fp = meta.get("dataset", {}).get("fingerprint")
            raise LabelError(
                f"{out} holds labels from another teacher or config, or for other data (job "
                f"{meta.get('job_hash')}, teacher {meta.get('teacher', {}).get('kind')}, dataset "
                f"fingerprint {old_fp}, now {data.fingerprint()}); choose another --out or pass "
                "--overwrite"
            )
    else:  # a folder that is not labels is never replaced, --overwrite or not
        claim_output(out, META_FILE, overwrite=c.overwrite, what="a soft-label dataset")
    recover(out)  # stale temporaries of a kill during the final save

    job_file = partial / "job.json"
    if partial.exists() and any(partial.iterdir()) and not job_file.exists():
        raise ArtifactError(
            f"{partial} holds files that are not label shards (no job.json); the label job keeps "
            f"its shards there and deletes it when done: move it away or choose another --out"
        )
    partial.mkdir(parents=True, exist_ok=True)
    if job_file.exists():
        prev = json.loads(job_file.read_text()).get("job_hash")
        if prev != job_hash:
            logger.warning(
                "%s holds shards of another config (job %s); discarding them", partial, prev
            )
            shutil.rmtree(partial)
            partial.mkdir(parents=True)
    write_json(
        job_file,
        {"job_hash": job_hash, "config": to_dict(c), "dataset_fingerprint": data.fingerprint()},
    )

    rng = np.random.default_rng(c.candidate_seed)
    # users with a train interaction: a new user (cold_items protocol) has nothing to label
    users = np.flatnonzero(np.bincount(split.train["user"].to_numpy(), minlength=data.n_users))
    if c.max_users and c.max_users < len(users):
        users = np.sort(rng.choice(users, c.max_users, replace=False))

    # --- the teacher and its mix, fit on validation pairs (never on test) -------------------
    fitted = fit_teacher(c, data, split, users, rng)
    parts, mix, text = fitted.parts, fitted.mix, fitted.parts[0]

    # --- candidates and shards ---------------------------------------------------------------
    # made shard by shard on one RNG stream over the sorted users (``iter_candidates``): the
    # same lists as all at once, one shard's rows in memory; a done shard's lists are still
    # drawn (cheap next to scoring) so that the stream reaches the next shard as before
    cand_config = CandidateConfig(
        c.n_negatives,
        c.max_positives,
        c.strategy,
        seed=c.candidate_seed,
        n_cold=c.cold_negatives if fitted.cold is not None else 0,
    )
    plan = candidate_plan(split, cand_config)
    shards = [users[i : i + c.shard_users] for i in range(0, len(users), c.shard_users)]
    # each shard records what it was scored from; one from other inputs is rescored
    stamps = {i: shard_stamp(job_hash, s) for i, s in enumerate(shards)}
    todo = [i for i in range(len(shards)) if not shard_done(partial, i, stamps[i])]
    logger.info(
        "%d shards (%d done before); candidates %s", len(shards), len(shards) - len(todo), plan
    )
    shard_rows: dict[int, np.ndarray] = {}  # each shard's candidate users, row by row
    todo_set = set(todo)

    def todo_subs():
        for i, sub in enumerate(iter_candidates(split, cand_config, shards)):
            shard_rows[i] = sub.user.to_numpy()
            if i in todo_set:
                yield i, sub

    t_score = time.perf_counter()
    if c.engine == "ray":
        import pandas as pd

        from pipelines.labels.ray_engine import score_shards

        subs = [sub for _, sub in todo_subs()]  # Ray ships the todo shards to its actors
        cand = pd.concat(subs, ignore_index=True) if subs else None  # None: nothing to do
        n_scored, engine_info = score_shards(c, fitted, data, split, cand, shards, todo, partial)
    else:
        n_scored = score_local(partial, todo_subs(), parts, mix, data, stamps)
        engine_info = {"name": "local"}
    score_seconds = time.perf_counter() - t_score

    # --- assemble ----------------------------------------------------------------------------
    ds = assemble(partial, len(shards))
    validate_table(ds, str(partial), data.n_users, data.n_items)
    text_info = fitted.text_info
    meta = {
        "schema_version": SCHEMA_VERSION,
        "job_hash": job_hash,
        "teacher": {
            "kind": c.teacher,
            "model": c.model or ("minilm" if c.teacher == "embedding" else "smollm2"),
            "adapter": c.adapter,
            "template": text_info.get("template"),
            "template_hash": text_info.get("template_hash"),
            "info": text_info,
            "parts": [p.name for p in parts],
            "mix": mix.to_dict(),
            "ease_lambda": next((p.info["lambda"] for p in parts if p.name == "ease"), None),
            "collab": next((p.info for p in parts if p.name in COLLAB_PARTS), None),
        },
        "teacher_quality": {
            "validation_pairs": fitted.n_valid_pairs,
            "users": int(len(fitted.valid_users)),
            "parts": fitted.quality,
        },
        "mix_search": fitted.mix_search,
        "cold": fitted.cold,
        "candidates": {
            k: getattr(c, k)
            for k in ("n_negatives", "max_positives", "strategy", "candidate_seed", "max_users")
        }
        | {"plan": plan},
        "dataset": {"name": data.name, "fingerprint": data.fingerprint()},
        "split": {"protocol": c.protocol, "seed": c.split_seed, "fingerprint": split.fingerprint()},
        "seed": c.candidate_seed,
        "versions": versions(),
        "config": to_dict(c),
        "n_pairs": len(ds),
        "n_users": int(len(users)),
        "pairs_per_second": n_scored / score_seconds if n_scored else None,
        "engine": engine_info,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    with atomic_dir(out) as final:
        ds.save_to_disk(str(final))
        if isinstance(text, EmbeddingPart):
            np.save(final / "item_embeddings.npy", text.item_emb.astype(np.float32))
            meta["item_embeddings"] = "item_embeddings.npy"
        if all(hasattr(p, "score_matrix") for p in parts):
            # users of shards scored elsewhere (Ray, or before a crash) are encoded here
            # shard by shard, as an uninterrupted in-process run did, so the top-k is the same
            warm_text_part(text, [shard_rows[i] for i in range(len(shards))])
            # all users, or a seeded sample of the labelled users (--topk-users)
            topk_users = topk_sample(users, c.topk_users, c.candidate_seed)
            np.save(
                final / "teacher_topk.npy", teacher_topk(parts, mix, split, TOPK, users=topk_users)
            )
            meta["teacher_topk"] = "teacher_topk.npy"
            if topk_users is not None:
                np.save(final / "teacher_topk_users.npy", topk_users.astype(np.int64))
                meta["teacher_topk_users"] = "teacher_topk_users.npy"
                meta["teacher_topk_sample"] = {
                    "users": int(len(topk_users)),
                    "of": int(len(users)),
                    "seed": c.candidate_seed,
                }
            if fitted.cold is not None:
                # the teacher's ranking of the items without train interactions (cold report),
                # for the same users as teacher_topk
                cold = np.flatnonzero(mix.cold_mask)
                np.save(final / "cold_items.npy", cold.astype(np.int32))
                np.save(
                    final / "teacher_topk_cold.npy",
                    teacher_topk(
                        parts, mix, split, min(TOPK_COLD, len(cold)), items=cold, users=topk_users
                    ),
                )
                meta["cold"]["items_file"] = "cold_items.npy"
                meta["teacher_topk_cold"] = "teacher_topk_cold.npy"
        meta["seconds"] = time.perf_counter() - t0
        write_json(final / META_FILE, meta)
    shutil.rmtree(partial, ignore_errors=True)
    logger.info(
        "wrote %d pairs for %d users to %s in %.1fs", len(ds), len(users), out, meta["seconds"]
    )
    return meta


def assemble(partial: Path, n_shards: int):
    """The shards as one dataset ordered by (user, rank). Shards hold consecutive slices of
    the sorted users, so each shard is sorted on its own (in memory, one at a time) and the
    tables are joined in shard order: no global sort and no indices mapping, whose gather
    over millions of rows is what a label table of 10^5 users ran out of memory on."""
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo

    keys = [("user", "ascending"), ("rank", "ascending")]
    tables = [load_shard(partial, i).data.table.sort_by(keys) for i in range(n_shards)]
    table = pa.concat_tables(tables)
    user = table.column("user").to_numpy()
    if len(user) and (np.diff(user) < 0).any():  # shards that overlap in users: sort all
        table = table.sort_by(keys)
    return Dataset(table, info=DatasetInfo(features=features()))


def format_summary(meta: dict) -> str:
    q = meta["teacher_quality"]["parts"]
    took = "reused" if meta.get("reused") else f"{meta.get('seconds', 0):.0f}s"
    lines = [
        f"soft labels: {meta['n_pairs']} pairs for {meta['n_users']} users ({took})",
        f"teacher mix weights {meta['teacher']['mix']['weights']}",
        "validation quality (AUC, NDCG@10 over each user's validation candidates):",
    ]
    for name, m in q.items():
        lines.append(f"  {name:<11} auc {m['auc']:.4f}  list_ndcg@10 {m['list_ndcg@10']:.4f}")
    return "\n".join(lines)
