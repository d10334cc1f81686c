"""Candidate sets for teacher scoring.

Per user: observed train positives (up to ``max_positives``, most recent first) plus
``n_negatives`` sampled negatives, drawn by ``strategy``:
- ``uniform``: uniformly over unseen items;
- ``popularity``: proportional to train popularity (``count ** alpha``);
- ``hard``: the top unseen items of a cheap retriever (item co-occurrence on train);
- ``mixed``: a third of each.
Plus ``n_cold`` items drawn uniformly from the items with no train interactions at all (new
items: under the ``cold_items`` protocol their only supervision is the teacher's scores).
Every draw is from the catalogue the training side knows (``Split.training_items``): under the
``inductive`` cold setting no item without a train interaction is in a list (so there are no
cold candidates), under ``transductive`` the cold-validation and cold-test items are the cold
candidates.
Seeded. Negatives exclude only the user's train items: which items a user will interact with
later is unknown at training time, so validation and test items may be drawn like any other.

Scale. One RNG stream runs over the users in order, so the candidates can be made chunk by chunk
(:func:`iter_candidates`, one chunk per label shard, only that chunk in memory) with the same
result as all at once (:func:`make_candidates`). Per user, nothing of catalogue size is built
except on the exact paths of small catalogues:
- ``uniform`` draws positions in the user's free pool (``rng.choice(n_free, n)``, the same draws
  as ``rng.choice(free, n)``) and maps them to items through the user's sorted taken items;
- ``popularity`` up to ``exact_items`` items is today's exact ``rng.choice(free, p=...)``; above,
  rejection sampling from the global popularity CDF (``searchsorted``), taken items and
  duplicates dropped and redrawn;
- ``hard`` scores co-occurrence with the user's train items; the co-occurrence is exact
  (``train.T @ train``) while its nnz bound ``sum_u n_u^2`` is under ``cooc_budget``, else a
  top-``cooc_neighbours`` item-kNN graph (``implicit``'s ``all_pairs_knn``, co-occurrence
  counts, bounded memory ``I * K``). Up to ``exact_items`` items each user's dense score row
  gets random tie-break noise over the whole catalogue (today's draws; the top ``n`` by
  ``argpartition``, same result as a full sort); above, only the co-occurring items are scored
  and a shortfall is filled uniformly from the rest (what the noise did among zero scores).
:func:`candidate_plan` says which paths a split and config take.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import pandas as pd
import scipy.sparse as sp

from pipelines.data.splits import Split

Strategy = Literal["uniform", "popularity", "hard", "mixed"]
STRATEGIES: tuple[str, ...] = get_args(Strategy)
logger = logging.getLogger(__name__)


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
    exact_items: int = field(
        default=10_000,
        metadata={
            "help": "catalogues up to this size use the exact per-user draws over the whole "
            "free pool (popularity choice, hard-negative noise); larger ones per-user work "
            "independent of the catalogue size"
        },
    )
    cooc_budget: int = field(
        default=50_000_000,
        metadata={
            "help": "hard negatives: largest nnz bound (sum over users of n_u^2) for the exact "
            "item co-occurrence matrix; above it a top-cooc_neighbours item-kNN graph"
        },
    )
    cooc_neighbours: int = field(
        default=200, metadata={"help": "hard negatives: neighbours kept per item above the budget"}
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
        for name in ("exact_items", "cooc_budget", "cooc_neighbours"):
            if getattr(self, name) < 1:
                raise ValueError(f"CandidateConfig.{name}={getattr(self, name)}; expected >= 1")


def candidate_plan(split: Split, config: CandidateConfig) -> dict:
    """Which paths :func:`make_candidates` takes on ``split`` (cheap: no matrix product).

    ``sampling``: ``exact`` (catalogue up to ``exact_items``: today's draws over the whole free
    pool) or ``scalable``; ``cooccurrence`` (hard negatives only): ``exact`` or ``knn``, with
    the nnz bound ``sum_u n_u^2`` it was chosen by."""
    c = config
    train = split.matrix("train").tocsr()
    plan: dict = {"sampling": "exact" if split.n_items <= c.exact_items else "scalable"}
    if c.strategy in ("hard", "mixed"):
        n_u = np.diff(train.indptr).astype(np.int64)
        bound = int((n_u**2).sum())
        plan["cooccurrence"] = "exact" if bound <= c.cooc_budget else "knn"
        plan["cooccurrence_nnz_bound"] = bound
        if plan["cooccurrence"] == "knn":
            plan["neighbours"] = c.cooc_neighbours
    return plan


def make_candidates(split: Split, config: CandidateConfig, users=None) -> pd.DataFrame:
    """Columns ``user`` (int32), ``item`` (int32), ``observed`` (bool), ``source`` (str:
    positive | uniform | popularity | hard | cold), sorted by user then list position.

    ``users`` [U] (default: every user with a train interaction) in the order the RNG serves
    them. The same as concatenating :func:`iter_candidates` over any chunking of ``users``."""
    train = split.matrix("train").tocsr()
    if users is None:  # a user with no train interaction (a new user) has nothing to label
        users = np.flatnonzero(np.diff(train.indptr) > 0)
    frames = list(iter_candidates(split, config, [np.asarray(users)]))
    return frames[0]


def iter_candidates(split: Split, config: CandidateConfig, chunks) -> Iterator[pd.DataFrame]:
    """The candidates of each chunk of users (``chunks``: [U_k] user arrays, e.g. the label
    shards), one frame per chunk as :func:`make_candidates` describes, made lazily with one RNG
    stream over the concatenated users: the frames equal ``make_candidates`` of all the users
    cut at the chunk boundaries, and only one chunk's rows are held at a time."""
    c = config
    rng = np.random.default_rng(c.seed)
    train = split.matrix("train").tocsr()
    n_items = split.n_items
    plan = candidate_plan(split, c)
    exact = plan["sampling"] == "exact"
    logger.info("candidates: %s", plan)
    pop = np.asarray(train.sum(0)).ravel()
    # the catalogue the training side knows (Split.training_items): under the inductive
    # cold setting the cold-test items are in no list, as a negative or a cold candidate
    known = np.zeros(n_items, dtype=bool)
    known[split.training_items()] = True
    unknown = np.flatnonzero(~known)
    cold_pool = np.flatnonzero((pop == 0) & known) if c.n_cold else np.zeros(0, dtype=np.int64)
    p_pop = (pop + 1.0) ** c.popularity_alpha
    pop_cdf = None if exact else np.cumsum(p_pop)
    graph = None
    if c.strategy in ("hard", "mixed"):
        graph = cooccurrence(train, plan["cooccurrence"], c.cooc_neighbours)
    f = split.train.sort_values(["user", "timestamp"], ascending=[True, False], kind="stable")
    f_user, f_item = f["user"].to_numpy(), f["item"].to_numpy()
    sampler = _Sampler(rng, n_items, exact, p_pop, pop_cdf, graph, train)
    for chunk in chunks:
        out_u, out_i, out_o, out_s = [], [], [], []
        chunk = np.asarray(chunk)
        los = np.searchsorted(f_user, chunk.astype(f_user.dtype))
        his = np.searchsorted(f_user, chunk.astype(f_user.dtype), side="right")
        for u, lo, hi in zip(chunk, los, his):
            if c.max_positives:
                pos = f_item[lo : min(hi, lo + c.max_positives)]
            else:
                pos = np.zeros(0, np.int32)
            banned = np.unique(np.r_[train.indices[train.indptr[u] : train.indptr[u + 1]], unknown])
            sampler.start(banned)
            n_neg = min(c.n_negatives, n_items - len(banned))
            neg: list[np.ndarray] = []
            srcs: list[str] = []
            for kind, n in _quota(c.strategy, n_neg):
                if n == 0:
                    continue
                picked = sampler.sample(kind, n, u)
                sampler.take(picked)
                neg.append(picked)
                srcs += [kind] * len(picked)
            if len(cold_pool):
                picked = rng.choice(cold_pool, min(c.n_cold, len(cold_pool)), replace=False)
                picked = picked[~sampler.taken[picked]]
                sampler.take(picked)
                neg.append(picked)
                srcs += ["cold"] * len(picked)
            sampler.finish()
            neg_arr = np.concatenate(neg) if neg else np.zeros(0, dtype=np.int64)
            items = np.concatenate([pos, neg_arr]).astype(np.int32)
            out_u.append(np.full(len(items), u, dtype=np.int32))
            out_i.append(items)
            out_o.append(np.r_[np.ones(len(pos), bool), np.zeros(len(neg_arr), bool)])
            out_s += ["positive"] * len(pos) + srcs
        yield pd.DataFrame(
            {
                "user": np.concatenate(out_u) if out_u else np.zeros(0, np.int32),
                "item": np.concatenate(out_i) if out_i else np.zeros(0, np.int32),
                "observed": np.concatenate(out_o) if out_o else np.zeros(0, bool),
                "source": out_s,
            }
        )


