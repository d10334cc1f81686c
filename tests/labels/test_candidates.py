"""Candidate lists for the label job: what each training user's list holds."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines.data import SyntheticConfig, make_synthetic, training_split
from pipelines.labels.candidates import CandidateConfig, make_candidates


@pytest.fixture
def synth():
    return make_synthetic(SyntheticConfig(users=60, items=80, per_user=15, seed=1))


@pytest.mark.parametrize("strategy", ["uniform", "popularity", "hard", "mixed"])
def test_candidates_exclude_only_train_items(synth, strategy):
    s = training_split(synth, "random")
    cfg = CandidateConfig(n_negatives=12, max_positives=5, strategy=strategy, seed=0)
    c = make_candidates(s, cfg)
    train = set(zip(s.train.user, s.train.item))
    pairs = list(zip(c.user, c.item))
    assert all((p in train) == o for p, o in zip(pairs, c.observed))
    assert len(set(pairs)) == len(pairs)
    n_train = s.train.groupby("user").size().clip(upper=5)
    assert (c.groupby("user").size() == n_train + 12).all()
    pd.testing.assert_frame_equal(c, make_candidates(s, cfg))


def test_candidate_config_validation():
    with pytest.raises(ValueError, match="strategy='best'"):
        CandidateConfig(strategy="best")
