"""`recdistill benchmark`: quality and cost of every model and index, side by side.

On one split, every scorer on each of the protocol's segments (``pipelines.evaluation.segments``:
the test part under ``random`` / ``temporal``, with the user's train and validation items
excluded; cold, warm, all and new users under ``cold_items``): popularity, EASE^R, the teacher
(where it ranked the catalogue), the hard-only, distilled, pruned and int8 students (and the
cold-start reference scorers); then the distilled student's item embeddings in each FAISS
index. Writes ``report.json`` (the interface; see README), ``report.md`` and PNG plots.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from common.config import check_int, to_dict
from common.io import (
    artifact_path,
    claim_output,
    load_npy,
    portable_paths,
    refuse_out_inside,
)
from pipelines.baselines.collab import fit_collab
from pipelines.baselines.popularity import Popularity
from pipelines.baselines.transition import fit_transition
from pipelines.core.args import OutputArgs, ThreadArgs
from pipelines.core.metrics import RANKING_TIES, paired_bootstrap, topk_overlap
from pipelines.data import load_dataset, make_split, to_csr
from pipelines.data.args import DataArgs
from pipelines.evaluation.index_part import bench_indexes
from pipelines.evaluation.report import (
    cold_comparisons,
    cold_table,
    headline_table,
    index_table,
    new_users_table,
    write_report,
)
from pipelines.evaluation.segments import (
    TEST_KEYS,
    ColdRule,
    Scored,
    Scorer,
    Segment,
    make_segments,
    test_segment,
)
from pipelines.evaluation.students import (
    STUDENTS,
    TRANSDUCTIVE,
    load_students,
    student_scorers,
    transductive,
)
from pipelines.evaluation.teacher import teacher_scorers
from pipelines.evaluation.warm import warm_sections
from student.serving.config import INDEX_KINDS, IndexKind

logger = logging.getLogger(__name__)

# the benchmark's default index kinds (INDEX_KINDS lists every kind it accepts)
BENCH_INDEXES: tuple[IndexKind, ...] = ("flat", "sq8", "ivf_sq8", "hnsw_sq8")
REPORT_FILES = frozenset(
    {"report.json", "report.md", "*.png", "scale.json"}
)  # all a report folder holds


@dataclass
class BenchmarkConfig(DataArgs, OutputArgs, ThreadArgs):
    defaults: ClassVar[dict[str, Any]] = {"threads": 1, "out": "runs/benchmark"}

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
    transductive_distilled: str | None = field(
        default=None,
        metadata={
            "help": "cold_items: a distilled student trained with --cold-setting transductive "
            "(its cold score is student_distilled's segments.cold_transductive)"
        },
    )
    transductive_int8: str | None = field(
        default=None,
        metadata={"help": "cold_items: the int8 form of --transductive-distilled (compress)"},
    )
    cold_rule: ColdRule = field(
        default="aldi",
        metadata={
            "help": "cold_items: what the cold segment ranks: aldi (as ALDI's code: the "
            "cold-validation and cold-test items together, the user's other known positives "
            "excluded) or cold_test_only (the cold-test items alone, nothing excluded)"
        },
    )
    indexes: tuple[IndexKind, ...] = field(
        default=BENCH_INDEXES, metadata={"help": f"index kinds, from {INDEX_KINDS}"}
    )
    index_shards: int = field(
        default=1,
        metadata={
            "help": "K > 1: one more index row, --sharded-kind over K shards "
            "('ivf_sq8 x4 shards', IndexConfig.shards), measured as the others; 1 = none"
        },
    )
    sharded_kind: IndexKind = field(
        default="ivf_sq8", metadata={"help": f"the kind of the sharded row, from {INDEX_KINDS}"}
    )
    n_single: int = field(default=200, metadata={"help": "queries timed one at a time (p50/p99)"})
    bootstrap: int = field(
        default=1000, metadata={"help": "bootstrap resamples for the NDCG@10 interval"}
    )
    eval_users: int = field(
        default=0,
        metadata={
            "help": "evaluate a seeded sample of this many test users over the full catalogue "
            "(the same users for every model, index and comparison; per segment under "
            "cold_items); 0 = all test users"
        },
    )
    eval_seed: int = field(default=0, metadata={"help": "seed of the --eval-users sample"})
    tie_seed: int = field(
        default=0, metadata={"help": "seed of the random item order that breaks score ties"}
    )
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
    allow_unchecked: bool = field(
        default=False,
        metadata={
            "help": "benchmark students that record no dataset or split fingerprint (refused "
            'otherwise); the report marks them "provenance": "unchecked"'
        },
    )

    def __post_init__(self):
        super().__post_init__()
        check_int("BenchmarkConfig", "index_shards", self.index_shards, 1)
        if self.eval_users < 0:
            raise ValueError(
                f"BenchmarkConfig.eval_users={self.eval_users}; expected >= 0 (0 = all test users)"
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
    """Every scorer on each of the protocol's segments, then the indexes; writes the report."""
    c = config
    torch.set_num_threads(c.threads)
    inputs = {f"--{n.replace('_', '-')}": getattr(c, n)
              for n in ("labels", *STUDENTS, *TRANSDUCTIVE)}  # fmt: skip
    refuse_out_inside(c.out, inputs | {"--collab-cache": c.collab_cache})
    claim_output(c.out, "report.json", overwrite=c.overwrite, what="a benchmark report",
                 only=REPORT_FILES)  # fmt: skip
    t0 = time.perf_counter()
    data = load_dataset(c.dataset)
    split = make_split(data, c.protocol, c.split_seed, c.cold_setting)
    segments = make_segments(split, c.eval_users, c.eval_seed, c.cold_rule)  # same users for all
    meta, text_emb = _load_labels(c, data, split)
    scorers = _references(c, split, data, text_emb)
    scorers += teacher_scorers(c.labels, meta, data, split)
    students, unchecked = load_students(c, data, split)
    scorers += student_scorers(students, unchecked, data, split, segments)
    results = {s.name: _score(s, segments, c) for s in scorers}
    t_seg = transductive(c, data, split, segments, results) if split.is_cold else None
    segments = segments + ([t_seg] if t_seg else [])
    head = next(seg for seg in segments if seg.headline)
    models = {
        s.name: _model_entry(s, results[s.name], segments, _latency(s, head, c)) for s in scorers
    }
    _teacher_overlap(models, results, head)
    indexes = {}
    if "student_distilled" in students and c.indexes:
        seg = head if head.name == "test" else test_segment(split, c.eval_users, c.eval_seed)
        indexes = bench_indexes(students["student_distilled"], split, data, seg, c)
    report = {
        "dataset": {**data.stats(), "split": _split_info(split, segments)},
        "protocol": c.protocol,
        "evaluation": _evaluation(segments, results, c.eval_seed),
        "ranking_ties": {"rule": RANKING_TIES, "seed": c.tie_seed},
        "models": models,
        "indexes": indexes,
        "comparisons": _comparisons(segments, results, models, c.bootstrap),
        "teacher_quality": None if meta is None else meta.get("teacher_quality"),
    }
    report |= warm_sections(c, models, results, segments, split, scorers)  # head/tail, teacher
    if split.is_cold:
        report["teacher_cold"] = None if meta is None else meta.get("cold")
        report["cold_protocol"] = {"rule": c.cold_rule, "setting": split.cold_setting,
                                   "transductive_models": sorted(TRANSDUCTIVE[k] for k in
                                                                 TRANSDUCTIVE if getattr(c, k))}  # fmt: skip
    else:
        report["scale"] = _scale(c)
    inputs = ("labels", "collab_cache", *STUDENTS, *TRANSDUCTIVE)  # relative to out in its run
    report |= {
        "config": portable_paths(to_dict(c), c.out, inputs),
        "seconds": time.perf_counter() - t0,
    }
    write_report(report, c.out)
    return report


