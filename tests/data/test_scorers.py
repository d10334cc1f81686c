"""The baselines' one interface: what each scorer can score is declared on its class, and the
history path scores a train row as the model scores that train user."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.baselines import ALS, EASE, ALSConfig, ContentMap, Popularity, Scorer
from pipelines.baselines.content_map import collab_targets, fit_content_map
from pipelines.baselines.recency import RecencyCollab
from pipelines.baselines.transition import Transition
from pipelines.data import SyntheticConfig, make_split, make_synthetic
from pipelines.data.features import item_features

CAN = {  # class -> (warm items, cold items from content, a user from a history)
    Popularity: (True, False, True),
    EASE: (True, False, True),
    ALS: (True, False, True),
    ContentMap: (False, True, False),
    Transition: (True, False, False),  # a user from an ordered frame: from_sequences
    RecencyCollab: (True, False, False),
}


DATA = make_synthetic(SyntheticConfig(users=120, items=80, per_user=12))


@pytest.fixture(scope="module")
def split():
    return make_split(DATA, "random", 0)


@pytest.mark.parametrize("cls", list(CAN))
def test_each_scorer_declares_what_it_scores(cls):
    assert issubclass(cls, Scorer) and isinstance(cls.kind, str)
    assert (cls.scores_warm, cls.scores_cold, cls.scores_histories) == CAN[cls]


def test_from_histories_on_train_rows_is_the_model(split):
    train, users = split.matrix("train").tocsr(), np.arange(split.n_users)
    for model in (Popularity(train), EASE(train, 100.0)):
        np.testing.assert_array_equal(model.from_histories(train)(users), model(users))
    als = ALS(train, ALSConfig(factors=4, iterations=2, num_threads=1))
    want = als.fold_in(train)[users] @ als.item_factors.T
    np.testing.assert_array_equal(als.from_histories(train)(users), want)


def test_score_pairs_matches_the_dense_rows(split):
    train = split.matrix("train").tocsr()
    users, items = np.array([0, 3, 0, 7]), np.array([5, 1, 2, 9])
    for model in (Popularity(train), EASE(train, 100.0)):
        np.testing.assert_array_equal(
            model.score_pairs(users, items), model(users)[:, items].diagonal()
        )


def test_what_a_scorer_cannot_score_raises(split):
    train = split.matrix("train").tocsr()
    ease = EASE(train, 100.0)
    cm, _ = fit_content_map(split, ease, item_features(DATA))
    with pytest.raises(ValueError, match="cannot score a user from a history"):
        cm.from_histories(train)
    with pytest.raises(ValueError, match="neither EASE"):
        collab_targets(Popularity(train))
    targets, users = collab_targets(ease)
    assert targets is not None and users is None