def cooccurrence(train: sp.csr_matrix, kind: str, neighbours: int) -> sp.csr_matrix:
    """Item co-occurrence [I, I] (CSR, zero diagonal) of ``train`` [n_users, I]: ``exact``
    (``train.T @ train``, nnz up to ``sum_u n_u^2``) or ``knn`` (each row keeps its
    ``neighbours`` largest co-occurrence counts, ``implicit``'s ``all_pairs_knn``; memory
    ``I * neighbours``)."""
    if kind == "exact":
        g = train.T @ train
    elif kind == "knn":
        from implicit.nearest_neighbours import all_pairs_knn

        # + 1: an item's largest co-occurrence is usually with itself, dropped below
        g = all_pairs_knn(
            train.astype(np.float64).tocsr(), neighbours + 1, show_progress=False, num_threads=0
        )
    else:
        raise ValueError(f"cooccurrence kind={kind!r}; expected 'exact' or 'knn'")
    g = g.tocsr()
    g.setdiag(0)
    g = g.tocsr()
    g.eliminate_zeros()
    return g


class _Sampler:
    """One user's negatives at a time. ``taken`` [I] bool is one buffer reused over users
    (set for the user's items, cleared in ``finish``), so no per-user array of catalogue size is
    allocated; the exact paths (small catalogues) still scan it."""

    def __init__(self, rng, n_items, exact, p_pop, pop_cdf, graph, train):
        self.rng, self.n_items, self.exact = rng, n_items, exact
        self.p_pop, self.pop_cdf, self.graph, self.train = p_pop, pop_cdf, graph, train
        self.taken = np.zeros(n_items, dtype=bool)
        self._held: list[np.ndarray] = []

    def start(self, banned: np.ndarray) -> None:
        self._held = []
        self.take(banned)

    def take(self, items: np.ndarray) -> None:
        self.taken[items] = True
        self._held.append(np.asarray(items, dtype=np.int64))

    def finish(self) -> None:
        for h in self._held:
            self.taken[h] = False
        self._held = []

    def _sorted_taken(self) -> np.ndarray:
        return np.sort(np.concatenate(self._held)) if self._held else np.zeros(0, np.int64)

    def _free_count(self) -> int:
        return self.n_items - sum(len(h) for h in self._held)

    def sample(self, kind: str, n: int, u: int) -> np.ndarray:
        n = min(n, self._free_count())
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        if kind == "uniform":
            return self._uniform(n)
        if kind == "popularity":
            return self._popularity_exact(n) if self.exact else self._popularity_rejection(n)
        return self._hard_exact(n, u) if self.exact else self._hard_sparse(n, u)

    def _uniform(self, n: int) -> np.ndarray:
        # rng.choice(n_free, n) draws as rng.choice(free, n) does; position j of the free pool
        # is item j + (taken items at or below it)
        taken = self._sorted_taken()
        pos = self.rng.choice(self.n_items - len(taken), n, replace=False)
        return _free_position_to_item(pos, taken)

    def _popularity_exact(self, n: int) -> np.ndarray:
        free = np.flatnonzero(~self.taken)
        p = self.p_pop[free] / self.p_pop[free].sum()
        return self.rng.choice(free, n, replace=False, p=p)

    def _popularity_rejection(self, n: int, max_rounds: int = 32) -> np.ndarray:
        """Draw from the global popularity CDF, drop taken items and repeats, redraw: the same
        law as sampling without replacement from the free pool, O(n log I) per round."""
        got: list[np.ndarray] = []
        need = n
        total = self.pop_cdf[-1]
        for _ in range(max_rounds):
            x = self.rng.random(2 * need) * total
            cand = np.minimum(np.searchsorted(self.pop_cdf, x, side="right"), self.n_items - 1)
            cand = cand[~self.taken[cand]]
            _, first = np.unique(cand, return_index=True)
            cand = cand[np.sort(first)][:need]
            self.taken[cand] = True  # until the caller's take(): no repeats across rounds
            got.append(cand)
            need -= len(cand)
            if need == 0:
                break
        picked = np.concatenate(got)
        self.taken[picked] = False
        if need:  # the free pool holds little popularity mass: finish exactly
            self.take(picked)
            rest = self._popularity_exact(need)
            self._held.pop()
            self.taken[picked] = False
            picked = np.concatenate([picked, rest])
        return picked

    def _hard_exact(self, n: int, u: int) -> np.ndarray:
        # co-occurrence with the user's train items, ties broken at random
        row = self.train.indices[self.train.indptr[u] : self.train.indptr[u + 1]]
        scores = np.asarray(self.graph[row].sum(0)).ravel().astype(np.float64)
        scores = scores + self.rng.random(len(scores)) * 1e-3
        scores[self.taken] = -np.inf
        return _top(scores, n)

    def _hard_sparse(self, n: int, u: int) -> np.ndarray:
        """Only the items co-occurring with the user's train items are scored (noise breaks
        ties among them); a shortfall is filled uniformly from the rest of the free pool."""
        g = self.graph
        row = self.train.indices[self.train.indptr[u] : self.train.indptr[u + 1]]
        starts, lens = g.indptr[row], np.diff(g.indptr)[row]
        idx = np.repeat(starts - np.r_[0, np.cumsum(lens)[:-1]], lens) + np.arange(lens.sum())
        if 4 * len(idx) > self.n_items:  # long rows (exact co-occurrence): a dense tally
            dense = np.bincount(g.indices[idx], weights=g.data[idx], minlength=self.n_items)
            items = np.flatnonzero(dense)
            scores = dense[items]
        else:  # short rows (the kNN graph): O(n_u K log) whatever the catalogue size
            items, inv = np.unique(g.indices[idx], return_inverse=True)
            scores = np.bincount(inv.ravel(), weights=g.data[idx], minlength=len(items))
        keep = ~self.taken[items]
        items, scores = items[keep], scores[keep]
        scores = scores + self.rng.random(len(scores)) * 1e-3
        picked = items[_top(scores, min(n, len(items)))].astype(np.int64)
        if len(picked) < n:
            self.take(picked)
            rest = self._uniform(n - len(picked))
            self._held.pop()
            self.taken[picked] = False
            picked = np.concatenate([picked, rest])
        return picked


def _top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` largest ``scores``, best first (``argpartition`` then a sort of
    those ``n``: the order of a full descending sort when the top ``n`` hold no ties)."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if n < len(scores):
        part = np.argpartition(-scores, n - 1)[:n]
    else:
        part = np.arange(len(scores))
    return part[np.argsort(-scores[part])]


def _free_position_to_item(pos: np.ndarray, taken_sorted: np.ndarray) -> np.ndarray:
    """Item at position ``pos`` [n] of the sorted free pool (items not in ``taken_sorted``)."""
    shifted = taken_sorted - np.arange(len(taken_sorted))  # non-decreasing
    return pos + np.searchsorted(shifted, pos, side="right")


def _quota(strategy: str, n: int) -> list[tuple[str, int]]:
    if strategy != "mixed":
        return [(strategy, n)]
    a = n // 3
    return [("hard", n - 2 * a), ("popularity", a), ("uniform", a)]
