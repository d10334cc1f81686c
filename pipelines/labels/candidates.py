"""Candidate sets for teacher scoring.

Per user: observed train positives (up to ``max_positives``, most recent first) plus
``n_negatives`` sampled negatives, drawn by ``strategy``:
- ``uniform``: uniformly over unseen items;
- ``popularity``: proportional to train popularity (``count ** alpha``);
- ``hard``: the top unseen items of a cheap retriever (item co-occurrence on train);
- ``mixed``: a third of each.
Plus ``n_cold`` items drawn uniformly from the items with no train interactions at all (new
items: under the ``cold_items`` protocol their only supervision is the teacher's scores).
Seeded. Negatives exclude only the user's train items: which items a user will interact with
later is unknown at training time, so validation and test items may be drawn like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd

from pipelines.data.splits import Split

Strategy = Literal["uniform", "popularity", "hard", "mixed"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)


@dataclass
class CandidateConfig:
    n_negatives: int = field(default=50, metadata={"help": "sampled negatives per user"})
    max_positives: int = field(default=20, metadata={"help": "most recent train positives kept"})
    strategy: Strategy = field(default="mixed", metadata={"help": f"one of {STRATEGIES}"})
    popularity_alpha: float = field(
        default=0.75, metadata={"help": "exponent for popularity sampling"}
    )
    seed: int = field(default=0, metadata={"help": "random seed"})
    n_cold: int = field(
        default=0, metadata={"help": "candidates drawn from the items without train interactions"}
    )

    def __post_init__(self):
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"CandidateConfig.strategy={self.strategy!r}; expected one of {STRATEGIES}"
            )
        if self.n_cold < 0:
            raise ValueError(f"CandidateConfig.n_cold={self.n_cold}; expected >= 0")
        if self.n_negatives < 0 or self.max_positives < 0:
            raise ValueError(
                f"CandidateConfig: n_negatives={self.n_negatives}, max_positives={self.max_positives}; "
                "expected >= 0"
            )
        if self.n_negatives + self.max_positives == 0:
            raise ValueError("CandidateConfig: n_negatives + max_positives must be > 0")


def make_candidates(split: Split, config: CandidateConfig, users=None) -> pd.DataFrame:
    """Columns ``user`` (int32), ``item`` (int32), ``observed`` (bool), ``source`` (str:
    positive | uniform | popularity | hard | cold), sorted by user then list position."""
    c = config
    rng = np.random.default_rng(c.seed)
    train = split.matrix("train").tocsr()
    blocked = train  # only what the user interacted with in train: the future is unknown
    pop = np.asarray(train.sum(0)).ravel()
    cold_pool = np.flatnonzero(pop == 0) if c.n_cold else np.zeros(0, dtype=np.int64)
    p_pop = (pop + 1.0) ** c.popularity_alpha
    hard_scores = None
    if c.strategy in ("hard", "mixed"):
        hard_scores = train.T @ train  # item co-occurrence, sparse [I, I]
        hard_scores.setdiag(0)
        hard_scores = hard_scores.tocsr()
    f = split.train.sort_values(["user", "timestamp"], ascending=[True, False], kind="stable")
    recent = f.groupby("user")["item"].apply(lambda s: s.to_numpy()[: c.max_positives])
    if users is None:  # a user with no train interaction (a new user) has nothing to label
        users = np.flatnonzero(np.diff(train.indptr) > 0)
    users = np.asarray(users)
    out_u, out_i, out_o, out_s = [], [], [], []
    for u in users:
        pos = (
            recent.get(u, np.zeros(0, dtype=np.int32)) if c.max_positives else np.zeros(0, np.int32)
        )
        banned = np.zeros(split.n_items, dtype=bool)
        banned[blocked.indices[blocked.indptr[u] : blocked.indptr[u + 1]]] = True
        free = np.flatnonzero(~banned)
        n_neg = min(c.n_negatives, len(free))
        quota = _quota(c.strategy, n_neg)
        neg: list[np.ndarray] = []
        srcs: list[str] = []
        taken = banned.copy()
        for kind, n in quota:
            if n == 0:
                continue
            picked = _sample(kind, n, u, taken, rng, p_pop, hard_scores, train)
            taken[picked] = True
            neg.append(picked)
            srcs += [kind] * len(picked)
        if len(cold_pool):
            picked = rng.choice(cold_pool, min(c.n_cold, len(cold_pool)), replace=False)
            picked = picked[~taken[picked]]
            taken[picked] = True
            neg.append(picked)
            srcs += ["cold"] * len(picked)
        neg_arr = np.concatenate(neg) if neg else np.zeros(0, dtype=np.int64)
        items = np.concatenate([pos, neg_arr]).astype(np.int32)
        out_u.append(np.full(len(items), u, dtype=np.int32))
        out_i.append(items)
        out_o.append(np.r_[np.ones(len(pos), bool), np.zeros(len(neg_arr), bool)])
        out_s += ["positive"] * len(pos) + srcs
    return pd.DataFrame(
        {
            "user": np.concatenate(out_u),
            "item": np.concatenate(out_i),
            "observed": np.concatenate(out_o),
            "source": out_s,
        }
    )


def _quota(strategy: str, n: int) -> list[tuple[str, int]]:
    if strategy != "mixed":
        return [(strategy, n)]
    a = n // 3
    return [("hard", n - 2 * a), ("popularity", a), ("uniform", a)]


def _sample(kind, n, u, taken, rng, p_pop, hard_scores, train) -> np.ndarray:
    free = np.flatnonzero(~taken)
    n = min(n, len(free))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if kind == "uniform":
        return rng.choice(free, n, replace=False)
    if kind == "popularity":
        p = p_pop[free] / p_pop[free].sum()
        return rng.choice(free, n, replace=False, p=p)
    # hard: co-occurrence with the user's train items, ties broken at random
    row = train.indices[train.indptr[u] : train.indptr[u + 1]]
    scores = np.asarray(hard_scores[row].sum(0)).ravel().astype(np.float64)
    scores = scores + rng.random(len(scores)) * 1e-3
    scores[taken] = -np.inf
    return np.argsort(-scores)[:n]
