"""The training objective: the registered terms (``terms.py``) built once from the loss
weights, evaluated on each step and summed by ``student.losses.total_loss``."""

from __future__ import annotations

import torch
from torch import nn

from pipelines.training.batch import Step, score_lists
from pipelines.training.terms import TERMS, Term, TermSettings
from student.losses import DistillLossWeights, total_loss


def build_terms(weights: DistillLossWeights, settings: TermSettings) -> list[Term]:
    """The registered terms with a positive weight (and those built ``always``), in order."""
    return [
        cls.from_config(weights, settings)
        for name, cls in TERMS.items()
        if cls.always or getattr(weights, name) > 0
    ]


class Objective:
    """``objective(step) -> (loss, {name: value, ..., "total": value})``.

    On a step whose inputs hold soft labels, the label terms run after the student scored
    ``soft_users`` sampled users' lists (sampled and scored every such step).
    """

    def __init__(self, weights: DistillLossWeights, settings: TermSettings) -> None:
        self.weights = weights
        self.soft_users = settings.soft_users
        self.terms = build_terms(weights, settings)

    def parameters(self) -> list[nn.Parameter]:
        """Trainable weights of the terms (e.g. the embedding term's projection)."""
        return [p for term in self.terms for p in term.parameters()]

    def losses(self, step: Step) -> dict[str, torch.Tensor]:
        """Each term's scalar loss, by name, in registry order."""
        out = {t.name: t(step) for t in self.terms if not t.needs_labels}
        lists = step.inputs.lists
        if lists is not None:
            step.soft = score_lists(
                step.model, lists, step.inputs.hist, step.rng, self.soft_users, step.shard
            )
            out.update({t.name: t(step) for t in self.terms if t.needs_labels})
        return out

    def __call__(self, step: Step) -> tuple[torch.Tensor, dict[str, float]]:
        return total_loss(self.losses(step), self.weights)
