"""The formats users have: a MovieLens "latest" export (ratings.csv, movies.csv, tags.csv), the
older GroupLens folders, ISO timestamps, Amazon-reviews style JSON lines, and a folder whose
item table is not called items.csv. Every file is a few rows written in the test."""

from __future__ import annotations

import gzip
import json
import logging

import numpy as np
import pytest

from pipelines.data import DataError, load_dataset, render_item_text
from pipelines.data.loaders import table_spec
from pipelines.labels.schema import META_FILE, SCHEMA_VERSION, LabelError, load_labels

RATINGS = (
    "userId,movieId,rating,timestamp\n"
    "1,1,4.0,964982703\n1,3,4.0,964981247\n2,1,5.0,964982224\n2,2,3.5,964983815\n"
)
MOVIES = (
    "movieId,title,genres\n"
    "1,Toy Story (1995),Adventure|Animation|Children\n"
    '2,"American President, The (1995)",Comedy|Drama|Romance\n'
    "3,Untitled Thing,(no genres listed)\n"
)
TAGS = "userId,movieId,tag,timestamp\n1,1,pixar,1\n2,1,Pixar,2\n2,1,fun,3\n1,2,politics,4\n"
LATEST_COLS = "user_id=userId,item_id=movieId,rating=rating,timestamp=timestamp"


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_items_id_column_defaults_to_the_interactions_mapping(tmp_path):
    r, m = write(tmp_path / "ratings.csv", RATINGS), write(tmp_path / "movies.csv", MOVIES)
    data = load_dataset(table_spec(str(r), items=str(m), columns=LATEST_COLS))
    assert data.n_items == 3 and data.items["item_id"].tolist() == ["1", "2", "3"]
    users = write(tmp_path / "u.csv", "userId,age\n1,30\n2,40\n")
    data = load_dataset(table_spec(str(r), users=str(users), columns=LATEST_COLS))
    assert data.users["age"].tolist() == [30, 40]  # the user table's id too
    # an item table that uses our name keeps working; a mapping given wins
    write(tmp_path / "ours.csv", "item_id,title\n1,A\n2,B\n3,C\n")
    assert load_dataset(
        table_spec(str(r), items=str(tmp_path / "ours.csv"), columns=LATEST_COLS)
    ).items["title"].tolist() == ["A", "B", "C"]
    with pytest.raises(DataError, match=r"no column 'movieId' or 'item_id' for item_id"):
        load_dataset(
            table_spec(str(r), items=str(write(tmp_path / "x.csv", "id\n1\n")), columns=LATEST_COLS)
        )


def test_year_from_the_title_and_no_genres_listed(tmp_path):
    r, m = write(tmp_path / "ratings.csv", RATINGS), write(tmp_path / "movies.csv", MOVIES)
    spec = table_spec(str(r), items=str(m), columns=LATEST_COLS, item_columns="item_id=movieId")
    items = load_dataset(spec).items.set_index("item_id")
    assert items.loc["1", "title"] == "Toy Story" and items.loc["1", "year"] == 1995
    assert items.loc["2", "title"] == "American President, The"
    assert np.isnan(items.loc["3", "year"]) and items.loc["3", "title"] == "Untitled Thing"
    assert items.loc["3", "genres"] == []  # not a genre called "(no genres listed)"
    assert render_item_text(items.reset_index().iloc[0]) == (
        "Toy Story (1995). Adventure, Animation, Children"
    )
    # a year column, where the table has one, is kept as it is
    write(tmp_path / "y.csv", "movieId,title,year\n1,Heat (1995),1996\n2,B,\n3,C,\n")
    y = load_dataset(spec.replace(str(m), str(tmp_path / "y.csv")))
    assert y.items["title"][0] == "Heat (1995)" and y.items["year"][0] == 1996


def test_iso_timestamps_and_a_bad_one_named(tmp_path):
    text = (
        "user_id,item_id,ts\n"
        "u1,a,1997-12-04 15:55:49\nu1,b,1997-12-04T15:55:50Z\nu2,a,881250949\nu2,b,1997-12-05\n"
    )
    p = write(tmp_path / "i.csv", text)
    data = load_dataset(table_spec(str(p), columns="timestamp=ts"))
    ts = dict(zip(zip(data.interactions.user, data.interactions.item), data.interactions.timestamp))
    assert ts[(0, 0)] == 881250949 and ts[(0, 1)] == 881250950  # 1997-12-04 15:55:49 UTC
    assert ts[(1, 1)] == 881280000 and ts[(1, 0)] == 881250949
    bad = write(tmp_path / "bad.csv", text.replace("1997-12-05", "yesterday"))
    with pytest.raises(DataError) as e:
        load_dataset(table_spec(str(bad), columns="timestamp=ts"))
    msg = str(e.value)
    assert "bad.csv: line 5, column 'timestamp' holds 'yesterday'" in msg
    assert "expected unix seconds or an ISO-8601 date" in msg


