"""Contrastive tuning (in-batch negatives) of a sentence-embedding teacher: LoRA by default,
full fine-tuning optional."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.versions import versions
from llm_teacher.adapt.configs import EmbeddingLoRAConfig
from llm_teacher.adapt.loop import _lora_config, _model_name, curve_metrics, save_run, train_steps
from llm_teacher.adapt.losses import info_nce_loss
from llm_teacher.embedding import transformer_module


def adapt_embedding_model(
    st_model: Any,
    pairs: Sequence[tuple[str, str]],
    config: EmbeddingLoRAConfig,
    out_dir: str | Path,
    negatives: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Contrastive tuning on ``(user_text, item_text)`` positives with in-batch negatives.

    ``negatives``: optional hard-negative item text per pair (same length as ``pairs``), added
    to every query's negatives in its batch. In-batch items whose text equals a query's positive
    are not counted as negatives. Writes a LoRA adapter (or, with ``full_finetune``, the whole
    sentence-transformers model) and ``training_meta.json`` to ``out_dir``; returns metrics.
    """
    _check_pairs(pairs, negatives)
    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    model = _trainable_copy(st_model, config, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            f"adapt_embedding_model: no trainable parameters; target_modules "
            f"{config.target_modules} matched nothing in {_model_name(st_model.transformers_model)}"
        )

    def embed(texts: list[str]) -> torch.Tensor:
        features = model.preprocess(texts)
        features = {
            k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()
        }
        return model(features)["sentence_embedding"]

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        users = [pairs[j][0] for j in idx]
        items = [pairs[j][1] for j in idx]
        if negatives is not None:
            items = items + [negatives[j] for j in idx]
        # an in-batch "negative" with the same text as the positive is not a negative
        exclude = torch.tensor(
            [[c != r and items[c] == items[r] for c in range(len(items))] for r in range(len(idx))],
            dtype=torch.bool,
            device=device,
        )
        return info_nce_loss(embed(users), embed(items), config.temperature, exclude)

    error = (
        f"adapt_embedding_model: loss is {{{{}}}} at step {{step}}; lower lr "
        f"(now {config.lr}) or raise temperature (now {config.temperature})"
    )
    losses, per_epoch, seconds = train_steps(
        model, batch_loss, trainable, len(pairs), config, "contrastive tuning", error
    )
    data = {"pairs": len(pairs), "hard_negatives": negatives is not None}
    metrics = curve_metrics(losses, per_epoch, data, trainable, seconds, out_dir)
    meta = {
        "kind": "embedding_full" if config.full_finetune else "embedding_lora",
        "base_model": _model_name(st_model.transformers_model),
        "config": config.to_dict(),
        "metrics": metrics,
        "versions": versions(),
    }

    def save(folder: Path) -> None:
        if config.full_finetune:
            model.save(str(folder))
        else:
            transformer_module(model).model.save_pretrained(folder)

    save_run(out_dir, save, meta, "embedding tuning")
    return metrics


def _check_pairs(pairs: Sequence, negatives: Sequence[str] | None) -> None:
    if len(pairs) == 0:
        raise ValueError(
            "adapt_embedding_model: pairs is empty; expected (user_text, item_text) rows"
        )
    for i, row in enumerate(pairs):
        if len(row) != 2 or not all(isinstance(t, str) and t for t in row):
            raise ValueError(
                f"pairs[{i}] is {row!r}; expected (user_text, item_text), both non-empty"
            )
    if negatives is not None:
        if len(negatives) != len(pairs):
            raise ValueError(
                f"negatives has {len(negatives)} rows but pairs has {len(pairs)}; give one hard "
                "negative item text per pair, or None"
            )
        for i, t in enumerate(negatives):
            if not isinstance(t, str) or not t:
                raise ValueError(f"negatives[{i}] is {t!r}; expected a non-empty item text")


def _trainable_copy(st_model: Any, config: EmbeddingLoRAConfig, device: torch.device) -> Any:
    """A deep copy of ``st_model`` on ``device``: every weight trainable (``full_finetune``)
    or a LoRA adapter on its transformer."""
    model = copy.deepcopy(st_model).to(device)
    if config.full_finetune:
        for p in model.parameters():
            p.requires_grad_(True)
    else:
        from peft import get_peft_model

        # peft directly: sentence-transformers' add_adapter goes through the transformers PEFT
        # integration, whose save path needs a newer peft than the pinned one.
        module = transformer_module(model)
        module.model = get_peft_model(module.model, _lora_config(config, None))
    return model
