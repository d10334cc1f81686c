"""Save and load int8 students (safetensors, no pickle)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from common.io import read_json
from student.compress.int8 import (
    Int8Embedding,
    Int8Linear,
    _check_model,
    _new_model,
    fp32_parameters,
)
from student.model import TwoTower
from student.model_io import (
    COMPRESSION_NAME,
    load_config,
    load_state_strict,
    load_tensors,
    read_provenance,
    write_model_dir,
)


def save_quantized(model: TwoTower, directory: str | os.PathLike) -> Path:
    """Write config.json, model.safetensors (int8 weights + scales) and compression.json."""
    _check_model(model, "save_quantized", allow_int8=True)
    layers: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear):
            layers[name] = {
                "type": "int8_linear",
                "in_features": module.in_features,
                "out_features": module.out_features,
                "kernel": module.kernel,
            }
        elif isinstance(module, Int8Embedding):
            layers[name] = {
                "type": "int8_embedding",
                "num_embeddings": module.num_embeddings,
                "embedding_dim": module.embedding_dim,
            }
    compression = {
        "format_version": 1,
        "scheme": "symmetric int8; Linear: one scale per output channel; embedding: one scale per row",
        "int8_modules": layers,
        "fp32_parameters": fp32_parameters(model),  # what stayed float32, for the reader
    }
    return write_model_dir(
        directory,
        model.config,
        model.state_dict(),
        extra_json={COMPRESSION_NAME: compression},
        provenance=getattr(model, "provenance", None),
    )


def load_quantized(directory: str | os.PathLike) -> TwoTower:
    """Rebuild a model saved by :func:`save_quantized`; strict name/shape/dtype checks; eval."""
    directory = Path(directory)
    comp_path = directory / COMPRESSION_NAME
    compression = read_json(comp_path, "a folder written by student.compress.save_quantized")
    layers = compression.get("int8_modules")
    if compression.get("format_version") != 1 or not isinstance(layers, dict):
        raise ValueError(f"{comp_path}: expected format_version 1 and an 'int8_modules' object")
    model = _new_model(load_config(directory))
    for name, spec in layers.items():
        try:
            current = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"{comp_path}: module {name!r} does not exist in this config"
            ) from None
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind == "int8_linear" and isinstance(current, nn.Linear):
            shape = (spec.get("in_features"), spec.get("out_features"))
            if shape != (current.in_features, current.out_features):
                raise ValueError(
                    f"{comp_path}: {name} is {list(shape)} (in, out) but config.json gives "
                    f"{[current.in_features, current.out_features]}"
                )
            replacement: nn.Module = Int8Linear(*shape, kernel=spec.get("kernel", "qlinear"))
        elif kind == "int8_embedding" and isinstance(current, nn.Embedding):
            shape = (spec.get("num_embeddings"), spec.get("embedding_dim"))
            if shape != (current.num_embeddings, current.embedding_dim):
                raise ValueError(
                    f"{comp_path}: {name} is {list(shape)} but config.json gives "
                    f"{[current.num_embeddings, current.embedding_dim]}"
                )
            replacement = Int8Embedding(*shape)
        else:
            raise ValueError(
                f"{comp_path}: {name!r} has type {kind!r}, expected int8_linear on a Linear or "
                f"int8_embedding on an Embedding (found {type(current).__name__})"
            )
        model.set_submodule(name, replacement)
    load_state_strict(model, load_tensors(directory), directory / "model.safetensors")
    model.provenance = read_provenance(directory)
    return model.eval()
