"""Input checks shared by the loss functions; every error says how to fix the data."""

from __future__ import annotations

import math

import torch


def check_tensor(x: object, name: str) -> torch.Tensor:
    """A floating-point tensor, else ValueError."""
    if not torch.is_tensor(x):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor, got dtype {x.dtype}")
    return x


def check_finite(x: torch.Tensor, name: str, fix: str) -> None:
    """Reject NaN/inf, naming the first bad position and how to fix it."""
    bad = ~torch.isfinite(x.detach())
    if bad.any():
        pos = [int(i) for i in torch.nonzero(bad)[0]]
        value = x.detach()[tuple(pos)].item()
        raise ValueError(f"{name}: non-finite value {value} at index {pos}; {fix}")


def check_dims(x: torch.Tensor, name: str, dims: tuple[int, ...], layout: str) -> None:
    if x.dim() not in dims:
        raise ValueError(f"{name}: expected shape {layout}, got {list(x.shape)}")


def check_same_shape(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_b}: shape {list(b.shape)} does not match {name_a} {list(a.shape)}; "
            "give one value per entry, in the same order"
        )


def check_mask(mask: object, shape: torch.Size, name: str) -> torch.Tensor:
    """A bool mask of ``shape`` (True = valid entry); 0/1 integer tensors are accepted."""
    if not torch.is_tensor(mask):
        raise ValueError(f"{name}: expected a bool tensor, got {type(mask).__name__}")
    if mask.shape != shape:
        raise ValueError(
            f"{name}: shape {list(mask.shape)} does not match the scores {list(shape)}; "
            "True marks a valid entry, False a padded or ignored one"
        )
    if mask.dtype != torch.bool:
        if mask.is_floating_point() or not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"{name}: expected a bool (or 0/1) tensor, got dtype {mask.dtype}")
        mask = mask.bool()
    return mask


def check_temperature(temperature: float, name: str = "temperature") -> float:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise ValueError(f"{name}={temperature!r}: expected a float > 0")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{name}={temperature!r}: expected a finite float > 0 (e.g. 1.0 or 2.0)")
    return float(temperature)
