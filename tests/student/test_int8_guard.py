"""The int8 quality guard keeps a module float32 where its int8 costs more than the tolerance
on validation, and says whether the compressed student is int8-safe."""

from __future__ import annotations

import pytest
import torch

from pipelines.compression.int8_guard import guarded_int8
from student.compress import Int8Linear, int8_modules, quantize_int8
from student.model import TwoTower, TwoTowerConfig


def _model() -> TwoTower:
    torch.manual_seed(0)
    cfg = TwoTowerConfig(n_users=10, n_items=12, id_dim=8, history_len=4, user_hidden=(16,),
                         item_hidden=(16,), out_dim=8)  # fmt: skip
    return TwoTower(cfg).eval()


def _score_hurt_by(name: str):
    def score(m) -> dict:
        bad = isinstance(m.get_submodule(name), Int8Linear)
        return {"valid_ndcg@10": 0.5 if bad else 1.0, "cold_valid_ndcg@20": 1.0}

    return score


def test_a_harmful_module_stays_fp32_and_is_recorded():
    m = _model()
    q, rec = guarded_int8(m, _score_hurt_by("item_mlp.0"), 0.01)
    guard = rec["quality_guard"]
    assert guard["kept_fp32"] == {"item_mlp.0": "quality"} and guard["int8_safe"]
    assert guard["module_ratios"]["item_mlp.0"]["valid_ndcg@10"] == 0.5
    assert not isinstance(q.get_submodule("item_mlp.0"), Int8Linear)
    assert isinstance(q.get_submodule("user_mlp.0"), Int8Linear)
    assert rec["fp32_modules"] == ["item_mlp.0"] and "item_mlp.0" not in rec["int8_linear"]


def test_a_harmless_model_is_int8_everywhere_and_safe():
    m = _model()
    q, rec = guarded_int8(m, lambda _m: {"valid_ndcg@10": 1.0}, 0.01)
    assert rec["quality_guard"]["kept_fp32"] == {} and rec["quality_guard"]["int8_safe"]
    full, _ = quantize_int8(m)
    assert sorted(rec["int8_linear"]) == sorted(_ for _ in int8_modules(m) if "emb" not in _)
    x = torch.arange(12)
    assert torch.equal(q.encode_items(x), full.encode_items(x))


def test_a_loss_spread_over_every_module_is_refused_as_int8_safe(caplog):
    m = _model()

    def score(model) -> dict:  # each int8 module costs 0.6%: alone within 1%, together not
        n = sum(isinstance(mod, Int8Linear) for mod in model.modules())
        return {"valid_ndcg@10": 1.0 - 0.006 * n}

    _, rec = guarded_int8(m, score, 0.01)
    assert rec["quality_guard"]["kept_fp32"] == {} and not rec["quality_guard"]["int8_safe"]
    assert "not int8-safe" in caplog.text


def test_tolerance_out_of_range_is_refused():
    with pytest.raises(ValueError, match="int8_tolerance"):
        guarded_int8(_model(), lambda _m: {"v": 1.0}, 0.0)


def test_module_ratios_of_an_earlier_call_are_reused_not_measured_again():
    m = _model()
    calls = []

    def score(model) -> dict:
        calls.append(1)
        return _score_hurt_by("item_mlp.0")(model)

    _, first = guarded_int8(m, score, 0.01)
    n_modules = len(first["quality_guard"]["module_ratios"])
    assert len(calls) == n_modules + 2  # the float model, each module alone, the whole
    calls.clear()
    _, rec = guarded_int8(m, score, 0.01, ["item_linear"], first["quality_guard"]["module_ratios"])
    assert len(calls) == 2 and rec["quality_guard"]["kept_fp32"] == {"item_mlp.0": "quality"}
