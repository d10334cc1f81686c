"""A saved student folder: ``config.json`` (the config, format and library versions) and
``model.safetensors`` (weights and feature buffers); written atomically, read strictly, never
unpickled. Shared by ``TwoTower`` and ``student.compress``."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from common.io import atomic_dir, read_json
from common.versions import versions
from student.model_config import TwoTowerConfig

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
COMPRESSION_NAME = "compression.json"
MODEL_TYPE = "recdistill.two_tower"
FORMAT_VERSION = 1
# Files a model folder may contain; saving refuses to replace a folder holding anything else.
MODEL_FILES = frozenset({CONFIG_NAME, WEIGHTS_NAME, COMPRESSION_NAME})  # all a model folder holds
_MODEL_FILES = MODEL_FILES


def write_model_dir(
    directory: str | os.PathLike,
    config: TwoTowerConfig,
    state: Mapping[str, torch.Tensor],
    extra_json: Mapping[str, Mapping[str, Any]] | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model folder atomically (``common.io.atomic_dir``).

    An existing folder is replaced only if it holds nothing but model files.
    """
    directory = Path(directory)
    if directory.exists():
        if not directory.is_dir():
            raise ValueError(f"{directory}: exists and is not a folder; choose a folder path")
        foreign = sorted(p.name for p in directory.iterdir() if p.name not in _MODEL_FILES)
        if foreign:
            raise ValueError(
                f"{directory}: refusing to replace a folder that holds other files {foreign}; "
                "save to a new or empty folder"
            )
    with atomic_dir(directory) as tmp:
        meta = {
            "model_type": MODEL_TYPE,
            "format_version": FORMAT_VERSION,
            "config": config.to_dict(),
            "versions": versions(),
            "provenance": dict(provenance or {}),
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(meta, indent=2) + "\n")
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        for name, payload in (extra_json or {}).items():
            (tmp / name).write_text(json.dumps(payload, indent=2) + "\n")
    logger.info("saved model to %s", directory)
    return directory


def load_config(directory: str | os.PathLike) -> TwoTowerConfig:
    """Read the :class:`TwoTowerConfig` from a saved model folder."""
    path = Path(directory) / CONFIG_NAME
    meta = read_json(path, "a folder written by TwoTower.save_pretrained")
    if meta.get("model_type") != MODEL_TYPE or "config" not in meta:
        raise ValueError(
            f"{path}: model_type={meta.get('model_type')!r}, expected {MODEL_TYPE!r} with a "
            "'config' object; was this folder written by TwoTower.save_pretrained?"
        )
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version={meta.get('format_version')!r}, this code reads "
            f"{FORMAT_VERSION}"
        )
    try:
        return TwoTowerConfig.from_dict(meta["config"])
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: bad config: {exc}") from None


def read_provenance(directory: str | os.PathLike) -> dict[str, Any]:
    """The ``provenance`` object of a saved model's ``config.json`` (``{}`` if it has none)."""
    path = Path(directory) / CONFIG_NAME
    prov = read_json(path, "a folder written by TwoTower.save_pretrained").get("provenance") or {}
    if not isinstance(prov, dict):
        raise ValueError(f"{path}: 'provenance' is {type(prov).__name__}; expected an object")
    return prov


def load_tensors(directory: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load ``model.safetensors`` (safetensors only: no pickle)."""
    path = Path(directory) / WEIGHTS_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: not found; expected the weights written by save_pretrained"
        )
    from safetensors import SafetensorError

    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:  # a truncated or overwritten file
        raise ValueError(
            f"{path}: unreadable or truncated safetensors file ({exc}); expected the weights "
            "written by save_pretrained: save or train the model again"
        ) from exc


def load_state_strict(
    model: nn.Module, tensors: Mapping[str, torch.Tensor], source: str | os.PathLike
) -> None:
    """Load tensors into ``model`` after checking names, shapes and dtypes; errors name them."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source}: tensors do not match the config: missing {missing[:10]}, unexpected "
            f"{unexpected[:10]}; config.json and model.safetensors must come from the same save"
        )
    for name, want in expected.items():
        got = tensors[name]
        if tuple(got.shape) != tuple(want.shape):
            raise ValueError(
                f"{source}: tensor {name!r} has shape {list(got.shape)}, the config expects "
                f"{list(want.shape)}; config.json and model.safetensors do not match"
            )
        if got.dtype != want.dtype:
            raise ValueError(
                f"{source}: tensor {name!r} has dtype {got.dtype}, expected {want.dtype}"
            )
    model.load_state_dict(dict(tensors), strict=True)
