"""Serving: item embeddings in a FAISS index with their id map, and retrieval for users.

- ``kinds``: the index kinds (flat, SQ8, IVF, HNSW) as a registry: factory strings, build-time
  settings, query-time parameters;
- ``config``: ``IndexConfig`` (kind; refine; MIPS transform), validated;
- ``vectors``: item and query vectors checked, normalised, padded, MIPS-augmented, fingerprinted;
- ``index``: ``ItemIndex`` build / search / save / load;
- ``retrieve``: over-fetch and drop seen items; ``Retriever`` (student user tower -> index;
  known users, new users from a history, popularity for an empty one).
"""

from student.serving.config import INDEX_KINDS, IndexConfig, default_nlist, factory_string
from student.serving.index import ItemIndex
from student.serving.retrieve import Query, Result, Retriever, retrieve, search_excluding
from student.serving.vectors import embedding_fingerprint, mips_augment

__all__ = [
    "INDEX_KINDS",
    "IndexConfig",
    "ItemIndex",
    "Retriever",
    "default_nlist",
    "embedding_fingerprint",
    "factory_string",
    "mips_augment",
    "Query",
    "Result",
    "retrieve",
    "search_excluding",
]