def _load_labels(c: BenchmarkConfig, data, split) -> tuple[dict | None, np.ndarray | None]:
    """The label folder's metadata (checked against the data and split) and, under
    ``cold_items``, the LLM's item embeddings [I, D] (None where absent)."""
    from pipelines.labels.schema import load_labels

    if not c.labels:
        return None, None
    _, meta = load_labels(
        c.labels, dataset_fingerprint=data.fingerprint(), split_fingerprint=split.fingerprint()
    )
    text_emb = None
    if split.is_cold and meta.get("item_embeddings"):
        path = artifact_path(c.labels, meta["item_embeddings"], "item_embeddings")
        text_emb = load_npy(path).astype(np.float32)
    return meta, text_emb


def _references(c: BenchmarkConfig, split, data, text_emb) -> list[Scorer]:
    """The baselines: popularity, the collaborative model (EASE^R, or ALS past its budget) and
    the transition model (its test input: train + valid), sized and timed; under
    ``cold_items`` the cold-start reference scorers."""
    if split.is_cold:
        from pipelines.evaluation.cold import reference_scorers

        return reference_scorers(split, data, text_emb, cache=c.collab_cache)
    train = split.matrix("train")
    pop = Scorer("popularity", Popularity(train), params=train.shape[1], timed=True,
                 nbytes=4 * train.shape[1])  # fmt: skip
    collab, info = fit_collab(split, cache=c.collab_cache)  # fit on train only
    extra = {"lambda": info["lambda"]} if collab.kind == "ease" else {}
    trans, t_info = fit_transition(split)  # fit on train; at test it reads train + valid
    known = to_csr(split.known_before("test"), split.n_users, split.n_items)  # train + valid
    return [
        pop,
        Scorer(collab.kind, collab.from_histories(known), params=collab.params,
               nbytes=collab.nbytes, timed=True, info=extra | {"collab": info}),
        Scorer("transition", trans.from_sequences(split.known_before("test")), params=trans.params,
               nbytes=trans.nbytes, timed=True, info={"transition": t_info}),
    ]  # fmt: skip


