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
import json
import logging
import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from tqdm.auto import tqdm

from common.config import check_int
from common.io import ArtifactError, atomic_dir, read_json
from student.serving.config import NORM_SPREAD_WARN, IndexConfig, factory_string
from student.serving.kinds import read_faiss
from student.serving.vectors import (
    as_ids,
    as_matrix,
    embedding_fingerprint,
    index_items,
    index_queries,
    pad_columns,
)

logger = logging.getLogger(__name__)

FORMAT_NAME = "recdistill.item_index"
FORMAT_VERSION = 1
INDEX_FILE = "index.faiss"
IDS_FILE = "item_ids.npy"
META_FILE = "meta.json"
_ADD_CHUNK = 100_000


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

        ``threads`` temporarily sets faiss's OpenMP threads for training and adding.
        """
        config = config or IndexConfig()
        x = as_matrix(item_emb, "item_emb")
        n, dim = x.shape
        if n == 0:
            raise ValueError("item_emb: the catalogue is empty (0 rows)")
        ids = as_ids(item_ids, n)
        fingerprint = embedding_fingerprint(x)
        _check_norms(x, config)
        x, mips_max_norm = index_items(x, config)
        x = pad_columns(x, config.spec.index_dim(x.shape[1]))
        config = config.spec.structure.sized(config, n)
        index, base = _new_faiss_index(config, x.shape[1])
        _train_and_add(index, x, config, threads)
        out = cls(index, ids, config, dim, fingerprint, mips_max_norm)
        out._base = base  # keep the wrapped index alive with the refine wrapper
        return out

    # ----------------------------------------------------------------- search
    @property
    def n(self) -> int:
        return int(self.index.ntotal)

    def apply_search_params(self) -> None:
        """Push the kind's search parameters (nprobe, efSearch) and the refine factor from
        ``self.config`` into the faiss index."""
        index = self.index
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
        """Serialized size of the faiss index in bytes (the id map is not counted)."""
        return int(faiss.serialize_index(self.index).nbytes)

    # ------------------------------------------------------------- save/load
    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "config": self.config.to_dict(),
            "factory": factory_string(self.config, self.config.nlist),
            "dim": self.dim,
            "index_dim": int(self.index.d),
            "n": self.n,
            "id_dtype": str(self.item_ids.dtype),
            "fingerprint": self.fingerprint,
            "mips_max_norm": self.mips_max_norm,
            "faiss_version": faiss.__version__,
            "numpy_version": np.__version__,
            "provenance": self.provenance,
        }

    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``index.faiss``, ``item_ids.npy`` and ``meta.json`` into ``directory``.

        Written to a temporary folder beside it and moved into place with ``os.replace``; an
        existing index folder is replaced, any other non-empty folder is refused.
        """
        target = Path(directory)
        if target.exists():
            if not target.is_dir():
                raise ValueError(f"ItemIndex.save: {target} exists and is not a directory")
            if any(target.iterdir()) and not (target / META_FILE).exists():
                raise ValueError(
                    f"ItemIndex.save: {target} is a non-empty folder without {META_FILE}; "
                    "refusing to replace it (choose an empty or new folder)"
                )
        with atomic_dir(target) as tmp:
            faiss.write_index(self.index, str(tmp / INDEX_FILE))
            np.save(tmp / IDS_FILE, self.item_ids, allow_pickle=False)
            meta = {**self.meta(), "index_sha256": _sha256(tmp / INDEX_FILE)}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
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
        ``mmap``: map the FAISS file read-only, shared (``kinds.read_faiss``)."""
        src = Path(directory)
        for name in (META_FILE, IDS_FILE, INDEX_FILE):
            if not (src / name).is_file():
                raise FileNotFoundError(f"ItemIndex.load: {src / name} is missing")
        meta = _read_meta(src / META_FILE)
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
            _check_same_ids(src, ids, np.asarray(expected_item_ids))
        if expected_fingerprint is not None and expected_fingerprint != meta["fingerprint"]:
            raise ValueError(
                f"{src}: embedding fingerprint {meta['fingerprint'][:12]}... does not match the "
                f"expected {expected_fingerprint[:12]}... (the index is stale; rebuild it)"
            )
        want, got = meta.get("index_sha256"), _sha256(src / INDEX_FILE)
        if not isinstance(want, str):
            raise ValueError(
                f"{src / INDEX_FILE}: {src / META_FILE} records no index_sha256 (computed "
                f"{got}); an index without its checksum is refused; rebuild the index"
            )
        if got != want:
            raise ValueError(
                f"{src / INDEX_FILE}: sha256 differs from the one meta.json recorded at save time "
                f"(recorded {want}, computed {got}: a truncated, edited or swapped file); "
                "rebuild the index"
            )
        try:
            index = read_faiss(src / INDEX_FILE, mmap)
        except RuntimeError as exc:  # faiss raises RuntimeError on a truncated file
            raise ValueError(
                f"{src / INDEX_FILE}: unreadable or truncated FAISS index "
                f"({str(exc).splitlines()[0] if str(exc) else 'read failed'}); rebuild the index"
            ) from exc
        if index.ntotal != len(ids) or index.d != meta["index_dim"]:
            raise ValueError(
                f"{src / INDEX_FILE}: holds {index.ntotal} vectors of dim {index.d}, meta.json "
                f"says {len(ids)} of dim {meta['index_dim']}"
            )
        try:
            config = IndexConfig.from_dict(meta["config"])
        except (TypeError, ValueError) as exc:
            raise ArtifactError(
                f"{src / META_FILE}: field 'config': {exc}; rebuild the index"
            ) from None
        out = cls(index, ids, config, dim, meta["fingerprint"], meta["mips_max_norm"])
        out.provenance = dict(meta.get("provenance") or {})
        out._sha256 = got
        return out

    @property
    def sha256(self) -> str:
        """sha256 of the FAISS file as loaded (computed on load), else of the index's bytes."""
        if getattr(self, "_sha256", None) is None:
            self._sha256 = hashlib.sha256(faiss.serialize_index(self.index).tobytes()).hexdigest()
        return self._sha256


