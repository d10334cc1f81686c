"""The two-tower model's building blocks: the MLP of each tower, the check of the static side
features copied into its buffers and of the index tensors it is given."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn


def mlp(in_dim: int, hidden: tuple[int, ...], out_dim: int, dropout: float) -> nn.Sequential:
    """``[Linear, ReLU, Dropout] * len(hidden) + [Linear]``; Linear layers sit at 0, 3, 6, ..."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


def as_float_tensor(value: Any, name: str, shape: tuple[int, int]) -> torch.Tensor:
    tensor = torch.as_tensor(np.asarray(value) if not torch.is_tensor(value) else value)
    if tensor.dim() != 2 or tuple(tensor.shape) != shape:
        raise ValueError(
            f"{name}: expected shape {list(shape)}, got {list(tensor.shape)}; one row per "
            "id in id order, as many columns as the config says"
        )
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64, torch.bool)):
        raise ValueError(f"{name}: expected float values, got dtype {tensor.dtype}")
    tensor = tensor.detach().to(torch.float32)
    if not torch.isfinite(tensor).all():
        bad = torch.nonzero(~torch.isfinite(tensor))[0].tolist()
        raise ValueError(
            f"{name}: non-finite value at row {bad[0]}, column {bad[1]}; fill or drop "
            "missing values before building the model"
        )
    return tensor


def check_idx(idx: torch.Tensor, name: str, upper: int, hint: str) -> None:
    """Refuse ``idx`` unless an integer tensor with values in [0, upper)."""
    if not torch.is_tensor(idx) or idx.dtype not in (torch.int64, torch.int32):
        got = idx.dtype if torch.is_tensor(idx) else type(idx).__name__
        raise ValueError(f"{name}: expected an integer (int64) tensor, got {got}")
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= upper):
        raise ValueError(
            f"{name}: ids must lie in [0, {upper - 1}] ({hint}); got min {int(idx.min())}, "
            f"max {int(idx.max())}"
        )