def _score(s: Scorer, segments: list[Segment], c: BenchmarkConfig) -> dict[str, Scored | None]:
    """segment name -> the scorer's result there (None: it cannot score it)."""
    s.tie_seed = c.tie_seed  # the order of equal scores in every ranking of the report
    res = {seg.name: s.score(seg, c.bootstrap) for seg in segments}
    if len(segments) == 1:
        logger.info("%s: ndcg@10 %.4f", s.name, res[segments[0].name].means["ndcg@10"])
        return res

    def show(seg: str, key: str) -> str:
        return "-" if res[seg] is None else f"{res[seg].means[key]:.4f}"

    logger.info(
        "%s: cold ndcg@20 %s, warm ndcg@10 %s, all ndcg@10 %s, new-user ndcg@20 %s",
        s.name, show("cold", "ndcg@20"), show("warm", "ndcg@10"), show("all", "ndcg@10"),
        show("new_users", "ndcg@20"),
    )  # fmt: skip
    return res


def _latency(s: Scorer, head: Segment, c: BenchmarkConfig) -> float | None:
    return _latency_ms(s.fn, head.users, c.n_single) if s.timed else None


def _model_entry(s: Scorer, res: dict, segments: list[Segment], latency) -> dict:
    """The report's entry of one model: the headline segment's metrics (with their interval
    when it is the only segment), size, latency, extra fields, and every segment's metrics
    when there are several."""
    head = next(seg for seg in segments if seg.headline)
    scored = res[head.name]
    if len(segments) == 1:
        metrics = head.entry(scored)
    else:
        metrics = {k: scored.means[k] for k in TEST_KEYS if k in head.keys}
    entry = {**metrics, "params": s.params, "bytes": s.nbytes, "teacher_top10_overlap": None,
             "latency_ms_batch1": latency, **s.info}  # fmt: skip
    if len(segments) > 1:
        entry["segments"] = {
            seg.name: None if res[seg.name] is None else seg.entry(res[seg.name], with_users=True)
            for seg in segments
        }
    return entry


def _teacher_overlap(models: dict, results: dict, head: Segment) -> None:
    """Each model's top-10 agreement with the top-k teacher on ``head`` (the users it ranks)."""
    teacher = results.get("teacher", {}).get(head.name)
    if teacher is None or teacher.rows is None:  # no teacher, or one without saved top-k
        return
    for name, res in results.items():
        if name != "teacher":
            models[name]["teacher_top10_overlap"] = topk_overlap(
                res[head.name].top10[teacher.rows], teacher.top10
            )


def _split_info(split, segments: list[Segment]) -> dict:
    out = {"protocol": split.protocol, "seed": split.seed, "ties": split.ties,
           "fingerprint": split.fingerprint()}  # fmt: skip
    if not split.is_cold:
        (seg,) = segments
        return out | {"test_users": seg.of, "test_interactions": int(seg.truth.nnz)}
    return out | {
        "cold_valid_items": int(len(split.cold_valid_items)),
        "cold_test_items": int(len(split.cold_test_items)),
        "new_users": int(len(split.new_users)),
        "users": {seg.name: int((np.diff(seg.truth.indptr) > 0).sum()) for seg in segments},
    }


def _evaluation(segments: list[Segment], results: dict, seed: int) -> dict:
    """The evaluation users: one segment's sample info (plus the teacher's note), or one per
    segment."""
    if len(segments) > 1:
        return {seg.name: seg.sample_info(seed) for seg in segments}
    (seg,) = segments
    teacher = results.get("teacher", {}).get(seg.name)
    return seg.sample_info(seed) | ({} if teacher is None else teacher.note)


def _comparisons(segments: list[Segment], results: dict, models: dict, bootstrap: int) -> dict:
    """Distilled vs hard (paired bootstrap) and int8 vs distilled; per segment under
    ``cold_items`` (``pipelines.evaluation.cold.comparisons``)."""
    if len(segments) > 1:
        from pipelines.evaluation.cold import comparisons

        return comparisons(results, bootstrap)
    name = segments[0].name
    out = {}
    if "student_hard" in results and "student_distilled" in results:
        dist, hard = results["student_distilled"][name], results["student_hard"][name]
        d, lo, hi = paired_bootstrap(dist.per_user, hard.per_user, n=bootstrap)
        relative = d / models["student_hard"]["ndcg@10"]
        out["distilled_minus_hard_ndcg@10"] = {"mean": d, "ci": [lo, hi], "relative": relative}
    if "student_distilled" in models and "student_int8" in models:
        dist, int8 = models["student_distilled"], models["student_int8"]
        out["int8_vs_distilled"] = {
            "ndcg@10_kept": int8["ndcg@10"] / dist["ndcg@10"],
            "bytes_ratio": dist["bytes"] / int8["bytes"],
        }
    return out


def _scale(c: BenchmarkConfig) -> dict | None:
    if not c.scale:
        return None
    from pipelines.evaluation.index_scale import run_scale

    return run_scale(sizes=c.scale_sizes, threads=c.threads, out=Path(c.out) / "scale.json")


def format_summary(report: dict) -> str:
    if report.get("protocol") == "cold_items":
        lines = [cold_table(report), *cold_comparisons(report),
                 *cold_comparisons(report, "cold_transductive"), "", new_users_table(report)]  # fmt: skip
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
