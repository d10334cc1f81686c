"""Configs of the LoRA adaptations, validated on construction."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.config import ConfigMixin, check_device, check_float, check_int


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
