"""Fit the teacher on the train split: build its text part, pick the mix weights on
validation pairs, and compute the teacher's own full-catalogue top-k."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipelines.labels.config import GenerateLabelsConfig
from pipelines.labels.parts import PARTS, Part, build_parts
from pipelines.labels.schema import LabelError
from pipelines.labels.teacher import Mix, auc, fit_mix, list_ndcg, quality

logger = logging.getLogger(__name__)


def build_text_part(
    c: GenerateLabelsConfig, data, split, device: str = "cpu", item_emb: np.ndarray | None = None
) -> Part:
    """The LLM part named by ``c.teacher`` (a ``PARTS`` key), loaded on ``device``; an
    embedding part given ``item_emb`` (the driver's, to a Ray actor) encodes no item text."""
    reuse = {} if item_emb is None else {"item_emb": item_emb}
    return PARTS[c.teacher].from_config(c, data, split, device, **reuse)


def validation_pairs(
    split, users: np.ndarray, n_neg: int, seed: int, part: str = "valid", pool=None
) -> pd.DataFrame:
    """Each user's ``part`` positives plus ``n_neg`` items outside their train and ``part``
    interactions, drawn from ``pool`` (item indices; default the whole catalogue). The
    training view has no test part to exclude."""
    rng = np.random.default_rng(seed + 1)
    blocked = (split.matrix("train") + split.matrix(part)).tocsr()
    valid = split.matrix(part).tocsr()
    pool = np.arange(split.n_items) if pool is None else np.asarray(pool)
    rows = []
    for u in users:
        pos = valid.indices[valid.indptr[u] : valid.indptr[u + 1]]
        if len(pos) == 0:
            continue
        free = np.setdiff1d(pool, blocked.indices[blocked.indptr[u] : blocked.indptr[u + 1]])
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
    if not rows:
        raise LabelError(f"no user of the teacher-quality sample has a {part!r} interaction")
    return pd.concat(rows, ignore_index=True)


@dataclass
class FittedTeacher:
    """The teacher both engines score with: parts fit on train, their mix fit on validation.

    ``valid_users`` (``[U_v]``, sorted) are the users whose validation pairs fit the mix; an
    engine that rebuilds the text part elsewhere encodes them first, in one batch, so that its
    cached user embeddings match this process's bit for bit (see ``Part.warm_users``)."""

    parts: list
    text_info: dict
    mix: Mix
    mix_search: dict
    quality: dict
    valid_users: np.ndarray
    n_valid_pairs: int
    cold: dict | None = None  # the content map, which items it scored, its cold-valid quality


def fit_teacher(
    c: GenerateLabelsConfig, data, split, users: np.ndarray, rng: np.random.Generator
) -> FittedTeacher:
    """Build the parts (LLM, the collaborative model, popularity) and fit their mix on
    validation pairs of a seeded sample of ``users`` (never on test)."""
    parts = build_parts(c, data, split)
    text_info = parts[0].info()
    eval_users = (
        users
        if len(users) <= c.eval_users
        else np.sort(rng.choice(users, c.eval_users, replace=False))
    )
    cm, cm_info = attach_content_map(c.resolved_content_map(), data, split, parts)
    warm_pool = None if cm is None else np.flatnonzero(cm.warm)
    vp = validation_pairs(split, eval_users, c.eval_negatives, c.candidate_seed, pool=warm_pool)
    vu, vi, vl = vp.user.to_numpy(), vp.item.to_numpy(), vp.label.to_numpy()
    logger.info(
        "teacher quality check: %d validation pairs of %d users", len(vp), len(np.unique(vu))
    )
    v_parts = {p.name: p.score(vu, vi) for p in parts}
    mix, mix_search = fit_mix(v_parts, vu, vl)
    teacher_quality = cross_fit_quality(v_parts, vu, vl, seed=c.candidate_seed)
    logger.info("teacher mix %s; validation %s", mix.weights, teacher_quality["mix"])
    cold = None
    if cm is not None:
        cold = fit_cold_mix(mix, parts, split, users, c.eval_negatives, c.candidate_seed)
        cold = {
            "content_map": c.resolved_content_map(),
            "lambda": cm.lam,
            "lambda_search": cm_info,
            "cold_items": int(len(cm.cold)),
            "scored_by": cold_notes(parts),
            **cold,
        }
        mix.cold_mask = ~cm.warm
    return FittedTeacher(
        parts, text_info, mix, mix_search, teacher_quality, np.unique(vu), len(vp), cold
    )


def fit_cold_mix(
    mix: Mix, parts: list[Part], split, users: np.ndarray, n_neg: int, seed: int
) -> dict:
    """Fit ``mix.cold``, the mix of the items without train interactions, on cold-validation
    pairs (cold items only) of ``users``; returns its search and cross-fit quality."""
    cu = np.unique(split.cold_valid["user"].to_numpy())
    cu = cu[np.isin(cu, users)]
    cp = validation_pairs(split, cu, n_neg, seed, "cold_valid", split.cold_valid_items)
    pu, pi, pl = cp.user.to_numpy(), cp.item.to_numpy(), cp.label.to_numpy()
    c_parts = {p.name: p.score(pu, pi) for p in parts}
    mix.cold, cold_search = fit_mix(c_parts, pu, pl)
    cold_quality = cross_fit_quality(c_parts, pu, pl, seed=seed)
    logger.info("cold-item mix %s; cold-valid %s", mix.cold.weights, cold_quality["mix"])
    return {"mix_search": cold_search, "quality": cold_quality, "validation_pairs": int(len(cp))}


def cold_notes(parts: list[Part]) -> dict[str, str]:
    """How each part scores the items without train interactions: the content-map parts
    first, then those that read the items' text."""
    ordered = sorted(parts, key=lambda p: p.cold_items != "content_map")
    return {p.name: p.cold_note for p in ordered}


def attach_content_map(mode: str, data, split, parts: list[Part]):
    """Fit the content map ``mode`` names ('text', 'no_text' or 'off': the config's
    ``resolved_content_map``) on train (lambda on cold-validation) and hand it to every part:
    the collaborative and ``popularity`` parts score items without train interactions
    through it. Returns ``(map, its lambda search)``, or ``(None, None)`` for 'off'."""
    if mode == "off":
        return None, None
    from pipelines.baselines.content_map import content_features, fit_content_map
    from pipelines.data.features import item_features

    collab = next((p for p in parts if p.key == "collab"), None)
    if collab is None:
        raise LabelError(
            f"content_map={mode!r} maps content onto the collaborative model, but the teacher "
            "has none (collab='none'): use collab='auto' or content_map='off'"
        )
    emb = parts[0].item_embeddings() if mode == "text" else None
    if mode == "text" and emb is None:
        raise LabelError(
            "content_map='text' needs the LLM's item embeddings (teacher='embedding'); use "
            "content_map='no_text' with the causal-LM teacher"
        )
    cm, info = fit_content_map(split, collab.model, content_features(item_features(data), emb))
    for p in parts:
        p.use_content(cm)
    logger.info("content map (%s): lambda %g, %d cold items", mode, cm.lam, len(cm.cold))
    return cm, info


def cross_fit_quality(
    parts: dict[str, np.ndarray], users: np.ndarray, labels: np.ndarray, seed: int, folds: int = 2
) -> dict:
    """Teacher quality never measured on the pairs its mix weights were fit on.

    Each part alone needs no fitting: its AUC and list NDCG@10 are over all validation pairs.
    The mix is cross-fit: the validation users are split into ``folds`` seeded folds; the
    weights and Platt scale are fit on the other folds and the mix is scored on the held-out
    one; pairs are [P] arrays (``users``, ``labels``), each part's scores [P]."""
    out = quality(parts, users, labels)
    uniq = np.unique(users)
    fold_of = dict(zip(uniq, np.random.default_rng(seed + 2).permutation(len(uniq)) % folds))
    f = np.array([fold_of[u] for u in users])
    held = np.zeros(len(users))
    for k in range(folds):
        fit, test = f != k, f == k
        if not fit.any() or not test.any():
            continue
        m, _ = fit_mix({n: v[fit] for n, v in parts.items()}, users[fit], labels[fit])
        held[test] = m.z({n: v[test] for n, v in parts.items()})
    out["mix"] = {
        "auc": auc(labels, held),
        "list_ndcg@10": list_ndcg(users, labels, held),
        "protocol": f"{folds}-fold cross-fit over validation users (weights fit on the other folds)",
    }
    return out


TOPK = 100
TOPK_COLD = 1000


def teacher_topk(
    parts,
    mix,
    split,
    k: int,
    batch: int = 256,
    items=None,
    users=None,
    max_cells: int = 2**26,
    seen=None,
) -> np.ndarray:
    """[U, k] int32: the teacher's best items over the full catalogue (or only ``items``),
    ``seen`` [n_users, I] excluded (default: train; the test ranking passes
    ``split.seen_for("test")``), for the report's teacher metrics and top-10 agreement, equal
    scores in the seeded tie order of every ranking (``topk``, tie seed 0), one row per
    user of ``users`` (default: all ``n_users``). Blocks of at most ``batch`` users and
    ``max_cells`` scores (``block_users``): memory bounded whatever the catalogue; a user's
    row does not depend on the other users."""
    from pipelines.core.metrics import block_users, topk

    seen = (split.matrix("train") if seen is None else seen).tocsr()
    users = np.arange(split.n_users) if users is None else np.asarray(users, dtype=np.int64)
    keep = None
    if items is not None:
        keep = np.zeros(split.n_items, dtype=bool)
        keep[items] = True
    step = block_users(split.n_items, batch, max_cells)
    out = []
    for s in range(0, len(users), step):
        b = users[s : s + step]
        scores = mix.score(
            {p.name: p.score_matrix(b) for p in parts}, items=np.arange(split.n_items)
        )
        if keep is not None:
            scores = np.where(keep, scores, -np.inf)
        out.append(topk(scores, k, seen, rows=b, overwrite=True).astype(np.int32))
    return np.concatenate(out) if out else np.zeros((0, min(k, split.n_items)), np.int32)


def topk_sample(users: np.ndarray, n: int, seed: int) -> np.ndarray | None:
    """The users (sorted) whose teacher top-k is saved: ``None`` (all users) when ``n`` is 0,
    else a seeded sample of ``n`` of ``users`` (the label job's users, all with train
    interactions: chosen without looking at validation or test)."""
    users = np.asarray(users)
    if n == 0 or n >= len(users):
        return None if n == 0 else np.sort(users)
    return np.sort(np.random.default_rng([seed, 7]).choice(users, n, replace=False))
