"""Stage 1, data: the interaction data model, loaders (ML-100K, GroupLens, CSV/Parquet,
synthetic), splits, and user and item features. Reads raw files; the models fit on them are
in ``pipelines.baselines``."""

from pipelines.data.dataset import (
    DataError,
    InteractionData,
    build_data,
    build_indexed_data,
    render_item_text,
    render_item_texts,
)
from pipelines.data.grouplens import load_grouplens, load_ml100k
from pipelines.data.loaders import load_dataset
from pipelines.data.splits import (
    PROTOCOLS,
    LeakError,
    ProtocolName,
    Split,
    histories,
    make_split,
    to_csr,
    training_split,
)
from pipelines.data.synthetic import SyntheticConfig, make_synthetic, resolve_sampler
from pipelines.data.tables import load_table

__all__ = [
    "PROTOCOLS",
    "ProtocolName",
    "DataError",
    "InteractionData",
    "LeakError",
    "Split",
    "SyntheticConfig",
    "build_data",
    "build_indexed_data",
    "histories",
    "load_dataset",
    "load_grouplens",
    "load_ml100k",
    "load_table",
    "make_split",
    "make_synthetic",
    "render_item_text",
    "render_item_texts",
    "resolve_sampler",
    "to_csr",
    "training_split",
]
