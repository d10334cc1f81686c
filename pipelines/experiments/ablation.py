"""`recdistill ablation`: hard-only vs distilled students, several seeds, both protocols.

For each protocol: soft labels are generated once, then for each seed a hard-only and a
distilled student are trained with otherwise identical settings; each is a step of
:mod:`pipelines.experiments.steps`, reused by a rerun while its key is unchanged.
The table gives test NDCG@10 / Recall@10 / MRR@10 as mean and std over seeds, a 95% paired
bootstrap interval over users for distilled minus hard (per-user metrics averaged over
seeds), top-10 agreement with the teacher, parameters and training time, beside popularity,
EASE^R and the teacher itself. Written to ``ablation.json`` and ``ablation.md``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from common.config import to_dict
from common.io import artifact_path, load_npy, write_json, write_text
from pipelines.baselines.collab import fit_collab
from pipelines.baselines.popularity import Popularity
from pipelines.core.args import ThreadArgs
from pipelines.core.config import make_config
from pipelines.core.layout import RunLayout
from pipelines.core.metrics import evaluate, paired_bootstrap, per_user_metrics, topk_overlap
from pipelines.data import histories, load_dataset, make_split, to_csr
from pipelines.experiments.steps import Step, StepGraph
from pipelines.labels.config import TeacherName
from pipelines.labels.generate_labels import GenerateLabelsConfig
from pipelines.labels.generate_labels import run as generate
from pipelines.labels.schema import META_FILE
from pipelines.training.train_student import TrainStudentConfig
from pipelines.training.train_student import run as train
from student.scoring import score_fn

logger = logging.getLogger(__name__)
METRICS = ("ndcg@10", "recall@10", "mrr@10")


@dataclass
class AblationConfig(ThreadArgs):
    dataset: str = field(default="ml-100k", metadata={"help": "dataset spec"})
    protocols: tuple[Literal["random", "temporal"], ...] = field(
        default=("random", "temporal"), metadata={"help": "split protocols"}
    )
    seeds: tuple[int, ...] = field(
        default=(0, 1, 2), metadata={"help": "training seeds (>= 3 for the issue's table)"}
    )
    teacher: TeacherName = field(default="embedding", metadata={"help": "LLM part of the teacher"})
    teacher_model: str | None = field(
        default=None, metadata={"help": "teacher model (default: packaged)"}
    )
    epochs: int = field(default=40, metadata={"help": "maximum epochs per student"})
    label_negatives: int = field(
        default=200, metadata={"help": "sampled negatives per user in the teacher's lists"}
    )
    bootstrap: int = field(default=1000, metadata={"help": "bootstrap resamples"})
    out: str = field(default="runs/ablation", metadata={"help": "output folder"})

    def __post_init__(self):
        super().__post_init__()
        if not self.seeds:
            raise ValueError("AblationConfig.seeds is empty; give at least one seed")
        bad = [p for p in self.protocols if p not in ("random", "temporal")]
        if bad or not self.protocols:
            raise ValueError(
                f"AblationConfig.protocols={self.protocols!r}; expected random and/or temporal"
            )


def _test_eval(model_dir: Path, data, split) -> dict:
    from student.model import TwoTower

    model = TwoTower.from_pretrained(model_dir)
    known = split.known_before("test")  # train + validation: all that precedes a test item
    hist = torch.as_tensor(histories(known, data.n_users, model.config.history_len, data.n_items))
    return evaluate(
        score_fn(model, hist),
        split.matrix("test"),
        split.seen_for("test"),
        return_per_user=True,
        return_topk=True,
    )


def _labels_step(c: AblationConfig, run: RunLayout, protocol: str) -> Step:
    cfg = GenerateLabelsConfig(
        dataset=c.dataset,
        protocol=protocol,
        teacher=c.teacher,
        model=c.teacher_model,
        overwrite=True,
        threads=c.threads,
        n_negatives=c.label_negatives,
        out=str(run.labels),
    )
    return Step(f"{protocol}_labels", generate, cfg, run.labels, (), META_FILE)


def _student_step(c: AblationConfig, run: RunLayout, protocol: str, mode: str, seed: int) -> Step:
    name = f"{mode}_seed{seed}"
    cfg = make_config(
        TrainStudentConfig,
        dataset=c.dataset,
        protocol=protocol,
        seed=seed,
        epochs=c.epochs,
        out=str(run.student(name)),
        overwrite=True,  # this job's own run folders (others are still refused)
        no_teacher=mode == "hard",
        threads=c.threads,
        labels=None if mode == "hard" else str(run.labels),
    )
    return Step(
        f"{protocol}_{name}", train, cfg, run.student(name), (f"{protocol}_labels",), "metrics.json"
    )


def _teacher_row(meta: dict, labels_dir: Path, users, truth, seen) -> tuple[dict, np.ndarray]:
    """The teacher's own test metrics from its top-k, and that top-k (20 unseen per user)."""
    ranked = load_npy(artifact_path(labels_dir, meta["teacher_topk"], "teacher_topk"))
    top = np.stack([r[~np.isin(r, seen[u].indices)][:20] for u, r in zip(users, ranked[users])])
    per = per_user_metrics(top, [truth[u].indices for u in users])
    row = {m: {"mean": float(per[m].mean()), "std": 0.0} for m in METRICS}
    row["parts"] = meta["teacher"]["mix"]["weights"]
    return row, top


