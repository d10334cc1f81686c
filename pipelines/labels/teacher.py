"""The teacher as the label job sees it: named parts that score (user, item) pairs, mixed.

Parts:
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

from pipelines.baselines.collab import DEFAULT_MEMORY_GB, fit_collab
from pipelines.data import InteractionData, Split, histories

logger = logging.getLogger(__name__)


class EmbeddingPart:
    """Embedding teacher: each unique item text is encoded once; a user is either their
    rendered history encoded once (``user_encoding="text"``) or the unit-norm mean of their
    history items' embeddings (``"item_mean"``: no transformer pass per user; a user with no
    history gets the zero vector, so every item scores 0)."""

    name = "text"

    def __init__(
        self,
        teacher,
        data: InteractionData,
        split: Split,
        history_items: int,
        user_encoding: str = "text",
    ):
        from pipelines.data import render_item_texts

        if user_encoding not in ("text", "item_mean"):
            raise ValueError(f"user_encoding={user_encoding!r}; expected 'text' or 'item_mean'")
        self.teacher = teacher
        self.user_encoding = user_encoding
        self.item_emb = teacher.encode(render_item_texts(data.items))
        self.hist = histories(split.train, data.n_users, history_items, data.n_items)
        self.user_text = None
        if user_encoding == "text":
            self.user_text = [user_text(data, row) for row in self.hist]
        self._user_emb: dict[int, np.ndarray] = {}

    def user_emb(self, users: np.ndarray) -> np.ndarray:
        users = np.asarray(users)
        if self.user_encoding == "item_mean":
            return history_mean(self.item_emb, self.hist[users])
        missing = [u for u in np.unique(users) if u not in self._user_emb]
        if missing:
            emb = self.teacher.encode([self.user_text[u] for u in missing], show_progress=False)
            self._user_emb.update(zip(missing, emb))
        return np.stack([self._user_emb[u] for u in users])

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.teacher.score(self.user_emb(users), self.item_emb[items])

    def score_matrix(self, users: np.ndarray) -> np.ndarray:
        return self.teacher.score_matrix(self.user_emb(users), self.item_emb)


def history_mean(item_emb: np.ndarray, hist: np.ndarray) -> np.ndarray:
    """[B, D] unit-norm mean of ``item_emb`` [I, D] over each row of ``hist`` [B, H] (item
    indices, ``I`` = padding); an empty row gives zeros."""
    real = hist < len(item_emb)
    s = (item_emb[np.where(real, hist, 0)] * real[..., None]).sum(1)
    norm = np.linalg.norm(s, axis=1, keepdims=True)
    return (s / np.where(norm > 0, norm, 1.0)).astype(np.float32)


def user_text(data: InteractionData, history_row: np.ndarray) -> str:
    """The user as text: their most recent train titles, most recent first."""
    titles = [data.items.title.iat[j] for j in history_row if j < data.n_items]
    if not titles:
        return "A new user with no history."
    return "Recently watched: " + "; ".join(titles)


class CausalPart:
    """Causal-LM teacher: one prompt prefix per user, shared over that user's candidates."""

    name = "text"

    def __init__(self, scorer, data: InteractionData, split: Split, history_items: int):
        self.scorer = scorer
        self.data = data
        self.hist = histories(split.train, data.n_users, history_items, data.n_items)
        ratings = split.train.set_index(["user", "item"])["rating"]
        self.ratings = ratings.to_dict()
        self._prefix: dict[int, list[int]] = {}

    def item_dict(self, j: int, rating=None) -> dict:
        row = self.data.items.iloc[j]
        year = None if np.isnan(row["year"]) else int(row["year"])
        return {
            "title": row["title"],
            "year": year,
            "genres": list(row["genres"]),
            "rating": rating,
        }

    def user_features(self, u: int) -> dict | None:
        users = self.data.users
        feats = {c: users[c].iat[u] for c in ("age", "gender", "occupation") if c in users}
        return {
            k: (int(v) if isinstance(v, float) and not np.isnan(v) else v) for k, v in feats.items()
        } or None

    def prefix(self, u: int) -> list[int]:
        if u not in self._prefix:
            history = [
                self.item_dict(j, self.ratings.get((u, j)))
                for j in self.hist[u]
                if j < self.data.n_items
            ]
            text = self.scorer.render_prefix(history, self.user_features(u))
            self._prefix[u] = self.scorer.prefix_ids(text)
        return self._prefix[u]

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = np.empty(len(users), dtype=np.float32)
        for u in np.unique(users):
            idx = np.flatnonzero(users == u)
            cands = [self.item_dict(j) for j in items[idx]]
            out[idx] = self.scorer.score(
                self.prefix(int(u)), cands, user=self.data.users.user_id.iat[u]
            )
        return out


class CollabPart:
    """The collaborative model (EASE^R or ALS, ``fit_collab``), named after its kind; items
    without train interactions through ``content`` (a ``ContentMap``)."""

    def __init__(
        self,
        split: Split,
        kind: str = "auto",
        memory_gb: float = DEFAULT_MEMORY_GB,
        cache: str | None = None,
    ):
        self.model, self.info = fit_collab(split, kind, memory_gb, cache=cache)
        self.name = self.info["kind"]
        self.content = None

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Pairs ``users`` [P], ``items`` [P] -> [P] (ALS: one dot product per pair)."""
        out = self.model.score_pairs(users, items)
        if self.content is not None:
            cold = self.content.is_cold(items)
            out[cold] = self.content.score_cold(users[cold], items[cold])
        return out

    def score_matrix(self, users: np.ndarray) -> np.ndarray:
        """[B] -> [B, I]."""
        s = self.model(users)
        if self.content is not None:
            s[:, self.content.cold] = self.content.score_cold_matrix(users)
        return s


class PopularityPart:
    """log(1 + train count); items without train interactions get ``content``'s prediction."""

    name = "popularity"

    def __init__(self, split: Split):
        self.logpop = np.log1p(np.asarray(split.matrix("train").sum(0)).ravel()).astype(np.float32)

    def use_content(self, content) -> None:
        self.logpop = self.logpop.copy()
        self.logpop[content.cold] = content.log_count

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return self.logpop[items]

    def score_matrix(self, users: np.ndarray) -> np.ndarray:
        return np.broadcast_to(self.logpop, (len(users), len(self.logpop)))


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
    """Mean NDCG@k of ranking each user's candidates (binary labels) by ``scores``."""
    vals = []
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    for u in np.unique(users):
        idx = np.flatnonzero(users == u)
        lab = labels[idx]
        if not lab.any():
            continue
        order = np.argsort(-scores[idx], kind="stable")[:k]
        dcg = (lab[order] * disc[: len(order)]).sum()
        idcg = disc[: min(k, int(lab.sum()))].sum()
        vals.append(dcg / idcg)
    return float(np.mean(vals)) if vals else float("nan")


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

    The collaborative part (``ease`` or ``als``) gets weight 1 when present, else the first
    part; the others are searched on ``WEIGHT_GRID``. ``fixed`` skips the search."""
    mean = {k: float(v.mean()) for k, v in parts.items()}
    std = {k: float(v.std() + 1e-8) for k, v in parts.items()}
    names = list(parts)
    anchor = next((n for n in COLLAB_PARTS if n in parts), names[0])
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
