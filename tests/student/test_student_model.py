"""TwoTower student: config, shapes, features, determinism, save/load."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from student.model import TwoTower, TwoTowerConfig, count_parameters, model_bytes
from student.model_io import load_config

N_USERS, N_ITEMS, PAD = 20, 30, 30


def _config(**overrides) -> TwoTowerConfig:
    base = dict(
        n_users=N_USERS,
        n_items=N_ITEMS,
        n_user_features=3,
        n_item_features=4,
        text_dim=12,
        id_dim=16,
        history_len=5,
        user_hidden=(16,),
        item_hidden=(16, 8),
        out_dim=8,
        dropout=0.1,
    )
    base.update(overrides)
    return TwoTowerConfig(**base)


def _features(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "user_features": rng.normal(size=(N_USERS, 3)).astype(np.float32),
        "item_features": rng.normal(size=(N_ITEMS, 4)).astype(np.float32),
        "item_text": rng.normal(size=(N_ITEMS, 12)).astype(np.float32),
    }


@pytest.fixture(scope="session")
def _base_model() -> TwoTower:
    torch.manual_seed(0)
    return TwoTower(_config(), **_features()).eval()


@pytest.fixture
def model(_base_model: TwoTower) -> TwoTower:
    return copy.deepcopy(_base_model)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    users = torch.tensor([0, 3, 7, 19])
    history = torch.randint(0, N_ITEMS + 1, (4, 5), generator=gen)
    history[0] = PAD  # a user without history
    return users, history, torch.arange(N_ITEMS)


# ---- config ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field,value",
    [
        ("n_users", 0),
        ("n_items", -3),
        ("n_items", 2.5),
        ("id_dim", 0),
        ("out_dim", True),
        ("text_dim", -1),
        ("history_len", -1),
        ("user_hidden", (16, 0)),
        ("item_hidden", "256"),
        ("dropout", 1.0),
        ("dropout", -0.1),
        ("normalize", "yes"),
        ("use_user_id", 1),
        ("init_scale", 0.0),
        ("max_scale", 5.0),
    ],
)
def test_config_rejects_bad_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        _config(**{field: value})


def test_config_rejects_user_tower_without_input() -> None:
    with pytest.raises(ValueError, match="user tower has no input"):
        _config(use_user_id=False, history_len=0, n_user_features=0)


def test_config_json_round_trip() -> None:
    config = _config(user_hidden=[32, 16], normalize=False)
    data = json.loads(json.dumps(config.to_dict()))
    assert data["user_hidden"] == [32, 16]
    again = TwoTowerConfig.from_dict(data)
    assert again == config and again.user_hidden == (32, 16)


def test_config_from_dict_rejects_unknown_and_missing() -> None:
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['hiden'\]"):
        TwoTowerConfig.from_dict({**_config().to_dict(), "hiden": 3})
    with pytest.raises(ValueError, match=r"missing required field\(s\) \['n_items'\]"):
        TwoTowerConfig.from_dict({"n_users": 3})


# ---- shapes and maths -------------------------------------------------------------------------
def test_shapes(model: TwoTower, batch) -> None:
    users, history, items = batch
    assert model.encode_users(users, history).shape == (4, 8)
    assert model.encode_items(items).shape == (N_ITEMS, 8)
    assert model(users, history, items).shape == (4, N_ITEMS)
    per_user = torch.randint(0, N_ITEMS, (4, 6))
    assert model.encode_items(per_user).shape == (4, 6, 8)
    assert model(users, history, per_user).shape == (4, 6)


def test_score_is_scaled_cosine(model: TwoTower, batch) -> None:
    users, history, items = batch
    user_emb, item_emb = model.encode_users(users, history), model.encode_items(items)
    torch.testing.assert_close(user_emb.norm(dim=1), torch.ones(4))
    expected = 10.0 * F.cosine_similarity(user_emb[:, None], item_emb[None], dim=-1)
    torch.testing.assert_close(model(users, history, items), expected, atol=1e-5, rtol=1e-5)
    # Per-user candidates score the same as the matching columns of the shared matrix.
    per_user = torch.tensor([[1, 2], [3, 4], [5, 6], [7, 8]])
    full = model(users, history, items)
    torch.testing.assert_close(model(users, history, per_user), full.gather(1, per_user))


def test_scale_is_clamped(model: TwoTower) -> None:
    with torch.no_grad():
        model.log_scale.fill_(20.0)
    assert math.isclose(model.scale().item(), 100.0, rel_tol=1e-5)


def test_unnormalized_scores_are_dot_products(batch) -> None:
    model = TwoTower(_config(normalize=False), **_features()).eval()
    users, history, items = batch
    user_emb, item_emb = model.encode_users(users, history), model.encode_items(items)
    assert not hasattr(model, "log_scale")
    torch.testing.assert_close(model(users, history, items), user_emb @ item_emb.T)


def test_history_is_a_masked_mean(model: TwoTower) -> None:
    users = torch.tensor([2])
    a = model.encode_users(users, torch.tensor([[3, 5, PAD, PAD]]))
    torch.testing.assert_close(a, model.encode_users(users, torch.tensor([[5, 3]])))
    # All-padding history = zero history vector, whatever the length.
    empty = model.encode_users(users, torch.tensor([[PAD, PAD, PAD]]))
    torch.testing.assert_close(empty, model.encode_users(users, torch.tensor([[PAD]])))
    assert not torch.allclose(a, empty)


def test_towers_match_a_hand_computed_forward(model: TwoTower) -> None:
    users, history = torch.tensor([2, 5]), torch.tensor([[3, 5, PAD], [PAD, PAD, PAD]])
    with torch.no_grad():
        table = model.history_emb.weight
        pooled = torch.stack([(table[3] + table[5]) / 2, torch.zeros(16)])
        x = torch.cat([model.user_id_emb.weight[users], pooled, model.user_features[users]], 1)
        expected_user = F.normalize(model.user_mlp(x), dim=1)
        items = torch.tensor([0, 7])
        text = model.item_text[items] @ model.text_proj.weight.T + model.text_proj.bias
        x = torch.cat([model.item_id_emb.weight[items], model.item_features[items], text], 1)
        expected_item = F.normalize(model.item_mlp(x), dim=1)
    torch.testing.assert_close(model.encode_users(users, history), expected_user)
    torch.testing.assert_close(model.encode_items(items), expected_item)
    # A zero-length history is an empty history.
    empty = model.encode_users(users[1:], torch.zeros(1, 0, dtype=torch.long))
    torch.testing.assert_close(empty, expected_user[1:])


def test_history_len_zero_needs_no_history() -> None:
    model = TwoTower(
        _config(history_len=0, text_dim=0),
        **{k: v for k, v in _features().items() if k != "item_text"},
    )
    assert not hasattr(model, "history_emb")
    assert model(torch.tensor([1, 2]), None, torch.arange(5)).shape == (2, 5)


def test_without_user_id_users_with_same_inputs_match() -> None:
    model = TwoTower(_config(use_user_id=False, n_user_features=0)).eval()
    history = torch.tensor([[1, 2, PAD], [1, 2, PAD]])
    out = model.encode_users(torch.tensor([0, 9]), history)
    torch.testing.assert_close(out[0], out[1])


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m: m.encode_users(torch.tensor([N_USERS]), torch.full((1, 2), PAD)), "user_idx"),
        (lambda m: m.encode_users(torch.tensor([0]), torch.tensor([[PAD + 1]])), "history"),
        (lambda m: m.encode_users(torch.tensor([0]), torch.tensor([[-1]])), "history"),
        (lambda m: m.encode_users(torch.tensor([0, 1]), torch.tensor([[1]])), "history"),
        (lambda m: m.encode_users(torch.tensor([0]), None), "history is None"),
        (lambda m: m.encode_items(torch.tensor([0.0, 1.0])), "int64"),
        (lambda m: m.encode_items(torch.tensor([N_ITEMS])), "item_idx"),
        (lambda m: m(torch.tensor([0, 1]), None, torch.zeros(3, 2, dtype=torch.long)), "history"),
    ],
)
def test_bad_indices_raise(model: TwoTower, call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(model)


# ---- side features ---------------------------------------------------------------------------
def test_features_are_buffers_in_the_state_dict(model: TwoTower) -> None:
    state = model.state_dict()
    feats = _features()
    for name in ["user_features", "item_features", "item_text"]:
        assert name in state and name not in dict(model.named_parameters())
        np.testing.assert_array_equal(state[name].numpy(), feats[name])


def test_set_features_changes_item_scores(model: TwoTower, batch) -> None:
    users, history, items = batch
    before = model(users, history, items)
    model.set_features(item_text=torch.zeros(N_ITEMS, 12))
    assert torch.equal(model.item_text, torch.zeros(N_ITEMS, 12))
    assert not torch.allclose(before, model(users, history, items))


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"item_features": np.zeros((N_ITEMS, 5))}, r"item_features: expected shape \[30, 4\]"),
        ({"user_features": np.zeros((N_USERS + 1, 3))}, "user_features"),
        ({"item_text": np.full((N_ITEMS, 12), np.nan)}, "non-finite value at row 0"),
    ],
)
def test_set_features_rejects_bad_arrays(model: TwoTower, kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        model.set_features(**kwargs)


def test_features_for_a_zero_sized_config_field_raise() -> None:
    with pytest.raises(ValueError, match="text_dim=0"):
        TwoTower(_config(text_dim=0), item_text=np.zeros((N_ITEMS, 4)))


# ---- determinism and training signal ---------------------------------------------------------
def test_same_seed_same_model(batch) -> None:
    states = []
    for _ in range(2):
        torch.manual_seed(123)
        states.append(TwoTower(_config(), **_features()).state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    torch.manual_seed(124)
    other = TwoTower(_config()).state_dict()
    assert not torch.equal(states[0]["item_id_emb.weight"], other["item_id_emb.weight"])


def test_eval_is_deterministic_and_train_uses_dropout(model: TwoTower, batch) -> None:
    users, history, items = batch
    assert torch.equal(model(users, history, items), model(users, history, items))
    model.train()
    torch.manual_seed(0)
    assert not torch.equal(model(users, history, items), model(users, history, items))


def test_gradients_reach_weights_not_buffers_or_padding(model: TwoTower, batch) -> None:
    users, history, items = batch
    model.train()
    model(users, history, items).sum().backward()
    assert model.log_scale.grad is not None and model.text_proj.weight.grad.abs().sum() > 0
    assert model.history_emb.weight.grad[PAD].abs().sum() == 0
    assert all(not b.requires_grad for b in model.buffers())


def test_count_parameters_and_model_bytes_by_hand() -> None:
    config = TwoTowerConfig(
        n_users=2, n_items=3, n_item_features=1, id_dim=4, history_len=0,
        user_hidden=(), item_hidden=(), out_dim=2,
    )  # fmt: skip
    model = TwoTower(config)
    # user emb 2*4 + item emb 3*4 + user Linear(4->2) 10 + item Linear(5->2) 12 + log_scale 1
    assert count_parameters(model) == 8 + 12 + 10 + 12 + 1
    assert model_bytes(model) == 4 * 43 + 4 * 3  # + item_features buffer [3, 1] float32


# ---- save / load ------------------------------------------------------------------------------
def test_save_load_round_trip(model: TwoTower, batch, tmp_path) -> None:
    users, history, items = batch
    out = tmp_path / "student"
    model.save_pretrained(out)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    assert [p.name for p in tmp_path.iterdir()] == ["student"]  # no temp folder left
    meta = json.loads((out / "config.json").read_text())
    assert meta["versions"]["torch"] == torch.__version__
    loaded = TwoTower.from_pretrained(out)
    assert loaded.config == model.config and not loaded.training
    assert torch.equal(loaded(users, history, items), model(users, history, items))
    assert torch.equal(loaded.item_text, model.item_text)


def test_from_pretrained_does_not_move_the_global_rng(model: TwoTower, tmp_path) -> None:
    model.save_pretrained(tmp_path / "m")
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    TwoTower.from_pretrained(tmp_path / "m")
    assert torch.equal(torch.rand(3), expected)


def test_save_replaces_a_model_folder_but_not_other_folders(model: TwoTower, tmp_path) -> None:
    model.save_pretrained(tmp_path / "m")
    model.save_pretrained(tmp_path / "m")  # overwriting a saved model is fine
    (tmp_path / "m" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"holds other files \['notes.txt'\]"):
        model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "notes.txt").exists()


def test_from_pretrained_rejects_shape_mismatch(model: TwoTower, tmp_path) -> None:
    model.save_pretrained(tmp_path / "m")
    path = tmp_path / "m" / "config.json"
    meta = json.loads(path.read_text())
    meta["config"]["n_items"] = 31
    path.write_text(json.dumps(meta))
    with pytest.raises(
        ValueError, match=r"tensor 'item_\w+' has shape \[30, \d+\], the config expects \[31,"
    ):
        TwoTower.from_pretrained(tmp_path / "m")


def test_from_pretrained_rejects_missing_tensor(model: TwoTower, tmp_path) -> None:
    model.save_pretrained(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    tensors = load_file(str(weights))
    del tensors["text_proj.bias"]
    save_file(tensors, str(weights))
    with pytest.raises(ValueError, match=r"missing \['text_proj.bias'\]"):
        TwoTower.from_pretrained(tmp_path / "m")


def test_from_pretrained_missing_files_and_bad_config(model: TwoTower, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="config.json: not found"):
        TwoTower.from_pretrained(tmp_path / "nothing")
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors: not found"):
        TwoTower.from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="model_type='bert'"):
        load_config(tmp_path / "m")


def test_item_id_dropout_and_mask():
    import torch

    from student.model import TwoTower, TwoTowerConfig

    c = TwoTowerConfig(n_users=4, n_items=6, n_item_features=3, id_dim=4, history_len=2,
                       user_hidden=(8,), item_hidden=(8,), out_dim=4, dropout=0.0,
                       item_id_dropout=0.5)  # fmt: skip
    torch.manual_seed(0)
    m = TwoTower(c, item_features=torch.randn(6, 3))
    m.set_item_id_mask([True, True, True, True, False, False])  # items 4, 5: never seen
    m.eval()
    items = torch.arange(6)
    before = m.encode_items(items)
    with torch.no_grad():
        m.item_id_emb.weight[4:] = torch.randn(2, 4) * 10  # a cold item's id never matters
        m.item_id_emb.weight[0] += 1.0  # a warm item's id does
    after = m.encode_items(items)
    assert torch.equal(before[4:], after[4:])
    assert not torch.allclose(before[0], after[0])
    # in training, a warm item's id is dropped with probability item_id_dropout (DropoutNet)
    with torch.no_grad():
        with_id = m.encode_items(torch.tensor([0]))
        m.item_id_mask[0] = 0.0
        without_id = m.encode_items(torch.tensor([0]))
        m.item_id_mask[0] = 1.0
    m.train()
    with torch.no_grad():
        out = m.encode_items(torch.zeros(2000, dtype=torch.long))
    dropped = torch.isclose(out, without_id).all(1)
    kept = torch.isclose(out, with_id).all(1)
    assert bool((dropped | kept).all()) and 0.4 < dropped.float().mean() < 0.6
    with pytest.raises(ValueError, match="item_id_dropout"):
        TwoTowerConfig(n_users=2, n_items=2, item_id_dropout=1.0)
    with pytest.raises(ValueError, match="expected shape"):
        m.set_item_id_mask([True])


def test_user_id_dropout_and_new_users():
    import torch

    from student.model import TwoTower, TwoTowerConfig

    c = TwoTowerConfig(n_users=4, n_items=6, n_user_features=2, id_dim=4, history_len=3,
                       user_hidden=(8,), item_hidden=(8,), out_dim=4, dropout=0.0,
                       user_id_dropout=0.5)  # fmt: skip
    torch.manual_seed(0)
    m = TwoTower(c, user_features=torch.randn(4, 2))
    m.set_user_id_mask([True, True, True, False])  # user 3: no train interactions
    m.eval()
    hist = torch.tensor([[0, 1, 6], [2, 6, 6], [3, 4, 5], [0, 1, 6]])
    # a new user is encoded from the history alone: no id, no features
    new = m.encode_users(None, hist)
    assert new.shape == (4, 4)
    masked = m.encode_users(torch.tensor([3]), hist[3:])
    assert torch.allclose(masked, new[3:], atol=1e-6)  # the masked user 3 == a new user
    with torch.no_grad():
        m.user_id_emb.weight[3] = torch.randn(4) * 10  # an untrained id never matters
        m.user_features[3] += 5.0
    assert torch.equal(masked, m.encode_users(torch.tensor([3]), hist[3:]))
    assert not torch.allclose(m.encode_users(torch.tensor([0]), hist[:1]), new[:1])
    # in training, a user's id (and features) is dropped with probability user_id_dropout
    with torch.no_grad():
        with_id = m.encode_users(torch.tensor([0]), hist[:1])
        without_id = m.encode_users(None, hist[:1])
    m.train()
    with torch.no_grad():
        out = m.encode_users(torch.zeros(2000, dtype=torch.long), hist[:1].repeat(2000, 1))
    dropped = torch.isclose(out, without_id, atol=1e-6).all(1)
    kept = torch.isclose(out, with_id, atol=1e-6).all(1)
    assert bool((dropped | kept).all()) and 0.4 < dropped.float().mean() < 0.6
    with pytest.raises(ValueError, match="needs use_user_id"):
        TwoTowerConfig(n_users=2, n_items=2, use_user_id=False, user_id_dropout=0.2)
    with pytest.raises(ValueError, match="history"):
        TwoTower(TwoTowerConfig(n_users=2, n_items=2, history_len=0)).encode_users(None, None)
    with pytest.raises(ValueError, match="set_user_id_mask needs"):
        TwoTower(TwoTowerConfig(n_users=2, n_items=2)).set_user_id_mask([True, True])
