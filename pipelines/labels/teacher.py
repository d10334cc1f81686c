"""The teacher as the label job sees it: named parts that score (user, item) pairs, mixed.

Parts (``pipelines.labels.parts``, one module per kind, registered in ``PARTS``):
- ``text``: the LLM. An embedding model (cosine of the user's history text and the item text,
  divided by a temperature) or a causal LM (log P(yes) - log P(no) for a prompt built from
  the user's history and the candidate).
- ``ease`` or ``als``: the collaborative signal fit on the train split
  (``pipelines.baselines.collab.fit_collab``): EASE^R (lambda chosen on validation) while its dense
  I x I fit fits the memory budget, else implicit ALS (regularization chosen on validation);
  the part is named after the model.
- ``popularity``: log(1 + train count).

Items with no train interactions (the cold items of the ``cold_items`` protocol) have no
collaborative column or factor and no count: when the teacher has a content map
(``pipelines.baselines.content_map``), the collaborative and ``popularity`` parts score them with
the map's predicted target and log count, and a second mix, fit on cold-validation pairs,
ranks them (``Mix.cold``).

Each part is standardised (mean/std over the validation pairs), mixed with weights chosen on
validation (NDCG@10 over each user's validation candidates), then Platt-calibrated so that
``score`` is a logit and ``prob = sigmoid(score)``. The calibration pairs are each user's
validation positives against ``eval_negatives`` sampled negatives, so ``prob`` is the positive
rate of pairs sampled that way (about 1:50 per user under the temporal protocol), not P(like):
the intercept ``b`` moves with the sampling ratio, the order of the scores does not.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

logger = logging.getLogger(__name__)


@dataclass
class Mix:
    """score = a * sum_p w_p * (s_p - mean_p) / std_p + b  (a logit); prob = sigmoid(score).

    ``a`` and ``b`` are Platt's, fit on the validation pairs (positives vs ``eval_negatives``
    sampled negatives per user): ``b`` includes the log-odds of that sampling ratio, so
    ``prob`` is calibrated for pairs drawn that way, not the probability of a like.
    ``cold`` (optional) is the mix for the items flagged in ``cold_mask`` [I] (no train
    interactions), fit on cold-validation pairs; ``score`` then needs the pairs' items."""

    weights: dict[str, float]
    mean: dict[str, float]
    std: dict[str, float]
    a: float = 1.0
    b: float = 0.0
    cold: Mix | None = None
    cold_mask: np.ndarray | None = None

    def z(self, parts: dict[str, np.ndarray]) -> np.ndarray:
        z = 0.0
        for name, w in self.weights.items():
            if w:
                z = z + w * (parts[name] - self.mean[name]) / self.std[name]
        return np.asarray(z, dtype=np.float64)

    def score(self, parts: dict[str, np.ndarray], items: np.ndarray | None = None) -> np.ndarray:
        """Logits for the pairs of ``parts`` ([P] each, or [B, I] matrices); ``items`` [P]
        (or ``arange(I)`` for matrices) routes cold items to the cold mix."""
        s = (self.a * self.z(parts) + self.b).astype(np.float32)
        if self.cold is None:
            return s
        if items is None:
            raise ValueError("this teacher has a cold-item mix: Mix.score needs the items")
        return np.where(self.cold_mask[np.asarray(items)], self.cold.score(parts), s)

    def to_dict(self) -> dict:
        out = {
            "weights": self.weights,
            "mean": self.mean,
            "std": self.std,
            "platt_a": self.a,
            "platt_b": self.b,
        }
        if self.cold is not None:
            out["cold"] = self.cold.to_dict()
            out["cold_items"] = int(self.cold_mask.sum())
        return out


