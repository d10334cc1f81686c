"""Index configuration: the index kinds, their validated config, FAISS factory strings."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import numpy as np

from common.config import ConfigMixin

# The one list of index kinds: IndexConfig, the server and the benchmark all take it from here.
IndexKind = Literal["flat", "sq8", "ivf_flat", "ivf_sq8", "hnsw_flat", "hnsw_sq8"]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)


METRICS = ("ip",)


# Norm spread (std / mean) above which un-normalised approximate IP search is flagged.
NORM_SPREAD_WARN = 0.05


def _check_int(name: str, value: Any, low: int, high: int | None = None) -> None:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    if not ok or value < low or (high is not None and value > high):
        allowed = f"an integer >= {low}" if high is None else f"an integer in [{low}, {high}]"
        raise ValueError(f"IndexConfig.{name}={value!r} is invalid; expected {allowed}")


def _check_bool(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"IndexConfig.{name}={value!r} is invalid; expected True or False")


@dataclass
class IndexConfig(ConfigMixin):
    """How to index item embeddings; stored in the index's ``meta.json``."""

    kind: str = field(
        default="flat",
        metadata={"help": f"Index kind, one of {INDEX_KINDS}. 'flat' is exact search."},
    )
    metric: str = field(
        default="ip", metadata={"help": "Similarity; only 'ip' (inner product) is supported."}
    )
    normalize: bool = field(
        default=True,
        metadata={
            "help": "L2-normalise items and queries (IP == cosine). True for cosine-trained "
            "embeddings; approximate IP search on un-normalised vectors loses recall."
        },
    )
    mips_transform: bool = field(
        default=False,
        metadata={
            "help": "For normalize=False: append sqrt(M^2-|x|^2) so MIPS becomes L2 search. "
            "Use with refine=True when the codes are 8-bit."
        },
    )
    nlist: int | None = field(
        default=None,
        metadata={
            "help": "IVF cells; None = round(4*sqrt(N)), capped at N//39 (faiss's minimum "
            "training points per centroid) and 65536."
        },
    )
    nprobe: int = field(default=32, metadata={"help": "IVF cells visited per query."})
    hnsw_m: int = field(default=32, metadata={"help": "HNSW neighbours per node (M)."})
    ef_construction: int = field(
        default=200,
        metadata={
            "help": "HNSW efConstruction. On the 100k-item synthetic benchmark's distilled "
            "student, recall@10 at efSearch 128 was 0.71 with faiss's default 40 and 0.97 "
            "with 200 (docs/scale.md)."
        },
    )
    ef_search: int = field(default=128, metadata={"help": "HNSW efSearch (>= k is used)."})
    refine: bool = field(
        default=False,
        metadata={
            "help": "Re-rank a k*refine_factor shortlist exactly on float vectors "
            "(faiss.IndexRefineFlat; stores a float copy, so it costs 4 bytes/dim)."
        },
    )
    refine_factor: int = field(default=4, metadata={"help": "Shortlist size factor for refine."})
    sq_train_on_all: bool = field(
        default=True,
        metadata={
            "help": "Train the scalar-quantizer ranges (and IVF) on all vectors; False = a "
            "seeded sample of train_sample rows (outliers may be clipped)."
        },
    )
    train_sample: int = field(
        default=100_000, metadata={"help": "Sample size when sq_train_on_all is False."}
    )
    kmeans_points_per_centroid: int = field(
        default=256,
        metadata={"help": "IVF k-means subsamples to this many points per centroid (faiss)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed for sampling and k-means."})

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"IndexConfig.kind={self.kind!r} is invalid; allowed: {INDEX_KINDS}")
        if self.metric not in METRICS:
            raise ValueError(f"IndexConfig.metric={self.metric!r} is invalid; allowed: {METRICS}")
        for name in ("normalize", "mips_transform", "refine", "sq_train_on_all"):
            _check_bool(name, getattr(self, name))
        if self.nlist is not None:
            _check_int("nlist", self.nlist, 1, 1 << 20)
        _check_int("nprobe", self.nprobe, 1)
        _check_int("hnsw_m", self.hnsw_m, 2, 512)
        _check_int("ef_construction", self.ef_construction, 1)
        _check_int("ef_search", self.ef_search, 1)
        _check_int("refine_factor", self.refine_factor, 1)
        _check_int("train_sample", self.train_sample, 1)
        _check_int("kmeans_points_per_centroid", self.kmeans_points_per_centroid, 1)
        _check_int("seed", self.seed, 0)
        if self.normalize and self.mips_transform:
            raise ValueError(
                "IndexConfig.mips_transform=True is invalid with normalize=True; the transform "
                "is for un-normalised vectors (set normalize=False) or leave it False"
            )
        if self.refine and self.kind == "flat":
            raise ValueError(
                "IndexConfig.refine=True is invalid with kind='flat' (already exact); "
                f"use refine with one of {INDEX_KINDS[1:]}"
            )

    @property
    def is_ivf(self) -> bool:
        return self.kind.startswith("ivf")

    @property
    def is_hnsw(self) -> bool:
        return self.kind.startswith("hnsw")


def default_nlist(n: int) -> int:
    """round(4*sqrt(n)), capped at n // 39 (>= 1) and 65536."""
    return int(max(1, min(round(4 * math.sqrt(n)), n // 39, 65536)))


def factory_string(config: IndexConfig, nlist: int | None = None) -> str:
    """The ``faiss.index_factory`` string for ``config`` (refine is wrapped separately)."""
    codes = "SQ8" if config.kind.endswith("sq8") else "Flat"
    if config.kind in ("flat", "sq8"):
        return codes
    if config.is_ivf:
        if nlist is None:
            raise ValueError("factory_string: an IVF kind needs nlist")
        return f"IVF{nlist},{codes}"
    return f"HNSW{config.hnsw_m},{codes}"
