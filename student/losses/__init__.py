"""Loss functions for the student: pure tensor functions, one per file."""

from __future__ import annotations

from .bpr import bpr_loss
from .embedding_distill import embedding_distill_loss
from .listwise_kl import listwise_kl_loss
from .margin_mse import margin_mse_loss
from .pair_importance import pair_importance
from .rank_distill import rank_distill_loss
from .sampled_softmax import accidental_hit_mask, sampled_softmax_loss
from .soft_bce import soft_bce_loss
from .total import TERM_NAMES, DistillLossWeights, total_loss

__all__ = [
    "TERM_NAMES",
    "DistillLossWeights",
    "accidental_hit_mask",
    "bpr_loss",
    "embedding_distill_loss",
    "listwise_kl_loss",
    "margin_mse_loss",
    "pair_importance",
    "rank_distill_loss",
    "sampled_softmax_loss",
    "soft_bce_loss",
    "total_loss",
]
