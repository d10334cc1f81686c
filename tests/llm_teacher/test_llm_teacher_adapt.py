"""LoRA adaptation: pure losses on hand-made tensors, tiny-model tuning, saved adapters reload."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from llm_teacher.adapt import (
    META_FILE,
    CausalLoRAConfig,
    EmbeddingLoRAConfig,
    adapt_causal_lm,
    adapt_embedding_model,
    info_nce_loss,
    yes_no_loss,
)
from llm_teacher.causal_lm import CausalLMScorer
from llm_teacher.embedding import (
    EmbeddingTeacher,
    EmbeddingTeacherConfig,
    load_sentence_transformer,
)
from llm_teacher.loading import load_causal_lm
from llm_teacher.prompts import load_template

torch.set_num_threads(1)

TEMPLATE = load_template("yes_no_v1")
PREFIX_A = TEMPLATE.render_prefix(
    [{"title": "Dark City", "year": 1995, "genres": ["Thriller"], "rating": 5}], {"age": 30}
)
PREFIX_B = TEMPLATE.render_prefix([{"title": "Love Story", "year": 1990, "genres": ["Romance"]}])
LIKED = {"title": "Night War", "year": 1999, "genres": ["Action", "Thriller"]}
DISLIKED = {"title": "Love", "year": 2001, "genres": ["Romance", "Musical"]}
EXAMPLES = [
    (PREFIX_A, LIKED, 1),
    (PREFIX_A, DISLIKED, 0),
    (PREFIX_B, DISLIKED, 1),
    (PREFIX_B, LIKED, 0),
]


def test_yes_no_loss_matches_hand_computation():
    logits = torch.tensor([[0.0, 2.0, -1.0, 0.5], [1.0, -1.0, 3.0, 0.0]])  # yes=2, no=1
    labels = torch.tensor([1, 0])
    expected = (
        -(
            math.log(math.exp(-1) / (math.exp(-1) + math.exp(2)))
            + math.log(math.exp(-1) / (math.exp(-1) + math.exp(3)))
        )
        / 2
    )
    assert yes_no_loss(logits, labels, yes_id=2, no_id=1).item() == pytest.approx(
        expected, rel=1e-6
    )
    with pytest.raises(ValueError, match=r"labels must be 0 or 1"):
        yes_no_loss(logits, torch.tensor([1, 2]), yes_id=2, no_id=1)
    with pytest.raises(ValueError, match=r"must be \[B\]"):
        yes_no_loss(logits, torch.tensor([1]), yes_id=2, no_id=1)


def test_info_nce_loss_matches_hand_computation_and_masks():
    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(3, 5, generator=g), torch.randn(4, 5, generator=g)
    sims = torch.nn.functional.normalize(q, dim=-1) @ torch.nn.functional.normalize(d, dim=-1).T
    tau = 0.1
    expected = -torch.stack([torch.log_softmax(sims[i] / tau, 0)[i] for i in range(3)]).mean()
    assert info_nce_loss(q, d, tau).item() == pytest.approx(expected.item(), rel=1e-5)
    exclude = torch.zeros(3, 4, dtype=torch.bool)
    exclude[0, 3] = True
    row0 = -torch.log_softmax(sims[0, :3] / tau, 0)[0]
    rest = -torch.stack([torch.log_softmax(sims[i] / tau, 0)[i] for i in (1, 2)])
    masked = (row0 + rest.sum()) / 3
    assert info_nce_loss(q, d, tau, exclude).item() == pytest.approx(masked.item(), rel=1e-5)
    with pytest.raises(ValueError, match=r"temperature is 0"):
        info_nce_loss(q, d, 0)
    with pytest.raises(ValueError, match=r"own positive"):
        info_nce_loss(q, d, tau, torch.eye(3, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"docs has 2 rows but needs >= 3"):
        info_nce_loss(q, d[:2], tau)


@pytest.mark.parametrize("cls", [CausalLoRAConfig, EmbeddingLoRAConfig])
def test_lora_configs_round_trip_and_validate(cls):
    config = cls(r=4, max_steps=3, target_modules=["a", "b"])
    assert cls.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=rf"{cls.__name__}.r is 0; expected an integer >= 1"):
        cls(r=0)
    with pytest.raises(ValueError, match=rf"{cls.__name__}.dropout is 1.0"):
        cls(dropout=1.0)
    with pytest.raises(ValueError, match=r"target_modules is \[\]"):
        cls(target_modules=[])


def test_adapt_causal_lm_saves_adapter_that_changes_scores(tiny_llama_dir, tmp_path):
    model, tokenizer = load_causal_lm(tiny_llama_dir)
    scorer = CausalLMScorer(model, tokenizer)
    before = scorer.score(PREFIX_A, [LIKED, DISLIKED])
    config = CausalLoRAConfig(
        r=4,
        lr=1e-2,
        dropout=0.0,
        batch_size=2,
        epochs=5,
        max_steps=8,
        seed=1,
        target_modules=["q_proj", "v_proj", "o_proj"],
    )
    out = tmp_path / "adapter"
    metrics = adapt_causal_lm(model, tokenizer, EXAMPLES, config, out)

    assert metrics["steps"] == 8 and len(metrics["loss_curve"]) == 8
    assert all(math.isfinite(x) for x in metrics["loss_curve"])
    assert np.mean(metrics["loss_curve"][-2:]) < np.mean(metrics["loss_curve"][:2])  # it learns
    assert {"adapter_config.json", "adapter_model.safetensors", META_FILE} <= {
        p.name for p in out.iterdir()
    }
    assert not list(tmp_path.glob(".adapter.tmp-*"))  # temp folder moved into place
    meta = json.loads((out / META_FILE).read_text())
    assert meta["metrics"]["loss_curve"] == metrics["loss_curve"]
    assert meta["config"] == config.to_dict() and meta["template_hash"] == TEMPLATE.template_hash

    # the model passed in is untouched
    np.testing.assert_allclose(scorer.score(PREFIX_A, [LIKED, DISLIKED]), before, atol=1e-6)
    tuned, _ = load_causal_lm(tiny_llama_dir, adapter=out)
    after = CausalLMScorer(tuned, tokenizer).score(PREFIX_A, [LIKED, DISLIKED])
    assert np.max(np.abs(after - before)) > 1e-2

    def train_loss(s: CausalLMScorer) -> float:  # yes/no cross-entropy over EXAMPLES
        logits = np.array([s.score(p, [c])[0] for p, c, _ in EXAMPLES], dtype=np.float64)
        signs = np.array([2 * y - 1 for _, _, y in EXAMPLES])
        return float(np.mean(np.logaddexp(0.0, -signs * logits)))

    # the reloaded adapter fits the examples (the model passed in is unchanged)
    assert train_loss(CausalLMScorer(tuned, tokenizer)) < 0.5 * train_loss(scorer)
    unmerged, _ = load_causal_lm(tiny_llama_dir, adapter=out, merge_adapter=False)
    np.testing.assert_allclose(
        CausalLMScorer(unmerged, tokenizer).score(PREFIX_A, [LIKED, DISLIKED]), after, atol=1e-4
    )

    # same seed, same curve; bad input names the row
    again = adapt_causal_lm(model, tokenizer, EXAMPLES, config, tmp_path / "again")
    np.testing.assert_allclose(again["loss_curve"], metrics["loss_curve"], rtol=1e-5)
    with pytest.raises(ValueError, match=r"examples\[1\]: label is 2"):
        adapt_causal_lm(model, tokenizer, [EXAMPLES[0], (PREFIX_A, LIKED, 2)], config, out)
    with pytest.raises(FileNotFoundError, match="no adapter_config.json"):
        load_causal_lm(tiny_llama_dir, adapter=tmp_path)


PAIRS = [
    ("user likes dark thriller night", "dark city thriller"),
    ("user likes love romance", "a love story"),
    ("user likes space war", "space war"),
    ("user likes children animation", "children game"),
]


@pytest.mark.parametrize("full", [False, True])
def test_adapt_embedding_model_saves_and_reloads(tiny_st_dir, tmp_path, full):
    base = load_sentence_transformer(tiny_st_dir)
    teacher = EmbeddingTeacher(EmbeddingTeacherConfig(model=str(tiny_st_dir)), model=base)
    texts = [t for pair in PAIRS for t in pair]
    before = teacher.encode(texts, show_progress=False)
    config = EmbeddingLoRAConfig(
        r=4,
        lr=5e-2 if not full else 1e-2,
        batch_size=4,
        epochs=3,
        seed=0,
        full_finetune=full,
        temperature=0.1,
    )
    out = tmp_path / "emb"
    metrics = adapt_embedding_model(base, PAIRS, config, out, negatives=[p[1] for p in PAIRS[::-1]])
    assert metrics["steps"] == 3 and all(math.isfinite(x) for x in metrics["loss_curve"])
    assert metrics["loss_last"] < metrics["loss_first"]
    assert (out / META_FILE).is_file()
    np.testing.assert_allclose(teacher.encode(texts, show_progress=False), before, atol=1e-6)

    if full:
        reloaded = EmbeddingTeacher(EmbeddingTeacherConfig(model=str(out)))
    else:
        assert (out / "adapter_config.json").is_file()
        reloaded = EmbeddingTeacher(
            EmbeddingTeacherConfig(model=str(tiny_st_dir), adapter=str(out))
        )
    after = reloaded.encode(texts, show_progress=False)
    np.testing.assert_allclose(np.linalg.norm(after, axis=1), 1.0, atol=1e-5)
    assert np.max(np.abs(after - before)) > 1e-3

    def eval_loss(emb: np.ndarray) -> float:  # in-batch InfoNCE of users vs their items
        users, items = torch.from_numpy(emb[0::2]), torch.from_numpy(emb[1::2])
        return info_nce_loss(users, items, config.temperature).item()

    assert eval_loss(after) < eval_loss(before)  # the reloaded model learnt the pairs


def test_non_finite_loss_stops_training_with_advice():
    import pytest
    import torch

    from llm_teacher.adapt.loop import _step

    w = torch.nn.Parameter(torch.ones(2))
    opt = torch.optim.SGD([w], lr=0.1)
    with pytest.raises(FloatingPointError, match="loss is nan at step 0; lower lr"):
        _step((w * float("nan")).sum(), opt, [w], [], None, "loss is {} at step 0; lower lr")
    assert torch.equal(w.detach(), torch.ones(2))  # no update was applied
