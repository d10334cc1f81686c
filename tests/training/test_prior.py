"""The popularity prior folded into the item bias (pipelines.training.prior, --prior-history)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pipelines.core.config import make_config
from pipelines.data import load_dataset, training_split
from pipelines.training.prior import fit_prior, short_histories
from pipelines.training.train_student import TrainStudentConfig
from pipelines.training.train_student import run as train
from student.model import TwoTower, TwoTowerConfig

DATASET = "synthetic:users=40,items=30,per_user=8,seed=3"


def _split_and_model():
    data = load_dataset(DATASET)
    split = training_split(data, "random", 0)
    cfg = TwoTowerConfig(n_users=data.n_users, n_items=data.n_items, id_dim=4, out_dim=4,
                         history_len=8, user_hidden=(8,), item_hidden=(8,), item_bias=True)  # fmt: skip
    torch.manual_seed(0)
    return split, TwoTower(cfg).eval()


def test_short_histories_are_the_first_items_by_time():
    split, model = _split_and_model()
    h = short_histories(split, 3, model)
    train = split.known_before("valid")
    first = train[train.user == 0].item.to_numpy()[:3]
    assert list(h[0, :3].numpy()) == list(first[::-1])  # most recent first
    assert (h[0, 3:] == model.config.n_items).all()


def test_fit_prior_adds_the_chosen_weight_times_log_counts():
    split, model = _split_and_model()
    before = model.item_bias.detach().clone()
    rec = fit_prior(model, split, 3, grid=(0.0, 2.0, 50.0))
    counts = np.bincount(split.train["item"].to_numpy(), minlength=model.config.n_items)
    want = before + rec["weight"] * torch.as_tensor(np.log1p(counts), dtype=torch.float32)
    assert rec["weight"] in (0.0, 2.0, 50.0)
    assert set(rec["valid_ndcg@20_by_weight"]) == {"0", "2", "50"}
    scores = rec["valid_ndcg@20_by_weight"]
    assert scores[f"{rec['weight']:g}"] == max(scores.values())
    assert torch.allclose(model.item_bias, want)
    known = rec["valid_ndcg@10_by_known_weight"]
    assert set(known) == {"0", "0.25", "0.5", "0.75", "1"}
    assert known[f"{rec['known_weight']:g}"] == max(known.values())
    assert float(model.known_bias_weight) == rec["known_weight"]
    fit_prior(model, split, 3, grid=(0.0,))  # 0 alone: the bias stays as it is
    assert torch.allclose(model.item_bias, want)


def test_fit_prior_needs_an_item_bias():
    split, model = _split_and_model()
    plain = TwoTower(TwoTowerConfig(n_users=model.config.n_users, n_items=model.config.n_items))
    with pytest.raises(ValueError, match="item_bias"):
        fit_prior(plain, split, 3)


def test_train_student_records_the_prior(tmp_path):
    base = dict(dataset=DATASET, no_teacher=True, epochs=1, id_dim=4, out_dim=4, history_len=8,
                user_hidden=(8,), item_hidden=(8,), n_negatives=8, threads=1)  # fmt: skip
    with pytest.raises(ValueError, match="prior_history"):
        make_config(TrainStudentConfig, **base, prior_history=3, out=str(tmp_path / "x"))
    result = train(make_config(TrainStudentConfig, **base, item_bias=True, prior_history=3,
                               out=str(tmp_path / "s")))  # fmt: skip
    prior = result["popularity_prior"]
    assert prior["history"] == 3 and 0.0 <= prior["known_weight"] <= 1.0
    saved = json.loads((tmp_path / "s" / "metrics.json").read_text())
    assert saved["popularity_prior"]["weight"] == prior["weight"]
    back = TwoTower.from_pretrained(tmp_path / "s" / "model")
    assert back.config.item_bias and float(back.known_bias_weight) == prior["known_weight"]
