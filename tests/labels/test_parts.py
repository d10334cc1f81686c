"""The teacher-part registry: every registered kind builds from the label job's config and
does what it declares (tiny offline models, as the other label tests)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.data import load_dataset, training_split
from pipelines.labels.config import TEACHERS, GenerateLabelsConfig
from pipelines.labels.parts import LLM_PARTS, PARTS, Part, build_parts

DATASET = "synthetic:users=30,items=40,per_user=10,seed=3"
# the tiny model fixture each LLM part is built with (a new LLM part adds its own here)
TINY_MODEL = {"embedding": "tiny_st_dir", "causal_lm": "tiny_llama_dir"}


@pytest.fixture(scope="module")
def data_split():
    data = load_dataset(DATASET)
    return data, training_split(data, "random", 0)


def config_for(name: str, request) -> GenerateLabelsConfig:
    teacher = name if PARTS[name].role == "llm" else "embedding"
    model = request.getfixturevalue(TINY_MODEL[teacher])
    return GenerateLabelsConfig(
        dataset=DATASET, teacher=teacher, model=str(model), threads=1, transition="on",
        recency="on",
    )  # fmt: skip


def test_teacher_choices_are_the_registered_llm_parts():
    assert TEACHERS == LLM_PARTS and LLM_PARTS[:2] == ("embedding", "causal_lm")
    # the signals, built in this order
    assert list(PARTS)[-4:] == ["collab", "popularity", "recency", "transition"]
    assert set(LLM_PARTS) <= set(TINY_MODEL), "give each LLM part a tiny model in TINY_MODEL"


@pytest.mark.parametrize("name", list(PARTS))
def test_every_registered_part_builds_from_its_config(name, request, data_split):
    data, split = data_split
    cls = PARTS[name]
    c = config_for(name, request)
    assert cls.key == name and cls.role in ("llm", "signal") and cls.wanted(c)
    assert cls.cold_items in ("native", "content_map")
    part = cls.from_config(c, data, split)
    assert isinstance(part, cls) and isinstance(part, Part)
    assert isinstance(part.name, str) and isinstance(part.cold_note, str)
    assert isinstance(part.info(), dict)
    users = np.array([0, 0, 1, 2, 2, 2])
    items = np.array([0, 5, 1, 2, 3, 39])
    s = part.score(users, items)
    assert s.shape == (6,) and np.isfinite(s).all()
    if cls.full_catalogue:
        m = part.score_matrix(np.array([0, 1, 2]))
        assert m.shape == (3, data.n_items)
        np.testing.assert_allclose(m[[0, 0, 1, 2, 2, 2], items], s, rtol=1e-5, atol=1e-5)
    else:
        with pytest.raises(NotImplementedError):
            part.score_matrix(np.array([0]))
    emb = part.item_embeddings()
    assert emb is None or emb.shape[0] == data.n_items


def test_build_parts_puts_the_llm_part_first_then_the_wanted_signals(data_split, tiny_st_dir):
    data, split = data_split
    c = GenerateLabelsConfig(dataset=DATASET, model=str(tiny_st_dir), popularity=False)
    assert [p.key for p in build_parts(c, data, split)] == ["embedding", "collab"]
