"""The adaptation losses: pure tensor functions with documented shapes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


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
