"""What the benchmark ranks and who ranks it.

A **segment** is a set of users with their target items, the candidate items they rank and
what a scorer must be able to do to rank them. The split's protocol decides the segments:

- ``random`` / ``temporal``: one segment, ``test`` (the test part over the whole catalogue,
  train and validation items excluded);
- ``cold_items``: ``cold``, ``warm``, ``all`` and ``new_users`` (see ``pipelines.evaluation.cold``);
  ``cold`` follows a named rule (:data:`COLD_RULES`): ``aldi`` (the default, as ALDI's public
  code ranks: the cold-validation and cold-test items together, the user's other known
  positives excluded) or ``cold_test_only`` (the cold-test items alone, nothing excluded).

A **scorer** (a baseline, the teacher, a student) says what it can score (``cold_items``,
``new_users``); a segment that needs more than that is reported as None for it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, get_args

import numpy as np
import scipy.sparse as sp

from pipelines.baselines.content_map import cold_truth
from pipelines.core.metrics import bootstrap_ci, evaluate, sample_users

ScoreFn = Callable[[np.ndarray], np.ndarray]  # users [B] -> scores [B, I]

CAN_ALL = frozenset({"cold_items", "new_users"})
ColdRule = Literal["aldi", "cold_test_only"]
COLD_RULES: tuple[str, ...] = get_args(ColdRule)
TEST_KEYS = ("ndcg@10", "recall@10", "mrr@10", "hit_rate@10", "ndcg@20", "recall@20")
COLD_KEYS = ("ndcg@10", "ndcg@20", "recall@10", "recall@20", "mrr@10")


@dataclass(frozen=True)
class Segment:
    """``truth`` [U, I] target items; ``exclude`` [U, I] items never ranked (or None);
    ``items`` the candidate items (None: the whole catalogue); ``users`` the evaluation users
    (sorted: a seeded sample or all), of ``of`` users with a target among the candidates;
    ``needs`` what a scorer must be able to score; ``keys`` the metrics reported, with a 95%
    bootstrap interval on ``ci_metric``; ``headline``: the model's top-level metrics (and the
    users its latency is timed on)."""

    name: str
    truth: sp.csr_matrix
    exclude: sp.csr_matrix | None
    items: np.ndarray | None
    users: np.ndarray
    of: int
    needs: frozenset[str] = frozenset()
    keys: tuple[str, ...] = TEST_KEYS
    ci_metric: str = "ndcg@10"
    headline: bool = False

    def sample_info(self, seed: int) -> dict:
        return sample_info(len(self.users), self.of, seed, f"{self.name} users")

    def entry(self, scored: Scored, with_users: bool = False) -> dict:
        """The report's metrics of one scorer on this segment."""
        out = {k: scored.means[k] for k in self.keys} | {f"{self.ci_metric}_ci": scored.ci}
        return (out | {"users": scored.means["users"]}) if with_users else out


@dataclass
class Scored:
    """One scorer on one segment: metric means (and ``users``), the per-user ``ci_metric``
    [U], its interval, the top-10 lists [U, 10]; ``rows``: the segment users scored (indices
    into ``Segment.users``; None = all); ``note``: what the report's evaluation section adds."""

    means: dict[str, float]
    per_user: np.ndarray
    ci: list[float]
    top10: np.ndarray
    rows: np.ndarray | None = None
    note: dict = field(default_factory=dict)


@dataclass
class Scorer:
    """A model the benchmark ranks with: ``fn`` scores users, ``new_fn`` scores new users from
    their query-time history (default ``fn``); ``can`` what it can score; ``params``/``nbytes``
    its size (None: not counted); ``timed``: batch-1 latency measured; ``info``: extra report
    fields (teacher parts and mix, the collaborative fit); ``tie_seed``: the order of equal
    scores (``pipelines.core.metrics.topk``)."""

    name: str
    fn: ScoreFn | None
    can: frozenset[str] = CAN_ALL
    new_fn: ScoreFn | None = None
    params: int | None = None
    nbytes: int | None = None
    timed: bool = False
    info: dict = field(default_factory=dict)
    tie_seed: int = 0

    def score(self, seg: Segment, bootstrap: int) -> Scored | None:
        """Rank ``seg``'s candidates for its users (equal scores in the seeded tie order of
        ``tie_seed``: ``pipelines.core.metrics.topk``); None when ``seg`` needs what it cannot."""
        if not seg.needs <= self.can:
            return None
        fn = self.new_fn if "new_users" in seg.needs and self.new_fn is not None else self.fn
        m = evaluate(
            fn,
            seg.truth,
            seg.exclude,
            items=seg.items,
            return_per_user=True,
            return_topk=True,
            users=seg.users,
            tie_seed=self.tie_seed,
        )
        per = m["per_user"][seg.ci_metric]
        _, lo, hi = bootstrap_ci(per, n=bootstrap)
        means = {k: v for k, v in m.items() if k not in ("per_user", "topk", "user_index")}
        return Scored(means, per, [lo, hi], m["topk"][:, :10])


