"""`recdistill benchmark`: quality and cost of every model and index, side by side.

On one split (test part; the user's train items are excluded, and validation items too):
popularity, EASE^R, the teacher (where it ranked the catalogue), the hard-only, distilled,
pruned and int8 students; then the distilled student's item embeddings in each FAISS index.
Writes ``report.json`` (the interface; see README), ``report.md`` and PNG plots.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from common.config import to_dict
from common.io import artifact_path, claim_output, load_npy
from pipelines.baselines.collab import fit_collab
from pipelines.baselines.popularity import Popularity
from pipelines.core import provenance
from pipelines.core.metrics import (
    bootstrap_ci,
    evaluate,
    paired_bootstrap,
    sample_users,
    topk_overlap,
)
from pipelines.data import PROTOCOLS, ProtocolName, histories, load_dataset, make_split
from pipelines.evaluation.report import (
    cold_comparisons,
    cold_table,
    headline_table,
    index_table,
    new_users_table,
    write_report,
)

logger = logging.getLogger(__name__)

IndexKind = Literal["flat", "sq8", "ivf_sq8", "hnsw_sq8"]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)


@dataclass
class BenchmarkConfig:
    dataset: str = field(default="ml-100k", metadata={"help": "dataset spec"})
    protocol: ProtocolName = field(default="random", metadata={"help": "split protocol"})
    split_seed: int = field(default=0, metadata={"help": "split seed"})
    labels: str | None = field(
        default=None, metadata={"help": "soft-label folder (teacher metrics)"}
    )
    student_hard: str | None = field(default=None, metadata={"help": "hard-only student folder"})
    student_distilled: str | None = field(
        default=None, metadata={"help": "distilled student folder (its items fill the indexes)"}
    )
    student_pruned: str | None = field(default=None, metadata={"help": "pruned student folder"})
    student_int8: str | None = field(
        default=None, metadata={"help": "int8 student folder (save_quantized)"}
    )
    student_int8_fast: str | None = field(
        default=None, metadata={"help": "latency-aware int8 student folder (compress --int8 auto)"}
    )
    indexes: tuple[IndexKind, ...] = field(
        default=INDEX_KINDS, metadata={"help": f"index kinds, from {INDEX_KINDS}"}
    )
    n_single: int = field(default=200, metadata={"help": "queries timed one at a time (p50/p99)"})
    bootstrap: int = field(
        default=1000, metadata={"help": "bootstrap resamples for the NDCG@10 interval"}
    )
    threads: int = field(default=1, metadata={"help": "threads for timing (torch and faiss)"})
    eval_users: int = field(
        default=0,
        metadata={
            "help": "evaluate a seeded sample of this many test users over the full catalogue "
            "(the same users for every model, index and comparison; per segment under "
            "cold_items); 0 = all test users"
        },
    )
    eval_seed: int = field(default=0, metadata={"help": "seed of the --eval-users sample"})
    collab_cache: str | None = field(
        default=None,
        metadata={
            "help": "folder where the collaborative fit (with its validation grid) is kept, keyed by the train and validation data and its settings, so a chain's jobs fit it once; none = no cache"
        },
    )
    scale: bool = field(
        default=False,
        metadata={
            "help": "also run the index part on synthetic 64-d catalogues of scale_sizes items"
        },
    )
    scale_sizes: tuple[int, ...] = field(
        default=(100_000, 1_000_000), metadata={"help": "catalogue sizes of --scale"}
    )
    out: str = field(default="runs/benchmark", metadata={"help": "output folder"})
    overwrite: bool = field(
        default=False,
        metadata={
            "help": "replace --out if it holds a benchmark report from an earlier run (else refused)"
        },
    )

    def __post_init__(self):
        bad = [k for k in self.indexes if k not in INDEX_KINDS]
        if bad:
            raise ValueError(f"BenchmarkConfig.indexes has {bad}; allowed: {INDEX_KINDS}")
        if self.eval_users < 0:
            raise ValueError(
                f"BenchmarkConfig.eval_users={self.eval_users}; expected >= 0 (0 = all test users)"
            )
        if self.protocol not in PROTOCOLS:
            raise ValueError(
                f"BenchmarkConfig.protocol={self.protocol!r}; expected one of {PROTOCOLS}"
            )


def _latency_ms(fn, users: np.ndarray, n: int) -> float:
    """Median ms to score the full catalogue for one user (batch 1)."""
    times = []
    for u in users[:n]:
        t0 = time.perf_counter()
        fn(np.array([u]))
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def run(config: BenchmarkConfig) -> dict:
    from pipelines.labels.schema import load_labels
    from student.compress import load_quantized
    from student.model import TwoTower, count_parameters, model_bytes
    from student.scoring import score_fn

    c = config
    torch.set_num_threads(c.threads)
    claim_output(c.out, "report.json", overwrite=c.overwrite, what="a benchmark report")
    if c.protocol == "cold_items":
        return run_cold(c)
    t0 = time.perf_counter()
    data = load_dataset(c.dataset)
    split = make_split(data, c.protocol, c.split_seed)
    truth, seen = split.matrix("test"), split.seen_for("test")
    all_test = np.flatnonzero(np.diff(truth.indptr) > 0)
    test_users = sample_users(truth, c.eval_users, c.eval_seed)  # all when eval_users is 0
    evaluation = sample_info(len(test_users), len(all_test), c.eval_seed, "test users")
    models: dict[str, dict] = {}
    per_user: dict[str, np.ndarray] = {}
    tops: dict[str, np.ndarray] = {}

    def add(name: str, fn, params, nbytes, latency=True):
        m = evaluate(fn, truth, seen, return_per_user=True, return_topk=True, users=test_users)
        per_user[name] = m["per_user"]["ndcg@10"]
        tops[name] = m["topk"][:, :10]
        _, lo, hi = bootstrap_ci(per_user[name], n=c.bootstrap)
        models[name] = {
            **{
                k: m[k]
                for k in ("ndcg@10", "recall@10", "mrr@10", "hit_rate@10", "ndcg@20", "recall@20")
            },
            "ndcg@10_ci": [lo, hi],
            "params": params,
            "bytes": nbytes,
            "teacher_top10_overlap": None,
            "latency_ms_batch1": _latency_ms(fn, test_users, c.n_single) if latency else None,
        }
        logger.info("%s: ndcg@10 %.4f", name, m["ndcg@10"])

    train = split.matrix("train")
    add("popularity", Popularity(train), params=train.shape[1], nbytes=4 * train.shape[1])
    collab, info = fit_collab(split, cache=c.collab_cache)  # EASE^R, or ALS past its budget
    add(collab.kind, collab, params=collab.params, nbytes=collab.nbytes)
    if collab.kind == "ease":
        models["ease"]["lambda"] = info["lambda"]
    models[collab.kind]["collab"] = info

    teacher_meta = None
    if c.labels:
        _, teacher_meta = load_labels(
            c.labels, dataset_fingerprint=data.fingerprint(), split_fingerprint=split.fingerprint()
        )
        if teacher_meta.get("teacher_topk"):
            ranked, ranked_users = load_teacher_topk(c.labels, teacher_meta, data.n_users)
            # the teacher's rows: evaluation users it has a top-k for (all, unless the labels
            # were made with --topk-users)
            t_users = np.intersect1d(test_users, ranked_users)
            t_rows = np.searchsorted(ranked_users, t_users)
            teacher_eval_rows = np.searchsorted(test_users, t_users)
            evaluation["teacher_users"] = int(len(t_users))
            if len(t_users) < len(test_users):
                evaluation["teacher_note"] = (
                    f"teacher metrics and top-10 agreement on the {len(t_users)} evaluation "
                    f"users of the teacher's top-k sample ({len(ranked_users)} users)"
                )
            full = np.zeros((len(t_users), ranked.shape[1]), dtype=np.int64)
            for r, (u, row) in enumerate(zip(t_users, ranked[t_rows])):
                keep = ~np.isin(row, seen[u].indices)
                row = row[keep]
                full[r, : len(row)] = row
            from pipelines.core.metrics import per_user_metrics

            rel = [truth[u].indices for u in t_users]
            per = per_user_metrics(full[:, :20], rel)
            per_user["teacher"] = per["ndcg@10"]
            tops["teacher"] = full[:, :10]
            _, lo, hi = bootstrap_ci(per["ndcg@10"], n=c.bootstrap)
            models["teacher"] = {
                **{
                    k: float(v.mean())
                    for k, v in per.items()
                    if k
                    in ("ndcg@10", "recall@10", "mrr@10", "hit_rate@10", "ndcg@20", "recall@20")
                },
                "ndcg@10_ci": [lo, hi],
                "params": None,
                "bytes": None,
                "teacher_top10_overlap": 1.0,
                "latency_ms_batch1": None,
                "parts": teacher_meta["teacher"]["parts"],
                "mix": teacher_meta["teacher"]["mix"]["weights"],
            }
        teacher_quality = teacher_meta.get("teacher_quality")
    else:
        teacher_quality = None

    students = {}
    for name, path, loader in (
        ("student_hard", c.student_hard, TwoTower.from_pretrained),
        ("student_distilled", c.student_distilled, TwoTower.from_pretrained),
        ("student_pruned", c.student_pruned, TwoTower.from_pretrained),
        ("student_int8", c.student_int8, load_quantized),
        ("student_int8_fast", c.student_int8_fast, load_quantized),
    ):
        if not path:
            continue
        model = loader(path)
        provenance.check(path, model.provenance, data, split, what=f"the {name} model")
        students[name] = model
        hist = torch.as_tensor(
            histories(split.train, data.n_users, model.config.history_len, data.n_items)
        )
        add(name, score_fn(model, hist), params=count_parameters(model), nbytes=model_bytes(model))

    if "teacher" in tops:
        for name in models:
            if name != "teacher":
                models[name]["teacher_top10_overlap"] = topk_overlap(
                    tops[name][teacher_eval_rows], tops["teacher"]
                )
    comparisons = {}
    if "student_hard" in per_user and "student_distilled" in per_user:
        d, lo, hi = paired_bootstrap(
            per_user["student_distilled"], per_user["student_hard"], n=c.bootstrap
        )
        comparisons["distilled_minus_hard_ndcg@10"] = {
            "mean": d,
            "ci": [lo, hi],
            "relative": d / models["student_hard"]["ndcg@10"],
        }
    if "student_distilled" in models and "student_int8" in models:
        comparisons["int8_vs_distilled"] = {
            "ndcg@10_kept": models["student_int8"]["ndcg@10"]
            / models["student_distilled"]["ndcg@10"],
            "bytes_ratio": models["student_distilled"]["bytes"] / models["student_int8"]["bytes"],
        }

    indexes = {}
    if "student_distilled" in students and c.indexes:
        indexes = bench_indexes(
            students["student_distilled"], split, data, test_users, truth, seen, c
        )

    scale = None
    if c.scale:
        from pipelines.evaluation.index_scale import run_scale

        scale = run_scale(sizes=c.scale_sizes, threads=c.threads, out=Path(c.out) / "scale.json")

    report = {
        "dataset": {
            **data.stats(),
            "split": {
                "protocol": c.protocol,
                "seed": c.split_seed,
                "fingerprint": split.fingerprint(),
                "test_users": int(len(all_test)),
                "test_interactions": int(truth.nnz),
            },
        },
        "evaluation": evaluation,
        "protocol": c.protocol,
        "models": models,
        "indexes": indexes,
        "comparisons": comparisons,
        "teacher_quality": teacher_quality,
        "scale": scale,
        "config": to_dict(c),
        "seconds": time.perf_counter() - t0,
    }
    write_report(report, c.out)
    return report


STUDENTS = (
    "student_hard",
    "student_distilled",
    "student_pruned",
    "student_int8",
    "student_int8_fast",
)


def _load_students(c: BenchmarkConfig) -> dict:
    from student.compress import load_quantized
    from student.model import TwoTower

    out = {}
    for name in STUDENTS:
        path = getattr(c, name)
        if path:
            loader = load_quantized if "int8" in name else TwoTower.from_pretrained
            out[name] = loader(path)
    return out


def run_cold(c: BenchmarkConfig) -> dict:
    """The ``cold_items`` report: every model on the cold, warm and all segments."""
    from pipelines.evaluation.cold import (
        comparisons,
        evaluate_segments,
        reference_scorers,
        segment_tasks,
        strip_per_user,
        teacher_scorer,
    )
    from pipelines.labels.schema import load_labels
    from student.model import count_parameters, model_bytes
    from student.scoring import score_fn

    t0 = time.perf_counter()
    data = load_dataset(c.dataset)
    split = make_split(data, c.protocol, c.split_seed)
    tasks = segment_tasks(split)
    seg_users = segment_sample(tasks, c.eval_users, c.eval_seed)  # the same for every model
    evaluation = {
        seg: sample_info(len(u), n, c.eval_seed, f"{seg} users")
        for seg, (u, n) in seg_users.items()
    }
    meta, text_emb = None, None
    if c.labels:
        _, meta = load_labels(
            c.labels, dataset_fingerprint=data.fingerprint(), split_fingerprint=split.fingerprint()
        )
        if meta.get("item_embeddings"):
            text_emb = load_npy(
                artifact_path(c.labels, meta["item_embeddings"], "item_embeddings")
            ).astype(np.float32)
    segs: dict[str, dict] = {}
    models: dict[str, dict] = {}

    def add(name, fn, cold_ok=True, params=None, nbytes=None, latency=None, new_ok=True,
            new_fn=None):  # fmt: skip
        segs[name] = evaluate_segments(
            fn,
            tasks,
            c.bootstrap,
            cold_ok=cold_ok,
            new_ok=new_ok,
            new_fn=new_fn,
            users={seg: u for seg, (u, _) in seg_users.items()},
        )
        a = segs[name]["all"]
        models[name] = {
            **{k: a[k] for k in ("ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20")},
            "params": params,
            "bytes": nbytes,
            "teacher_top10_overlap": None,
            "latency_ms_batch1": latency,
        }
        cold, new = segs[name]["cold"], segs[name]["new_users"]
        logger.info(
            "%s: cold ndcg@20 %s, warm ndcg@10 %.4f, all ndcg@10 %.4f, new-user ndcg@20 %s",
            name,
            "-" if cold is None else f"{cold['ndcg@20']:.4f}",
            segs[name]["warm"]["ndcg@10"],
            a["ndcg@10"],
            "-" if new is None else f"{new['ndcg@20']:.4f}",
        )

    for name, (fn, cold_ok) in reference_scorers(split, data, text_emb).items():
        add(name, fn, cold_ok)
    if meta is not None and meta.get("teacher_topk_cold"):
        # labels exist for training users only: the teacher has nothing for a new user
        add("teacher", teacher_scorer(Path(c.labels), meta, data.n_items), new_ok=False)
        models["teacher"]["parts"] = meta["teacher"]["parts"]
        models["teacher"]["mix"] = meta["teacher"]["mix"]["weights"]
        models["teacher"]["cold_mix"] = meta["teacher"]["mix"]["cold"]["weights"]
    test_users = seg_users["all"][0]
    students = _load_students(c)
    for name, model in students.items():
        provenance.check(getattr(c, name), model.provenance, data, split, what=f"the {name} model")
    for name, model in students.items():
        hist = torch.as_tensor(
            histories(split.train, data.n_users, model.config.history_len, data.n_items)
        )
        new_hist = torch.as_tensor(
            histories(split.new_history, data.n_users, model.config.history_len, data.n_items)
        )
        fn = score_fn(model, hist)
        add(
            name,
            fn,
            params=count_parameters(model),
            nbytes=model_bytes(model),
            latency=_latency_ms(fn, test_users, c.n_single),
            new_fn=score_fn(model, new_hist, new_users=True),
        )
    for name, m in models.items():
        m["segments"] = strip_per_user(segs[name])
    indexes = {}
    if "student_distilled" in students and c.indexes:
        truth, seen = split.matrix("test"), split.seen_for("test")
        users = sample_users(truth, c.eval_users, c.eval_seed)
        indexes = bench_indexes(students["student_distilled"], split, data, users, truth, seen, c)
    report = {
        "dataset": {
            **data.stats(),
            "split": {
                "protocol": c.protocol,
                "seed": c.split_seed,
                "fingerprint": split.fingerprint(),
                "cold_valid_items": int(len(split.cold_valid_items)),
                "cold_test_items": int(len(split.cold_test_items)),
                "new_users": int(len(split.new_users)),
                "users": {
                    seg: int((np.diff(t["truth"].indptr) > 0).sum()) for seg, t in tasks.items()
                },
            },
        },
        "protocol": c.protocol,
        "evaluation": evaluation,
        "models": models,
        "indexes": indexes,
        "comparisons": comparisons(segs, c.bootstrap),
        "teacher_quality": None if meta is None else meta.get("teacher_quality"),
        "teacher_cold": None if meta is None else meta.get("cold"),
        "config": to_dict(c),
        "seconds": time.perf_counter() - t0,
    }
    write_report(report, c.out)
    return report


def sample_info(n: int, of: int, seed: int, what: str) -> dict:
    """What the report says about its users: ``{"users", "of", "seed", "sampled", "text"}``,
    e.g. "10000 of 95000 test users, seed 0" (or "all 943 test users")."""
    sampled = n < of
    text = f"{n} of {of} {what}, seed {seed}" if sampled else f"all {of} {what}"
    return {"users": int(n), "of": int(of), "seed": int(seed), "sampled": sampled, "text": text}


def load_teacher_topk(labels_dir, meta: dict, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's saved top-k [U, k] (train items excluded) and its users [U] (sorted): all
    ``n_users`` users, or the label job's ``--topk-users`` sample (``teacher_topk_users.npy``)."""
    ranked = load_npy(artifact_path(labels_dir, meta["teacher_topk"], "teacher_topk"))
    if meta.get("teacher_topk_users"):
        users = load_npy(
            artifact_path(labels_dir, meta["teacher_topk_users"], "teacher_topk_users")
        ).astype(np.int64)
    else:
        users = np.arange(n_users)
    if len(users) != len(ranked):
        raise ValueError(
            f"{labels_dir}: teacher_topk has {len(ranked)} rows for {len(users)} users; "
            "regenerate the labels"
        )
    return ranked, users


