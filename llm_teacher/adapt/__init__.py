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
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from llm_teacher._config import ConfigMixin, check_device, check_float, check_int
from llm_teacher._io import atomic_dir, versions, write_json_atomic
from llm_teacher.causal_lm import left_pad, pad_token_id
from llm_teacher.embedding import transformer_module
from llm_teacher.prompts import encode_prefix, encode_suffix, load_template, resolve_yes_no_ids

logger = logging.getLogger(__name__)

META_FILE = "training_meta.json"


# --------------------------------------------------------------------------- losses
def yes_no_loss(
    logits: torch.Tensor, labels: torch.Tensor, yes_id: int, no_id: int
) -> torch.Tensor:
    """Mean cross-entropy of the 2-way softmax over ``[no, yes]`` logits.

    ``logits``: ``[B, V]`` next-token logits at the answer position; ``labels``: ``[B]`` in
    {0, 1} (1 = yes). Returns a scalar.
    """
    if logits.ndim != 2 or labels.shape != (logits.shape[0],):
        raise ValueError(
            f"yes_no_loss: logits {tuple(logits.shape)} must be [B, V] and labels "
            f"{tuple(labels.shape)} must be [B]"
        )
    if not bool(((labels == 0) | (labels == 1)).all()):
        raise ValueError(f"yes_no_loss: labels must be 0 or 1, got {labels.unique().tolist()}")
    two_way = torch.stack([logits[:, no_id], logits[:, yes_id]], dim=-1).float()
    return F.cross_entropy(two_way, labels.long())


def info_nce_loss(
    queries: torch.Tensor,
    docs: torch.Tensor,
    temperature: float,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """In-batch-negatives InfoNCE on cosine similarity.

    ``queries``: ``[B, D]``; ``docs``: ``[N, D]`` with ``N >= B`` where ``docs[i]`` is the
    positive of ``queries[i]`` and every other row is a negative (other positives, then any hard
    negatives). ``exclude``: optional bool ``[B, N]`` of pairs to leave out (e.g. a duplicate of
    the positive); the diagonal may not be excluded. Returns the mean loss (scalar).
    """
    if queries.ndim != 2 or docs.ndim != 2 or queries.shape[1] != docs.shape[1]:
        raise ValueError(
            f"info_nce_loss: queries {tuple(queries.shape)} and docs {tuple(docs.shape)} must be "
            "[B, D] and [N, D] with the same D"
        )
    b, n = queries.shape[0], docs.shape[0]
    if n < b:
        raise ValueError(
            f"info_nce_loss: docs has {n} rows but needs >= {b} (one positive per query)"
        )
    if not (
        isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)
    ):
        raise ValueError(f"info_nce_loss: temperature is {temperature!r}; expected a number > 0")
    logits = F.normalize(queries, dim=-1) @ F.normalize(docs, dim=-1).T / temperature
    if exclude is not None:
        if exclude.shape != (b, n) or exclude.dtype != torch.bool:
            raise ValueError(f"info_nce_loss: exclude must be a bool [{b}, {n}] tensor")
        if bool(exclude.diagonal().any()):
            raise ValueError("info_nce_loss: exclude must not remove a query's own positive")
        logits = logits.masked_fill(exclude, float("-inf"))
    return F.cross_entropy(logits, torch.arange(b, device=logits.device))


# --------------------------------------------------------------------------- configs
def _check_lora(owner: str, cfg: Any) -> None:
    check_int(owner, "r", cfg.r, 1)
    check_float(owner, "alpha", cfg.alpha, gt=0.0)
    check_float(owner, "dropout", cfg.dropout, ge=0.0, lt=1.0)
    if cfg.target_modules is not None and (
        not isinstance(cfg.target_modules, list)
        or not cfg.target_modules
        or not all(isinstance(m, str) and m for m in cfg.target_modules)
    ):
        raise ValueError(
            f"{owner}.target_modules is {cfg.target_modules!r}; expected a non-empty list of "
            "module names (e.g. ['q_proj', 'v_proj']) or None for peft's default"
        )
    check_float(owner, "lr", cfg.lr, gt=0.0)
    check_int(owner, "epochs", cfg.epochs, 1)
    check_int(owner, "batch_size", cfg.batch_size, 1)
    check_int(owner, "max_steps", cfg.max_steps, 1, allow_none=True)
    check_int(owner, "seed", cfg.seed, 0)
    check_device(owner, cfg.device)


