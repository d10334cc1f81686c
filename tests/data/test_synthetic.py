"""The synthetic generator's two samplers, the indexed build path, column-wise item text and
vectorized histories."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.data import (
    DataError,
    SyntheticConfig,
    build_data,
    histories,
    load_dataset,
    make_synthetic,
    render_item_text,
)
from pipelines.data.dataset import build_indexed_data, render_item_texts
from pipelines.data.synthetic import EXACT_MAX_CELLS, GENRE_WORDS, SPAN, T0, resolve_sampler

FAST = SyntheticConfig(users=400, items=2000, per_user=20, seed=3, sampler="fast")


@pytest.fixture(scope="module")
def fast():
    return make_synthetic(FAST)


def test_small_configs_unchanged():
    # the exact sampler's output, pinned (main before the fast sampler): tests and demos
    # were written against it
    assert make_synthetic().fingerprint() == "bcf2198c92ec1b54"
    d = make_synthetic(SyntheticConfig(users=60, items=80, per_user=15, seed=1))
    assert d.fingerprint() == "56b3de931d54c3b4"


def test_auto_picks_exact_small_and_fast_large():
    assert resolve_sampler(SyntheticConfig()) == "exact"
    side = int(np.sqrt(EXACT_MAX_CELLS))
    assert resolve_sampler(SyntheticConfig(users=side, items=side)) == "exact"
    assert resolve_sampler(SyntheticConfig(users=side + 1, items=side)) == "fast"
    assert resolve_sampler(SyntheticConfig(users=1_000_000, items=1_000_000)) == "fast"
    assert resolve_sampler(SyntheticConfig(users=10**6, items=10**6, sampler="exact")) == "exact"
    assert resolve_sampler(SyntheticConfig(sampler="fast")) == "fast"
    with pytest.raises(ValueError, match=r"SyntheticConfig.sampler='quick'; expected one of"):
        SyntheticConfig(sampler="quick")


def test_fast_sampler_is_seeded(fast):
    again = make_synthetic(FAST)
    pd.testing.assert_frame_equal(fast.interactions, again.interactions)
    assert fast.fingerprint() == again.fingerprint()
    other = make_synthetic(SyntheticConfig(**{**FAST.__dict__, "seed": 4}))
    assert other.fingerprint() != fast.fingerprint()
    assert len(other.interactions) != len(fast.interactions) or not np.array_equal(
        other.interactions["item"], fast.interactions["item"]
    )


def test_fast_sampler_rows_are_valid(fast):
    i = fast.interactions
    assert i["user"].between(0, FAST.users - 1).all() and i["item"].between(0, FAST.items - 1).all()
    assert not (i["user"].astype(np.int64) * FAST.items + i["item"]).duplicated().any()
    assert set(i["rating"].unique()) <= {1.0, 2.0, 3.0, 4.0, 5.0}
    assert i["timestamp"].between(T0, T0 + SPAN - 1).all()
    assert i.equals(i.sort_values(["user", "timestamp", "item"]).reset_index(drop=True))
    assert [str(c) for c in i.dtypes] == ["int32", "int32", "float32", "int64"]


@pytest.mark.parametrize("users,items,per_user", [(400, 2000, 20), (30, 12, 8)])
def test_fast_sampler_keeps_every_users_count(users, items, per_user):
    # counts come from the same draws under both samplers and the exact one draws without
    # replacement; 12 items with up to 11 per user forces redraws, down to uniform ones
    cfg = dict(users=users, items=items, per_user=per_user, seed=5)
    fast = make_synthetic(SyntheticConfig(**cfg, sampler="fast")).interactions
    exact = make_synthetic(SyntheticConfig(**cfg, sampler="exact")).interactions
    n_fast = np.bincount(fast["user"], minlength=users)
    assert n_fast.min() >= 5
    assert np.array_equal(n_fast, np.bincount(exact["user"], minlength=users))


def test_fast_sampler_plants_signal(fast):
    i = fast.interactions
    genre = fast.items["genres"].str[0].to_numpy()[i["item"].to_numpy()]
    # the genre a user favours in one half of their history is the one they favour in the
    # other half (chance: about 1/8)
    half = np.arange(len(i)) % 2
    top = (
        pd.DataFrame({"user": i["user"], "half": half, "genre": genre})
        .groupby(["user", "half"])["genre"]
        .agg(lambda g: g.value_counts().index[0])
        .unstack()
    )
    assert (top[0] == top[1]).mean() > 0.5
    # popularity skew: the top 1% of items take far more than 1% of the interactions
    assert fast.stats()["top1pct_items_share"] > 0.08
    # item text carries the item's genre words
    words = dict(GENRE_WORDS)
    assert all(
        words[g[0]] == text and title.startswith(g[0])
        for g, text, title in zip(fast.items["genres"], fast.items["text"], fast.items["title"])
    )


def test_samplers_share_users_and_items():
    spec = "synthetic:users=30,items=40,per_user=8,seed=2"
    exact, fast = load_dataset(spec), load_dataset(spec + ",sampler=fast")
    cols = ["item_id", "title", "genres", "text"]  # years and ages are drawn after histories
    pd.testing.assert_frame_equal(exact.items[cols], fast.items[cols])
    assert exact.users["user_id"].tolist() == fast.users["user_id"].tolist()
    assert exact.fingerprint() != fast.fingerprint()
    assert "'sampler': 'fast'" in fast.source
    with pytest.raises(DataError, match="sampler='quick'"):
        load_dataset(spec + ",sampler=quick")


def test_indexed_build_matches_build_data():
    d = make_synthetic(SyntheticConfig(users=50, items=70, per_user=10, seed=7))
    shuffled = d.interactions.sample(frac=1.0, random_state=0).reset_index(drop=True)
    fast = build_indexed_data("synthetic", shuffled, d.items, d.users)
    pd.testing.assert_frame_equal(fast.interactions, d.interactions)
    assert fast.fingerprint() == d.fingerprint()
    uid, iid = d.users["user_id"].to_numpy(), d.items["item_id"].to_numpy()
    strings = build_data(
        "synthetic",
        pd.DataFrame(
            {
                "user_id": uid[shuffled["user"]],
                "item_id": iid[shuffled["item"]],
                "rating": shuffled["rating"],
                "timestamp": shuffled["timestamp"],
            }
        ),
        d.items,
        d.users,
    )
    assert strings.fingerprint() == d.fingerprint()


@pytest.mark.parametrize(
    "change,message",
    [
        ({"item": 70}, r"column 'item' holds 70; expected an index in \[0, 70\)"),
        ({"user": -1}, r"column 'user' holds -1"),
        ({"timestamp": -5}, r"column 'timestamp' holds -5; expected seconds >= 0"),
        ({"rating": np.nan}, r"column 'rating' holds nan; expected a finite number"),
    ],
)
def test_indexed_build_refuses_bad_rows(change, message):
    d = make_synthetic(SyntheticConfig(users=20, items=70, per_user=6, seed=1))
    inter = d.interactions.copy()
    for col, value in change.items():
        inter[col] = inter[col].astype(float if col == "rating" else np.int64)
        inter.loc[3, col] = value
    with pytest.raises(DataError, match=message):
        build_indexed_data("x", inter, d.items, d.users)


def test_indexed_build_refuses_a_pair_twice():
    d = make_synthetic(SyntheticConfig(users=20, items=70, per_user=6, seed=1))
    twice = pd.concat([d.interactions, d.interactions.iloc[[4]].assign(timestamp=1)])
    with pytest.raises(DataError, match=r"appear together more than once \(1 repeated"):
        build_indexed_data("x", twice, d.items, d.users)


def test_render_item_texts_equals_row_by_row():
    items = pd.DataFrame(
        {
            "item_id": ["1", "2", "3", "4"],
            "title": ["Heat", "Up", "item 3", "Brazil"],
            "year": [1995.0, np.nan, 2001.0, 1985.0],
            "genres": [["Action", "Crime"], [], [], ["Sci-Fi"]],
            "text": ["a heist", "", "", ""],
        }
    )
    expected = [render_item_text(r) for _, r in items.iterrows()]
    assert render_item_texts(items) == expected
    assert expected[1] == "Up" and expected[0] == "Heat (1995). Action, Crime. a heist"
    d = make_synthetic(SyntheticConfig(users=20, items=60, per_user=5))
    assert render_item_texts(d.items) == [render_item_text(r) for _, r in d.items.iterrows()]


def _histories_by_loop(train, n_users, max_len, pad):
    out = np.full((n_users, max_len), pad, dtype=np.int64)
    f = train.sort_values(["user", "timestamp"], kind="stable")  # a second keeps its order
    for u, g in f.groupby("user"):
        recent = g["item"].to_numpy()[::-1][:max_len]
        out[u, : len(recent)] = recent
    return out


@pytest.mark.parametrize("max_len", [1, 4, 30])
def test_histories_equal_a_loop_per_user(max_len):
    rng = np.random.default_rng(0)
    n = 400
    train = pd.DataFrame(
        {
            "user": rng.integers(0, 25, n).astype(np.int32),  # some users have none
            "item": rng.integers(0, 50, n).astype(np.int32),
            "timestamp": rng.integers(0, 20, n),  # many ties: kept in the given order
        }
    )
    expected = _histories_by_loop(train, 30, max_len, pad=50)
    assert np.array_equal(histories(train, 30, max_len, pad=50), expected)
    # a frame already in (user, timestamp) order is read as given: its seconds keep their order
    ordered = train.sort_values(["user", "timestamp", "item"]).reset_index(drop=True)
    by_item = _histories_by_loop(ordered, 30, max_len, pad=50)
    assert np.array_equal(histories(ordered, 30, max_len, pad=50), by_item)
