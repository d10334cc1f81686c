"""The one loader of a student folder, whatever made it."""

from __future__ import annotations

import os
from pathlib import Path

from student.compress.int8_io import load_quantized
from student.model import COMPRESSION_NAME, TwoTower


def load_student(directory: str | os.PathLike) -> TwoTower:
    """A student saved by ``TwoTower.save_pretrained`` (trained or pruned) or by
    ``student.compress.save_quantized`` (int8: its folder holds ``compression.json``),
    rebuilt from its own ``config.json`` and loaded strictly, in eval mode."""
    directory = Path(directory)
    if (directory / COMPRESSION_NAME).exists():
        return load_quantized(directory)
    return TwoTower.from_pretrained(directory)
