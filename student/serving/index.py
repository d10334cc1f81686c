"""The FAISS item index: build, search, save/load (with its id map and checks), MIPS transform.

Works on numpy arrays only (the caller encodes users and items with the student).

Scores are always inner products (higher is better). Two regimes:

* ``normalize=True`` (default; the student is trained with cosine): items and queries are
  L2-normalised, so inner product == cosine and every index kind (SQ8, IVF, HNSW) keeps its
  recall.
* ``normalize=False`` (raw dot products, norms spread like popularity). Measured with
  ``pipelines.evaluation.index_scale`` (log-normal norms, sigma 0.5, 100k x 64): flat SQ8 over inner
  product holds when its ranges are trained on all vectors (``sq_train_on_all``); HNSW over inner
  product holds; IVF over inner product collapses (a partition by direction misses the
  large-norm items a query prefers). ``mips_transform=True`` appends ``sqrt(M^2 - |x|^2)``
  (M = max item norm) and searches by L2 with the query scaled onto the same radius-M sphere
  (extra coordinate 0): the per-query ranking equals inner product, and IVF needs about half the
  nprobe of plain IVF-IP (still more than on unit vectors). HNSW over the transform lost recall,
  so keep HNSW on inner product. 8-bit codes of the extra coordinate are coarse; ``refine=True``
  re-ranks a ``k * refine_factor`` shortlist exactly on float vectors (``faiss.IndexRefineFlat``,
  which stores a float copy).
* ``bias=True`` (a student with ``item_bias``): the last column is the item's score bias and
  the query's weight 1; see ``vectors``: it is never normalised, queries are taken as given.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from common.config import check_int
from common.io import ArtifactError, atomic_dir
from student.serving.config import IndexConfig, factory_string
from student.serving.index_files import (
    FORMAT_NAME,
    FORMAT_VERSION,
    IDS_FILE,
    INDEX_FILE,
    META_FILE,
    check_same_ids,
    index_meta,
    read_meta,
    read_single,
    save_target,
    write_rest,
)
from student.serving.kinds import faiss_threads, new_faiss_index
from student.serving.shards import (
    ENCODE_CHUNK,
    Encoder,
    ShardBuilder,
    assemble,
    combined_sha256,
    file_sha256,
    parts_of,
    read_shards,
    row_chunks,
    write_shard,
)
from student.serving.vectors import (
    as_ids,
    as_matrix,
    check_norms,
    embedding_fingerprint,
    index_items,
    index_queries,
    pad_columns,
)

logger = logging.getLogger(__name__)


class ItemIndex:
    """A FAISS index over item embeddings plus the row -> original item id map.

    ``search`` returns item ROWS (positions in the ``item_emb`` given to ``build``); map them
    with ``item_ids[rows]`` (or use :func:`retrieve`).
    """

    def __init__(
        self,
        index: faiss.Index,
        item_ids: np.ndarray,
        config: IndexConfig,
        dim: int,
        fingerprint: str,
        mips_max_norm: float | None = None,
    ) -> None:
        self.index = index
        self.item_ids = item_ids
        self.config = config
        self.dim = dim
        self.fingerprint = fingerprint
        self.mips_max_norm = mips_max_norm
        # where the embeddings came from (e.g. the student's dataset and split fingerprints);
        # saved in meta.json and read back by load
        self.provenance: dict[str, Any] = {}
        self.apply_search_params()

    # ------------------------------------------------------------------ build
    @classmethod
    def build(
        cls,
        item_emb: np.ndarray,
        item_ids: Any,
        config: IndexConfig | None = None,
        threads: int | None = None,
    ) -> ItemIndex:
        """Index ``item_emb`` [N, D]; ``item_ids`` [N] are the original ids (int or str).

        ``threads`` temporarily sets faiss's OpenMP threads for training and adding. With
        ``config.shards`` > 1 the shards are built as :meth:`from_encoder` builds them.
        """
        config = config or IndexConfig()
        x = as_matrix(item_emb, "item_emb")
        n, dim = x.shape
        if n == 0:
            raise ValueError("item_emb: the catalogue is empty (0 rows)")
        ids = as_ids(item_ids, n)
        if config.shards > 1:  # the one sharded build, reading the rows of x
            return cls.from_encoder(lambda rows: x[rows], ids, config, threads)
        fingerprint = embedding_fingerprint(x)
        check_norms(x, config)
        x, mips_max_norm = index_items(x, config)
        x = pad_columns(x, config.spec.index_dim(x.shape[1]))
        config = config.spec.structure.sized(config, n)
        index, base = new_faiss_index(config, x.shape[1])
        _train_and_add(index, x, config, threads)
        out = cls(index, ids, config, dim, fingerprint, mips_max_norm)
        out._base = base  # keep the wrapped index alive with the refine wrapper
        return out

    @classmethod
    def from_encoder(
        cls,
        encode: Encoder,
        item_ids: Any,
        config: IndexConfig | None = None,
        threads: int | None = None,
        directory: str | os.PathLike | None = None,
        chunk: int = ENCODE_CHUNK,
    ) -> ItemIndex:
        """Index the items ``item_ids`` [N] whose vectors ``encode(rows)`` -> [len(rows), D]
        gives (the item tower: ``shards.item_tower_encoder``), called on at most ``chunk`` rows.

        ``config.shards`` > 1: the build holds one chunk of vectors, the training sample and
        the codes of the shard being filled (``shards.ShardBuilder``); with ``directory`` each
        shard is written there when full and dropped, and the index comes back loaded from
        the folder, memory-mapped. ``shards`` == 1 encodes every row, then :meth:`build`.
        """
        config = config or IndexConfig()
        ids = as_ids(item_ids, len(np.asarray(item_ids)))
        if len(ids) == 0:
            raise ValueError("item_ids: the catalogue is empty (0 items)")
        if config.shards == 1:
            x = np.vstack([encode(rows) for rows in row_chunks(0, len(ids), chunk)])
            out = cls.build(x, ids, config, threads)
        else:
            b = ShardBuilder(encode, len(ids), config, threads, chunk)
            if directory is not None:
                with atomic_dir(save_target(directory)) as tmp:
                    files = [write_shard(f, tmp, i, a, z) for i, (a, z, f) in enumerate(b.shards())]
                    meta = index_meta(b.config, b.dim, b.index_dim, ids, b.fingerprint,
                                      b.mips_max_norm, {})  # fmt: skip
                    write_rest(tmp, ids, {**meta, "shard_files": files})
                return cls.load(directory, mmap=True)
            parts = [f for _, _, f in b.shards()]
            out = cls(assemble(parts), ids, b.config, b.dim, b.fingerprint, b.mips_max_norm)
        if directory is None:
            return out
        out.save(directory)
        return cls.load(directory, mmap=True)

    # ----------------------------------------------------------------- search
    @property
    def n(self) -> int:
        return int(self.index.ntotal)

    def apply_search_params(self) -> None:
        """Push the kind's search parameters (nprobe, efSearch) and the refine factor from
        ``self.config`` into the faiss index."""
        for index in parts_of(self.index):  # the index, or each of its shards
            if isinstance(index, faiss.IndexRefine):
                index.k_factor = float(self.config.refine_factor)
                base = faiss.downcast_index(index.base_index)
            else:
                base = index
            self.config.spec.structure.set_search(base, self.config)

    def set_search_params(
        self,
        nprobe: int | None = None,
        ef_search: int | None = None,
        refine_factor: int | None = None,
    ) -> None:
        """Change query-time parameters (validated through :class:`IndexConfig`)."""
        changes = {
            k: v
            for k, v in (
                ("nprobe", nprobe),
                ("ef_search", ef_search),
                ("refine_factor", refine_factor),
            )
            if v is not None
        }
        self.config = dataclasses.replace(self.config, **changes)
        self.apply_search_params()

    def prepare_queries(self, query: np.ndarray) -> np.ndarray:
        """[B, D] queries -> float32 [B, D'] in the index's space (normalised / augmented)."""
        q = index_queries(as_matrix(query, "query", self.dim), self.config, self.mips_max_norm)
        return pad_columns(q, int(self.index.d))

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k by inner product.

        query [B, D] -> (scores [B, k] float32, item_rows [B, k] int64). Slots the index could
        not fill (k > N, or an IVF/HNSW search that reached fewer items) hold row -1 and score
        -inf.
        """
        check_int("", "k", k, 1)
        q = self.prepare_queries(query)
        dist, rows = self.index.search(q, min(k, self.n))
        scores = dist
        if self.config.mips_transform:
            # q' = M q/|q|: L2 distance d = 2 M^2 - 2 (M/|q|) q.x  ->  q.x = (2M^2 - d)|q|/(2M)
            m = self.mips_max_norm
            qn = np.linalg.norm(np.asarray(query, dtype=np.float64), axis=1)[:, None]
            scores = (2 * m * m - dist.astype(np.float64)) * qn / (2 * m)
        scores = np.asarray(scores, dtype=np.float32)
        scores[rows < 0] = -np.inf
        if k > self.n:
            pad = k - self.n
            scores = np.hstack([scores, np.full((len(q), pad), -np.inf, np.float32)])
            rows = np.hstack([rows, np.full((len(q), pad), -1, rows.dtype)])
        return scores, rows.astype(np.int64, copy=False)

    def nbytes(self) -> int:
        """Serialized size of the faiss index (of its shards) in bytes (not the id map)."""
        return sum(int(faiss.serialize_index(p).nbytes) for p in parts_of(self.index))

    # ------------------------------------------------------------- save/load
    def meta(self) -> dict[str, Any]:
        c = self.config
        fp, provenance = self.fingerprint, self.provenance
        return index_meta(c, self.dim, int(self.index.d), self.item_ids, fp, self.mips_max_norm,
                          provenance)  # fmt: skip

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``index.faiss`` (sharded: one ``shard_NNNNN.faiss`` a shard, each with its
        sha256 in meta.json), ``item_ids.npy`` and ``meta.json`` into ``directory``.

        Written to a temporary folder beside it and moved into place with ``os.replace``; an
        existing index folder is replaced, any other non-empty folder is refused.
        """
        target = save_target(directory)
        with atomic_dir(target) as tmp:
            if self.config.shards > 1:  # one file a shard (student.serving.shards)
                bounds = np.cumsum([0] + [p.ntotal for p in parts_of(self.index)])
                files = [write_shard(p, tmp, i, int(bounds[i]), int(bounds[i + 1]))
                         for i, p in enumerate(parts_of(self.index))]  # fmt: skip
                write_rest(tmp, self.item_ids, {**self.meta(), "shard_files": files})
            else:
                faiss.write_index(self.index, str(tmp / INDEX_FILE))
                sha = file_sha256(tmp / INDEX_FILE)
                write_rest(tmp, self.item_ids, {**self.meta(), "index_sha256": sha})
        logger.info("saved %s index (%d items) to %s", self.config.kind, self.n, target)
        return target

    @classmethod
    def load(
        cls,
        directory: str | os.PathLike,
        expected_dim: int | None = None,
        expected_item_ids: Any = None,
        expected_fingerprint: str | None = None,
        mmap: bool = False,
    ) -> ItemIndex:
        """Load an index saved by :meth:`save`; refuse a mismatched dim, id map or fingerprint.
        ``mmap``: map the FAISS file(s) read-only, shared (``kinds.read_faiss``). A sharded
        folder loads as one ``faiss.IndexShards`` (``shards.read_shards``)."""
        src = Path(directory)
        for name in (META_FILE, IDS_FILE):
            if not (src / name).is_file():
                raise FileNotFoundError(f"ItemIndex.load: {src / name} is missing")
        meta = read_meta(src / META_FILE)
        if meta.get("format") != FORMAT_NAME:
            raise ValueError(
                f"{src / META_FILE}: format={meta.get('format')!r}, expected {FORMAT_NAME!r}"
            )
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{src / META_FILE}: format_version={meta.get('format_version')!r}, "
                f"this code reads {FORMAT_VERSION}"
            )
        dim = int(meta["dim"])
        if expected_dim is not None and dim != expected_dim:
            raise ValueError(
                f"{src}: index dimension {dim} does not match the expected dimension "
                f"{expected_dim} (rebuild the index for the current embeddings)"
            )
        try:
            ids = np.load(src / IDS_FILE, allow_pickle=False)
        except (ValueError, EOFError, OSError) as exc:
            raise ValueError(
                f"{src / IDS_FILE}: unreadable or truncated .npy file ({exc}); rebuild the index"
            ) from exc
        if len(ids) != meta["n"]:
            raise ValueError(f"{src / IDS_FILE}: {len(ids)} ids, but meta.json says n={meta['n']}")
        if expected_item_ids is not None:
            check_same_ids(src, ids, np.asarray(expected_item_ids))
        if expected_fingerprint is not None and expected_fingerprint != meta["fingerprint"]:
            raise ValueError(
                f"{src}: embedding fingerprint {meta['fingerprint'][:12]}... does not match the "
                f"expected {expected_fingerprint[:12]}... (the index is stale; rebuild it)"
            )
        try:
            config = IndexConfig.from_dict(meta["config"])
        except (TypeError, ValueError) as exc:
            raise ArtifactError(
                f"{src / META_FILE}: field 'config': {exc}; rebuild the index"
            ) from None
        read = read_shards if config.shards > 1 else read_single
        index, got = read(src, meta, mmap)
        if index.ntotal != len(ids) or index.d != meta["index_dim"]:
            raise ValueError(
                f"{src}: the FAISS index holds {index.ntotal} vectors of dim {index.d}, "
                f"meta.json says {len(ids)} of dim {meta['index_dim']}"
            )
        out = cls(index, ids, config, dim, meta["fingerprint"], meta["mips_max_norm"])
        out.provenance = dict(meta.get("provenance") or {})
        out._sha256 = got
        return out

    @property
    def sha256(self) -> str:
        """sha256 of the FAISS file as loaded (computed on load), else of the index's bytes;
        sharded: ``shards.combined_sha256`` of its shard files (or bytes)."""
        if getattr(self, "_sha256", None) is None:
            shas = [hashlib.sha256(faiss.serialize_index(p).tobytes()).hexdigest()
                    for p in parts_of(self.index)]  # fmt: skip
            self._sha256 = shas[0] if self.config.shards == 1 else combined_sha256(shas)
        return self._sha256


def _train_and_add(
    index: faiss.Index, x: np.ndarray, config: IndexConfig, threads: int | None
) -> None:
    """Train ``index`` if it needs it (all rows, or a seeded sample) and add ``x`` in chunks;
    ``threads`` sets faiss's OpenMP threads for the duration."""
    n, spec = len(x), factory_string(config, config.nlist)
    with faiss_threads(threads):
        if not index.is_trained:
            train = x
            if not config.sq_train_on_all and n > config.train_sample:
                rng = np.random.default_rng(config.seed)
                rows = np.sort(rng.choice(n, config.train_sample, replace=False))
                train = x[rows]
            logger.info("training %s on %d vectors", spec, len(train))
            index.train(train)
        logger.info("adding %d vectors (dim %d) to %s", n, x.shape[1], spec)
        chunks = range(0, n, ENCODE_CHUNK)
        for start in tqdm(chunks, desc=f"index {spec}", disable=n <= ENCODE_CHUNK):
            index.add(x[start : start + ENCODE_CHUNK])