def list_ndcg(users: np.ndarray, labels: np.ndarray, scores: np.ndarray, k: int = 10) -> float:
    """Mean NDCG@k of ranking each user's candidates (binary labels) by ``scores``, over the
    users with a positive. Equal scores rank the negatives first: a tie earns nothing (the
    validation pairs list positives first, so the pair order would credit a part that scores
    them all alike, e.g. a transition part's zeros). One sort for all users: the weight
    search calls it once per grid point."""
    users, labels = np.asarray(users), np.asarray(labels)
    scores = np.asarray(scores, dtype=np.float64)
    if len(users) == 0:
        return float("nan")
    order = np.lexsort((labels, -scores, users))  # user, score descending, negatives first
    u, lab = users[order], labels[order].astype(np.float64)
    first = np.flatnonzero(np.r_[True, u[1:] != u[:-1]])  # each user's first pair
    size = np.diff(np.r_[first, len(u)])
    group = np.repeat(np.arange(len(first)), size)
    rank = np.arange(len(u)) - np.repeat(first, size)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    top = rank < k
    gain = np.where(top, lab * disc[np.minimum(rank, k - 1)], 0.0)
    dcg = np.zeros(len(first))
    for r in range(k):  # rank by rank: each user's gains summed in rank order
        at = top & (rank == r)
        dcg[group[at]] += gain[at]
    n_pos = np.bincount(group, weights=lab, minlength=len(first))
    idcg = np.r_[0.0, np.cumsum(disc)][np.minimum(n_pos, k).astype(np.int64)]
    has = n_pos > 0
    return float(np.mean(dcg[has] / idcg[has])) if has.any() else float("nan")


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (ties count one half)."""
    from scipy.stats import rankdata

    labels = labels.astype(bool)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    r = rankdata(scores)
    return float((r[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


WEIGHT_GRID = (0.0, 0.05, 0.1, 0.2, 0.35, 0.5, 1.0)
COLLAB_PARTS = ("ease", "als")  # the names a CollabPart can have


def fit_mix(
    parts: dict[str, np.ndarray],
    users: np.ndarray,
    labels: np.ndarray,
    fixed: dict[str, float] | None = None,
) -> tuple[Mix, dict]:
    """Choose part weights by validation list NDCG@10, then Platt-calibrate.

    The anchor, the part with the best list NDCG@10 alone (equal: the collaborative part
    ``ease`` or ``als``, then the parts' order), gets weight 1; the others are searched on
    ``WEIGHT_GRID`` (0 included), so the mix is at least as good as each part alone on these
    pairs. ``fixed`` skips the search."""
    mean = {k: float(v.mean()) for k, v in parts.items()}
    std = {k: float(v.std() + 1e-8) for k, v in parts.items()}
    names = sorted(parts, key=lambda n: n not in COLLAB_PARTS)  # stable: the collab part first
    alone = {n: list_ndcg(users, labels, parts[n]) for n in names}
    anchor = max(names, key=lambda n: -np.inf if np.isnan(alone[n]) else alone[n])
    names = list(parts)
    others = [n for n in names if n != anchor]
    tried = []
    if fixed is not None:
        best = dict(fixed)
    else:
        best, best_v = None, -1.0
        for combo in itertools.product(WEIGHT_GRID, repeat=len(others)):
            w = {anchor: 1.0, **dict(zip(others, combo))}
            v = list_ndcg(users, labels, Mix(w, mean, std).z(parts))
            tried.append({"weights": w, "valid_list_ndcg@10": v})
            if v > best_v:
                best, best_v = w, v
    mix = Mix(best, mean, std)
    z = mix.z(parts)
    y = labels.astype(float)

    def nll(ab):
        t = ab[0] * z + ab[1]
        return float(np.mean(np.logaddexp(0, t) - y * t))

    res = minimize(nll, x0=np.array([1.0, 0.0]), method="Nelder-Mead")
    mix.a, mix.b = float(res.x[0]), float(res.x[1])
    return mix, {"grid": tried}


def quality(parts: dict[str, np.ndarray], users: np.ndarray, labels: np.ndarray) -> dict:
    """AUC and list NDCG@10 on validation pairs for each part alone (the mix is scored by
    ``pipelines.labels.fit.cross_fit_quality``, never on the pairs it was fit on)."""
    return {
        name: {"auc": auc(labels, s), "list_ndcg@10": list_ndcg(users, labels, s)}
        for name, s in parts.items()
    }
