"""LoRA adaptation of the teachers to the interactions (plain, seeded torch loops).

* :func:`adapt_causal_lm`: TALLRec-style yes/no tuning. Each example is
  ``(prompt_prefix, candidate, label)``; the loss is the cross-entropy of a 2-way softmax over
  the ``[No, Yes]`` token logits at the answer position (:func:`yes_no_loss`).
* :func:`adapt_embedding_model`: contrastive tuning of a sentence-transformers model on
  ``(user_text, item_text)`` pairs with in-batch negatives (:func:`info_nce_loss`,
  MultipleNegativesRankingLoss-style), LoRA by default, full fine-tuning optional.

Both train a deep copy, so the model passed in is left unchanged; the result is written
atomically to ``out_dir`` (peft adapter or full model, plus ``training_meta.json`` with the
config and loss curve) and loaded back with ``load_causal_lm(source, adapter=out_dir)`` or
``EmbeddingTeacherConfig(adapter=out_dir)``.

Modules: ``losses`` (the pure losses), ``configs``, ``loop`` (the shared training loop and
save), ``causal_lm`` and ``embedding`` (one adaptation each).
"""

from __future__ import annotations

from llm_teacher.adapt.causal_lm import adapt_causal_lm
from llm_teacher.adapt.configs import CausalLoRAConfig, EmbeddingLoRAConfig
from llm_teacher.adapt.embedding import adapt_embedding_model
from llm_teacher.adapt.loop import META_FILE
from llm_teacher.adapt.losses import info_nce_loss, yes_no_loss

__all__ = [
    "META_FILE",
    "CausalLoRAConfig",
    "EmbeddingLoRAConfig",
    "adapt_causal_lm",
    "adapt_embedding_model",
    "info_nce_loss",
    "yes_no_loss",
]