def segment_sample(tasks: dict, n: int, seed: int) -> dict[str, tuple[np.ndarray, int]]:
    """Per cold-report segment: (sorted evaluation users, users the segment has): a seeded
    sample of ``n`` among those with a held-out item among the segment's rankable items (all
    when ``n`` is 0 or not smaller)."""
    import scipy.sparse as sp

    out = {}
    for seg, t in tasks.items():
        truth = t["truth"].tocsr()
        if t["items"] is not None:
            keep = np.zeros(truth.shape[1], dtype=np.float32)
            keep[np.asarray(t["items"], dtype=np.int64)] = 1
            truth = (truth @ sp.diags(keep)).tocsr()
            truth.eliminate_zeros()
        out[seg] = (sample_users(truth, n, seed), int((np.diff(truth.indptr) > 0).sum()))
    return out


def bench_indexes(model, split, data, test_users, truth, seen, c: BenchmarkConfig) -> dict:
    from pipelines.evaluation.index_eval import bench_index, exact_topk, sweep
    from student.serving import IndexConfig, ItemIndex, Retriever

    hist = torch.as_tensor(
        histories(split.train, data.n_users, model.config.history_len, data.n_items)
    )
    with torch.no_grad():
        items = model.encode_items(torch.arange(data.n_items)).numpy().astype(np.float32)
        queries = (
            model.encode_users(torch.as_tensor(test_users), hist[torch.as_tensor(test_users)])
            .numpy()
            .astype(np.float32)
        )
    normalized = bool(model.config.normalize)
    _, exact = exact_topk(items, queries, 10)
    out = {}
    for kind in c.indexes:
        cfg = IndexConfig(kind=kind, normalize=normalized)
        t_build = time.perf_counter()
        index = ItemIndex.build(items, data.items.item_id.to_numpy(), cfg, threads=c.threads)
        build_seconds = time.perf_counter() - t_build
        m = bench_index(index, queries, exact, k=10, n_single=c.n_single, threads=c.threads)
        entry = {
            k: m.get(k)
            for k in (
                "recall@10_vs_exact",
                "qps_batch1",
                "qps_batch256",
                "p50_ms",
                "p99_ms",
                "bytes",
            )
        }
        entry["build_seconds"] = build_seconds
        entry["items_per_second_indexed"] = len(items) / build_seconds
        # ranking quality through the index, seen items filtered out: the server's query path
        ids = Retriever(model, index, hist.numpy(), seen).retrieve(test_users, 10)
        pos = {iid: j for j, iid in enumerate(data.items.item_id)}
        rows = np.vectorize(pos.get)(ids)
        from pipelines.core.metrics import per_user_metrics

        per = per_user_metrics(rows, [truth[u].indices for u in test_users], ks=(10,))
        entry["ndcg@10"] = float(per["ndcg@10"].mean())
        entry["config"] = cfg.to_dict()
        if cfg.is_ivf:
            entry["sweep"] = sweep(
                index,
                queries,
                exact,
                "nprobe",
                [1, 2, 4, 8, 16, 32],
                k=10,
                n_single=c.n_single,
                threads=c.threads,
            )
        elif cfg.is_hnsw:
            entry["sweep"] = sweep(
                index,
                queries,
                exact,
                "ef_search",
                [8, 16, 32, 64, 128],
                k=10,
                n_single=c.n_single,
                threads=c.threads,
            )
        out[kind] = entry
        logger.info("index %s: recall@10 vs exact %.4f", kind, entry["recall@10_vs_exact"])
    return out


