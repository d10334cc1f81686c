"""Ties within a second: the split orders them by a seeded shuffle, not by the item id."""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest

from pipelines.data import build_data, histories, make_split
from pipelines.data.splits import TIE_RULE


def _one_second_data(n_users: int = 40, per_user: int = 8, n_items: int = 30):
    """Every user's interactions all in one second (a different second per user)."""
    rng = np.random.default_rng(5)
    rows = []
    for u in range(n_users):
        for i in rng.choice(n_items, per_user, replace=False):
            rows.append((f"u{u}", f"i{i:03d}", 4.0, 1_000 + u))
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])
    return build_data("ties", frame)


def _last_per_user(frame: pd.DataFrame) -> pd.Series:
    return frame.groupby("user")["item"].last()


def test_temporal_test_item_of_a_tied_second_is_not_the_highest_id():
    data = _one_second_data()
    highest = data.interactions.groupby("user")["item"].max()
    for seed in range(3):
        test = make_split(data, "temporal", seed).test.set_index("user")["item"]
        # with 8 tied items the highest id is test for about 1 user in 8, not for every one
        assert (test == highest.loc[test.index]).mean() < 0.5, seed
    a = make_split(data, "temporal", 0).test["item"].to_numpy()
    b = make_split(data, "temporal", 1).test["item"].to_numpy()
    assert (a != b).any()  # the seed decides


def test_same_seed_same_split_and_parts_keep_the_tie_order():
    data = _one_second_data()
    for protocol in ("random", "temporal", "cold_items"):
        s, t = make_split(data, protocol, 3), make_split(data, protocol, 3)
        for name in ("train", "valid", "test"):
            pd.testing.assert_frame_equal(s.part(name), t.part(name))
        assert s.fingerprint() == t.fingerprint()
    s = make_split(data, "temporal", 3)
    # within a second the train rows are not re-sorted by item: the seeded order is kept
    assert not all(g.is_monotonic_increasing for _, g in s.train.groupby("user")["item"])


def test_random_protocol_keeps_its_sets():
    # the tie rule only reorders rows within a second: the random parts are the sets drawn
    # over the loaded order, as before it
    from pipelines.data.splits import _random_labels

    data = _one_second_data()
    inter = data.interactions
    label = _random_labels(np.bincount(inter["user"], minlength=data.n_users),
                           np.random.default_rng(0))  # fmt: skip
    s = make_split(data, "random", 0)
    for i, name in enumerate(("train", "valid", "test")):
        want = set(zip(inter.user[label == i], inter.item[label == i]))
        assert set(zip(s.part(name).user, s.part(name).item)) == want


def test_new_users_first_five_are_a_seeded_draw_within_a_second():
    data = _one_second_data(n_users=120, per_user=10, n_items=60)
    lowest_five = 0
    s = make_split(data, "cold_items", 0)
    for u, g in s.new_history.groupby("user"):
        warm = pd.concat([g, s.new_test[s.new_test.user == u]])["item"]
        lowest_five += set(g["item"]) == set(np.sort(warm.to_numpy())[:5])
    assert lowest_five < s.new_history["user"].nunique()


def _old_rule_fingerprint(split) -> str:
    h = hashlib.sha256(f"{split.protocol}:{split.seed}".encode())
    for name in ("train", "valid"):
        f = split.part(name)
        h.update(f["user"].to_numpy().tobytes())
        h.update(f["item"].to_numpy().tobytes())
    return h.hexdigest()[:16]


def test_fingerprint_records_the_tie_rule():
    s = make_split(_one_second_data(), "temporal", 0)
    assert TIE_RULE == "seeded_shuffle" and s.ties == TIE_RULE
    assert s.fingerprint() != _old_rule_fingerprint(s)
    assert s.training_view().fingerprint() == s.fingerprint()


def test_histories_keep_the_given_order_within_a_second():
    frame = pd.DataFrame(
        {"user": [0, 0, 0, 1, 1], "item": [5, 2, 7, 3, 1], "timestamp": [1, 2, 2, 4, 4]}
    )
    h = histories(frame, 2, 3, pad=9)
    assert h.tolist() == [[7, 2, 5], [1, 3, 9]]  # most recent first; a second as given
    # out of (user, timestamp) order: sorted stably, ties still as given
    h = histories(frame.iloc[[3, 4, 0, 1, 2]], 2, 3, pad=9)
    assert h.tolist() == [[7, 2, 5], [1, 3, 9]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_known_before_test_ends_with_the_validation_item(seed):
    s = make_split(_one_second_data(), "temporal", seed)
    known = s.known_before("test")
    # in the tie order the train rows of the second come first, then the validation row
    assert (_last_per_user(known) == s.valid.set_index("user")["item"]).all()
    h = histories(known, s.n_users, 4, pad=s.n_items)
    users = s.valid["user"].to_numpy()
    assert (h[users, 0] == s.valid["item"].to_numpy()).all()
    train_hist = histories(s.train, s.n_users, 3, pad=s.n_items)
    assert (h[users, 1:] == train_hist[users]).all()  # then the train rows, most recent first
