"""The protocol decides the benchmark's segments; a scorer is reported as None on a segment
that needs what it cannot score, and new users are scored by its ``new_fn``."""

from __future__ import annotations

import numpy as np

from pipelines.core.metrics import sample_users
from pipelines.data import SyntheticConfig, make_split, make_synthetic
from pipelines.evaluation.segments import Scorer, make_segments

DATA = SyntheticConfig(users=120, items=80, per_user=14, seed=2)


def test_random_and_temporal_rank_the_test_part_over_the_whole_catalogue():
    data = make_synthetic(DATA)
    for protocol in ("random", "temporal"):
        split = make_split(data, protocol, 0)
        (seg,) = make_segments(split, 10, 3)
        assert seg.name == "test" and seg.headline and seg.items is None and not seg.needs
        np.testing.assert_array_equal(seg.users, sample_users(split.matrix("test"), 10, 3))
        assert seg.of == int((np.diff(split.matrix("test").indptr) > 0).sum()) > 10
        assert seg.sample_info(3)["text"] == f"10 of {seg.of} test users, seed 3"


def test_cold_items_has_four_segments_and_scorers_say_what_they_can_score():
    data = make_synthetic(DATA)
    split = make_split(data, "cold_items", 0)
    segs = {s.name: s for s in make_segments(split, 0, 0)}
    assert list(segs) == ["cold", "warm", "all", "new_users"]
    assert [s.name for s in segs.values() if s.headline] == ["all"]
    assert segs["cold"].needs == {"cold_items"} and segs["new_users"].needs == {"new_users"}
    both = np.sort(np.r_[split.cold_valid_items, split.cold_test_items])  # ALDI's rule
    np.testing.assert_array_equal(segs["cold"].items, both)
    rng = np.random.default_rng(0)
    scores = rng.random((split.n_users, split.n_items)).astype(np.float32)
    called = []

    def new_fn(users):
        called.append(users)
        return scores[users]

    warm_only = Scorer("warm_only", lambda u: scores[u], can=frozenset(), new_fn=new_fn)
    got = {name: warm_only.score(seg, bootstrap=10) for name, seg in segs.items()}
    assert got["cold"] is None and got["new_users"] is None and not called
    assert got["warm"].means["users"] == len(segs["warm"].users) > 0
    lo, hi = got["all"].ci
    assert lo <= got["all"].means["ndcg@20"] <= hi  # the segment's interval metric
    full = Scorer("full", lambda u: scores[u], new_fn=new_fn)
    new = full.score(segs["new_users"], bootstrap=10)
    assert new is not None and called and np.isin(np.concatenate(called), split.new_users).all()
    entry = segs["new_users"].entry(new, with_users=True)
    assert list(entry) == ["ndcg@10", "ndcg@20", "recall@10", "recall@20", "mrr@10",
                           "ndcg@20_ci", "users"]  # fmt: skip


def test_cold_rules_aldi_ranks_both_cold_parts_and_excludes_known_positives():
    data = make_synthetic(DATA)
    split = make_split(data, "cold_items", 0)
    aldi = {s.name: s for s in make_segments(split, 0, 0)}["cold"]
    today = {s.name: s for s in make_segments(split, 0, 0, "cold_test_only")}["cold"]
    np.testing.assert_array_equal(today.items, split.cold_test_items)
    assert today.exclude is None
    cv = split.matrix("cold_valid").tocsr()
    u = int(np.flatnonzero(np.diff(cv.indptr) > 0)[0])  # a user with a cold-valid positive
    assert set(cv[u].indices) <= set(aldi.exclude[u].indices)
    # a scorer that puts the user's cold-valid positives first: excluded, they cost nothing
    scores = np.zeros((split.n_users, split.n_items), dtype=np.float32)
    scores[cv.nonzero()] = 10.0
    truth = aldi.truth.tocsr()
    scores[truth.nonzero()] = 5.0
    got = Scorer("s", lambda users: scores[users]).score(aldi, bootstrap=10)
    assert got.means["recall@20"] == 1.0
    # the same scorer that ranks every cold-valid item above the targets loses under ALDI's rule
    worse = scores.copy()
    worse[:, split.cold_valid_items] = 20.0
    w = Scorer("w", lambda users: worse[users]).score(aldi, bootstrap=10)
    t = Scorer("w", lambda users: worse[users]).score(today, bootstrap=10)
    assert w.means["ndcg@10"] < t.means["ndcg@10"] == 1.0
