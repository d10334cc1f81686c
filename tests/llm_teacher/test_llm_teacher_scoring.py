"""Causal LM teacher: loading, yes/no ids, naive vs shared-prefix scoring, NaN detection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm_teacher.causal_lm import CausalLMScorer, CausalLMScorerConfig, NonFiniteScoreError
from llm_teacher.loading import load_causal_lm
from llm_teacher.prompts import encode_prefix, encode_suffix, load_template

torch.set_num_threads(1)

HISTORY = [
    {"title": "Star River", "year": 1999, "genres": ["Sci-Fi", "Drama"], "rating": 5.0},
    {"title": "Dark City", "year": 1995, "genres": ["Thriller"], "rating": 2.0},
    {"title": "The Lost King", "year": 2001, "genres": ["Adventure"], "rating": None},
    {"title": "Night of the Ghost", "year": 1990, "genres": ["Horror", "Comedy"], "rating": 3.5},
]
USER = {"age": 24, "gender": "F", "occupation": "student"}
# Ragged: suffix lengths differ a lot within one batch.
CANDIDATES = [
    {"title": "War", "year": 2010, "genres": ["Action"]},
    {
        "title": "The Last Story of the Queen and the King",
        "year": 1999,
        "genres": ["Drama", "Romance", "Fantasy", "Musical", "Adventure"],
    },
    {"title": "Love", "year": None, "genres": []},
    {"title": "Space Game", "year": 2024, "genres": ["Sci-Fi", "Children"]},
    {"title": "A Man of the City", "year": 1995, "genres": ["Crime", "Drama", "Thriller"]},
    {"title": "First Light", "year": 2001, "genres": ["Documentary"]},
    {"title": "Return of the Dark Woman", "year": 1990, "genres": ["Horror"]},
]


@pytest.fixture(scope="module")
def tiny(tiny_llama_dir):
    return load_causal_lm(tiny_llama_dir)


def _reference(model, ids: list[int], yes: int, no: int) -> float:
    """Oracle: one unpadded prompt, no cache."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1].double()
    logp = torch.log_softmax(logits, -1)
    return float(logp[yes] - logp[no])


@pytest.mark.parametrize("batch_size", [1, 3, 4, 16])
def test_naive_and_shared_match_unpadded_oracle(tiny, batch_size):
    model, tokenizer = tiny
    scorer = CausalLMScorer(model, tokenizer, CausalLMScorerConfig(batch_size=batch_size))
    prefix = scorer.render_prefix(HISTORY, USER)
    lengths = {len(s) for s in scorer.suffix_ids(CANDIDATES)}
    assert len(lengths) >= 4  # the batch really is ragged

    shared = scorer.score(prefix, CANDIDATES, shared_prefix=True)
    naive = scorer.score(prefix, CANDIDATES, shared_prefix=False)
    p_ids = encode_prefix(tokenizer, prefix)
    oracle = np.array(
        [
            _reference(model, p_ids + s, scorer.yes_id, scorer.no_id)
            for s in scorer.suffix_ids(CANDIDATES)
        ]
    )
    assert shared.dtype == np.float32 and shared.shape == (len(CANDIDATES),)
    assert np.max(np.abs(naive - shared)) <= 1e-4
    assert np.max(np.abs(naive - oracle)) <= 1e-4
    assert np.std(oracle) > 1e-2  # scores differ across candidates: the check has teeth


def test_shared_cache_does_not_leak_between_batches_or_users(tiny):
    model, tokenizer = tiny
    scorer = CausalLMScorer(model, tokenizer, CausalLMScorerConfig(batch_size=2))
    prefix_a = scorer.render_prefix(HISTORY, USER)
    prefix_b = scorer.render_prefix(HISTORY[:1], None)
    first = scorer.score(prefix_a, CANDIDATES)
    scorer.score(prefix_b, CANDIDATES)
    again = scorer.score(prefix_a, CANDIDATES)
    np.testing.assert_allclose(first, again, atol=1e-6)
    # each candidate alone (batch of one) gives the same score as inside ragged batches
    alone = np.array([scorer.score(prefix_a, [c])[0] for c in CANDIDATES])
    np.testing.assert_allclose(first, alone, atol=1e-4)


def test_prefix_text_and_ids_are_interchangeable_and_prefix_matters(tiny):
    model, tokenizer = tiny
    scorer = CausalLMScorer(model, tokenizer)
    prefix = scorer.render_prefix(HISTORY, USER)
    ids = encode_prefix(tokenizer, prefix)
    assert ids[0] == tokenizer.bos_token_id  # BOS kept once, at the very start
    np.testing.assert_array_equal(scorer.score(prefix, CANDIDATES), scorer.score(ids, CANDIDATES))
    other = scorer.score(scorer.render_prefix(HISTORY[2:], None), CANDIDATES)
    assert np.max(np.abs(other - scorer.score(ids, CANDIDATES))) > 1e-3


