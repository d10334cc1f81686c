"""Index configuration: the index kinds and their validated config (see ``kinds`` for how
each kind is built)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from common.config import ConfigMixin, check_int
from student.serving.kinds import HNSW, INDEX_KIND_SPECS, IVF, IndexKindSpec, default_nlist

__all__ = [
    "INDEX_KINDS",
    "IndexConfig",
    "IndexKind",
    "default_nlist",
    "factory_string",
]

# The one list of index kinds: IndexConfig, the server and the benchmark all take it from here.
# A new kind: its name here and its entry in student.serving.kinds.INDEX_KIND_SPECS.
IndexKind = Literal["flat", "sq8", "ivf_flat", "ivf_sq8", "hnsw_flat", "hnsw_sq8"]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)
if set(INDEX_KINDS) != set(INDEX_KIND_SPECS):
    raise ImportError(
        f"IndexKind {sorted(INDEX_KINDS)} and kinds.INDEX_KIND_SPECS {sorted(INDEX_KIND_SPECS)} "
        "must name the same kinds"
    )


METRICS = ("ip",)


# Norm spread (std / mean) above which un-normalised approximate IP search is flagged.
NORM_SPREAD_WARN = 0.05

# IndexConfig integer fields: (name, lowest, highest or None)
_INT_FIELDS = (
    ("nprobe", 1, None),
    ("hnsw_m", 2, 512),
    ("ef_construction", 1, None),
    ("ef_search", 1, None),
    ("refine_factor", 1, None),
    ("train_sample", 1, None),
    ("kmeans_points_per_centroid", 1, None),
    ("seed", 0, None),
    ("shards", 1, None),
)


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
    bias: bool = field(
        default=False,
        metadata={
            "help": "The last column of the item vectors is a score bias (the student's "
            "item_bias) and of the queries its weight 1 (TwoTower.index_queries): normalize "
            "then normalises only the items' other columns and leaves the queries as given, "
            "so inner product = the model's score."
        },
    )
    mips_transform: bool = field(
        default=False,
        metadata={
            "help": "For normalize=False (or bias): append sqrt(M^2-|x|^2) so MIPS becomes "
            "L2 search. "
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
    shards: int = field(
        default=1,
        metadata={
            "help": "Split the catalogue into this many contiguous id ranges, one index of this "
            "kind each, one file each, searched as one faiss.IndexShards (student.serving."
            "shards). 1 = one file. Sharded, the quantizer / SQ ranges train once on a seeded "
            "sample of train_sample rows (at least 39 per IVF cell), never on all vectors."
        },
    )

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"IndexConfig.kind={self.kind!r} is invalid; allowed: {INDEX_KINDS}")
        if self.metric not in METRICS:
            raise ValueError(f"IndexConfig.metric={self.metric!r} is invalid; allowed: {METRICS}")
        for name in ("normalize", "bias", "mips_transform", "refine", "sq_train_on_all"):
            _check_bool(name, getattr(self, name))
        if self.nlist is not None:
            check_int("IndexConfig", "nlist", self.nlist, 1, maximum=1 << 20)
        for name, low, high in _INT_FIELDS:
            check_int("IndexConfig", name, getattr(self, name), low, maximum=high)
        if self.normalize and self.mips_transform and not self.bias:
            raise ValueError(
                "IndexConfig.mips_transform=True is invalid with normalize=True; the transform "
                "is for un-normalised vectors (set normalize=False, or bias=True for vectors "
                "with a bias column) or leave it False"
            )
        if self.refine and self.spec.exact:
            approximate = tuple(k for k in INDEX_KINDS if not INDEX_KIND_SPECS[k].exact)
            raise ValueError(
                f"IndexConfig.refine=True is invalid with kind={self.kind!r} (already exact); "
                f"use refine with one of {approximate}"
            )

    @property
    def spec(self) -> IndexKindSpec:
        """How this kind is built and searched (:data:`kinds.INDEX_KIND_SPECS`)."""
        return INDEX_KIND_SPECS[self.kind]

    @property
    def is_ivf(self) -> bool:
        return self.spec.structure is IVF

    @property
    def is_hnsw(self) -> bool:
        return self.spec.structure is HNSW


def factory_string(config: IndexConfig, nlist: int | None = None) -> str:
    """The ``faiss.index_factory`` string for ``config`` (refine is wrapped separately)."""
    return config.spec.factory(config, nlist)
