"""Size counts of a student (any ``nn.Module``): weight elements and stored bytes; imported
through :mod:`student.model` across the repo."""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of weight elements: parameters, plus int8 weights (stored as buffers after
    quantization) unless ``trainable_only``; scales and feature buffers are not counted."""
    if trainable_only:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)
    static = ("user_features", "item_features", "item_text", "item_id_mask", "user_id_mask")
    return sum(
        t.numel()
        for name, t in model.state_dict().items()
        if name not in static and not name.endswith("weight_scale")
    )


def model_bytes(model: nn.Module) -> int:
    """Bytes of all parameters and persistent buffers as stored (the state dict)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for t in model.state_dict().values():
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        total += t.numel() * t.element_size()
    return total
