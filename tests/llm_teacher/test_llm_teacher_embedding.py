"""Embedding teacher: loading, unique-text encoding, unit norm, cosine / temperature."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm_teacher.embedding import EmbeddingTeacher, EmbeddingTeacherConfig

torch.set_num_threads(1)

TEXTS = ["the dark city", "a love story", "the dark city", "space war", "a love story"]


@pytest.fixture(scope="module")
def teacher(tiny_st_dir):
    return EmbeddingTeacher(EmbeddingTeacherConfig(model=str(tiny_st_dir), batch_size=2))


def test_encode_unit_norm_float32_and_duplicates_encoded_once(teacher, monkeypatch):
    seen: list[list[str]] = []
    original = teacher.model.encode

    def spy(texts, **kwargs):
        seen.append(list(texts))
        return original(texts, **kwargs)

    monkeypatch.setattr(teacher.model, "encode", spy)
    emb = teacher.encode(TEXTS, show_progress=False)
    assert emb.shape == (len(TEXTS), teacher.dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert sorted(seen[0]) == sorted(set(TEXTS))  # each unique text once
    np.testing.assert_array_equal(emb[0], emb[2])
    assert not np.allclose(emb[0], emb[1])
    # the same as encoding one by one
    single = np.stack([teacher.encode([t], show_progress=False)[0] for t in TEXTS])
    np.testing.assert_allclose(emb, single, atol=1e-5)


def test_score_is_cosine_over_temperature(teacher):
    emb = teacher.encode(TEXTS[:2], show_progress=False)
    users, items = emb[[0, 1]] * 3.0, emb[[1, 1]]  # scale must not matter (cosine)
    expected = np.array([emb[0] @ emb[1], 1.0]) / teacher.config.temperature
    np.testing.assert_allclose(teacher.score(users, items), expected, rtol=1e-5)
    matrix = teacher.score_matrix(emb, emb)
    assert matrix.shape == (2, 2)
    np.testing.assert_allclose(np.diag(matrix), 1.0 / teacher.config.temperature, rtol=1e-5)
    with pytest.raises(ValueError, match=r"must have the same shape"):
        teacher.score(emb, emb[:1])


def test_encode_rejects_non_strings(teacher):
    with pytest.raises(ValueError, match=r"texts\[1\] is int 3"):
        teacher.encode(["a", 3], show_progress=False)
    assert teacher.encode([], show_progress=False).shape == (0, teacher.dim)


def test_config_validation_round_trip_and_unknown_source(tmp_path):
    config = EmbeddingTeacherConfig(model="minilm", temperature=0.1, adapter="x/y")
    assert EmbeddingTeacherConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"temperature is 0.0; expected a finite number > 0.0"):
        EmbeddingTeacherConfig(temperature=0.0)
    with pytest.raises(ValueError, match=r"max_seq_length is -1"):
        EmbeddingTeacherConfig(max_seq_length=-1)
    with pytest.raises(FileNotFoundError, match=r"nope.*'minilm'.*hub id"):
        EmbeddingTeacher(EmbeddingTeacherConfig(model=str(tmp_path / "nope")))


@pytest.mark.slow
def test_packaged_minilm_encodes():
    teacher = EmbeddingTeacher(EmbeddingTeacherConfig(model="minilm"))
    emb = teacher.encode(
        ["Toy Story (1995), genres: Animation", "Heat (1995)"], show_progress=False
    )
    assert emb.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_int8_encoder_quantizes_every_linear_and_stays_close_to_fp32(tiny_st_dir, teacher):
    config = EmbeddingTeacherConfig(model=str(tiny_st_dir), batch_size=2, precision="int8")
    q = EmbeddingTeacher(config)
    net = q.model[0].model
    kinds = {type(m) for m in net.modules()}
    assert torch.nn.Linear not in kinds and torch.ao.nn.quantized.dynamic.Linear in kinds
    emb, ref = (t.encode(TEXTS, show_progress=False) for t in (q, teacher))
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cos = np.sum(emb * ref, axis=1)
    assert cos.min() > 0.95 and not np.array_equal(emb, ref)  # close, not the same weights
    assert q.info()["embedding_teacher"]["precision"] == "int8"
    with pytest.raises(ValueError, match=r"precision='int8' needs device 'cpu', got 'cuda'"):
        EmbeddingTeacherConfig(precision="int8", device="cuda")


def test_bf16_encoder_casts_the_transformer_and_returns_float32_close_to_fp32(tiny_st_dir, teacher):
    config = EmbeddingTeacherConfig(model=str(tiny_st_dir), batch_size=2, precision="bf16")
    b = EmbeddingTeacher(config)
    assert {p.dtype for p in b.model[0].model.parameters()} == {torch.bfloat16}
    emb, ref = (t.encode(TEXTS, show_progress=False) for t in (b, teacher))
    assert emb.dtype == np.float32 and emb.shape == ref.shape
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    cos = np.sum(emb * ref, axis=1)
    assert cos.min() > 0.99 and not np.array_equal(emb, ref)  # close, not the same weights
    assert b.info()["embedding_teacher"]["precision"] == "bf16"
    assert EmbeddingTeacherConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_precision_is_checked_and_bf16_is_refused_where_it_cannot_run(teacher, monkeypatch):
    import llm_teacher.embedding as embedding

    with pytest.raises(ValueError, match=r"precision is 'fp16'; allowed values: \['fp32', 'bf16'"):
        EmbeddingTeacherConfig(precision="fp16")
    with pytest.raises(ValueError, match=r"precision='bf16' runs on 'cpu' or 'cuda', not 'mps'"):
        EmbeddingTeacherConfig(precision="bf16", device="mps")
    assert EmbeddingTeacherConfig(precision="bf16", device="cuda:1").device == "cuda:1"
    monkeypatch.setattr(embedding, "bf16_native", lambda device="cpu": False)  # a pre-Ampere GPU
    with pytest.raises(ValueError, match=r"needs a CUDA GPU with bfloat16 .* 'cuda:0' has none"):
        embedding.encoder_to_bf16(teacher.model, "cuda:0")
    assert {p.dtype for p in teacher.model[0].model.parameters()} == {torch.float32}  # untouched
    assert embedding.bf16_native("mps") is False


def test_encoding_into_a_log_file_logs_chunks_and_gives_the_same_embeddings(
    teacher, monkeypatch, caplog
):
    import llm_teacher.embedding as emb_mod

    texts = [*TEXTS, "space war", "the end of the city", "war"]
    monkeypatch.setattr(emb_mod.sys.stderr, "isatty", lambda: True)
    whole = teacher.encode(texts)  # a terminal: one call, tqdm's bar
    monkeypatch.setattr(emb_mod.sys.stderr, "isatty", lambda: False)
    monkeypatch.setattr(emb_mod, "LOG_CHUNK", 2)
    caplog.set_level("INFO", logger="llm_teacher.embedding")
    logged = teacher.encode(texts)
    np.testing.assert_allclose(logged, whole, atol=1e-5)
    lines = [r.getMessage() for r in caplog.records]
    # 5 unique texts (duplicates are encoded once), chunks of 2
    assert lines[0].startswith("encoded 2/5 texts") and lines[-1].startswith("encoded 5/5")
    assert len(lines) == 3