@dataclass
class CausalLoRAConfig(ConfigMixin):
    """LoRA yes/no tuning of a causal LM teacher."""

    r: int = field(default=8, metadata={"help": "LoRA rank."})
    alpha: float = field(default=16.0, metadata={"help": "LoRA scaling alpha (scale = alpha / r)."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    target_modules: list[str] | None = field(
        default_factory=lambda: ["q_proj", "v_proj"],
        metadata={"help": "Module names to adapt; None lets peft choose for the architecture."},
    )
    lr: float = field(default=3e-4, metadata={"help": "AdamW learning rate."})
    epochs: int = field(default=1, metadata={"help": "Passes over the examples."})
    batch_size: int = field(default=8, metadata={"help": "Examples per optimizer step."})
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer steps (None: all epochs)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for LoRA init and example order."})
    template: str = field(default="yes_no_v1", metadata={"help": "Prompt template name or path."})
    device: str = field(default="cpu", metadata={"help": "'cpu', 'cuda', 'cuda:<n>' or 'mps'."})

    def __post_init__(self) -> None:
        _check_lora("CausalLoRAConfig", self)


@dataclass
class EmbeddingLoRAConfig(ConfigMixin):
    """Contrastive tuning of a sentence-embedding teacher (LoRA unless full_finetune)."""

    r: int = field(default=8, metadata={"help": "LoRA rank."})
    alpha: float = field(default=16.0, metadata={"help": "LoRA scaling alpha (scale = alpha / r)."})
    dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input, in [0, 1)."})
    target_modules: list[str] | None = field(
        default_factory=lambda: ["query", "value"],
        metadata={
            "help": "Module names to adapt (BERT: query/key/value/dense); None: peft default."
        },
    )
    lr: float = field(default=2e-4, metadata={"help": "AdamW learning rate."})
    epochs: int = field(default=1, metadata={"help": "Passes over the pairs."})
    batch_size: int = field(
        default=32, metadata={"help": "Pairs per step; the other pairs' items are the negatives."}
    )
    max_steps: int | None = field(
        default=None, metadata={"help": "Stop after this many optimizer steps (None: all epochs)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed for LoRA init and pair order."})
    temperature: float = field(
        default=0.05, metadata={"help": "InfoNCE temperature on cosine similarity (> 0)."}
    )
    full_finetune: bool = field(
        default=False, metadata={"help": "Train all weights instead of a LoRA adapter."}
    )
    device: str = field(default="cpu", metadata={"help": "'cpu', 'cuda', 'cuda:<n>' or 'mps'."})

    def __post_init__(self) -> None:
        _check_lora("EmbeddingLoRAConfig", self)
        check_float("EmbeddingLoRAConfig", "temperature", self.temperature, gt=0.0)
        if not isinstance(self.full_finetune, bool):
            raise ValueError(
                f"EmbeddingLoRAConfig.full_finetune is {self.full_finetune!r}; expected true/false"
            )


# --------------------------------------------------------------------------- helpers
def _plan_steps(n: int, batch_size: int, epochs: int, max_steps: int | None) -> tuple[int, int]:
    per_epoch = math.ceil(n / batch_size)
    total = per_epoch * epochs
    return per_epoch, total if max_steps is None else min(total, max_steps)


def _batches(n: int, batch_size: int, epochs: int, total: int, seed: int):
    """Yield index arrays: a fresh seeded shuffle per epoch, stopping after ``total`` batches."""
    rng = np.random.default_rng(seed)
    done = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            if done == total:
                return
            done += 1
            yield order[start : start + batch_size]


def _lora_config(cfg: Any, task_type: str | None) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type=task_type,
    )


def _model_name(model: Any) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", "") or type(model).__name__)


def _step(loss, optimizer, trainable, losses: list[float], bar, error: str) -> None:
    """One optimizer step with gradient clipping; a non-finite loss raises ``error``."""
    if not torch.isfinite(loss):
        raise FloatingPointError(error.format(loss.item()))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    losses.append(float(loss.item()))
    bar.update(1)
    bar.set_postfix(loss=f"{losses[-1]:.4f}")


# --------------------------------------------------------------------------- causal LM
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

    torch.manual_seed(config.seed)
    device = torch.device(config.device)
    peft_model = get_peft_model(copy.deepcopy(model), _lora_config(config, "CAUSAL_LM")).to(device)
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr)
    per_epoch, total = _plan_steps(len(prompts), config.batch_size, config.epochs, config.max_steps)
    label_t = torch.tensor(labels)

    losses: list[float] = []
    start = time.perf_counter()
    peft_model.train()
    bar = tqdm(total=total, desc="LoRA yes/no tuning", unit="step")
    for idx in _batches(len(prompts), config.batch_size, config.epochs, total, config.seed):
        ids, mask, positions = left_pad([prompts[j] for j in idx], pad_id)
        out = peft_model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=False,
            logits_to_keep=1,
        )
        loss = yes_no_loss(out.logits[:, -1, :], label_t[idx].to(device), yes_id, no_id)
        _step(
            loss,
            optimizer,
            trainable,
            losses,
            bar,
            f"adapt_causal_lm: loss is {{}} at step {len(losses)}; lower lr "
            f"(now {config.lr}) or check the model dtype",
        )
    bar.close()
    peft_model.eval()

    metrics: dict[str, Any] = {
        "steps": len(losses),
        "steps_per_epoch": per_epoch,
        "examples": len(prompts),
        "positive_rate": float(np.mean(labels)),
        "trainable_params": int(sum(p.numel() for p in trainable)),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_curve": losses,
        "seconds": time.perf_counter() - start,
        "out_dir": str(out_dir),
    }
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
    with atomic_dir(out_dir) as tmp:
        peft_model.save_pretrained(tmp)
        write_json_atomic(tmp / META_FILE, meta)
    logger.info(
        "LoRA yes/no adapter: %d steps, loss %.4f -> %.4f, saved to %s",
        len(losses),
        losses[0],
        losses[-1],
        out_dir,
    )
    return metrics


