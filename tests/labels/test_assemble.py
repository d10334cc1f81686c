"""Assembling label shards: (user, rank) order without a global sort, and column reads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from datasets import Dataset

from pipelines.labels.generate_labels import assemble
from pipelines.labels.schema import COLUMNS, LabelError, columns, features
from pipelines.labels.shards import shard_name


def shard(users, rng) -> Dataset:
    rows = []
    for u in users:
        for r in range(4):
            rows.append(
                {
                    "user_id": f"u{u}",
                    "item_id": f"i{r}",
                    "user": u,
                    "item": r,
                    "score": float(-r),
                    "prob": 0.5,
                    "observed": r == 0,
                    "rank": r,
                    "source": "pop",
                }
            )
    frame = pd.DataFrame(rows).iloc[rng.permutation(len(rows))]  # scored in any order
    frame = frame.astype(
        {
            k: v
            for k, v in {
                "user": "int32",
                "item": "int32",
                "rank": "int32",
                "score": "float32",
                "prob": "float32",
            }.items()
        }
    )
    return Dataset.from_pandas(frame, features=features(), preserve_index=False)


def write(partial, parts):
    rng = np.random.default_rng(0)
    for i, users in enumerate(parts):
        shard(users, rng).save_to_disk(str(partial / shard_name(i)))


def expected_order(t) -> bool:
    return bool((np.lexsort((t["rank"], t["user"])) == np.arange(len(t["user"]))).all())


def test_shards_of_consecutive_users_assemble_in_user_rank_order(tmp_path):
    write(tmp_path, [[0, 1, 2], [3, 4], [5, 6, 7]])
    ds = assemble(tmp_path, 3)
    assert list(ds.features) == list(COLUMNS)
    t = columns(ds)
    assert len(t["user"]) == 8 * 4
    assert expected_order(t)
    assert list(t["user_id"][:4]) == ["u0"] * 4 and t["user_id"].dtype == object


def test_overlapping_shards_fall_back_to_a_full_sort(tmp_path):
    write(tmp_path, [[4, 5], [0, 1]])
    t = columns(assemble(tmp_path, 2))
    assert expected_order(t)
    assert sorted(set(t["user"])) == [0, 1, 4, 5]


def test_columns_reads_in_row_order_after_a_sort(tmp_path):
    ds = shard([2, 0, 1], np.random.default_rng(1))
    srt = ds.sort(["user", "rank"])
    t = columns(srt, ["user", "rank", "item_id"])
    assert set(t) == {"user", "rank", "item_id"}
    frame = srt.to_pandas()
    for name in t:
        assert (t[name] == frame[name].to_numpy()).all()


def test_assembly_streams_to_one_mapped_file_and_names_a_bad_shard(tmp_path):
    # the joined shards are read back memory-mapped from one Arrow file (no table of every
    # shard in memory); a shard with an index outside the catalogue is named in the error
    write(tmp_path, [[0, 1], [2, 3]])
    ds = assemble(tmp_path, 2, n_users=4, n_items=4)
    assert [f["filename"] for f in ds.cache_files] == [str(tmp_path / "assembled.arrow")]
    assert expected_order(columns(ds)) and len(ds) == 16
    with pytest.raises(LabelError, match=r"shard-00001: column 'user' holds index 3"):
        assemble(tmp_path, 2, n_users=3, n_items=4)


def test_overlapping_shards_are_still_checked_against_the_catalogue(tmp_path):
    # shard 1 overlaps shard 0 (in-memory fallback); shard 2, after it, holds user 5 of 5
    write(tmp_path, [[2, 3], [0, 1], [5]])
    assert expected_order(columns(assemble(tmp_path, 3, n_users=6, n_items=4)))
    with pytest.raises(LabelError, match=r"shard-00002: column 'user' holds index 5"):
        assemble(tmp_path, 3, n_users=5, n_items=4)
