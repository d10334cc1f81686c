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
