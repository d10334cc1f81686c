from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from pipelines.data import (
    DataError,
    SyntheticConfig,
    build_data,
    histories,
    load_dataset,
    load_grouplens,
    load_ml100k,
    load_table,
    make_split,
    make_synthetic,
)


def ratings(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "rating", "timestamp"])


@pytest.fixture(scope="module")
def synth():
    return make_synthetic(SyntheticConfig(users=60, items=80, per_user=15, seed=1))


def test_ml100k_from_recbole_wheel():
    data = load_ml100k()
    s = data.stats()
    assert (s["users"], s["items"], s["interactions"]) == (943, 1682, 100000)
    toy = data.items.iloc[0]
    assert toy["item_id"] == "1" and toy["title"] == "Toy Story" and toy["year"] == 1995
    assert "Animation" in toy["genres"]
    assert set(data.users.columns) >= {"user_id", "age", "gender", "occupation"}
    assert data.interactions["user"].max() == 942


def test_grouplens_100k_raw_format(tmp_path):
    (tmp_path / "u.data").write_text("1\t10\t5\t100\n1\t20\t3\t200\n2\t10\t4\t150\n")
    flags = "|".join(["0"] * 19)
    flags_action = "|".join(["0", "1"] + ["0"] * 17)
    (tmp_path / "u.item").write_text(
        f"10|Heat (1995)|01-Jan-1995||http://x|{flags_action}\n20|Unknown film|||http://y|{flags}\n",
        encoding="latin-1",
    )
    (tmp_path / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    data = load_grouplens(tmp_path)
    assert data.n_items == 2 and data.n_users == 2
    heat = data.items.iloc[0]
    assert heat["title"] == "Heat" and heat["year"] == 1995 and heat["genres"] == ["Action"]
    assert np.isnan(data.items.iloc[1]["year"])
    assert data.users["age"].tolist() == [24, 53]


def test_grouplens_1m_raw_format(tmp_path):
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    (tmp_path / "movies.dat").write_text(
        "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James and the Giant Peach (1996)::Animation|Children's\n"
    )
    data = load_grouplens(tmp_path)
    assert data.name == "ml-1m" and len(data.interactions) == 2
    assert data.items.set_index("item_id").loc["661", "genres"] == ["Animation", "Children's"]


def test_grouplens_missing_files(tmp_path):
    with pytest.raises(DataError, match="no GroupLens files"):
        load_grouplens(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        load_grouplens(tmp_path / "nope")


def test_csv_loader_with_column_mapping(tmp_path):
    p = tmp_path / "events.csv"
    pd.DataFrame({"uid": ["a", "b", "a"], "sku": [1, 2, 2], "ts": [3, 1, 2]}).to_csv(p, index=False)
    data = load_table(p, {"user_id": "uid", "item_id": "sku", "timestamp": "ts"})
    assert data.n_users == 2 and data.n_items == 2
    assert (data.interactions["rating"] == 1.0).all()
    with pytest.raises(DataError, match=r"no column 'user' for user_id"):
        load_table(p, {"user_id": "user"})
    with pytest.raises(DataError, match="missing file"):
        load_table(tmp_path / "absent.csv")


def test_bad_values_are_named():
    with pytest.raises(DataError, match=r"row 1, column 'rating' holds 'five'"):
        build_data("t", ratings([("1", "1", 4, 10), ("1", "2", "five", 11)]))
    with pytest.raises(DataError, match=r"row 0, column 'timestamp' holds 'yesterday'"):
        build_data("t", ratings([("1", "1", 4, "yesterday")]))
    with pytest.raises(DataError, match="negative"):
        build_data("t", ratings([("1", "1", 4, -5)]))
    with pytest.raises(DataError, match="no column 'rating'"):
        build_data("t", pd.DataFrame({"user_id": [1], "item_id": [1], "timestamp": [1]}))
    with pytest.raises(DataError, match="no interactions"):
        build_data("t", ratings([]))
    with pytest.raises(DataError, match="empty user_id"):
        build_data("t", ratings([(" ", "1", 4, 1)]))


def test_unknown_item_ids_are_refused():
    items = pd.DataFrame({"item_id": ["1"], "title": ["A"]})
    with pytest.raises(DataError, match=r"missing from the item table .*item_id '2' \(row 1\)"):
        build_data("t", ratings([("1", "1", 4, 1), ("1", "2", 4, 2)]), items)


def test_duplicates_and_order_are_repaired_and_logged(caplog):
    rows = [
        ("1", "1", 4, 30),
        ("1", "1", 4, 30),
        ("1", "2", 2, 10),
        ("1", "2", 5, 20),
        ("2", "1", 3, 5),
    ]
    with caplog.at_level(logging.DEBUG):
        data = build_data("t", ratings(rows))
    assert "dropped 1 exact duplicate" in caplog.text
    assert "kept the latest rating" in caplog.text
    assert "not in time order" in caplog.text  # at DEBUG: every job loads the data
    inter = data.interactions
    assert len(inter) == 3
    u1 = inter[inter.user == 0]
    assert u1["timestamp"].is_monotonic_increasing
    assert u1[u1.item == 1]["rating"].item() == 5  # latest of the two ratings of item "2"


@pytest.mark.parametrize("protocol", ["random", "temporal"])
def test_splits_are_disjoint_and_deterministic(synth, protocol):
    s = make_split(synth, protocol, seed=3)
    keys = [set(zip(p.user, p.item)) for p in (s.train, s.valid, s.test)]
    assert not (keys[0] & keys[1]) and not (keys[0] & keys[2]) and not (keys[1] & keys[2])
    assert sum(map(len, keys)) == len(synth.interactions)
    assert s.fingerprint() == make_split(synth, protocol, seed=3).fingerprint()
    if protocol == "random":
        frac = len(s.test) / len(synth.interactions)
        assert 0.08 < frac < 0.12
        assert s.fingerprint() != make_split(synth, protocol, seed=4).fingerprint()
    else:
        assert s.test.groupby("user").size().max() == 1
        last = synth.interactions.groupby("user")["timestamp"].max()
        assert (s.test.set_index("user")["timestamp"] == last.loc[s.test.user].to_numpy()).all()
        assert (
            s.valid.set_index("user")["timestamp"] <= s.test.set_index("user")["timestamp"]
        ).all()


def test_histories_most_recent_first(synth):
    s = make_split(synth, "temporal")
    h = histories(s.train, synth.n_users, 5, pad=synth.n_items)
    f = s.train[s.train.user == 0].sort_values("timestamp")
    expected = f["item"].to_numpy()[::-1][:5]
    assert h[0, : len(expected)].tolist() == expected.tolist()


def test_dataset_spec(tmp_path):
    d = load_dataset("synthetic:users=20,items=30,per_user=5")
    assert d.n_users == 20 and d.n_items == 30
    with pytest.raises(DataError, match="unknown synthetic field 'colour'"):
        load_dataset("synthetic:colour=3")
    with pytest.raises(DataError, match="unknown dataset"):
        load_dataset("imaginary")


def test_synthetic_text_carries_signal(synth):
    # items of one genre share words; users concentrate on few genres
    genres = synth.items["genres"].str[0].to_numpy()
    per_user = synth.interactions.assign(g=genres[synth.interactions.item]).groupby("user")["g"]
    top_share = per_user.agg(lambda g: g.value_counts(normalize=True).iloc[0]).mean()
    assert top_share > 1.5 / len(set(genres))