def sample_info(n: int, of: int, seed: int, what: str) -> dict:
    """What the report says about its users: ``{"users", "of", "seed", "sampled", "text"}``,
    e.g. "10000 of 95000 test users, seed 0" (or "all 943 test users")."""
    sampled = n < of
    text = f"{n} of {of} {what}, seed {seed}" if sampled else f"all {of} {what}"
    return {"users": int(n), "of": int(of), "seed": int(seed), "sampled": sampled, "text": text}


def make_segments(split, n: int, seed: int, cold_rule: str = "aldi") -> list[Segment]:
    """The protocol's segments, each with a seeded sample of ``n`` users (0 = all), the same
    for every scorer; ``cold_rule`` what the ``cold`` segment ranks (:data:`COLD_RULES`)."""
    if split.is_cold:
        return cold_segments(split, n, seed, cold_rule)
    return [test_segment(split, n, seed, headline=True)]


def test_segment(split, n: int, seed: int, headline: bool = False) -> Segment:
    """The test part over the whole catalogue (train and validation excluded)."""
    truth = split.matrix("test")
    users = sample_users(truth, n, seed)  # all when n is 0
    of = int((np.diff(truth.indptr) > 0).sum())
    return Segment("test", truth, split.seen_for("test"), None, users, of, headline=headline)


def cold_segments(split, n: int, seed: int, rule: str = "aldi") -> list[Segment]:
    """``cold`` (targets: the cold-test interactions; candidates by ``rule``: ``aldi`` the
    cold-validation and cold-test items, the user's train, validation and cold-validation
    items excluded; ``cold_test_only`` the cold-test items, nothing excluded), ``warm`` (the
    warm items), ``all`` (the whole catalogue) and ``new_users`` (users with no train row,
    scored from a history)."""
    if rule not in COLD_RULES:
        raise ValueError(f"cold rule {rule!r}; expected one of {COLD_RULES}")
    cold = np.sort(np.r_[split.cold_valid_items, split.cold_test_items])
    warm_items = np.setdiff1d(np.arange(split.n_items), cold)
    seen = split.seen_for("test")
    seen_all = (seen + split.matrix("cold_valid")).astype(bool).astype(np.float32).tocsr()
    cold_items, cold_exclude = (cold, seen_all) if rule == "aldi" else (split.cold_test_items, None)
    has_train = sp.diags((np.diff(split.matrix("train").indptr) > 0).astype(np.float32))
    all_truth = (has_train @ (split.matrix("test") + split.matrix("cold_test"))).tocsr()
    parts = (
        ("cold", cold_truth(split, "cold_test"), cold_exclude, cold_items, {"cold_items"}),
        ("warm", split.matrix("test"), seen, warm_items, set()),
        ("all", all_truth.astype(bool).astype(np.float32).tocsr(), seen_all, None, set()),
        ("new_users", split.matrix("new_test"), split.matrix("new_history"), warm_items,
         {"new_users"}),
    )  # fmt: skip
    out = []
    for name, truth, exclude, items, needs in parts:
        ranked = _among(truth, items)
        users = sample_users(ranked, n, seed)
        of = int((np.diff(ranked.indptr) > 0).sum())
        out.append(
            Segment(name, truth, exclude, items, users, of, frozenset(needs), COLD_KEYS,
                    "ndcg@20", headline=name == "all")
        )  # fmt: skip
    return out


def _among(truth: sp.csr_matrix, items: np.ndarray | None) -> sp.csr_matrix:
    """``truth`` [U, I] with only the targets among ``items`` (all when None)."""
    truth = truth.tocsr()
    if items is None:
        return truth
    keep = np.zeros(truth.shape[1], dtype=np.float32)
    keep[np.asarray(items, dtype=np.int64)] = 1
    truth = (truth @ sp.diags(keep)).tocsr()
    truth.eliminate_zeros()
    return truth
