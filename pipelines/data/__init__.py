"""Interaction data: the data model, loaders, synthetic data, splits and candidate sets."""

from pipelines.data.candidates import STRATEGIES, CandidateConfig, make_candidates
from pipelines.data.dataset import DataError, InteractionData, build_data, render_item_text
from pipelines.data.loaders import load_dataset, load_grouplens, load_ml100k, load_table
from pipelines.data.splits import PROTOCOLS, Split, histories, make_split, to_csr
from pipelines.data.synthetic import SyntheticConfig, make_synthetic

__all__ = [
    "PROTOCOLS",
    "STRATEGIES",
    "CandidateConfig",
    "DataError",
    "InteractionData",
    "Split",
    "SyntheticConfig",
    "build_data",
    "histories",
    "load_dataset",
    "load_grouplens",
    "load_ml100k",
    "load_table",
    "make_candidates",
    "make_split",
    "make_synthetic",
    "render_item_text",
    "to_csr",
]
