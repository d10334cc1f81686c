"""The sequence-aware user tower (user_encoder sasrec / gru): config checks, causality,
order, padding, the shared item table, save/load."""

from __future__ import annotations

import json

import pytest
import torch

from student.model import TwoTower, TwoTowerConfig

PAD = 20


def _config(encoder: str = "sasrec", **kw) -> TwoTowerConfig:
    base = dict(n_users=5, n_items=PAD, history_len=6, id_dim=8, out_dim=4, user_hidden=(8,),
                item_hidden=(8,), user_encoder=encoder, seq_heads=2)  # fmt: skip
    return TwoTowerConfig(**{**base, **kw})


def _model(encoder: str = "sasrec", **kw) -> TwoTower:
    torch.manual_seed(0)
    return TwoTower(_config(encoder, **kw)).eval()


HIST = torch.tensor([[3, 4, 5, PAD, PAD, PAD], [1, 2, 3, 4, 5, 6], [PAD] * 6])
USERS = torch.tensor([0, 1, 2])


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(user_encoder="lstm"), "user_encoder='lstm'"),
        (dict(history_len=0), "needs history_len > 0"),
        (dict(id_dim=9, seq_heads=2), "divisible"),
        (dict(seq_layers=0), "seq_layers=0"),
        (dict(seq_dropout=1.0), "seq_dropout=1.0"),
    ],
)
def test_config_rejects_bad_encoder_settings(kw, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        _config(**kw)


def test_old_config_without_the_field_loads_as_mean():
    data = _config("mean").to_dict()
    for name in ["user_encoder", "seq_layers", "seq_heads", "seq_ffn", "seq_dropout"]:
        del data[name]
    assert TwoTowerConfig.from_dict(data).user_encoder == "mean"


@pytest.mark.parametrize("encoder", ["sasrec", "gru"])
def test_shares_the_item_table_and_has_no_history_table(encoder):
    names = dict(_model(encoder).named_modules())
    assert "history_emb" not in names and "user_seq" in names
    assert "history_emb" in dict(_model("mean").named_modules())


@pytest.mark.parametrize("encoder", ["sasrec", "gru"])
def test_every_position_is_causal_and_column_zero_is_the_user(encoder):
    m = _model(encoder)
    every = m.encode_users_every(USERS, HIST)
    assert every.shape == (3, 6, 4)
    assert torch.allclose(every[:, 0], m.encode_users(USERS, HIST), atol=1e-6)
    for j in range(6):
        older = torch.full_like(HIST, PAD)
        older[:, : 6 - j] = HIST[:, j:]  # the item at column j and the older ones only
        alone = m.encode_users(USERS, older)
        for b in range(3):
            if HIST[b, j] != PAD:
                assert torch.allclose(every[b, j], alone[b], atol=1e-5), (b, j)


@pytest.mark.parametrize("encoder", ["sasrec", "gru"])
def test_order_matters_and_padding_length_does_not(encoder):
    m = _model(encoder)
    h = torch.tensor([[1, 2, 3, 4, PAD, PAD]])
    e = m.encode_users(None, h)
    assert not torch.allclose(e, m.encode_users(None, torch.tensor([[4, 3, 2, 1, PAD, PAD]])))
    assert torch.allclose(e, m.encode_users(None, h[:, :4]), atol=1e-6)
    assert torch.allclose(e, m.encode_users(None, torch.tensor([[1, 2, 3, 4]])), atol=1e-6)
    longer = torch.cat([h, torch.full((1, 5), PAD)], 1)  # longer than history_len
    assert torch.allclose(e, m.encode_users(None, longer), atol=1e-6)


def test_mean_tower_is_order_blind_and_has_no_every_position():
    m = _model("mean")
    a = m.encode_users(None, torch.tensor([[1, 2, 3, PAD]]))
    assert torch.allclose(a, m.encode_users(None, torch.tensor([[3, 2, 1, PAD]])), atol=1e-6)
    with pytest.raises(ValueError, match="sequence encoder"):
        m.encode_users_every(USERS, HIST)


@pytest.mark.parametrize("encoder", ["sasrec", "gru"])
def test_save_load_round_trip(tmp_path, encoder):
    m = _model(encoder, user_id_dropout=0.5)
    m.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["config"]["user_encoder"] == encoder
    back = TwoTower.from_pretrained(tmp_path / "m")
    assert torch.allclose(back.encode_users(USERS, HIST), m.encode_users(USERS, HIST))


def test_gradients_reach_the_shared_item_table_through_the_history():
    m = _model("sasrec").train()
    m.encode_users_every(USERS, HIST).sum().backward()
    grad = m.item_id_emb.weight.grad
    assert grad[1:7].abs().sum() > 0 and grad[10:].abs().sum() == 0
