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

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from common.config import to_dict
from common.io import (
    ArtifactError,
    atomic_dir,
    claim_output,
    portable_path,
    portable_paths,
    read_json,
    recover,
    refuse_out_inside,
    write_json,
)
from common.versions import versions
from pipelines.core import provenance
from pipelines.data import load_dataset, training_split
from pipelines.labels.candidates import CandidateConfig, candidate_plan, iter_candidates
from pipelines.labels.config import GenerateLabelsConfig
from pipelines.labels.fit import (
    TOPK,
    TOPK_COLD,
    FittedTeacher,
    fit_teacher,
    teacher_topk,
    topk_sample,
)
from pipelines.labels.parts import PARTS
from pipelines.labels.schema import (
    META_FILE,
    SCHEMA_VERSION,
    LabelError,
    features,
    validate_table,
)
from pipelines.labels.shards import (
    load_shard,
    score_local,
    shard_done,
    shard_name,
    shard_stamp,
)

logger = logging.getLogger(__name__)
ADAPTER_META = "adapt_teacher.json"  # written by adapt-teacher beside the adapter
# all a label folder holds (names or patterns): ``--overwrite`` replaces nothing else
LABEL_FILES = frozenset(
    {META_FILE, "data-*.arrow", "dataset_info.json", "state.json", "item_embeddings.npy",
     "teacher_topk*.npy", "cold_items.npy"}
)  # fmt: skip


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
    refuse_out_inside(out, {"--adapter": c.adapter, "--collab-cache": c.collab_cache})
    # the data first (cheap): the job hash covers its fingerprints, so edited data is redone
    data = load_dataset(c.dataset)
    split = training_split(data, c.protocol, c.split_seed, c.cold_setting)
    job_hash = c.job_hash(data.fingerprint(), split.fingerprint())
    check_adapter(c.adapter, data, split)
    meta = reusable_labels(out, job_hash, data.fingerprint(), c.overwrite)
    if meta is not None:
        return {**meta, "reused": True}
    recover(out)  # stale temporaries of a kill during the final save
    open_partial(partial, job_hash, to_dict(c), data.fingerprint())

    rng = np.random.default_rng(c.candidate_seed)
    users = label_users(split, data.n_users, c.max_users, rng)
    # --- the teacher and its mix, fit on validation pairs (never on test) -------------------
    fitted = fit_teacher(c, data, split, users, rng)

    # --- candidates and shards (``ShardSet.todo_subs``) ---------------------------------------
    cand_config = c.candidate_config(cold=fitted.cold is not None)
    plan = candidate_plan(split, cand_config)
    shards = ShardSet.of(users, c.shard_users, job_hash, partial)
    logger.info(
        "%d shards (%d done before); candidates %s",
        len(shards.users),
        len(shards.users) - len(shards.todo),
        plan,
    )
    t_score = time.perf_counter()
    subs = shards.todo_subs(split, cand_config)
    if c.engine == "ray":
        from pipelines.labels.ray_engine import RayJob, RayPool, score_shards

        job = RayJob(
            pool=RayPool.from_config(c),
            config=to_dict(c),
            fitted=fitted,
            data=data,
            split=split,
            subs=dict(subs),  # Ray ships the todo shards to its actors
            stamps=shards.stamps,
            partial=partial,
        )
        n_scored, engine_info = score_shards(job)
        del job  # the candidates of every shard: not held through the assembly
    else:
        n_scored = score_local(partial, subs, fitted.parts, fitted.mix, data, shards.stamps)
        engine_info = {"name": "local"}
    speed = n_scored / (time.perf_counter() - t_score) if n_scored else None

    # --- assemble ----------------------------------------------------------------------------
    ds = assemble(partial, len(shards.users), data.n_users, data.n_items)
    meta = label_metadata(c, job_hash, fitted, plan, data, split)
    meta |= {"n_pairs": len(ds), "n_users": int(len(users)), "pairs_per_second": speed}
    meta |= {"engine": engine_info, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with atomic_dir(out) as final:
        ds.save_to_disk(str(final))
        rows = [shards.rows[i] for i in range(len(shards.users))]
        meta |= save_teacher_files(
            final, fitted, split, users, rows, c.topk_users, c.candidate_seed
        )
        meta["seconds"] = time.perf_counter() - t0
        write_json(final / META_FILE, meta)
    shutil.rmtree(partial, ignore_errors=True)
    logger.info(
        "wrote %d pairs for %d users to %s in %.1fs", len(ds), len(users), out, meta["seconds"]
    )
    return meta


@dataclass
class ShardSet:
    """The job's shards: ``users`` (consecutive slices of the sorted users), each shard's
    ``stamps`` (what it is scored from: one scored from other inputs is rescored), the
    ``todo`` ones (not done in ``partial``) and, as they are drawn, each shard's candidate
    users row by row (``rows``)."""

    users: list[np.ndarray]
    stamps: dict[int, dict]
    todo: set[int]
    rows: dict[int, np.ndarray] = field(default_factory=dict)

    @classmethod
    def of(cls, users: np.ndarray, shard_users: int, job_hash: str, partial: Path) -> ShardSet:
        shards = [users[i : i + shard_users] for i in range(0, len(users), shard_users)]
        stamps = {i: shard_stamp(job_hash, s) for i, s in enumerate(shards)}
        todo = {i for i in range(len(shards)) if not shard_done(partial, i, stamps[i])}
        return cls(shards, stamps, todo)

    def todo_subs(self, split, cand_config: CandidateConfig):
        """Yield ``(i, candidate rows)`` of the todo shards. All shards' lists are drawn, on
        one RNG stream over the sorted users (``iter_candidates``): the same lists as all at
        once, one shard's rows in memory; a done shard's lists are drawn too (cheap next to
        scoring) so that the stream reaches the next shard as before."""
        for i, sub in enumerate(iter_candidates(split, cand_config, self.users)):
            self.rows[i] = sub.user.to_numpy()
            if i in self.todo:
                yield i, sub


def check_adapter(adapter: str | None, data, split) -> None:
    """Refuse an adapter fit on another dataset or split (it would leak their test part)."""
    if adapter and Path(adapter).is_dir():
        info = Path(adapter) / ADAPTER_META
        recorded = read_json(info, "adapt-teacher's metadata") if info.exists() else None
        # an adapter made outside recdistill (no adapt_teacher.json) is taken, with a warning
        provenance.check(adapter, recorded, data, split, what="the adapter", allow_unchecked=True)


def reusable_labels(out: Path, job_hash: str, fingerprint: str, overwrite: bool) -> dict | None:
    """The metadata of labels in ``out`` made by this job (reuse them), else ``None`` once
    ``out`` may be written: labels of another job only with ``overwrite``, and only if the
    folder holds nothing but label files (``LABEL_FILES``); a folder that is not labels never."""
    meta = None
    if (out / META_FILE).exists():
        meta = read_json(out / META_FILE, "the metadata written by generate-labels")
    if meta is not None and meta.get("job_hash") == job_hash:
        logger.info("%s already holds these labels (job %s); reusing them", out, job_hash)
        return meta
    if meta is not None and not overwrite:
        old_fp = (meta.get("dataset") or {}).get("fingerprint")
        raise LabelError(
            f"{out} holds labels from another teacher or config, or for other data (job "
            f"{meta.get('job_hash')}, teacher {(meta.get('teacher') or {}).get('kind')}, dataset "
            f"fingerprint {old_fp}, now {fingerprint}); choose another --out or pass "
            "--overwrite"
        )
    claim_output(out, META_FILE, overwrite=overwrite, what="a soft-label dataset", only=LABEL_FILES)
    return None


def open_partial(partial: Path, job_hash: str, config: dict, fingerprint: str) -> None:
    """Make ``partial`` the shard folder of job ``job_hash``: shards of another job are
    discarded, a folder that holds no label shards is refused."""
    job_file = partial / "job.json"
    if partial.exists() and any(partial.iterdir()) and not job_file.exists():
        raise ArtifactError(
            f"{partial} holds files that are not label shards (no job.json); the label job keeps "
            f"its shards there and deletes it when done: move it away or choose another --out"
        )
    partial.mkdir(parents=True, exist_ok=True)
    if job_file.exists():
        prev = read_json(job_file, "the label job's shard record").get("job_hash")
        if prev != job_hash:
            logger.warning(
                "%s holds shards of another config (job %s); discarding them", partial, prev
            )
            shutil.rmtree(partial)
            partial.mkdir(parents=True)
    write_json(
        job_file, {"job_hash": job_hash, "config": config, "dataset_fingerprint": fingerprint}
    )


def label_users(split, n_users: int, max_users: int, rng: np.random.Generator) -> np.ndarray:
    """[U] sorted users with a train interaction (a new user of the cold_items protocol has
    nothing to label), or a seeded sample of ``max_users`` of them (0 = all)."""
    users = np.flatnonzero(np.bincount(split.train["user"].to_numpy(), minlength=n_users))
    if max_users and max_users < len(users):
        users = np.sort(rng.choice(users, max_users, replace=False))
    return users


def label_metadata(
    c: GenerateLabelsConfig, job_hash: str, fitted: FittedTeacher, plan: dict, data, split
) -> dict:
    """What the labels were made from and how good the teacher is on validation."""
    parts, text_info = fitted.parts, fitted.text_info
    collab = next((p.info() for p in parts if p.key == "collab"), None)
    return {
        "schema_version": SCHEMA_VERSION,
        "job_hash": job_hash,
        "teacher": {
            "kind": c.teacher,
            "model": c.model or PARTS[c.teacher].default_model,
            "adapter": c.adapter and portable_path(c.adapter, c.out),
            "template": text_info.get("template"),
            "template_hash": text_info.get("template_hash"),
            "info": text_info,
            "parts": [p.name for p in parts],
            "mix": fitted.mix.to_dict(),
            "ease_lambda": collab["lambda"] if collab and collab["kind"] == "ease" else None,
            "collab": collab,
            # each signal part's own fit (the sequence parts' window / decay and their grid)
            "signals": {p.name: p.info() for p in parts[1:] if p.key != "collab"},
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
        **provenance.stamp(data, split),
        "seed": c.candidate_seed,
        "versions": versions(),
        "config": portable_paths(to_dict(c), c.out, ("adapter", "collab_cache")),
    }


def save_teacher_files(
    final: Path,
    fitted: FittedTeacher,
    split,
    users: np.ndarray,
    shard_rows: list[np.ndarray],
    topk_users: int,
    seed: int,
) -> dict:
    """Write the LLM part's item embeddings and, when every part scores the full catalogue,
    the teacher's top-k (of warm items, and of the cold ones under a cold-item mix) into
    ``final``; returns the metadata entries naming them. Without a cold-item mix also the
    test ranking ``teacher_topk_test``: the same fit and mix reading each user's train +
    validation (``Split.known_before("test")``), those items excluded; the labels and
    ``teacher_topk`` read train only (the student learns what follows train)."""
    parts, mix, text = fitted.parts, fitted.mix, fitted.parts[0]
    meta: dict = {}
    emb = text.item_embeddings()
    if emb is not None:
        np.save(final / "item_embeddings.npy", emb.astype(np.float32))
        meta["item_embeddings"] = "item_embeddings.npy"
    if not all(p.full_catalogue for p in parts):
        return meta
    # users of shards scored elsewhere (Ray, or before a crash) are encoded here shard by
    # shard, as an uninterrupted in-process run did, so the top-k is the same
    text.warm_users(shard_rows)
    sample = topk_sample(users, topk_users, seed)  # all users, or a seeded sample (--topk-users)
    np.save(final / "teacher_topk.npy", teacher_topk(parts, mix, split, TOPK, users=sample))
    meta["teacher_topk"] = "teacher_topk.npy"
    if fitted.cold is None:  # the test ranking: input train + valid (fit unchanged, no test read)
        known = split.known_before("test")
        test_parts = [p.for_input(known) for p in parts]
        np.save(final / "teacher_topk_test.npy",
                teacher_topk(test_parts, mix, split, TOPK, users=sample,
                             seen=split.seen_for("test")))  # fmt: skip
        meta["teacher_topk_test"] = "teacher_topk_test.npy"
    if sample is not None:
        np.save(final / "teacher_topk_users.npy", sample.astype(np.int64))
        meta["teacher_topk_users"] = "teacher_topk_users.npy"
        meta["teacher_topk_sample"] = {
            "users": int(len(sample)),
            "of": int(len(users)),
            "seed": seed,
        }
    if fitted.cold is not None:
        # the teacher's ranking of the items without train interactions (cold report), for
        # the same users as teacher_topk
        cold = np.flatnonzero(mix.cold_mask)
        np.save(final / "cold_items.npy", cold.astype(np.int32))
        k = min(TOPK_COLD, len(cold))
        np.save(
            final / "teacher_topk_cold.npy",
            teacher_topk(parts, mix, split, k, items=cold, users=sample),
        )
        fitted.cold["items_file"] = "cold_items.npy"
        meta["teacher_topk_cold"] = "teacher_topk_cold.npy"
    return meta


ASSEMBLED = "assembled.arrow"  # in ``<out>.partial``: the joined shards, before the final save


def assemble(partial: Path, n_shards: int, n_users: int | None = None,
             n_items: int | None = None):  # fmt: skip
    """The shards as one dataset ordered by (user, rank), each shard checked
    (``validate_table``, its errors name the shard). Shards hold consecutive slices of the
    sorted users, so each shard is sorted on its own and streamed, in shard order, into one
    Arrow file (``<partial>/assembled.arrow``) that the returned dataset memory-maps: one
    shard in memory at a time (joining 70M rows in memory ran a 1M-user job out of 24 GB),
    no global sort and no indices mapping. Shards that overlap in users (not a layout this
    job writes) are joined in memory and sorted whole."""
    from datasets import Dataset, DatasetInfo
    from datasets.arrow_writer import ArrowWriter

    keys = [("user", "ascending"), ("rank", "ascending")]
    path = partial / ASSEMBLED
    path.unlink(missing_ok=True)  # a kill during an earlier assembly
    writer = ArrowWriter(features=features(), path=str(path))
    last = -1
    for i in range(n_shards):
        shard = load_shard(partial, i)
        validate_table(shard, str(partial / shard_name(i)), n_users, n_items)
        table = shard.data.table.sort_by(keys)
        user = table.column("user").to_numpy()
        if len(user) and user[0] <= last:
            writer.finalize()
            path.unlink()
            return _assemble_in_memory(partial, n_shards, keys, n_users, n_items)
        last = int(user[-1]) if len(user) else last
        writer.write_table(table)
    writer.finalize()
    return Dataset.from_file(str(path), info=DatasetInfo(features=features()))


def _assemble_in_memory(partial: Path, n_shards: int, keys, n_users, n_items):
    import pyarrow as pa
    from datasets import Dataset, DatasetInfo

    shards = [load_shard(partial, i) for i in range(n_shards)]
    for i, shard in enumerate(shards):
        validate_table(shard, str(partial / shard_name(i)), n_users, n_items)
    table = pa.concat_tables([shard.data.table for shard in shards])
    return Dataset(table.sort_by(keys), info=DatasetInfo(features=features()))


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
