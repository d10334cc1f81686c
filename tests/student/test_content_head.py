"""The content head: a closed-form map from content to item vectors for items without an id."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from student.compress import quantize_int8, structured_prune
from student.content_head import fit_content_head
from student.model import TwoTower, TwoTowerConfig


def _model(**kw) -> TwoTower:
    torch.manual_seed(0)
    cfg = TwoTowerConfig(n_users=20, n_items=30, n_item_features=4, text_dim=6, id_dim=8,
                         history_len=5, user_hidden=(16,), item_hidden=(16,), out_dim=8,
                         item_id_dropout=0.5, content_head=True, **kw)  # fmt: skip
    rng = np.random.default_rng(0)
    m = TwoTower(cfg, item_features=rng.random((30, 4)), item_text=rng.normal(size=(30, 6)))
    has_id = np.ones(30, bool)
    has_id[[3, 7, 11]] = False
    m.set_item_id_mask(has_id)
    return m.eval()


def test_config_refuses_a_head_without_content_or_id_dropout():
    with pytest.raises(ValueError, match="content_head=True needs item content"):
        TwoTower(TwoTowerConfig(n_users=2, n_items=3, item_id_dropout=0.5, content_head=True))
    with pytest.raises(ValueError, match="content_head=True needs"):
        TwoTower(TwoTowerConfig(n_users=2, n_items=3, n_item_features=2, content_head=True))


@torch.no_grad()
def test_unfitted_head_changes_nothing_then_cold_items_use_the_ridge_map():
    m = _model()
    items = torch.arange(30)
    before = m.encode_items(items).clone()
    rec = fit_content_head(m, 1.0)
    assert rec == {"lambda": 1.0, "items": 27}
    after = m.encode_items(items)
    cold = torch.tensor([3, 7, 11])
    warm = torch.as_tensor(np.setdiff1d(np.arange(30), cold.numpy()))
    assert torch.equal(after[warm], before[warm])  # items with an id keep their vectors
    assert not torch.allclose(after[cold], before[cold])
    # the ridge solution, recomputed in numpy from the warm items
    X = m.item_content(warm).double().numpy()
    Y = before[warm].double().numpy()
    mu, yb = X.mean(0), Y.mean(0)
    W = np.linalg.solve((X - mu).T @ (X - mu) + np.eye(X.shape[1]), (X - mu).T @ (Y - yb))
    want = (m.item_content(cold).double().numpy() - mu) @ W + yb
    np.testing.assert_allclose(after[cold].numpy(), want, rtol=1e-4, atol=1e-5)
    m.train()  # training never uses the head
    torch.manual_seed(1)
    a = m.encode_items(cold)
    m.content_head.weight.data += 1.0
    torch.manual_seed(1)
    assert torch.equal(a, m.encode_items(cold))


@torch.no_grad()
def test_a_large_lambda_shrinks_cold_items_to_the_mean_vector():
    m = _model()
    fit_content_head(m, 1e9)
    warm = torch.as_tensor(np.setdiff1d(np.arange(30), [3, 7, 11]))
    mean = m.encode_items(warm).mean(0)
    np.testing.assert_allclose(
        m.encode_items(torch.tensor([3])).numpy()[0], mean.numpy(), atol=1e-4
    )


@torch.no_grad()
def test_head_survives_save_load_pruning_and_int8(tmp_path):
    m = _model(item_bias=True)
    fit_content_head(m, 0.5)
    want = m.encode_items(torch.arange(30))
    m.save_pretrained(tmp_path / "m")
    back = TwoTower.from_pretrained(tmp_path / "m").eval()
    assert torch.allclose(back.encode_items(torch.arange(30)), want)
    pruned, _ = structured_prune(m, 0.5)
    assert torch.allclose(pruned.eval().encode_items(torch.tensor([3]))[0], want[3], atol=1e-6)
    q, _ = quantize_int8(pruned)
    assert torch.allclose(q.eval().encode_items(torch.tensor([3]))[0], want[3], atol=0.05)
