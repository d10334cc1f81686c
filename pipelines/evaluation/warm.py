"""Two views of the warm ranking the report adds (plain functions, arrays in, numbers out):

- **head and tail**: the warm test targets split by train popularity. Head = the most popular
  items that together hold the first ``HEAD_SHARE`` (80%) of the train interactions (items
  sorted by train count, ties by the lower index; an item is head while the share before it
  is under 80%); tail = every other item (those with no train interaction too). Each model
  keeps its full-catalogue ranking (its top-10 on the warm segment); only which targets count
  changes: NDCG@10 and Recall@10 over a user's head targets (users with one), and over the
  tail ones.
- **teacher vs the hard student on validation**: the teacher's saved top-k (train items
  excluded) ranks the validation users over the whole catalogue, against the hard student's
  validation NDCG@10 from its ``metrics.json`` (the same metric, train as the input); and the
  distilled student's distillation grid (``metrics.json`` ``selection``) where it has one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.sparse as sp

from common.io import read_json
from pipelines.core.metrics import per_user_metrics, sample_users
from pipelines.evaluation.segments import Scored, Segment

HEAD_SHARE = 0.8
SIDE_KEYS = ("ndcg@10", "recall@10")


def head_items(train: sp.csr_matrix, share: float = HEAD_SHARE) -> np.ndarray:
    """[I] bool: the items that hold the first ``share`` of the train interactions."""
    counts = np.asarray(train.sum(axis=0)).ravel().astype(np.float64)
    head = np.zeros(len(counts), dtype=bool)
    total = counts.sum()
    if total == 0:
        return head
    order = np.argsort(-counts, kind="stable")  # ties: the lower index first
    before = np.r_[0.0, np.cumsum(counts[order])[:-1]] / total
    head[order[(before < share) & (counts[order] > 0)]] = True
    return head


def side_metrics(
    top10: np.ndarray, truth: sp.csr_matrix, users: np.ndarray, side: np.ndarray
) -> dict:
    """NDCG@10 and Recall@10 of ranked lists ``top10`` [U, 10] (rows of ``users``) counting
    only the targets in ``side`` ([I] bool); users without such a target are left out."""
    truth = truth.tocsr()
    rel = [truth.indices[truth.indptr[u] : truth.indptr[u + 1]] for u in users]
    rel = [r[side[r]] for r in rel]
    keep = np.array([len(r) > 0 for r in rel], dtype=bool)
    if not keep.any():
        return {k: None for k in SIDE_KEYS} | {"users": 0}
    per = per_user_metrics(top10[keep], [r for r, k in zip(rel, keep) if k], ks=(10,))
    return {k: float(per[k].mean()) for k in SIDE_KEYS} | {"users": int(keep.sum())}


def add_head_tail(models: dict, results: dict, seg: Segment, train: sp.csr_matrix) -> dict:
    """Each model's ``segments.head`` / ``segments.tail`` on ``seg`` (the warm test segment);
    returns what the split is: the share, item counts of each side, targets on each side."""
    head = head_items(train)
    ranked = (
        np.ones(len(head), bool) if seg.items is None else np.isin(np.arange(len(head)), seg.items)
    )
    for name, res in results.items():
        scored: Scored | None = res.get(seg.name)
        if scored is None:
            continue
        users = seg.users if scored.rows is None else seg.users[scored.rows]
        segs = models[name].setdefault("segments", {})
        segs["head"] = side_metrics(scored.top10, seg.truth, users, head & ranked)
        segs["tail"] = side_metrics(scored.top10, seg.truth, users, ~head & ranked)
    targets = seg.truth[seg.users].tocsr()
    on_head = head[targets.indices] & ranked[targets.indices]
    counts = np.asarray(train.sum(axis=0)).ravel()
    return {
        "segment": seg.name,
        "head_share": HEAD_SHARE,
        "head_items": int((head & ranked).sum()),
        "tail_items": int((~head & ranked).sum()),
        "head_train_interactions": int(counts[head].sum()),
        "train_interactions": int(counts.sum()),
        "head_targets": int(on_head.sum()),
        "tail_targets": int((~head[targets.indices] & ranked[targets.indices]).sum()),
    }


def warm_segment(segments: list[Segment]) -> Segment | None:
    """The warm test segment: ``test`` (random / temporal) or ``warm`` (cold_items)."""
    return next((s for s in segments if s.name in ("test", "warm")), None)


def teacher_vs_hard(c, split, scorers: list, bootstrap: int) -> dict | None:
    """The teacher's validation NDCG@10 (full catalogue, train excluded) beside the hard
    student's (``metrics.json`` ``valid``), and the distilled student's grid choice."""
    teacher = next((s for s in scorers if s.name == "teacher"), None)
    hard = _metrics_json(c.student_hard)
    distilled = _metrics_json(c.student_distilled)
    if teacher is None and hard is None and distilled is None:
        return None
    out: dict = {"teacher": None, "student_hard": None, "teacher_weaker": None}
    if teacher is not None:
        # the test ranking reads train + valid and excludes the validation items: validation
        # is scored with the ranking that read train only
        teacher = getattr(teacher, "valid", None) or teacher
        truth = split.matrix("valid")
        users = sample_users(truth, c.eval_users, c.eval_seed)
        of = int((np.diff(truth.indptr) > 0).sum())
        seg = Segment("valid", truth, split.seen_for("valid"), None, users, of)
        scored = teacher.score(seg, bootstrap)
        if scored is not None:
            out["teacher"] = {"ndcg@10": scored.means["ndcg@10"], "users": scored.means["users"]}
    if hard is not None and hard.get("valid"):
        users = (hard.get("valid_users") or {}).get("users", hard["valid"].get("users"))
        out["student_hard"] = {"ndcg@10": hard["valid"]["ndcg@10"], "users": users}
    if out["teacher"] and out["student_hard"]:
        out["teacher_weaker"] = out["teacher"]["ndcg@10"] < out["student_hard"]["ndcg@10"]
    sel = (distilled or {}).get("selection")
    if sel:
        out["selection"] = {k: sel[k] for k in ("chosen", "zero_won", "zero_added")} | {
            "grid": [
                {"scale": g["scale"], "temperature": g["temperature"],
                 "valid_ndcg@10": g["valid"]["ndcg@10"]}
                for g in sel["grid"]
            ]
        }  # fmt: skip
    return out


def _metrics_json(model_dir: str | None) -> dict | None:
    """The ``metrics.json`` beside a train-student model folder (None: not given or absent)."""
    if not model_dir:
        return None
    path = Path(model_dir).parent / "metrics.json"
    return read_json(path, "a train-student metrics.json") if path.is_file() else None


def warm_sections(c, models: dict, results: dict, segments: list[Segment], split, scorers) -> dict:
    """The report's ``head_tail`` (and each model's ``segments.head`` / ``.tail``) and
    ``teacher_vs_hard``."""
    seg = warm_segment(segments)
    ht = None if seg is None else add_head_tail(models, results, seg, split.matrix("train"))
    return {"head_tail": ht, "teacher_vs_hard": teacher_vs_hard(c, split, scorers, c.bootstrap)}
