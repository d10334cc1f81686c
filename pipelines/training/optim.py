"""The optimizer of the student: AdamW, or SparseAdam for the id tables plus AdamW for the
rest (sparse gradients: a step costs the rows it touches)."""

from __future__ import annotations

import torch

from student.model import TwoTower


class Optimizers:
    """Several optimizers stepped as one (SparseAdam for the id tables, AdamW for the rest)."""

    def __init__(self, *opts):
        self.opts = opts

    def zero_grad(self, set_to_none: bool = True) -> None:
        for o in self.opts:
            o.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for o in self.opts:
            o.step()


def make_optimizer(model: TwoTower, params, lr: float, weight_decay: float, sparse: bool):
    """AdamW over ``params``; with ``sparse``, the model's id tables switch to sparse
    gradients and SparseAdam (lazy Adam: only the rows a step touched move), AdamW the rest.
    The gradients are the same; the steps differ in that an untouched row keeps still instead
    of following its momentum (and SparseAdam adds eps after the bias correction)."""
    if not sparse:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    tables = [m for m in model.modules() if isinstance(m, torch.nn.Embedding)]
    for t in tables:
        t.sparse = True
    ids = {id(t.weight) for t in tables}
    rest = [p for p in params if id(p) not in ids]
    return Optimizers(
        torch.optim.SparseAdam([t.weight for t in tables], lr=lr),
        torch.optim.AdamW(rest, lr=lr, weight_decay=weight_decay),
    )