def test_movielens_latest_folder_with_tags(tmp_path):
    root = tmp_path / "ml-latest-small"
    write(root / "ratings.csv", RATINGS)
    write(root / "movies.csv", MOVIES)
    write(root / "tags.csv", TAGS)
    write(root / "links.csv", "movieId,imdbId,tmdbId\n1,114709,862\n")
    for spec in (f"grouplens:{root}", str(root)):
        data = load_dataset(spec)
        assert data.n_users == 2 and data.n_items == 3 and len(data.interactions) == 4
        items = data.items.set_index("item_id")
        assert items.loc["1", "year"] == 1995 and items.loc["1", "genres"][0] == "Adventure"
        assert items.loc["1", "text"] == "tags: pixar, fun"  # most used first, case folded
        assert items.loc["3", "text"] == "" and items.loc["3", "genres"] == []
    text = render_item_text(data.items.iloc[0])
    assert text == "Toy Story (1995). Adventure, Animation, Children. tags: pixar, fun"
    no_tags = tmp_path / "ml-25m"
    write(no_tags / "ratings.csv", RATINGS)
    write(no_tags / "movies.csv", MOVIES)
    assert load_dataset(str(no_tags)).items["text"].tolist() == ["", "", ""]
    write(tmp_path / "wrong" / "ratings.csv", "user,movie\n1,1\n")
    with pytest.raises(DataError, match=r"ratings.csv: no column 'userId'.*MovieLens csv layout"):
        load_dataset(str(tmp_path / "wrong"))


def test_movielens_10m_folder(tmp_path):
    root = tmp_path / "ml-10M100K"
    write(root / "ratings.dat", "1::122::5::838985046\n1::185::4.5::838983525\n2::122::3::1\n")
    write(
        root / "movies.dat", "122::Boomerang (1992)::Comedy|Romance\n185::Net, The (1995)::Action\n"
    )
    write(root / "tags.dat", "15::122::dark hero::1193435061\n")
    data = load_dataset(str(root))
    assert data.name == "ml-10m" and data.n_items == 2
    items = data.items.set_index("item_id")
    assert items.loc["185", "title"] == "Net, The" and items.loc["185", "year"] == 1995
    assert items.loc["122", "text"] == "tags: dark hero"
    assert sorted(data.interactions["rating"]) == [3.0, 4.5, 5.0]  # half stars


def test_a_folder_uses_movies_csv_and_warns_without_an_item_table(tmp_path, caplog):
    shop = tmp_path / "shop"
    write(shop / "interactions.csv", "user_id,item_id\n1,1\n1,2\n2,1\n")
    write(shop / "movies.csv", "item_id,title,genres\n1,Toy Story (1995),Animation\n2,B,\n3,C,\n")
    data = load_dataset(str(shop))
    assert data.n_items == 3 and data.items["title"][0] == "Toy Story"  # not silently ignored
    write(shop / "items.csv", "item_id\n1\n2\n")
    with pytest.raises(DataError, match=r"both items.csv and movies.csv; keep one items file"):
        load_dataset(str(shop))
    bare = tmp_path / "bare"
    write(bare / "interactions.csv", "user_id,item_id\n1,1\n1,2\n2,1\n")
    with caplog.at_level(logging.WARNING):
        assert load_dataset(str(bare)).n_items == 2
    assert "no item table (--items, or items/movies.csv" in caplog.text
    caplog.clear()
    write(tmp_path / "beside" / "movies.csv", MOVIES)
    orders = write(tmp_path / "beside" / "orders.csv", "user_id,item_id\n1,1\n")
    with caplog.at_level(logging.WARNING):
        load_dataset(str(orders))
    assert "movies.csv beside it was not read (pass --items" in caplog.text


META = '{"title": "Alpha", "categories": [["Books", "Fiction"], ["Books", "Mystery"]], "description": "a story"}'


def test_amazon_reviews_json_lines_with_a_metadata_file(tmp_path):
    reviews = [
        {"reviewerID": "A1", "asin": "0001", "overall": 5.0, "unixReviewTime": 1252800000},
        {"reviewerID": "A1", "asin": "0002", "overall": 3.0, "unixReviewTime": 1252900000},
        {"reviewerID": "B2", "asin": "0001", "overall": 4.0, "unixReviewTime": 1253000000},
    ]
    r = write(tmp_path / "reviews.jsonl", "\n".join(json.dumps(x) for x in reviews) + "\n")
    meta = tmp_path / "meta.json.gz"  # gzipped, as Amazon ships them; one line in Python style
    with gzip.open(meta, "wt") as f:
        f.write('{"asin": "0001", ' + META[1:] + "\n")
        f.write(
            "{'asin': '0002', 'title': 'Beta', 'categories': ['Books'], 'description': ['x', 'y']}\n"
        )
    spec = table_spec(
        str(r),
        items=str(meta),
        columns="user_id=reviewerID,item_id=asin,rating=overall,timestamp=unixReviewTime",
        item_columns="title=title,genres=categories,text=description",
    )
    data = load_dataset(spec)
    items = data.items.set_index("item_id")
    assert list(items.index) == ["0001", "0002"]  # ids stay strings, leading zeros kept
    assert items.loc["0001", "genres"] == ["Books", "Fiction", "Mystery"]
    assert items.loc["0002", "text"] == "x y" and items.loc["0001", "text"] == "a story"
    assert data.interactions["rating"].tolist() == [5.0, 3.0, 4.0]
    bad = write(tmp_path / "bad.jsonl", json.dumps(reviews[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=r"bad.jsonl: line 2 is not valid JSON"):
        load_dataset(table_spec(str(bad), columns="user_id=reviewerID,item_id=asin"))


def test_labels_for_other_data_name_the_spec_they_were_made_for(tmp_path):
    spec = "runs/shop/ratings.csv?items=runs/shop/movies.csv&columns=user_id=userId"
    meta = {
        "schema_version": SCHEMA_VERSION,
        "dataset": {"name": "ratings", "fingerprint": "aaaa"},
        "config": {"dataset": spec},
    }
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(LabelError) as e:
        load_labels(tmp_path, dataset_fingerprint="bbbb")
    assert f"labels were made for --dataset {spec!r}" in str(e.value)
    assert "pass the same data flags as generate-labels had" in str(e.value)
