"""A user's own files: errors that name the file's own line, the column and the value; the
dataset spec string (interactions + item table + user table + column mapping); features the
data has. Every file is made in the test."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest

from pipelines.data import DataError, load_dataset, load_grouplens, make_split, render_item_text
from pipelines.data.features import student_features
from pipelines.data.loaders import TableSpec, table_spec

INTER = "uid,asin,stars,ts\nu1,a,5,10\nu1,b,4,11\nu1,c,3,12\n\nu2,a,3,13\nu2,c,2,14\nu2,d,1,15\n"
ITEMS = (
    "asin,name,categories,description,year\n"
    "a,Alpha,Drama;Comedy,first one,1999\n"
    "b,Beta,Drama,,\n"
    "c,,Horror,third,2001\n"
    "d,Delta,,fourth,\n"
)
USERS = "user,age,gender\nu1,31,F\nu2,,M\n"
COLS = "user_id=uid,item_id=asin,rating=stars,timestamp=ts"
ITEM_COLS = "item_id=asin,title=name,genres=categories,text=description"


def write(path, text):
    path.write_text(text)
    return path


def own(tmp_path, inter=INTER, items=ITEMS, users=USERS):
    return (
        write(tmp_path / "inter.csv", inter),
        write(tmp_path / "items.csv", items),
        write(tmp_path / "users.csv", users),
    )


def spec_of(tmp_path, **kw):
    i, it, u = own(tmp_path, **kw)
    return table_spec(
        str(i),
        items=str(it),
        users=str(u),
        columns=COLS,
        item_columns=ITEM_COLS,
        user_columns="user_id=user",
        genre_sep=";",
    )


def test_interactions_items_and_users_with_a_column_mapping(tmp_path):
    data = load_dataset(spec_of(tmp_path))
    assert data.n_users == 2 and data.n_items == 4 and len(data.interactions) == 6
    items = data.items.set_index("item_id")
    assert items.loc["a", "genres"] == ["Drama", "Comedy"]  # the documented separator
    assert items.loc["c", "title"] == "item c"  # an empty title is named by its id
    assert np.isnan(items.loc["b", "year"]) and items.loc["c", "year"] == 2001
    assert items.loc["a", "text"] == "first one"
    assert data.users.set_index("user_id").loc["u1", "age"] == 31
    assert np.isnan(data.users.set_index("user_id").loc["u2", "age"])
    uf, itf = student_features(data)
    assert uf.shape[0] == 2 and uf.shape[1] >= 1 and itf.shape[0] == 4
    # the teacher's item text is what the table has: title, year, genres, free text
    text = {r["item_id"]: render_item_text(r) for _, r in data.items.iterrows()}
    assert text["a"] == "Alpha (1999). Drama, Comedy. first one"
    assert text["b"] == "Beta. Drama" and text["d"] == "Delta. fourth"


def test_spec_string_round_trip_and_folder(tmp_path):
    spec = spec_of(tmp_path)
    t = TableSpec.parse(spec)
    assert t.genre_sep == ";" and dict(t.columns)["item_id"] == "asin"
    assert TableSpec.parse(t.to_spec()) == t
    # a separator that the spec syntax uses itself survives percent-encoding
    odd = table_spec(str(tmp_path / "inter.csv"), genre_sep="&")
    assert TableSpec.parse(odd).genre_sep == "&"
    folder = tmp_path / "shop"
    folder.mkdir()
    write(folder / "interactions.csv", "user_id,item_id\n1,x\n1,y\n2,x\n")
    write(folder / "items.csv", "item_id,title,genres\nx,Ex,A|B\ny,Why,B\nz,Zed,C\n")
    data = load_dataset(str(folder))
    assert data.name == "shop" and data.n_items == 3  # z: in the table, never seen
    assert data.items.set_index("item_id").loc["x", "genres"] == ["A", "B"]
    uf, itf = student_features(data)
    assert uf is None and itf is not None  # no user table: no user features


def test_fingerprint_covers_the_item_and_user_tables(tmp_path):
    base = load_dataset(spec_of(tmp_path)).fingerprint()
    assert load_dataset(spec_of(tmp_path)).fingerprint() == base
    other = tmp_path / "b"
    other.mkdir()
    assert load_dataset(spec_of(other, items=ITEMS.replace("Beta", "Bravo"))).fingerprint() != base
    assert load_dataset(spec_of(other, users=USERS.replace("31", "32"))).fingerprint() != base


def test_no_features_in_the_data_means_none(tmp_path):
    p = write(tmp_path / "i.csv", "user_id,item_id\n1,a\n1,b\n2,a\n")
    assert student_features(load_dataset(str(p))) == (None, None)


def test_errors_name_the_files_own_line_and_an_empty_cell(tmp_path):
    bad = INTER.replace("u2,c,2,14", "u2,c,,14")  # line 7 (header 1, a blank line 5)
    with pytest.raises(DataError) as e:
        load_dataset(spec_of(tmp_path, inter=bad))
    msg = str(e.value)
    assert "inter.csv: line 7, column 'rating' is empty; expected a finite number" in msg
    assert "nan" not in msg
    bad = INTER.replace("u2,c,2,14", "u2,c,two,14")
    with pytest.raises(DataError, match=r"line 7, column 'rating' holds 'two'"):
        load_dataset(spec_of(tmp_path, inter=bad))
    with pytest.raises(DataError, match=r"line 3 has an empty user_id"):
        load_dataset(spec_of(tmp_path, inter=INTER.replace("u1,b,4,11", ",b,4,11")))


def test_unknown_items_and_duplicate_ids_are_named_with_their_lines(tmp_path):
    inter = INTER + "u2,zz,1,16\nu1,yy,1,17\n"  # lines 9 and 10
    with pytest.raises(DataError) as e:
        load_dataset(spec_of(tmp_path, inter=inter))
    msg = str(e.value)
    assert "2 interactions name items missing from the item table" in msg
    assert "items.csv" in msg
    assert "item_id 'zz' (line 9), item_id 'yy' (line 10)" in msg
    items = ITEMS + "b,Beta again,,,\n"  # line 6 repeats line 3
    with pytest.raises(
        DataError, match=r"items.csv: item_id 'b' is listed twice \(line 3 and line 6\)"
    ):
        load_dataset(spec_of(tmp_path, items=items))
    users = USERS + "u1,40,M\n"
    with pytest.raises(
        DataError, match=r"users.csv: user_id 'u1' is listed twice \(line 2 and line 4\)"
    ):
        load_dataset(spec_of(tmp_path, users=users))


def test_library_errors_on_a_users_file_name_it(tmp_path):
    empty = write(tmp_path / "empty.csv", "")
    with pytest.raises(DataError, match=r"empty.csv: the file is empty"):
        load_dataset(str(empty))
    header = write(tmp_path / "header.csv", "user_id,item_id\n")
    with pytest.raises(DataError, match=r"header.csv: no interactions"):
        load_dataset(str(header))
    ragged = write(tmp_path / "ragged.csv", "user_id,item_id\n1,a\n1,b,c,d\n")
    with pytest.raises(DataError, match=r"ragged.csv: not a valid table .*line 3"):
        load_dataset(str(ragged))
    pq = tmp_path / "t.parquet"
    pd.DataFrame({"user_id": ["1"] * 50, "item_id": [str(i) for i in range(50)]}).to_parquet(pq)
    pq.write_bytes(pq.read_bytes()[:100])
    with pytest.raises(DataError, match=r"t.parquet: not a readable Parquet file"):
        load_dataset(str(pq))
    with pytest.raises(DataError, match=r"'colour' is not a column recdistill reads here"):
        table_spec(str(tmp_path / "x.csv"), columns="colour=c")
    with pytest.raises(DataError, match=r"apply to your own files, but --dataset is 'ml-100k'"):
        table_spec("ml-100k", items="items.csv")
    with pytest.raises(DataError, match=r"map it with --item-columns item_id=<your column>"):
        load_dataset(
            table_spec(str(header), items=str(write(tmp_path / "i.csv", "id,title\n1,A\n")))
        )


def test_grouplens_line_with_the_wrong_field_count(tmp_path):
    write(tmp_path / "u.data", "1\t1\t5\t100\n1\t2\t4\t101\n2\t1\t3\n")
    with pytest.raises(
        DataError, match=r"u.data: line 3 has 3 fields separated by '\\t'; expected 4"
    ):
        load_grouplens(tmp_path)


def test_users_too_small_to_split_are_logged(tmp_path, caplog):
    p = write(tmp_path / "i.csv", "user_id,item_id\n1,a\n1,b\n1,c\n1,d\n2,a\n")
    with caplog.at_level(logging.INFO):
        make_split(load_dataset(str(p)), "random", 0)
    assert "1 users have fewer than 3 interactions" in caplog.text
