"""The content head: a closed-form map from an item's content to its item vector, for the
items without an id (no train interaction: a cold item).

The item MLP sees a cold item only through id dropout; a ridge regression fit after training,
from the content ``phi_j`` (dense features, then the text embedding) of the items with an id
onto their trained vectors ``v_j`` (``encode_items``, eval mode, bias column included), maps
the content into the space the user tower was trained against (CB2CF; the same estimator as
the teacher's content map, here onto the student's own vectors)::

    mu = mean of phi over the items with an id,  y_bar = mean of their v
    W = (Phi_w^T Phi_w + lam I)^-1 Phi_w^T (V_w - y_bar),  v_c = (phi_c - mu) W + y_bar

A pure function of the model: no data, no labels. Which ``lam`` is chosen is the caller's
business (``pipelines.training.head``: cold-validation).
"""

from __future__ import annotations

import torch

from student.model import TwoTower


@torch.no_grad()
def fit_content_head(model: TwoTower, lam: float) -> dict:
    """Fit ``model.content_head`` by ridge ``lam`` (> 0) on the items with an id and mark it
    ready; returns ``{"lambda", "items"}`` (the items it was fit on)."""
    c = model.config
    if not c.content_head:
        raise ValueError("fit_content_head: the model has no content head (content_head=False)")
    if not lam > 0:
        raise ValueError(f"fit_content_head: lam={lam!r}; expected > 0")
    was_training = model.training
    model.eval()
    model.content_head_ready.zero_()  # the items with an id never use the head anyway
    has_id = torch.nonzero(model.item_id_mask > 0).flatten()
    if len(has_id) < 2:
        raise ValueError(f"fit_content_head: {len(has_id)} items with an id; expected >= 2")
    X = model.item_content(has_id).double()
    Y = model.encode_items(has_id).double()
    mu, y_bar = X.mean(0), Y.mean(0)
    Xc = X - mu
    A = Xc.T @ Xc + lam * torch.eye(X.shape[1], dtype=X.dtype)
    W = torch.linalg.solve(A, Xc.T @ (Y - y_bar))  # [content_dim, item_dim]
    model.content_head.weight.copy_(W.T.float())
    model.content_head.bias.copy_((y_bar - mu @ W).float())
    model.content_head_ready.fill_(1.0)
    model.train(was_training)
    return {"lambda": float(lam), "items": int(len(has_id))}
