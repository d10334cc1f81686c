"""Compression: structured pruning, magnitude pruning, int8 and its save/load."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from student.compress import (
    PARTS,
    ZEROS_NOTE,
    Int8Embedding,
    Int8Linear,
    choose_int8_parts,
    load_quantized,
    magnitude_prune,
    measure_latency,
    quantize_int8,
    save_quantized,
    structured_prune,
)
from student.model import TwoTower, TwoTowerConfig, count_parameters, model_bytes

N_USERS, N_ITEMS = 20, 30
# int8 tolerance: tower outputs keep cosine >= 0.99 with fp32, and scores (cosine * scale)
# move by at most 0.1 * scale. Measured here: cosine >= 0.998, score error <= 0.05 * scale.
INT8_MIN_COSINE = 0.99
INT8_MAX_SCORE_ERROR = 0.1


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
        item_hidden=(16, 16),
        out_dim=8,
    )
    return TwoTowerConfig(**(base | overrides))


@pytest.fixture(scope="session")
def _base_model() -> TwoTower:
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    return TwoTower(
        _config(),
        user_features=torch.randn(N_USERS, 3, generator=gen),
        item_features=torch.randn(N_ITEMS, 4, generator=gen),
        item_text=torch.randn(N_ITEMS, 12, generator=gen),
    ).eval()


@pytest.fixture
def model(_base_model: TwoTower) -> TwoTower:
    return copy.deepcopy(_base_model)


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    history = torch.randint(0, N_ITEMS + 1, (N_USERS, 5), generator=gen)
    return torch.arange(N_USERS), history, torch.arange(N_ITEMS)


def _outputs(m: TwoTower, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    users, history, items = batch
    with torch.no_grad():
        return m.encode_users(users, history), m.encode_items(items), m(users, history, items)


def _zero_half_the_hidden_units(m: TwoTower, small: float = 0.0) -> None:
    """Scale the outgoing weights of the odd hidden units of every hidden layer by ``small``."""
    with torch.no_grad():
        for mlp in (m.user_mlp, m.item_mlp):
            linears = [x for x in mlp if isinstance(x, nn.Linear)]
            for nxt in linears[1:]:
                nxt.weight[:, 1::2] *= small


# ---- structured pruning -------------------------------------------------------------------
def test_structured_prune_builds_physically_smaller_layers(
    model: TwoTower, batch, tmp_path
) -> None:
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pruned, record = structured_prune(model, keep_ratio=0.5)
    assert pruned.config.user_hidden == (8,) and pruned.config.item_hidden == (8, 8)
    assert pruned.user_mlp[0].weight.shape == (8, 16 + 16 + 3)
    assert pruned.item_mlp[3].weight.shape == (8, 8)
    assert pruned.item_mlp[6].weight.shape == (8, 8)
    assert count_parameters(pruned) < count_parameters(model)
    assert record["params_after"] == count_parameters(pruned) < record["params_before"]
    assert record["bytes_after"] == model_bytes(pruned) < record["bytes_before"]
    assert record["kept_units"]["item_mlp.3"] == {"before": 16, "after": 8}
    assert record["config_changes"] == {"user_hidden": [8], "item_hidden": [8, 8]}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input intact
    pruned.save_pretrained(tmp_path / "pruned")
    loaded = TwoTower.from_pretrained(tmp_path / "pruned")
    assert loaded.config == pruned.config
    torch.testing.assert_close(_outputs(loaded, batch)[2], _outputs(pruned, batch)[2])


def test_structured_prune_removes_zero_units_without_changing_outputs(model, batch) -> None:
    _zero_half_the_hidden_units(model)
    pruned, _ = structured_prune(model, keep_ratio=0.5)
    # the kept units are exactly the even (non-zero) ones
    torch.testing.assert_close(pruned.user_mlp[0].weight, model.user_mlp[0].weight[0::2])
    for got, want in zip(_outputs(pruned, batch), _outputs(model, batch), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_structured_prune_embedding_dims_without_changing_outputs(model, batch) -> None:
    _zero_half_the_hidden_units(model)
    with torch.no_grad():  # every odd id-embedding dim (and text projection output) is zero
        for emb in (model.user_id_emb, model.history_emb, model.item_id_emb):
            emb.weight[:, 1::2] = 0.0
        model.text_proj.weight[1::2] = 0.0
        model.text_proj.bias[1::2] = 0.0
    pruned, record = structured_prune(model, keep_ratio=0.5, prune_embeddings_dim=True)
    assert record["id_dim"] == {"before": 16, "after": 8}
    assert pruned.config.id_dim == 8 and pruned.item_id_emb.weight.shape == (N_ITEMS, 8)
    assert pruned.text_proj.weight.shape == (8, 12)
    assert pruned.user_mlp[0].weight.shape == (8, 8 + 8 + 3)
    assert pruned.item_mlp[0].weight.shape == (8, 8 + 4 + 8)
    for got, want in zip(_outputs(pruned, batch), _outputs(model, batch), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("importance", ["l2", "l1"])
def test_structured_prune_keeps_outputs_close_when_pruned_units_are_small(
    model, batch, importance: str
) -> None:
    # Half the units carry 2% of the usual outgoing weight: pruning them must keep every tower
    # output within cosine 0.99 of the original (stated tolerance for small, non-zero units).
    _zero_half_the_hidden_units(model, small=0.02)
    pruned, _ = structured_prune(model, keep_ratio=0.5, importance=importance)
    for got, want in zip(_outputs(pruned, batch)[:2], _outputs(model, batch)[:2], strict=True):
        assert F.cosine_similarity(got, want, dim=1).min() > 0.99


def test_structured_prune_keep_all_is_exact(model, batch) -> None:
    pruned, _ = structured_prune(model, keep_ratio=1.0, prune_embeddings_dim=True)
    assert pruned.config == model.config
    torch.testing.assert_close(_outputs(pruned, batch)[2], _outputs(model, batch)[2])


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"keep_ratio": 0.0}, "keep_ratio=0.0"),
        ({"keep_ratio": 1.5}, "keep_ratio=1.5"),
        ({"importance": "taylor"}, "importance='taylor'"),
    ],
)
def test_structured_prune_validation(model, kwargs, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        structured_prune(model, **kwargs)


# ---- magnitude pruning -------------------------------------------------------------------------
def test_magnitude_prune_reaches_sparsity_without_shrinking(model, tmp_path) -> None:
    pruned, record = magnitude_prune(model, sparsity=0.6)
    for name, module in pruned.named_modules():
        if isinstance(module, nn.Linear):
            zeros = (module.weight == 0).float().mean().item()
            assert abs(zeros - 0.6) <= 1.0 / module.weight.numel()
            assert record["per_tensor_sparsity"][f"{name}.weight"] == pytest.approx(zeros)
    assert abs(record["achieved_sparsity"] - 0.6) < 0.01
    assert record["note"] == ZEROS_NOTE and "neither smaller nor faster" in record["note"]
    assert record["bytes_after"] == record["bytes_before"]  # zeros are not a smaller model
    assert (model.user_mlp[0].weight != 0).all()  # input intact
    assert not any("orig" in k or "mask" in k for k in pruned.state_dict())  # prune.remove ran
    pruned.save_pretrained(tmp_path / "m")
    assert torch.equal(
        TwoTower.from_pretrained(tmp_path / "m").user_mlp[0].weight, pruned.user_mlp[0].weight
    )


def test_magnitude_prune_embeddings_and_validation(model) -> None:
    pruned, record = magnitude_prune(model, sparsity=0.5, include_embeddings=True)
    assert (pruned.item_id_emb.weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    assert "item_id_emb.weight" in record["per_tensor_sparsity"]
    with pytest.raises(ValueError, match="sparsity=1.0"):
        magnitude_prune(model, 1.0)


# ---- int8 -------------------------------------------------------------------------------------
def test_int8_outputs_within_tolerance(model, batch) -> None:
    qmodel, record = quantize_int8(model)
    assert record["torchao"] == "torchao not installed" or "torchao" in record["torchao"]
    assert set(record["int8_parts"]) == set(PARTS) and record["fp32_parts"] == []
    q_user, q_item, q_scores = _outputs(qmodel, batch)
    user, item, scores = _outputs(model, batch)
    assert F.cosine_similarity(q_user, user, dim=1).min() >= INT8_MIN_COSINE
    assert F.cosine_similarity(q_item, item, dim=1).min() >= INT8_MIN_COSINE
    scale = model.scale().item()
    assert (q_scores - scores).abs().max() <= INT8_MAX_SCORE_ERROR * scale
    assert not torch.equal(q_scores, scores)  # it really is quantized


def test_int8_parts_are_at_least_3x_smaller(model) -> None:
    qmodel, record = quantize_int8(model)
    linears = record["int8_linear"]
    tables = record["int8_embedding"]
    assert sorted(tables) == ["history_emb", "item_id_emb", "user_id_emb"]
    assert "text_proj" in linears and "user_mlp.0" in linears
    for names in (linears, tables):
        fp32 = sum(model_bytes(model.get_submodule(n)) for n in names)
        int8 = sum(model_bytes(qmodel.get_submodule(n)) for n in names)
        assert fp32 >= 3 * int8
    assert record["bytes_after"] == model_bytes(qmodel) < record["bytes_before"]


def test_int8_save_load_round_trip(model, batch, tmp_path) -> None:
    qmodel, _ = quantize_int8(model)
    save_quantized(qmodel, tmp_path / "q")
    names = sorted(p.name for p in (tmp_path / "q").iterdir())
    assert names == ["compression.json", "config.json", "model.safetensors"]
    compression = json.loads((tmp_path / "q" / "compression.json").read_text())
    assert compression["int8_modules"]["user_mlp.0"]["type"] == "int8_linear"
    assert compression["int8_modules"]["item_id_emb"]["type"] == "int8_embedding"
    loaded = load_quantized(tmp_path / "q")
    assert isinstance(loaded.user_mlp[0], Int8Linear) and isinstance(
        loaded.item_id_emb, Int8Embedding
    )
    assert loaded.user_mlp[0].weight_int8.dtype == torch.int8
    for got, want in zip(_outputs(loaded, batch), _outputs(qmodel, batch), strict=True):
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="load_quantized"):
        TwoTower.from_pretrained(tmp_path / "q")
    with pytest.raises(ValueError, match="save_quantized"):
        qmodel.save_pretrained(tmp_path / "wrong")


def test_load_quantized_errors(model, tmp_path) -> None:
    model.save_pretrained(tmp_path / "fp32")
    with pytest.raises(FileNotFoundError, match="compression.json: not found"):
        load_quantized(tmp_path / "fp32")
    qmodel, _ = quantize_int8(model)
    save_quantized(qmodel, tmp_path / "q")
    path = tmp_path / "q" / "compression.json"
    compression = json.loads(path.read_text())
    compression["int8_modules"]["user_mlp.0"]["in_features"] = 99
    path.write_text(json.dumps(compression))
    with pytest.raises(ValueError, match=r"user_mlp.0 is \[99, 16\]"):
        load_quantized(tmp_path / "q")


def test_quantize_selected_parts_only(model, batch) -> None:
    qmodel, record = quantize_int8(model, parts=["user_linear", "item_embedding"])
    assert isinstance(qmodel.user_mlp[0], Int8Linear) and isinstance(
        qmodel.item_id_emb, Int8Embedding
    )
    assert isinstance(qmodel.item_mlp[0], nn.Linear) and isinstance(
        qmodel.user_id_emb, nn.Embedding
    )
    assert record["fp32_parts"] == ["user_embedding", "item_linear"]
    only_linear, record = quantize_int8(model, embeddings=False)
    assert record["int8_embedding"] == [] and isinstance(only_linear.history_emb, nn.Embedding)
    with pytest.raises(ValueError, match=r"unknown part\(s\) \['user_mlp'\]"):
        quantize_int8(model, parts=["user_mlp"])
    with pytest.raises(ValueError, match="already has int8 parts"):
        structured_prune(qmodel)


def test_int8_linear_matches_quantize_dynamic(model) -> None:
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    linear = model.user_mlp[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = quantize_dynamic(
            nn.Sequential(copy.deepcopy(linear)), {nn.Linear: per_channel_dynamic_qconfig}
        )[0]
    qmodel, _ = quantize_int8(model, embeddings=False)
    x = torch.randn(7, linear.in_features, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(qmodel.user_mlp[0](x), reference(x))
        deq, _ = quantize_int8(model, embeddings=False, linear_kernel="dequant")
        expected = F.linear(x, qmodel.user_mlp[0].dequantized_weight(), linear.bias)
        torch.testing.assert_close(deq.user_mlp[0](x), expected)


def test_int8_embedding_rowwise_error_is_bounded() -> None:
    emb = nn.Embedding(6, 5)
    with torch.no_grad():
        emb.weight[2] = 0.0  # an all-zero row must stay zero, not divide by zero
    q = Int8Embedding.from_float(emb)
    idx = torch.tensor([[0, 2], [5, 1]])
    got, want = q(idx), emb(idx).detach()
    bound = q.weight_scale[idx].unsqueeze(-1) / 2 + 1e-7
    assert got.shape == (2, 2, 5) and ((got - want).abs() <= bound).all()
    assert torch.equal(got[0, 1], torch.zeros(5))


def test_choose_int8_parts_keeps_fp32_where_int8_is_slower(model) -> None:
    # A fake timer: int8 embeddings are 4x slower, int8 Linears 2x faster (no real timing).
    def fake_measure(m, batch_sizes, towers, **_):
        tower, batch = towers[0], batch_sizes[0]
        ms = 1.0
        for name, module in m.named_modules():
            on_tower = name.split(".")[0] in (
                ("user_id_emb", "history_emb", "user_mlp")
                if tower == "user"
                else ("item_id_emb", "text_proj", "item_mlp")
            )
            if on_tower and isinstance(module, Int8Embedding):
                ms = 4.0
            if on_tower and isinstance(module, Int8Linear):
                ms = 0.5
        return {tower: {str(batch): ms}}

    qmodel, record = choose_int8_parts(model, measure=fake_measure)
    assert record["int8_parts"] == ["user_linear", "item_linear"]
    assert record["decisions"]["user_embedding"]["int8"] is False
    assert "kept fp32" in record["decisions"]["item_embedding"]["reason"]
    assert record["decisions"]["item_linear"]["batch_size"] == 1024
    assert isinstance(qmodel.user_mlp[0], Int8Linear) and isinstance(
        qmodel.item_id_emb, nn.Embedding
    )


def test_measure_latency_reports_each_tower_and_restores_threads(model) -> None:
    threads = torch.get_num_threads()
    result = measure_latency(model, batch_sizes=(1, 4), n_warmup=0, n_repeats=1, num_threads=1)
    assert set(result["user"]) == {"1", "4"} and set(result["item"]) == {"1", "4"}
    assert result["num_threads"] == 1 and torch.get_num_threads() == threads
    assert not model.training