# the fields ``load`` reads from meta.json, with the JSON types each may hold
_META_FIELDS: dict[str, tuple[type, ...]] = {
    "dim": (int,),
    "index_dim": (int,),
    "n": (int,),
    "fingerprint": (str,),
    "config": (dict,),
    "mips_max_norm": (int, float, type(None)),
}


def _read_meta(path: Path) -> dict[str, Any]:
    """``meta.json`` of a saved index, each field ``load`` reads present with its JSON type;
    else an ``ArtifactError`` naming the file and the field."""
    meta = read_json(path, "the meta.json written by ItemIndex.save")
    for name, types in _META_FIELDS.items():
        if name not in meta:
            raise ArtifactError(f"{path}: no field {name!r}; rebuild the index")
        value = meta[name]
        if not isinstance(value, types) or isinstance(value, bool):
            want = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ArtifactError(
                f"{path}: field {name!r} is {value!r}; expected {want}; rebuild the index"
            )
    return meta


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _check_same_ids(src: Path, ids: np.ndarray, expected: np.ndarray) -> None:
    if len(ids) != len(expected):
        raise ValueError(
            f"{src}: id map has {len(ids)} items, expected {len(expected)} items "
            "(the catalogue changed; rebuild the index)"
        )
    if ids.dtype.kind != expected.dtype.kind and not (
        ids.dtype.kind in "iu" and expected.dtype.kind in "iu"
    ):
        raise ValueError(
            f"{src}: id map dtype {ids.dtype} does not match expected ids dtype {expected.dtype}"
        )
    diff = np.flatnonzero(ids != expected)
    if len(diff):
        row = int(diff[0])
        raise ValueError(
            f"{src}: id map differs from the expected ids at row {row}: index has "
            f"{ids[row].item()!r}, expected {expected[row].item()!r} ({len(diff)} rows differ)"
        )


def _check_norms(x: np.ndarray, config: IndexConfig) -> None:
    """Warn about setups measured to lose recall on vectors whose norms spread.

    Measured on log-normal norms (sigma 0.5, 100k x 64, see pipelines/index_bench.py): IVF over
    inner product collapses (recall@10 0.38 at nprobe 8, 0.85 at 128 where unit-norm data gets
    0.98); the MIPS transform roughly halves the nprobe needed. HNSW over inner product held
    (0.99 at efSearch 128) but HNSW over the MIPS transform did not (0.77).
    """
    norms = np.linalg.norm(x, axis=1)
    mean = float(norms.mean())
    spread = float(norms.std() / mean) if mean > 0 else 0.0
    if (config.normalize and not config.bias) or config.spec.exact or spread <= NORM_SPREAD_WARN:
        return
    if config.is_ivf and not config.mips_transform:
        advice = "IVF over inner product on such vectors loses recall badly; set mips_transform"
    elif config.is_hnsw and config.mips_transform:
        advice = "HNSW over the MIPS transform lost recall in our measurements; use it without"
    else:
        logger.info("item norms spread (std/mean=%.3f); normalize=False keeps raw IP", spread)
        return
    logger.warning(
        "item norms spread (std/mean=%.3f > %.2f) with normalize=False and kind=%r: %s, or "
        "use normalize=True for cosine-trained embeddings, and measure recall against exact "
        "search (pipelines.index_bench)",
        spread,
        NORM_SPREAD_WARN,
        config.kind,
        advice,
    )


def _new_faiss_index(config: IndexConfig, d: int) -> tuple[faiss.Index, faiss.Index]:
    """An empty faiss index for ``d``-wide vectors: (the index, its base under refine)."""
    metric = faiss.METRIC_L2 if config.mips_transform else faiss.METRIC_INNER_PRODUCT
    base = faiss.index_factory(d, factory_string(config, config.nlist), metric)
    config.spec.structure.configure(base, config)
    index = faiss.IndexRefineFlat(base) if config.refine else base
    if config.refine:
        index.k_factor = float(config.refine_factor)
    return index, base


def _train_and_add(
    index: faiss.Index, x: np.ndarray, config: IndexConfig, threads: int | None
) -> None:
    """Train ``index`` if it needs it (all rows, or a seeded sample) and add ``x`` in chunks;
    ``threads`` sets faiss's OpenMP threads for the duration."""
    n, spec = len(x), factory_string(config, config.nlist)
    old_threads = faiss.omp_get_max_threads()
    if threads is not None:
        faiss.omp_set_num_threads(threads)
    try:
        if not index.is_trained:
            train = x
            if not config.sq_train_on_all and n > config.train_sample:
                rng = np.random.default_rng(config.seed)
                rows = np.sort(rng.choice(n, config.train_sample, replace=False))
                train = x[rows]
            logger.info("training %s on %d vectors", spec, len(train))
            index.train(train)
        logger.info("adding %d vectors (dim %d) to %s", n, x.shape[1], spec)
        for start in tqdm(range(0, n, _ADD_CHUNK), desc=f"index {spec}", disable=n <= _ADD_CHUNK):
            index.add(x[start : start + _ADD_CHUNK])
    finally:
        faiss.omp_set_num_threads(old_threads)
