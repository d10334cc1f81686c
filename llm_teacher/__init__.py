"""Teachers: what a language model knows about users and items, as scores.

Pure library on plain Python data (texts, dicts, lists, numpy arrays); it never imports
``student`` or ``pipelines``.

- :mod:`llm_teacher.prompts`: versioned prompt templates kept as data (``templates/*.txt``).
- :mod:`llm_teacher.loading`: ``load_causal_lm`` (packaged GGUF, local folder, hub id).
- :mod:`llm_teacher.causal_lm`: yes/no log-odds scoring, naive or with a shared prefix cache.
- :mod:`llm_teacher.embedding`: sentence-embedding teacher, ``cosine / temperature``.
- :mod:`llm_teacher.adapt`: LoRA adaptation of both teachers (peft, plain torch loops).
"""

from __future__ import annotations

from llm_teacher.adapt import (
    CausalLoRAConfig,
    EmbeddingLoRAConfig,
    adapt_causal_lm,
    adapt_embedding_model,
    info_nce_loss,
    yes_no_loss,
)
from llm_teacher.causal_lm import (
    CausalLMScorer,
    CausalLMScorerConfig,
    NonFiniteScoreError,
)
from llm_teacher.embedding import EmbeddingTeacher, EmbeddingTeacherConfig
from llm_teacher.loading import load_causal_lm
from llm_teacher.prompts import PromptTemplate, load_template, resolve_yes_no_ids

__all__ = [
    "CausalLMScorer",
    "CausalLMScorerConfig",
    "CausalLoRAConfig",
    "EmbeddingLoRAConfig",
    "EmbeddingTeacher",
    "EmbeddingTeacherConfig",
    "NonFiniteScoreError",
    "PromptTemplate",
    "adapt_causal_lm",
    "adapt_embedding_model",
    "info_nce_loss",
    "load_causal_lm",
    "load_template",
    "resolve_yes_no_ids",
    "yes_no_loss",
]
