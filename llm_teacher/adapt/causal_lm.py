"""TALLRec-style yes/no LoRA tuning of a causal-LM teacher."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.versions import versions
from llm_teacher.adapt.configs import CausalLoRAConfig
from llm_teacher.adapt.loop import _lora_config, _model_name, curve_metrics, save_run, train_steps
from llm_teacher.adapt.losses import yes_no_loss
from llm_teacher.causal_lm import left_pad, pad_token_id
from llm_teacher.prompts import encode_prefix, encode_suffix, load_template, resolve_yes_no_ids


def adapt_causal_lm(
    model: Any,
    tokenizer: Any,
    examples: Sequence[tuple[str, str | Mapping[str, Any], int]],
    config: CausalLoRAConfig,
    out_dir: str | Path,
) -> dict[str, Any]:
    """Tune a LoRA adapter so the model answers Yes (label 1) / No (label 0).

    ``examples``: ``(prefix_text, candidate, label)`` with the prefix from
    ``template.render_prefix`` and the candidate as an item dict or its text. Writes the peft
    adapter and ``training_meta.json`` to ``out_dir``; returns the metrics (loss curve included).
    """
    from peft import PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        raise ValueError(
            "adapt_causal_lm: model already carries a peft adapter; pass the base model"
        )
    if len(examples) == 0:
        raise ValueError(
            "adapt_causal_lm: examples is empty; expected (prefix, candidate, label) rows"
        )
    template = load_template(config.template)
    yes_id, no_id = resolve_yes_no_ids(tokenizer, template)
    pad_id = pad_token_id(tokenizer)
    prompts, labels = _prompts(tokenizer, template, examples)

    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    peft_model = get_peft_model(copy.deepcopy(model), _lora_config(config, "CAUSAL_LM")).to(device)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    label_t = torch.tensor(labels)

    def batch_loss(idx: np.ndarray) -> torch.Tensor:
        ids, mask, positions = left_pad([prompts[j] for j in idx], pad_id)
        out = peft_model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=False,
            logits_to_keep=1,
        )
        return yes_no_loss(out.logits[:, -1, :], label_t[idx].to(device), yes_id, no_id)

    error = (
        f"adapt_causal_lm: loss is {{{{}}}} at step {{step}}; lower lr "
        f"(now {config.lr}) or check the model dtype"
    )
    losses, per_epoch, seconds = train_steps(
        peft_model, batch_loss, trainable, len(prompts), config, "LoRA yes/no tuning", error
    )
    data = {"examples": len(prompts), "positive_rate": float(np.mean(labels))}
    metrics = curve_metrics(losses, per_epoch, data, trainable, seconds, out_dir)
    meta = {
        "kind": "causal_lm_lora_yes_no",
        "base_model": _model_name(model),
        "config": config.to_dict(),
        **template.info(),
        "yes_token_id": yes_id,
        "no_token_id": no_id,
        "metrics": metrics,
        "versions": versions(),
    }
    save_run(out_dir, peft_model.save_pretrained, meta, "LoRA yes/no adapter")
    return metrics


def _prompts(tokenizer: Any, template: Any, examples: Sequence) -> tuple[list, list[int]]:
    """Check the ``(prefix, candidate, label)`` rows and tokenize them: each prompt's ids
    (each distinct prefix encoded once) and the labels."""
    prefix_cache: dict[str, list[int]] = {}
    prompts, labels = [], []
    for i, row in enumerate(examples):
        if len(row) != 3:
            raise ValueError(
                f"examples[{i}] has {len(row)} fields; expected (prefix, candidate, label)"
            )
        prefix, candidate, label = row
        if not isinstance(prefix, str) or not prefix:
            raise ValueError(f"examples[{i}]: prefix is {prefix!r}; expected non-empty prefix text")
        if label not in (0, 1):
            raise ValueError(f"examples[{i}]: label is {label!r}; expected 0 (No) or 1 (Yes)")
        if prefix not in prefix_cache:
            prefix_cache[prefix] = encode_prefix(tokenizer, prefix)
        suffix = encode_suffix(tokenizer, [template.render_suffix(candidate)])[0]
        prompts.append(prefix_cache[prefix] + suffix)
        labels.append(int(label))
    return prompts, labels
