"""Prompt templates: parsing, hashing, rendering, history truncation, yes/no token ids."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from llm_teacher.prompts import (
    TEMPLATES_DIR,
    PromptTemplate,
    load_template,
    resolve_yes_no_ids,
)

# MOST RECENT FIRST
HISTORY = [
    {"title": f"Movie {name}", "year": 1990 + i, "genres": ["Drama"], "rating": float(i % 5 + 1)}
    for i, name in enumerate(["one", "two", "three", "four", "five", "six", "seven", "eight"])
]


def _bpe_tokenizer(corpus: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE (GPT-2 style: words after a space carry the space) trained on corpus."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


@pytest.fixture(scope="module")
def tiny_tokenizer(tiny_llama_dir):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


def test_template_hash_is_sha256_of_text_and_changes_with_text(tmp_path):
    path = TEMPLATES_DIR / "yes_no_v1.txt"
    template = load_template("yes_no_v1")
    assert template.id == "yes_no_v1" and (template.name, template.version) == ("yes_no", 1)
    assert template.template_hash == hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_template(path).template_hash == template.template_hash
    assert template.info()["template_hash"] == template.template_hash

    changed = tmp_path / "yes_no_v2.txt"
    changed.write_text(path.read_text().replace("Will the user like", "Would the user enjoy"))
    other = load_template(changed)
    assert other.template_hash != template.template_hash
    assert "Would the user enjoy" in other.render_prefix([])


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "Candidate movie: {candidate}",
            "Candidate movie:",
            r"section 'suffix' .* must use \['candidate'\]",
        ),
        ("{title} ({year})", "{title} ({director})", r"section 'item' has placeholders .*director"),
        ("=== rating ===", "=== ratings ===", r"unknown section 'ratings'"),
        ("version: 1", "version: one", r"'version' is 'one'; expected an integer"),
        ("no: No", "no: Yes", r"must be two different"),
    ],
)
def test_bad_template_errors_name_the_problem(tmp_path, old, new, message):
    text = (TEMPLATES_DIR / "yes_no_v1.txt").read_text()
    assert old in text
    bad = tmp_path / "bad.txt"
    bad.write_text(text.replace(old, new))
    with pytest.raises(ValueError, match=message):
        load_template(bad)
    with pytest.raises(ValueError, match=r"template 'nope_v9' not found.*yes_no_v1"):
        load_template("nope_v9")


def test_render_prefix_lists_oldest_first_and_candidate_text():
    template = load_template("yes_no_v1")
    prefix = template.render_prefix(
        HISTORY[:3], {"age": 30, "gender": None, "occupation": "writer"}
    )
    assert prefix.endswith("\n")
    assert "age: 30, occupation: writer" in prefix  # None features are left out
    # listed oldest first, so the most recent item sits next to the candidate
    assert prefix.index("Movie three") < prefix.index("Movie two") < prefix.index("Movie one")
    assert "Movie one (1990), genres: Drama, rated 1/5" in prefix
    assert "rated" not in template.render_prefix([{"title": "Z", "rating": None}])
    # year already in a MovieLens-style title is not repeated; missing fields have defaults
    assert template.render_candidate({"title": "Toy Story (1995)", "year": 1995, "genres": []}) == (
        "Toy Story (1995), genres: unknown"
    )
    assert template.render_candidate({"title": "Heat"}) == "Heat (year unknown), genres: unknown"
    # values as they come out of a DataFrame: float year, NaN year/rating, numpy genres
    assert (
        template.render_candidate(
            {"title": "Heat (1995)", "year": 1995.0, "genres": np.array(["Crime", "Thriller"])}
        )
        == "Heat (1995), genres: Crime, Thriller"
    )
    assert "year unknown" in template.render_candidate({"title": "Heat", "year": float("nan")})
    assert "rated" not in template.render_prefix([{"title": "Z", "rating": np.nan}])
    with pytest.raises(ValueError, match=r"candidate: 'year' is 'soon'"):
        template.render_candidate({"title": "Heat", "year": "soon"})
    with pytest.raises(ValueError, match=r"history\[1\]: 'title' is None"):
        template.render_prefix([HISTORY[0], {"year": 1990}])
    with pytest.raises(ValueError, match=r"history\[0\]: 'rating' is 'great'"):
        template.render_prefix([{"title": "A", "rating": "great"}])


def test_empty_history_has_documented_rendering():
    template = load_template("yes_no_v1")
    prefix = template.render_prefix([], None)
    assert "nothing yet (new user)" in prefix and "User: unknown" in prefix


def test_history_truncation_keeps_most_recent(tiny_tokenizer):
    template = load_template("yes_no_v1")
    full = template.render_prefix(HISTORY, None)
    line = "- Movie one (1990), genres: Drama, rated 1/5"
    assert line in full  # every line of HISTORY has this many tokens
    line_tokens = len(tiny_tokenizer(line, add_special_tokens=False)["input_ids"])
    budget = 3 * line_tokens + 2  # room for 3 items, not 4
    prefix = template.render_prefix(
        HISTORY, None, tokenizer=tiny_tokenizer, max_history_tokens=budget
    )
    kept = [h["title"] for h in HISTORY if h["title"] + " (" in prefix]
    assert kept == ["Movie one", "Movie two", "Movie three"]
    block = prefix[prefix.index("- Movie three") : prefix.rindex("\n")]
    assert len(tiny_tokenizer(block, add_special_tokens=False)["input_ids"]) <= budget
    assert (
        template.render_prefix(HISTORY, None, tokenizer=tiny_tokenizer, max_history_tokens=10_000)
        == full
    )
    with pytest.raises(ValueError, match=r"max_history_tokens=2 cannot hold"):
        template.render_prefix(HISTORY, None, tokenizer=tiny_tokenizer, max_history_tokens=2)
    with pytest.raises(ValueError, match="no tokenizer"):
        template.render_prefix(HISTORY, None, max_history_tokens=50)


def test_yes_no_ids_word_level(tiny_tokenizer):
    yes, no = resolve_yes_no_ids(tiny_tokenizer, "yes_no_v1")
    assert tiny_tokenizer.convert_ids_to_tokens([yes, no]) == ["Yes", "No"]


def test_yes_no_ids_prefer_leading_space_after_colon():
    template = load_template("yes_no_v1")
    corpus = [template.render_suffix("A") + " Yes", template.render_suffix("B") + " No"] * 50
    tokenizer = _bpe_tokenizer(corpus, vocab_size=400)
    yes, no = resolve_yes_no_ids(tokenizer, template)
    assert tokenizer.convert_ids_to_tokens([yes, no]) == ["ĠYes", "ĠNo"]


def test_yes_no_ids_errors(tiny_llama_dir):
    template = load_template("yes_no_v1")
    bytes_only = _bpe_tokenizer(["a b c"], vocab_size=260)  # no merges: "Yes" is 3 tokens
    with pytest.raises(ValueError, match=r"answer word 'Yes' .* is not a single token"):
        resolve_yes_no_ids(bytes_only, template)

    vocab = {"[UNK]": 0, "Answer": 1, ":": 2}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    no_words = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    with pytest.raises(ValueError, match=r"unknown token 0; the tokenizer's vocabulary lacks them"):
        resolve_yes_no_ids(no_words, template)


@pytest.mark.parametrize("path", sorted(TEMPLATES_DIR.glob("*.txt")), ids=lambda p: p.stem)
def test_packaged_templates_parse_and_are_named_after_their_file(path, tiny_tokenizer):
    template = load_template(path.stem)
    assert template.id == path.stem
    prompt = template.render_prompt(HISTORY[:2], {"age": 3}, {"title": "X", "year": 1999})
    assert prompt.index("Movie two") < prompt.index("Movie one") < prompt.index("X (1999)")
    assert resolve_yes_no_ids(tiny_tokenizer, template)


def test_chatml_template_ends_with_assistant_turn():
    template = load_template("yes_no_chatml_v1")
    assert template.render_suffix("X").endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert template.render_prefix([]).startswith("<|im_start|>system\n")


def test_template_from_text_round_trip():
    text = (TEMPLATES_DIR / "yes_no_v1.txt").read_text()
    template = PromptTemplate.from_text(text)
    assert template.sections["prefix"].endswith("{history}\n")  # trailing empty line = "\n"
    assert template.sections["suffix"].endswith("Answer:")
    assert template.sections["item"] == "{title} ({year}), genres: {genres}"
