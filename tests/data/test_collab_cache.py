"""The collaborative fit cache (``fit_collab(cache=...)``): a chain's jobs fit EASE^R or ALS
once; the key follows the train and validation data and the settings, never the test split."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pipelines.baselines.collab import ALSConfig, fit_collab, fit_key
from pipelines.data import SyntheticConfig, make_split, make_synthetic


@pytest.fixture(scope="module")
def data():
    return make_synthetic(SyntheticConfig(users=300, items=120, per_user=20, seed=1))


@pytest.fixture(scope="module")
def split(data):
    return make_split(data, "random", 0)


@pytest.mark.parametrize("kind", ["ease", "als"])
def test_a_cached_fit_scores_the_same_as_a_fresh_one(split, kind, tmp_path, caplog):
    als = ALSConfig(factors=8, iterations=3)
    lambdas = (50.0, 500.0)
    fresh, info = fit_collab(split, kind, als=als, ease_lambdas=lambdas, cache=tmp_path)
    assert info["cache"]["hit"] is False
    assert len(list(tmp_path.glob(f"{kind}-*.npz"))) == 1
    assert not list(tmp_path.glob(".*"))  # no temporary file left behind
    with caplog.at_level(logging.INFO, logger="pipelines.baselines.collab"):
        # the training view has no test part: a fit that read it would raise
        again, info2 = fit_collab(
            split.training_view(), kind, als=als, ease_lambdas=lambdas, cache=tmp_path
        )
    assert info2["cache"] == {"path": info["cache"]["path"], "hit": True}
    assert "read from the cache" in caplog.text
    assert {k: v for k, v in info2.items() if k != "cache"} == {
        k: v for k, v in info.items() if k != "cache"
    }
    users = np.arange(split.n_users)
    np.testing.assert_array_equal(again(users), fresh(users))
    u, i = np.array([0, 5, 7]), np.array([3, 3, 100])
    np.testing.assert_array_equal(again.score_pairs(u, i), fresh.score_pairs(u, i))


def test_the_key_follows_train_valid_and_settings(split, data):
    key = fit_key(split, "als", ALSConfig())
    assert fit_key(split.training_view(), "als", ALSConfig()) == key  # test never enters it
    assert fit_key(split, "als", ALSConfig(factors=32)) != key
    assert fit_key(split, "als", ALSConfig(num_threads=1)) == key  # threads: same factors
    assert fit_key(split, "ease") != key
    assert fit_key(split, "ease", ease_lambdas=(10.0,)) != fit_key(split, "ease")
    other = make_split(data, "random", 1)  # other train / valid interactions
    assert fit_key(other, "als", ALSConfig()) != key


def test_an_unreadable_cached_fit_is_fit_again(split, tmp_path, caplog):
    _, info = fit_collab(split, "ease", ease_lambdas=(100.0,), cache=tmp_path)
    path = info["cache"]["path"]
    with open(path, "wb") as f:
        f.write(b"not an npz")
    with caplog.at_level(logging.WARNING, logger="pipelines.baselines.collab"):
        model, info2 = fit_collab(split, "ease", ease_lambdas=(100.0,), cache=tmp_path)
    assert "unreadable cached fit" in caplog.text and info2["cache"]["hit"] is False
    _, info3 = fit_collab(split, "ease", ease_lambdas=(100.0,), cache=tmp_path)
    assert info3["cache"]["hit"] is True  # rewritten
