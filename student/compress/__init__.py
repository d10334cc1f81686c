"""Compression steps, each ``model -> model``: a smaller model has physically smaller tensors.

- ``prune``: structured pruning (hidden units, id dims) and magnitude pruning (for comparison);
- ``int8``: int8 Linear / Embedding modules and ``quantize_int8``;
- ``int8_io``: save and load int8 students (safetensors);
- ``latency``: per-part timing and the choice of the parts where int8 pays on this CPU.
"""

from student.compress.int8 import (
    LINEAR_KERNELS,
    PARTS,
    Int8Embedding,
    Int8Linear,
    int8_modules,
    quantize_int8,
)
from student.compress.int8_io import load_quantized, save_quantized
from student.compress.latency import choose_int8_parts, measure_latency
from student.compress.prune import ZEROS_NOTE, magnitude_prune, structured_prune

__all__ = [
    "LINEAR_KERNELS",
    "PARTS",
    "ZEROS_NOTE",
    "Int8Embedding",
    "Int8Linear",
    "choose_int8_parts",
    "int8_modules",
    "load_quantized",
    "magnitude_prune",
    "measure_latency",
    "quantize_int8",
    "save_quantized",
    "structured_prune",
]
