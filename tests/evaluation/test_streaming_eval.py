"""Bounded-memory evaluation: adaptive blocks and seeded user samples give the full results."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from pipelines.core.metrics import block_users, evaluate, sample_users, topk


@pytest.fixture
def task():
    rng = np.random.default_rng(0)
    n_users, n_items = 70, 90
    scores = rng.normal(size=(n_users, n_items)).astype(np.float32)
    truth = sp.random(n_users, n_items, density=0.05, random_state=1, format="csr")
    truth.data[:] = 1
    seen = sp.random(n_users, n_items, density=0.1, random_state=2, format="csr")
    seen.data[:] = 1
    seen = (seen - seen.multiply(truth)).tocsr()  # a held-out item is never also seen
    seen.eliminate_zeros()
    return scores, truth, seen


def _reference_topk(scores, k, seen):
    s = scores.astype(np.float64).copy()
    s[seen.toarray() > 0] = -np.inf
    return np.argsort(-s, axis=1, kind="stable")[:, :k]


def test_topk_matches_a_full_sort_and_leaves_the_input(task):
    scores, _, seen = task
    before = scores.copy()
    np.testing.assert_array_equal(topk(scores, 20, seen), _reference_topk(scores, 20, seen))
    np.testing.assert_array_equal(scores, before)


def test_block_size_adapts_to_the_catalogue():
    assert block_users(1000, 1024, 2**26) == 1024
    assert block_users(1_000_000, 1024, 2**26) == 67
    assert block_users(10**9, 1024, 2**26) == 1


@pytest.mark.parametrize("max_cells", [1, 90 * 7, 2**26])
def test_blocks_do_not_change_results(task, max_cells):
    scores, truth, seen = task
    fn = lambda u: scores[u]  # noqa: E731
    full = evaluate(fn, truth, seen, return_per_user=True, return_topk=True, batch_size=1024)
    got = evaluate(fn, truth, seen, return_per_user=True, return_topk=True, max_cells=max_cells)
    np.testing.assert_array_equal(got["topk"], full["topk"])
    for name, v in full["per_user"].items():
        np.testing.assert_array_equal(got["per_user"][name], v)
    ref = _reference_topk(scores, 20, seen)[full["user_index"]]
    np.testing.assert_array_equal(full["topk"], ref)


def test_a_score_fn_returning_its_own_array_is_not_changed(task):
    scores, truth, seen = task
    before = scores.copy()
    evaluate(lambda u: scores[: len(u)], truth, seen)  # a view of the caller's array
    np.testing.assert_array_equal(scores, before)


def test_sample_of_all_users_is_the_full_evaluation(task):
    scores, truth, seen = task
    fn = lambda u: scores[u]  # noqa: E731
    n = int((np.diff(truth.indptr) > 0).sum())
    full = evaluate(fn, truth, seen, return_per_user=True)
    for size in (0, n, n + 5):
        users = sample_users(truth, size, seed=3)
        got = evaluate(fn, truth, seen, return_per_user=True, users=users)
        assert {k: v for k, v in got.items() if k != "per_user" and k != "user_index"} == {
            k: v for k, v in full.items() if k != "per_user" and k != "user_index"
        }
        np.testing.assert_array_equal(got["user_index"], full["user_index"])


def test_a_sample_evaluates_exactly_those_users(task):
    scores, truth, seen = task
    fn = lambda u: scores[u]  # noqa: E731
    users = sample_users(truth, 15, seed=0)
    assert len(users) == 15 and (np.diff(users) > 0).all()
    assert (np.diff(truth.indptr)[users] > 0).all()
    np.testing.assert_array_equal(users, sample_users(truth, 15, seed=0))
    assert not np.array_equal(users, sample_users(truth, 15, seed=1))
    full = evaluate(fn, truth, seen, return_per_user=True)
    got = evaluate(fn, truth, seen, return_per_user=True, users=users)
    rows = np.searchsorted(full["user_index"], users)
    for name, v in full["per_user"].items():
        np.testing.assert_array_equal(got["per_user"][name], v[rows])
        assert got[name] == pytest.approx(v[rows].mean())
    assert got["users"] == 15


def test_bad_users_are_named(task):
    scores, truth, seen = task
    with pytest.raises(ValueError, match="users must lie in"):
        evaluate(lambda u: scores[u], truth, seen, users=np.array([0, 999]))
    with pytest.raises(ValueError, match="n=-1"):
        sample_users(truth, -1)