def test_prompt_ids_are_prefix_plus_suffix(tiny):
    _, tokenizer = tiny
    template = load_template("yes_no_v1")
    prefix = template.render_prefix(HISTORY, USER)
    suffix = template.render_suffix(CANDIDATES[1])
    full = template.render_prompt(HISTORY, USER, CANDIDATES[1])
    assert full == prefix + suffix and full.startswith(prefix)
    p_ids, s_ids = encode_prefix(tokenizer, prefix), encode_suffix(tokenizer, [suffix])[0]
    assert tokenizer(full)["input_ids"] == p_ids + s_ids


def test_score_users_matches_score_and_names_user_on_nan(tiny_llama_dir):
    model, tokenizer = load_causal_lm(tiny_llama_dir)
    scorer = CausalLMScorer(model, tokenizer, CausalLMScorerConfig(batch_size=3))
    users = [
        (scorer.render_prefix(HISTORY, USER), CANDIDATES),
        (scorer.render_prefix([], None), CANDIDATES[:2]),
    ]
    out = scorer.score_users(users, show_progress=False)
    assert [len(o) for o in out] == [len(CANDIDATES), 2]
    np.testing.assert_allclose(out[1], scorer.score(users[1][0], CANDIDATES[:2]), atol=1e-6)

    love = tokenizer.convert_tokens_to_ids("Love")  # a word only candidate 2 contains
    assert love != tokenizer.unk_token_id
    with torch.no_grad():  # poison that candidate's path: NaN in the word's embedding
        model.get_input_embeddings().weight[love] = float("nan")
    for shared in (True, False):
        scorer.config.shared_prefix = shared
        with pytest.raises(NonFiniteScoreError, match=r"user 'u42', candidate 2 \('Love'\)"):
            scorer.score_users([users[0]], user_ids=["u42"], show_progress=False)


def test_scorer_config_validation_and_round_trip():
    config = CausalLMScorerConfig(batch_size=4, shared_prefix=False, template="yes_no_v1")
    again = CausalLMScorerConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError, match=r"batch_size is 0; expected an integer >= 1"):
        CausalLMScorerConfig(batch_size=0)
    with pytest.raises(ValueError, match=r"device is 'gpu'"):
        CausalLMScorerConfig(device="gpu")
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['batchsize'\]"):
        CausalLMScorerConfig.from_dict({"batchsize": 3})


def test_load_unknown_path_names_path_and_forms(tmp_path):
    for bad in [tmp_path / "nope", "./missing/model", str(tmp_path / "x.gguf")]:
        with pytest.raises(FileNotFoundError) as err:
            load_causal_lm(bad)
        message = str(err.value)
        assert str(bad) in message
        assert "smollm2" in message and "config.json" in message and "hub id" in message
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_causal_lm(tmp_path / "empty")


@pytest.mark.slow
def test_packaged_smollm2_naive_equals_shared():
    model, tokenizer = load_causal_lm("smollm2")  # converts the GGUF once (about 20 s)
    scorer = CausalLMScorer(model, tokenizer, CausalLMScorerConfig(batch_size=2))
    assert tokenizer.convert_ids_to_tokens([scorer.yes_id, scorer.no_id]) == ["ĠYes", "ĠNo"]
    prefix = scorer.render_prefix(HISTORY, USER)
    shared = scorer.score(prefix, CANDIDATES[:3], shared_prefix=True)
    naive = scorer.score(prefix, CANDIDATES[:3], shared_prefix=False)
    assert np.max(np.abs(naive - shared)) <= 1e-4
    chat = CausalLMScorer(model, tokenizer, CausalLMScorerConfig(template="yes_no_chatml_v1"))
    assert tokenizer.convert_ids_to_tokens([chat.yes_id, chat.no_id]) == ["Yes", "No"]
    chat_prefix = chat.render_prefix(HISTORY, USER)
    assert encode_prefix(tokenizer, chat_prefix)[0] == tokenizer.convert_tokens_to_ids(
        "<|im_start|>"
    )
    np.testing.assert_allclose(
        chat.score(chat_prefix, CANDIDATES[:3], shared_prefix=True),
        chat.score(chat_prefix, CANDIDATES[:3], shared_prefix=False),
        atol=1e-4,
    )
