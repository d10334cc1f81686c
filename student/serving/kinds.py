"""The index kinds as a registry: kind -> how FAISS builds it and what it reads at query time.

A kind is a structure (a scan, inverted lists, a graph) over a code (float32 ``Flat`` or 8-bit
``SQ8``). ``IndexConfig`` validation, the FAISS factory strings and the query-time parameters
(nprobe, efSearch) all read :data:`INDEX_KIND_SPECS`; to add a kind, add its name to
``student.serving.config.IndexKind`` and its entry here. :func:`read_faiss` reads a saved one
(memory-mapped for every kind here).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss

# a student.serving.config.IndexConfig (not imported: config validates kinds against this module)
IndexConfigLike = Any


def default_nlist(n: int) -> int:
    """round(4*sqrt(n)), capped at n // 39 (>= 1) and 65536."""
    return int(max(1, min(round(4 * math.sqrt(n)), n // 39, 65536)))


class Structure:
    """A scan over every code (the base): no build-time sizes, no query-time parameters."""

    name = "scan"
    search_params: tuple[str, ...] = ()  # IndexConfig fields pushed into faiss at query time

    def sized(self, config: IndexConfigLike, n: int) -> IndexConfigLike:
        """``config`` with the build-time sizes that depend on the ``n`` items resolved."""
        return config

    def prefix(self, config: IndexConfigLike, nlist: int | None) -> str:
        """The structure's part of the factory string (before the code)."""
        return ""

    def configure(self, base: faiss.Index, config: IndexConfigLike) -> None:
        """Build-time settings, set on the fresh ``base`` before it is trained or filled."""

    def set_search(self, base: faiss.Index, config: IndexConfigLike) -> None:
        """Push :attr:`search_params` from ``config`` into ``base``."""


class InvertedLists(Structure):
    """IVF: k-means cells, ``nprobe`` of them visited per query."""

    name = "ivf"
    search_params = ("nprobe",)

    def sized(self, config: IndexConfigLike, n: int) -> IndexConfigLike:
        nlist = config.nlist if config.nlist is not None else default_nlist(n)
        if nlist > n:
            raise ValueError(f"IndexConfigLike.nlist={nlist} exceeds the number of items N={n}")
        return dataclasses.replace(config, nlist=nlist)

    def prefix(self, config: IndexConfigLike, nlist: int | None) -> str:
        if nlist is None:
            raise ValueError("factory_string: an IVF kind needs nlist")
        return f"IVF{nlist},"

    def configure(self, base: faiss.Index, config: IndexConfigLike) -> None:
        ivf = faiss.extract_index_ivf(base)
        ivf.cp.max_points_per_centroid = config.kmeans_points_per_centroid
        ivf.cp.seed = config.seed

    def set_search(self, base: faiss.Index, config: IndexConfigLike) -> None:
        faiss.extract_index_ivf(base).nprobe = config.nprobe


class Graph(Structure):
    """HNSW: a graph of ``hnsw_m`` neighbours per node, ``ef_search`` candidates per query."""

    name = "hnsw"
    search_params = ("ef_search",)

    def prefix(self, config: IndexConfigLike, nlist: int | None) -> str:
        return f"HNSW{config.hnsw_m},"

    def configure(self, base: faiss.Index, config: IndexConfigLike) -> None:
        base.hnsw.efConstruction = config.ef_construction  # before any add: the graph uses it

    def set_search(self, base: faiss.Index, config: IndexConfigLike) -> None:
        base.hnsw.efSearch = config.ef_search


SCAN, IVF, HNSW = Structure(), InvertedLists(), Graph()


@dataclass(frozen=True)
class IndexKindSpec:
    """One index kind: a structure over a code.

    ``pad_to``: 8-bit scalar-quantizer kernels are SIMD only when dim % 8 == 0 (65-d ran ~10x
    slower than 64-d or 72-d here), so SQ8 indexes get zero columns up to a multiple of 8.
    """

    structure: Structure
    codes: str  # the faiss code part: "Flat" (float32) or "SQ8" (8-bit scalar quantizer)
    pad_to: int = 1

    @property
    def exact(self) -> bool:
        """A scan over float32 codes: exact search (refine has nothing to add)."""
        return self.structure is SCAN and self.codes == "Flat"

    def factory(self, config: IndexConfigLike, nlist: int | None = None) -> str:
        """The ``faiss.index_factory`` string (refine is wrapped separately)."""
        return self.structure.prefix(config, nlist) + self.codes

    def index_dim(self, d: int) -> int:
        """Columns of the faiss index for ``d``-dimensional vectors."""
        return d + (-d) % self.pad_to


INDEX_KIND_SPECS: dict[str, IndexKindSpec] = {
    "flat": IndexKindSpec(SCAN, "Flat"),
    "sq8": IndexKindSpec(SCAN, "SQ8", pad_to=8),
    "ivf_flat": IndexKindSpec(IVF, "Flat"),
    "ivf_sq8": IndexKindSpec(IVF, "SQ8", pad_to=8),
    "hnsw_flat": IndexKindSpec(HNSW, "Flat"),
    "hnsw_sq8": IndexKindSpec(HNSW, "SQ8", pad_to=8),
}


@contextlib.contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """Temporarily set faiss's OpenMP thread count (None = leave as is)."""
    old = faiss.omp_get_max_threads()
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


def new_faiss_index(config: IndexConfigLike, d: int) -> tuple[faiss.Index, faiss.Index]:
    """An empty faiss index of ``config``'s kind for ``d``-wide vectors, its build-time
    settings applied: (the index, its base under refine)."""
    metric = faiss.METRIC_L2 if config.mips_transform else faiss.METRIC_INNER_PRODUCT
    base = faiss.index_factory(d, config.spec.factory(config, config.nlist), metric)
    config.spec.structure.configure(base, config)
    index = faiss.IndexRefineFlat(base) if config.refine else base
    if config.refine:
        index.k_factor = float(config.refine_factor)
    return index, base


def read_faiss(path: Path, mmap: bool = False) -> faiss.Index:
    """``faiss.read_index``; ``mmap``: map the file read-only and shared (``IO_FLAG_MMAP_IFC``:
    the codes of every kind in ``INDEX_KINDS``, refine included; ``IO_FLAG_MMAP`` maps only IVF
    lists). A mapped index cannot ``add`` (faiss aborts); replace its file, never truncate it."""
    flag = getattr(faiss, "IO_FLAG_MMAP_IFC", None) if mmap else None
    if flag is None:  # no mapping asked, or an older faiss: a private copy, as before
        return faiss.read_index(str(path))
    return faiss.read_index(str(path), flag)
