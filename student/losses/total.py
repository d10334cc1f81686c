"""Weighted mix of the hard (ground-truth) loss and the distillation terms."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from common.config import ConfigMixin


@dataclass
class DistillLossWeights(ConfigMixin):
    """Weight of each loss term (0 = off) and the distillation temperature."""

    hard: float = field(
        default=1.0, metadata={"help": "Ground-truth loss (sampled softmax or BPR)."}
    )
    listwise_kl: float = field(default=0.0, metadata={"help": "Listwise KL to teacher scores."})
    cold_kl: float = field(
        default=0.0,
        metadata={"help": "Listwise KL over each user's cold-item candidates only (cold start)."},
    )
    soft_bce: float = field(default=0.0, metadata={"help": "BCE against teacher probabilities."})
    margin_mse: float = field(default=0.0, metadata={"help": "Margin-MSE to teacher margins."})
    rank: float = field(default=0.0, metadata={"help": "Ranking distillation (teacher top-K)."})
    embed: float = field(
        default=0.0, metadata={"help": "Embedding distillation to teacher item embeddings."}
    )
    temperature: float = field(
        default=1.0, metadata={"help": "Temperature T > 0 of the listwise KL term."}
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"DistillLossWeights.{f.name}={value!r}: expected a finite float >= 0"
                )
        if self.temperature <= 0:
            raise ValueError(
                f"DistillLossWeights.temperature={self.temperature!r}: expected a float > 0"
            )
        if all(getattr(self, name) == 0 for name in TERM_NAMES):
            raise ValueError(
                f"DistillLossWeights: every weight is 0; set at least one of {list(TERM_NAMES)}"
            )


# every field but the temperature is a term's weight: a new term is a new field
TERM_NAMES = tuple(
    f.name for f in dataclasses.fields(DistillLossWeights) if f.name != "temperature"
)


def total_loss(
    terms: Mapping[str, torch.Tensor], weights: DistillLossWeights
) -> tuple[torch.Tensor, dict[str, float]]:
    """``sum_name weights.name * terms[name]`` over the terms present; plus floats to log.

    ``terms`` maps names from ``TERM_NAMES`` to scalar losses; a term whose weight is 0 is
    logged but not added. Returns ``(total, {name: value, ..., "total": value})``.
    """
    unknown = sorted(set(terms) - set(TERM_NAMES))
    if unknown:
        raise ValueError(f"terms: unknown loss name(s) {unknown}; allowed: {list(TERM_NAMES)}")
    total: torch.Tensor | None = None
    log: dict[str, float] = {}
    for name, value in terms.items():
        if not torch.is_tensor(value) or value.dim() != 0:
            shape = list(value.shape) if torch.is_tensor(value) else type(value).__name__
            raise ValueError(f"terms[{name!r}]: expected a scalar tensor, got {shape}")
        if not torch.isfinite(value):
            raise ValueError(
                f"terms[{name!r}] is {value.item()}; a loss term diverged, check its inputs"
            )
        log[name] = float(value.detach())
        w = getattr(weights, name)
        if w > 0:
            total = w * value if total is None else total + w * value
    if total is None:
        raise ValueError(
            f"terms: none of {sorted(terms)} has a positive weight in {weights.to_dict()}"
        )
    log["total"] = float(total.detach())
    return total, log
