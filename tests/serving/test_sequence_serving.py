"""A sasrec (and gru) student through everything a student goes through: compress (pruned
feed-forward, int8 Linears, what stays fp32 recorded), the saved int8 model, Retriever and the
server answering a new user from an ordered history."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

from pipelines.compression.compress import CompressConfig
from pipelines.compression.compress import run as compress
from pipelines.serving.app import create_app
from pipelines.serving.config import ServeConfig
from student.compress import Int8Linear, load_quantized, quantize_int8, structured_prune
from student.model import TwoTower


@pytest.fixture(scope="module")
def sasrec_run(sasrec_run_dir):
    return sasrec_run_dir


def _dataset(run) -> str:
    return json.loads((run / "student_distilled" / "metrics.json").read_text())["config"]["dataset"]


def test_compress_prunes_the_feed_forward_and_quantizes_the_encoder(tmp_path, sasrec_run):
    res = compress(CompressConfig(model=str(sasrec_run / "student_distilled" / "model"),
                                  dataset=_dataset(sasrec_run), out=str(tmp_path / "c"), finetune_epochs=1,
                                  magnitude_sparsity=0, int8="both", threads=1))  # fmt: skip
    prune = res["steps"]["structured_prune"]["record"]
    assert prune["kept_units"]["user_seq.blocks.0.ff1"] == {"before": 128, "after": 64}
    assert prune["id_dim"]["after"] == prune["id_dim"]["before"] and "kept" in prune["id_dim"]
    int8 = res["steps"]["int8"]["record"]
    assert {"user_seq.blocks.1.attn.q", "user_seq.blocks.1.ff2"} <= set(int8["int8_linear"])
    assert {"user_seq.positions", "user_seq.norm.weight"} <= set(int8["fp32_parameters"])
    folder = json.loads((tmp_path / "c" / "int8" / "compression.json").read_text())
    assert folder["fp32_parameters"] == int8["fp32_parameters"]
    # the saved int8 student scores as the same quantization in memory
    pruned = TwoTower.from_pretrained(tmp_path / "c" / "pruned")
    assert pruned.config.seq_ffn == 64
    in_memory, _ = quantize_int8(pruned)
    loaded = load_quantized(tmp_path / "c" / "int8")
    assert isinstance(loaded.user_seq.blocks[0].attn.q, Int8Linear)
    hist = torch.tensor([[3, 9, 27, 81, 90, 90], [5, 6, 7, 8, 9, 10]])
    users = torch.tensor([1, 2])
    for m in (in_memory, loaded):
        m.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode_users(users, hist), in_memory.encode_users(users, hist)
        )
        torch.testing.assert_close(
            loaded.encode_users(None, hist), in_memory.encode_users(None, hist)
        )
        items = torch.arange(90)
        torch.testing.assert_close(loaded.encode_items(items), in_memory.encode_items(items))


def test_gru_keeps_its_weights_fp32_under_int8():
    from student.model import TwoTowerConfig

    config = TwoTowerConfig(n_users=4, n_items=10, history_len=5, id_dim=8, out_dim=4,
                            user_hidden=(8,), item_hidden=(8,), user_encoder="gru")  # fmt: skip
    model = TwoTower(config).eval()
    q, rec = quantize_int8(model)
    assert any(n.startswith("user_seq.gru.") for n in rec["fp32_parameters"])
    pruned, prec = structured_prune(model, 0.5)
    assert "user_seq" in prec["kept_modules"] and pruned.config.user_hidden == (4,)
    hist = torch.tensor([[1, 2, 3, 10, 10]])
    assert torch.allclose(q.encode_users(None, hist), model.encode_users(None, hist), atol=0.05)


def test_server_and_retriever_answer_a_new_user_in_order(sasrec_run):
    app = create_app(ServeConfig(run=str(sasrec_run)))
    with TestClient(app, client=("127.0.0.1", 40000)) as client:
        engine = app.state.serving.engine
        assert engine.retriever.model.config.user_encoder == "sasrec"
        rows = [5, 17, 42, 8]
        hist = [str(engine.item_ids[j]) for j in rows]
        r = client.post("/recommend", json={"history": hist, "k": 6})
        assert r.status_code == 200, r.text
        want_ids, want_scores = engine.retriever.retrieve_histories([rows], 6, return_scores=True)
        got = [it["id"] for it in r.json()["items"]]
        assert got == list(want_ids[0])
        np.testing.assert_allclose([it["score"] for it in r.json()["items"]], want_scores[0],
                                   rtol=1e-5)  # fmt: skip
        _, back = engine.retriever.retrieve_histories([rows[::-1]], 6, return_scores=True)
        assert not np.allclose(back[0], want_scores[0])  # the order reaches the user vector
        known = client.post("/recommend", json={"user_id": str(engine.user_ids[3]), "k": 5})
        assert known.status_code == 200 and known.json()["source"] == "model"
        vectors = engine.retriever.precompute_users()
        with torch.no_grad():
            want = engine.retriever.model.encode_users(
                torch.tensor([3]), torch.as_tensor(engine.retriever.histories[[3]])
            )
        np.testing.assert_allclose(vectors[3], want[0].numpy(), rtol=1e-5, atol=1e-6)


def test_benchmark_reports_the_user_encoding_time(tmp_path, sasrec_run):
    from pipelines.evaluation.benchmark import BenchmarkConfig
    from pipelines.evaluation.benchmark import run as benchmark

    rep = benchmark(BenchmarkConfig(dataset=_dataset(sasrec_run), n_single=3, bootstrap=10,
                                    student_hard=str(sasrec_run / "student_distilled" / "model"),
                                    student_int8=str(sasrec_run / "compressed" / "int8"),
                                    out=str(tmp_path / "b")))  # fmt: skip
    for name in ("student_hard", "student_int8"):
        assert rep["models"][name]["user_encode_ms_batch1"] > 0
    assert "user_encode_ms_batch1" not in rep["models"]["popularity"]
