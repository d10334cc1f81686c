"""Shared pytest fixtures: tiny models built from configs, saved with ``save_pretrained``."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Words the tiny word-level tokenizers know besides those of the packaged prompt templates.
TINY_WORDS = (
    "Yes No the a of and in to movie movies user users star space night day love war city "
    "dark light return king queen ghost river last first lost story man woman world game "
    "Action Adventure Animation Comedy Crime Drama Fantasy Horror Musical Romance Sci-Fi "
    "Thriller Western Children Documentary age gender occupation M F student engineer writer "
    "rated unknown year nothing yet new 0 1 2 3 4 5 6 7 8 9 1990 1995 1999 2001 2010 2024"
).split()


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory):
    """Folder with a tiny random ``LlamaForCausalLM`` (hidden 32, 2 layers) and a word-level
    tokenizer (Whitespace pre-tokenizer, BOS added, knows "Yes"/"No" and the template words)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from llm_teacher.prompts import TEMPLATES_DIR

    pre = pre_tokenizers.Whitespace()
    words: dict[str, None] = {}
    for path in sorted(TEMPLATES_DIR.glob("*.txt")):
        for token, _ in pre.pre_tokenize_str(path.read_text()):
            words.setdefault(token)
    for word in TINY_WORDS:
        for token, _ in pre.pre_tokenize_str(f"{word} {word.capitalize()}"):
            words.setdefault(token)
    specials = ["[UNK]", "[PAD]", "<s>", "</s>"]
    vocab = {tok: i for i, tok in enumerate(specials + [w for w in words if w not in specials])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        bos_token="<s>",
        eos_token="</s>",
    )
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        initializer_range=0.3,  # large weights: outputs depend strongly on positions and masks
        pad_token_id=vocab["[PAD]"],
        bos_token_id=vocab["<s>"],
        eos_token_id=vocab["</s>"],
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    folder = tmp_path_factory.mktemp("tiny_llama")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_st_dir(tmp_path_factory: pytest.TempPathFactory):
    """Folder with a tiny sentence-transformers model: random ``BertModel`` (hidden 32,
    2 layers) + word-level tokenizer + mean pooling, saved with ``SentenceTransformer.save``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    pre = pre_tokenizers.Whitespace()
    words: dict[str, None] = {}
    for word in TINY_WORDS:
        for token, _ in pre.pre_tokenize_str(word.lower()):
            words.setdefault(token)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials + list(words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=64,
    )
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        pad_token_id=vocab["[PAD]"],
    )
    torch.manual_seed(0)
    base = tmp_path_factory.mktemp("tiny_bert")
    BertModel(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    transformer = Transformer(str(base), max_seq_length=64)
    pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
    st_model = SentenceTransformer(modules=[transformer, pooling], device="cpu")
    folder = tmp_path_factory.mktemp("tiny_st")
    st_model.save(str(folder))
    return folder
