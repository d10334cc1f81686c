"""`recdistill generate-labels`: the offline soft-label generation job.

Scores each user's candidates (train positives plus sampled negatives) with the teacher and
writes a Hugging Face ``datasets`` dataset to ``out`` (schema: ``pipelines.labels``).

Sharded and resumable: users are processed in shards of ``shard_users``; each finished shard
is written to ``<out>.partial/shard-NNNNN`` through a temporary folder and an atomic rename,
so a crash (even ``kill -9``) leaves only complete shards. A rerun with the same config skips
them and gives the same result as an uninterrupted run. The final dataset is assembled in a
temporary folder and renamed to ``out``. An ``out`` made by another teacher or config is
refused unless ``--overwrite``; the same config reuses it.

Two engines score the shards with the same code (``score_shard``): ``local`` (in this
process, the default) and ``ray`` (a Ray Data actor pool, ``pipelines.ray_engine``; shards
are written as ``shard-NNNNN.parquet``). The engine does not change the result, so it is not
part of ``job_hash`` and either engine resumes shards the other left.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pipelines.config import to_dict, write_json
from pipelines.data import CandidateConfig, load_dataset, make_candidates, make_split
from pipelines.labels import (
    META_FILE,
    SCHEMA_VERSION,
    LabelError,
    features,
    validate_table,
    versions,
)
from pipelines.teacher import (
    CausalPart,
    EasePart,
    EmbeddingPart,
    Mix,
    PopularityPart,
    fit_mix,
    quality,
)

logger = logging.getLogger(__name__)

TEACHERS = ("embedding", "causal_lm")
COLLAB = ("ease", "none")
ENGINES = ("local", "ray")
# Fields that choose where and how fast the job runs, never what it computes: not hashed.
RUN_FIELDS = (
    "out",
    "overwrite",
    "threads",
    "batch_size",
    "engine",
    "ray_concurrency",
    "ray_num_cpus",
    "ray_num_gpus",
    "ray_address",
)
SLEEP_ENV = "RECDISTILL_SHARD_SLEEP"  # test hook: seconds to sleep after each shard


@dataclass
class GenerateLabelsConfig:
    dataset: str = field(default="ml-100k", metadata={"help": "dataset spec"})
    protocol: str = field(default="random", metadata={"help": "split protocol: random or temporal"})
    split_seed: int = field(default=0, metadata={"help": "split seed"})
    teacher: str = field(default="embedding", metadata={"help": f"LLM part: one of {TEACHERS}"})
    model: str | None = field(
        default=None,
        metadata={
            "help": "model: 'minilm' / 'smollm2' (packaged defaults), a local folder, a .gguf, or a hub id"
        },
    )
    adapter: str | None = field(
        default=None, metadata={"help": "peft (LoRA) adapter folder from adapt-teacher"}
    )
    template: str = field(default="yes_no_v1", metadata={"help": "prompt template (causal_lm)"})
    collab: str = field(
        default="ease",
        metadata={"help": f"collaborative part joined with the LLM: one of {COLLAB}"},
    )
    popularity: bool = field(default=True, metadata={"help": "add a popularity part to the mix"})
    history_items: int = field(default=20, metadata={"help": "history items rendered per user"})
    max_history_tokens: int = field(
        default=256, metadata={"help": "token budget of the causal-LM history"}
    )
    temperature: float = field(
        default=0.05, metadata={"help": "embedding teacher: score = cosine / temperature"}
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "embedding teacher: tokens per text"}
    )
    batch_size: int = field(default=32, metadata={"help": "teacher batch size"})
    n_negatives: int = field(default=100, metadata={"help": "sampled negatives per user"})
    max_positives: int = field(
        default=20, metadata={"help": "most recent train positives per user"}
    )
    strategy: str = field(
        default="mixed", metadata={"help": "negative sampling: uniform, popularity, hard, mixed"}
    )
    candidate_seed: int = field(default=0, metadata={"help": "candidate sampling seed"})
    max_users: int = field(
        default=0, metadata={"help": "score only this many users (seeded sample; 0 = all)"}
    )
    eval_users: int = field(
        default=300, metadata={"help": "users for the teacher-quality check and mix fitting"}
    )
    eval_negatives: int = field(
        default=50, metadata={"help": "negatives per validation user in that check"}
    )
    shard_users: int = field(default=100, metadata={"help": "users per shard"})
    threads: int = field(default=2, metadata={"help": "torch CPU threads"})
    out: str = field(default="runs/labels", metadata={"help": "output dataset folder"})
    overwrite: bool = field(
        default=False, metadata={"help": "replace an existing output made with another config"}
    )
    engine: str = field(
        default="local",
        metadata={
            "help": f"where the teacher runs: one of {ENGINES} ('ray' needs pip install 'recdistill[ray]')"
        },
    )
    ray_concurrency: int = field(
        default=2, metadata={"help": "ray engine: teacher actors (each loads the teacher once)"}
    )
    ray_num_cpus: float = field(
        default=1.0, metadata={"help": "ray engine: CPUs per actor (also its torch threads)"}
    )
    ray_num_gpus: float = field(
        default=0.0,
        metadata={"help": "ray engine: GPUs per actor; > 0 runs the teacher on CUDA"},
    )
    ray_address: str | None = field(
        default=None,
        metadata={"help": "ray engine: cluster to join (default $RAY_ADDRESS, else a local Ray)"},
    )

    def __post_init__(self):
        if self.teacher not in TEACHERS:
            raise ValueError(
                f"GenerateLabelsConfig.teacher={self.teacher!r}; expected one of {TEACHERS}"
            )
        if self.collab not in COLLAB:
            raise ValueError(
                f"GenerateLabelsConfig.collab={self.collab!r}; expected one of {COLLAB}"
            )
        for name in ("shard_users", "eval_users", "batch_size", "history_items", "threads"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"GenerateLabelsConfig.{name}={getattr(self, name)!r}; expected >= 1"
                )
        if self.max_users < 0:
            raise ValueError(f"GenerateLabelsConfig.max_users={self.max_users}; expected >= 0")
        if self.temperature <= 0:
            raise ValueError(f"GenerateLabelsConfig.temperature={self.temperature}; expected > 0")
        if self.engine not in ENGINES:
            raise ValueError(
                f"GenerateLabelsConfig.engine={self.engine!r}; expected one of {ENGINES}"
            )
        if self.ray_concurrency < 1:
            raise ValueError(
                f"GenerateLabelsConfig.ray_concurrency={self.ray_concurrency!r}; expected >= 1"
            )
        for name in ("ray_num_cpus", "ray_num_gpus"):
            if not getattr(self, name) >= 0:
                raise ValueError(
                    f"GenerateLabelsConfig.{name}={getattr(self, name)!r}; expected a number >= 0"
                )
        CandidateConfig(
            self.n_negatives, self.max_positives, self.strategy, seed=self.candidate_seed
        )

    def job_hash(self) -> str:
        d = to_dict(self)
        for k in RUN_FIELDS:
            d.pop(k)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def build_text_part(c: GenerateLabelsConfig, data, split, device: str = "cpu"):
    """The LLM part named by the config, loaded on ``device``; returns ``(part, info)``."""
    if c.teacher == "embedding":
        from llm_teacher.embedding import EmbeddingTeacher, EmbeddingTeacherConfig

        t = EmbeddingTeacher(
            EmbeddingTeacherConfig(
                model=c.model or "minilm",
                batch_size=c.batch_size,
                temperature=c.temperature,
                max_seq_length=c.max_seq_length,
                adapter=c.adapter,
                device=device,
            )
        )
        limit = getattr(t.model.tokenizer, "model_max_length", None) or c.max_seq_length
        t.model.max_seq_length = min(c.max_seq_length, int(limit))
        return EmbeddingPart(t, data, split, c.history_items), t.info()
    from llm_teacher.causal_lm import CausalLMScorer, CausalLMScorerConfig
    from llm_teacher.loading import load_causal_lm

    model, tok = load_causal_lm(c.model or "smollm2", adapter=c.adapter)
    scorer = CausalLMScorer(
        model,
        tok,
        CausalLMScorerConfig(
            batch_size=c.batch_size,
            max_history_tokens=c.max_history_tokens,
            template=c.template,
            device=device,
        ),
    )
    return CausalPart(scorer, data, split, c.history_items), scorer.info()


def validation_pairs(split, users: np.ndarray, n_neg: int, seed: int) -> pd.DataFrame:
    """Each user's validation positives plus ``n_neg`` items they never interacted with."""
    rng = np.random.default_rng(seed + 1)
    blocked = (split.matrix("train") + split.matrix("valid") + split.matrix("test")).tocsr()
    valid = split.matrix("valid").tocsr()
    rows = []
    for u in users:
        pos = valid.indices[valid.indptr[u] : valid.indptr[u + 1]]
        if len(pos) == 0:
            continue
        free = np.setdiff1d(
            np.arange(split.n_items), blocked.indices[blocked.indptr[u] : blocked.indptr[u + 1]]
        )
        neg = rng.choice(free, min(n_neg, len(free)), replace=False)
        rows.append(
            pd.DataFrame(
                {
                    "user": u,
                    "item": np.r_[pos, neg],
                    "label": np.r_[np.ones(len(pos)), np.zeros(len(neg))],
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


@dataclass
class FittedTeacher:
    """The teacher both engines score with: parts fit on train, their mix fit on validation.

    ``valid_users`` (``[U_v]``, sorted) are the users whose validation pairs fit the mix; an
    engine that rebuilds the text part elsewhere encodes them first, in one batch, so that its
    cached user embeddings match this process's bit for bit (see ``warm_text_part``)."""

    parts: list
    text_info: dict
    mix: Mix
    mix_search: dict
    quality: dict
    valid_users: np.ndarray
    n_valid_pairs: int


def fit_teacher(
    c: GenerateLabelsConfig, data, split, users: np.ndarray, rng: np.random.Generator
) -> FittedTeacher:
    """Build the parts (LLM, EASE^R, popularity) and fit their mix on validation pairs of a
    seeded sample of ``users`` (never on test)."""
    text, text_info = build_text_part(c, data, split)
    parts = [text]
    if c.collab == "ease":
        parts.append(EasePart(split))
    if c.popularity:
        parts.append(PopularityPart(split))
    eval_users = (
        users
        if len(users) <= c.eval_users
        else np.sort(rng.choice(users, c.eval_users, replace=False))
    )
    vp = validation_pairs(split, eval_users, c.eval_negatives, c.candidate_seed)
    vu, vi, vl = vp.user.to_numpy(), vp.item.to_numpy(), vp.label.to_numpy()
    logger.info(
        "teacher quality check: %d validation pairs of %d users", len(vp), len(np.unique(vu))
    )
    v_parts = {p.name: p.score(vu, vi) for p in parts}
    mix, mix_search = fit_mix(v_parts, vu, vl)
    teacher_quality = quality(v_parts, mix, vu, vl)
    logger.info("teacher mix %s; validation %s", mix.weights, teacher_quality["mix"])
    return FittedTeacher(parts, text_info, mix, mix_search, teacher_quality, np.unique(vu), len(vp))


def warm_text_part(part, batches: list[np.ndarray]) -> None:
    """Replay the user encodings of an uninterrupted in-process run on a text part.

    An embedding teacher pads each batch to its longest text, so a user's embedding can differ
    in the last bits with the batch it was encoded in. The in-process job encodes the
    validation users in one batch (``fit_teacher``), then each shard's new users; replaying
    those ``batches`` (``[n_u]`` user indices each, in order) on a text part built elsewhere (a
    Ray actor) or resumed after a crash makes its scores identical to that run. A user already
    cached is not encoded again. The causal-LM part scores each user on its own: no-op."""
    if isinstance(part, EmbeddingPart):
        for users in batches:
            if len(users):
                part.user_emb(np.asarray(users))


def shard_name(i: int) -> str:
    return f"shard-{i:05d}"


def shard_done(partial: Path, i: int) -> bool:
    """A complete shard: a ``datasets`` folder (local engine) or a Parquet file (ray engine)."""
    name = shard_name(i)
    return (partial / name / "dataset_info.json").exists() or (partial / f"{name}.parquet").exists()


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


def run(config: GenerateLabelsConfig) -> dict:
    c = config
    if c.engine == "ray":
        from pipelines.ray_engine import import_ray

        import_ray()  # fail before any work, with the command that installs Ray
    import torch

    torch.set_num_threads(c.threads)
    t0 = time.perf_counter()
    out = Path(c.out)
    partial = out.with_name(out.name + ".partial")
    job_hash = c.job_hash()
    if (out / META_FILE).exists():
        meta = json.loads((out / META_FILE).read_text())
        if meta.get("job_hash") == job_hash:
            logger.info("%s already holds these labels (job %s); reusing them", out, job_hash)
            return {**meta, "reused": True}
        if not c.overwrite:
            raise LabelError(
                f"{out} holds labels from another teacher or config (job {meta.get('job_hash')}, "
                f"teacher {meta.get('teacher', {}).get('kind')}); choose another --out or pass --overwrite"
            )
    elif out.exists() and any(out.iterdir()) and not c.overwrite:
        raise LabelError(
            f"{out} exists and is not a soft-label dataset; choose another --out or pass --overwrite"
        )

    data = load_dataset(c.dataset)
    split = make_split(data, c.protocol, c.split_seed)
    partial.mkdir(parents=True, exist_ok=True)
    job_file = partial / "job.json"
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
    users = np.arange(data.n_users)
    if c.max_users and c.max_users < data.n_users:
        users = np.sort(rng.choice(data.n_users, c.max_users, replace=False))

    # --- the teacher and its mix, fit on validation pairs (never on test) -------------------
    fitted = fit_teacher(c, data, split, users, rng)
    parts, mix, text = fitted.parts, fitted.mix, fitted.parts[0]

    # --- candidates and shards ---------------------------------------------------------------
    cand = make_candidates(
        split,
        CandidateConfig(c.n_negatives, c.max_positives, c.strategy, seed=c.candidate_seed),
        users,
    )
    shards = [users[i : i + c.shard_users] for i in range(0, len(users), c.shard_users)]
    todo = [i for i in range(len(shards)) if not shard_done(partial, i)]
    logger.info(
        "%d shards (%d done before), %d pairs", len(shards), len(shards) - len(todo), len(cand)
    )
    t_score = time.perf_counter()
    if c.engine == "ray":
        from pipelines.ray_engine import score_shards

        n_scored, engine_info = score_shards(c, fitted, data, split, cand, shards, todo, partial)
    else:
        n_scored = _score_local(partial, cand, shards, todo, parts, mix, data)
        engine_info = {"name": "local"}
    score_seconds = time.perf_counter() - t_score

    # --- assemble ----------------------------------------------------------------------------
    from datasets import concatenate_datasets

    ds = concatenate_datasets([load_shard(partial, i) for i in range(len(shards))])
    ds = ds.sort(["user", "rank"])
    validate_table(ds, str(partial), data.n_users, data.n_items)
    text_info = fitted.text_info
    meta = {
        "schema_version": SCHEMA_VERSION,
        "job_hash": job_hash,
        "teacher": {
            "kind": c.teacher,
            "model": c.model or ("minilm" if c.teacher == "embedding" else "smollm2"),
            "adapter": c.adapter,
            "template": text_info.get("template") if isinstance(text_info, dict) else None,
            "template_hash": text_info.get("template_hash")
            if isinstance(text_info, dict)
            else None,
            "info": text_info,
            "parts": [p.name for p in parts],
            "mix": mix.to_dict(),
            "ease_lambda": next((p.info["lambda"] for p in parts if p.name == "ease"), None),
        },
        "teacher_quality": {
            "validation_pairs": fitted.n_valid_pairs,
            "users": int(len(fitted.valid_users)),
            "parts": fitted.quality,
        },
        "mix_search": fitted.mix_search,
        "candidates": {
            k: getattr(c, k)
            for k in ("n_negatives", "max_positives", "strategy", "candidate_seed", "max_users")
        },
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
    tmp = Path(
        tempfile.mkdtemp(
            dir=out.parent if out.parent.exists() else None, prefix=f".{out.name}.", suffix=".tmp"
        )
    )
    try:
        ds.save_to_disk(str(tmp / "data"))
        final = tmp / "data"
        if isinstance(text, EmbeddingPart):
            np.save(final / "item_embeddings.npy", text.item_emb.astype(np.float32))
            meta["item_embeddings"] = "item_embeddings.npy"
        if all(hasattr(p, "score_matrix") for p in parts):
            # users of shards scored elsewhere (Ray, or before a crash) are encoded here
            # shard by shard, as an uninterrupted in-process run did, so the top-k is the same
            warm_text_part(text, [cand.user[cand.user.isin(s)].to_numpy() for s in shards])
            np.save(final / "teacher_topk.npy", teacher_topk(parts, mix, split, TOPK))
            meta["teacher_topk"] = "teacher_topk.npy"
        meta["seconds"] = time.perf_counter() - t0
        write_json(final / META_FILE, meta)
        if out.exists():
            old = out.with_name(f".{out.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
            os.replace(final, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(final, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(partial, ignore_errors=True)
    logger.info(
        "wrote %d pairs for %d users to %s in %.1fs", len(ds), len(users), out, meta["seconds"]
    )
    return meta


TOPK = 100


def teacher_topk(parts, mix, split, k: int, batch: int = 256) -> np.ndarray:
    """[n_users, k] int32: the teacher's best items over the full catalogue, train items
    excluded (for the report's teacher metrics and top-10 agreement)."""
    from pipelines.metrics import topk

    seen = split.matrix("train")
    out = []
    for s in range(0, split.n_users, batch):
        users = np.arange(s, min(s + batch, split.n_users))
        scores = mix.score({p.name: p.score_matrix(users) for p in parts})
        out.append(topk(scores, k, seen, rows=users))
    return np.concatenate(out).astype(np.int32)


def _score_local(partial: Path, cand, shards, todo, parts, mix, data) -> int:
    """The local engine: score and write the ``todo`` shards in this process; returns pairs."""
    sleep = float(os.environ.get(SLEEP_ENV, "0") or 0)
    t_score = time.perf_counter()
    n_scored = 0
    with tqdm(
        total=int(cand.user.isin(np.concatenate([shards[i] for i in todo]) if todo else []).sum()),
        unit="pair",
        desc="soft labels",
        disable=None,
    ) as bar:
        for i in todo:
            sub = cand[cand.user.isin(shards[i])]
            _write_shard(partial / shard_name(i), sub, parts, mix, data)
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
    scores = mix.score({p.name: p.score(u, i) for p in parts})
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
        "user_id": data.users.user_id.to_numpy()[u].tolist(),
        "item_id": data.items.item_id.to_numpy()[i].tolist(),
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
def _quiet_datasets():
    """No per-shard "Saving the dataset" bars: the job has its own progress bar."""
    from datasets.utils import logging as ds_logging

    was = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            ds_logging.enable_progress_bar()


def _write_shard(path: Path, sub: pd.DataFrame, parts, mix, data) -> None:
    from datasets import Dataset, DatasetInfo

    ds = Dataset(score_shard(sub, parts, mix, data), info=DatasetInfo(features=features()))
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    try:
        with _quiet_datasets():
            ds.save_to_disk(str(tmp / "ds"))
        os.replace(tmp / "ds", path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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