def format_summary(report: dict) -> str:
    if report.get("protocol") == "cold_items":
        lines = [cold_table(report), *cold_comparisons(report), "", new_users_table(report)]
        lines += cold_comparisons(report, "new_users")
        lines.append(f"report: {Path(report['config']['out']) / 'report.md'}")
        return "\n".join(lines)
    lines = [headline_table(report), "", index_table(report)]
    comp = report.get("comparisons", {}).get("distilled_minus_hard_ndcg@10")
    if comp:
        lines.append(
            f"\ndistilled - hard NDCG@10: {comp['mean']:+.4f} ({comp['relative']:+.1%}), "
            f"95% paired bootstrap [{comp['ci'][0]:+.4f}, {comp['ci'][1]:+.4f}]"
        )
    for r in (report.get("scale") or {}).get("results", []):
        t = r.get("targets")
        if t:
            best = t["ann_qps_batch1"]["best"]
            lines.append(
                f"scale {r['n_items']:,} x {r['dim']} (norm sigma {r['norm_sigma']}): SQ8 recall@10 {t['sq8_recall']:.4f} "
                f"at {t['sq8_bytes_fraction']:.0%} of float32 bytes; {best['index']} recall {best['recall']:.4f} "
                f"at {t['ann_qps_batch1']['speedup']:.1f}x exact QPS (batch 1)"
            )
    lines.append(f"report: {Path(report['config']['out']) / 'report.md'}")
    return "\n".join(lines)
