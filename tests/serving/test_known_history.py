"""The server reads a known user from all the run knows: its train and validation rows."""

from __future__ import annotations

import numpy as np

from pipelines.data import histories, load_dataset, training_split
from pipelines.serving.artifacts import load_engine, resolve_run
from tests.serving.conftest import DATASET


def test_known_users_history_and_seen_items_hold_the_validation_items(run_dir):
    e = load_engine(resolve_run(run_dir))
    data = load_dataset(DATASET)
    split = training_split(data, "random", 0)
    r = e.retriever
    valid = split.valid
    seen = r.seen.tocsr()
    assert all(seen[u, i] > 0 for u, i in zip(valid["user"], valid["item"]))
    want = histories(split.known_before("test"), data.n_users, r.histories.shape[1], data.n_items)
    assert np.array_equal(r.histories, want)
    in_hist = [i in r.histories[u] for u, i in zip(valid["user"], valid["item"])]
    assert np.mean(in_hist) > 0.5  # most validation items are among the last 10
    assert not np.array_equal(
        r.histories, histories(split.train, data.n_users, r.histories.shape[1], data.n_items)
    )