# --------------------------------------------------------------------------- embeddings
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

    torch.manual_seed(config.seed)
    device = torch.device(config.device)
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
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(
            f"adapt_embedding_model: no trainable parameters; target_modules "
            f"{config.target_modules} matched nothing in {_model_name(st_model.transformers_model)}"
        )
    optimizer = torch.optim.AdamW(trainable, lr=config.lr)
    per_epoch, total = _plan_steps(len(pairs), config.batch_size, config.epochs, config.max_steps)

    def embed(texts: list[str]) -> torch.Tensor:
        features = model.preprocess(texts)
        features = {
            k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()
        }
        return model(features)["sentence_embedding"]

    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    bar = tqdm(total=total, desc="contrastive tuning", unit="step")
    for idx in _batches(len(pairs), config.batch_size, config.epochs, total, config.seed):
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
        q = embed(users)
        d = embed(items)
        loss = info_nce_loss(q, d, config.temperature, exclude)
        _step(
            loss,
            optimizer,
            trainable,
            losses,
            bar,
            f"adapt_embedding_model: loss is {{}} at step {len(losses)}; lower lr "
            f"(now {config.lr}) or raise temperature (now {config.temperature})",
        )
    bar.close()
    model.eval()

    metrics: dict[str, Any] = {
        "steps": len(losses),
        "steps_per_epoch": per_epoch,
        "pairs": len(pairs),
        "hard_negatives": negatives is not None,
        "trainable_params": int(sum(p.numel() for p in trainable)),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_curve": losses,
        "seconds": time.perf_counter() - start,
        "out_dir": str(out_dir),
    }
    meta = {
        "kind": "embedding_full" if config.full_finetune else "embedding_lora",
        "base_model": _model_name(st_model.transformers_model),
        "config": config.to_dict(),
        "metrics": metrics,
        "versions": versions(),
    }
    with atomic_dir(out_dir) as tmp:
        if config.full_finetune:
            model.save(str(tmp))
        else:
            transformer_module(model).model.save_pretrained(tmp)
        write_json_atomic(tmp / META_FILE, meta)
    logger.info(
        "embedding tuning: %d steps, loss %.4f -> %.4f, saved to %s",
        len(losses),
        losses[0],
        losses[-1],
        out_dir,
    )
    return metrics