def _student_row(runs: list[dict], teacher_top) -> dict:
    """Mean and std over seeds of one student mode's runs."""
    std = (lambda v: float(np.std(v, ddof=1))) if len(runs) > 1 else (lambda v: 0.0)
    return {
        **{
            k: {"mean": float(np.mean([r[k] for r in runs])), "std": std([r[k] for r in runs])}
            for k in METRICS
        },
        "params": runs[0]["params"],
        "train_seconds": float(np.mean([r["seconds"] for r in runs])),
        "teacher_top10_overlap": None
        if teacher_top is None
        else float(np.mean([r["teacher_top10_overlap"] for r in runs])),
        "runs": runs,
    }


def _students(c, graph: StepGraph, run: RunLayout, protocol, data, split, teacher_top):
    """Each mode's row and per-user test metrics (one per seed)."""
    rows, per_user = {}, {"hard": [], "distilled": []}
    for mode in ("hard", "distilled"):
        runs = []
        for seed in c.seeds:
            step = graph.run(_student_step(c, run, protocol, mode, seed))
            t0 = time.perf_counter()
            ev = _test_eval(run.model(f"{mode}_seed{seed}"), data, split)
            res = step.result
            per_user[mode].append(ev["per_user"])
            overlap = None
            if teacher_top is not None:
                overlap = topk_overlap(ev["topk"][:, :10], teacher_top[:, :10])
            runs.append(
                {
                    **{k: ev[k] for k in METRICS},
                    "seconds": (step.recorded_seconds or 0.0) + time.perf_counter() - t0,
                    "params": res["params"],
                    "best_epoch": res["best_epoch"],
                    "teacher_top10_overlap": overlap,
                }
            )
            logger.info("%s %s seed %d: ndcg@10 %.4f", protocol, mode, seed, ev["ndcg@10"])
        rows[f"student_{mode}"] = _student_row(runs, teacher_top)
    return rows, per_user


def _protocol(c: AblationConfig, graph: StepGraph, run: RunLayout, protocol: str, data) -> dict:
    split = make_split(data, protocol, 0)
    truth, seen = split.matrix("test"), split.seen_for("test")
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    meta = graph.run(_labels_step(c, run, protocol)).result
    rows: dict[str, dict] = {}
    teacher_top = None
    if meta.get("teacher_topk"):
        rows["teacher"], teacher_top = _teacher_row(meta, run.labels, users, truth, seen)
    collab = fit_collab(split)[0]  # EASE^R, or ALS past EASE^R's memory budget; fit on train
    known = to_csr(split.known_before("test"), split.n_users, split.n_items)
    pop = Popularity(split.matrix("train"))
    for name, model in (("popularity", pop), (collab.kind, collab.from_histories(known))):
        m = evaluate(model, truth, seen)
        rows[name] = {k: {"mean": m[k], "std": 0.0} for k in METRICS}
    student_rows, per_user = _students(c, graph, run, protocol, data, split, teacher_top)
    rows |= student_rows
    diff = {}
    for k in METRICS:
        a = np.mean([p[k] for p in per_user["distilled"]], axis=0)
        b = np.mean([p[k] for p in per_user["hard"]], axis=0)
        d, lo, hi = paired_bootstrap(a, b, n=c.bootstrap)
        diff[k] = {"mean": d, "ci": [lo, hi], "relative": d / b.mean()}
    return {
        "rows": rows,
        "distilled_minus_hard": diff,
        "teacher_quality": meta["teacher_quality"],
        "test_users": int(len(users)),
    }


def run(config: AblationConfig) -> dict:
    c = config
    out = Path(c.out)
    data = load_dataset(c.dataset)
    graph = StepGraph(data.fingerprint())
    result: dict = {"config": to_dict(c), "protocols": {}}
    for protocol in c.protocols:
        result["protocols"][protocol] = _protocol(
            c, graph, RunLayout(out / protocol), protocol, data
        )
    write_json(out / "ablation.json", result)
    write_text(out / "ablation.md", format_summary(result) + "\n")
    return result


def format_summary(result: dict) -> str:
    lines = []
    for protocol, r in result["protocols"].items():
        lines += [
            f"### {protocol} protocol ({r['test_users']} test users, seeds {result['config']['seeds']})",
            "",
            "| model | NDCG@10 | Recall@10 | MRR@10 | top-10 overlap with teacher | params | train s |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in r["rows"].items():
            cells = [
                f"{row[m]['mean']:.4f} ± {row[m]['std']:.4f}"
                if row[m]["std"]
                else f"{row[m]['mean']:.4f}"
                for m in METRICS
            ]
            ov = row.get("teacher_top10_overlap")
            lines.append(
                f"| {name} | "
                + " | ".join(cells)
                + f" | {'-' if ov is None else f'{ov:.3f}'} | {row.get('params', '-')} | {'-' if row.get('train_seconds') is None else format(row['train_seconds'], '.0f')} |"
            )
        d = r["distilled_minus_hard"]["ndcg@10"]
        lines += [
            "",
            f"distilled - hard NDCG@10: {d['mean']:+.4f} ({d['relative']:+.1%}), 95% paired bootstrap over users [{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}]",
            "",
        ]
    return "\n".join(lines)
