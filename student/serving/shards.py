"""Sharded item indexes (``IndexConfig.shards = K > 1``): the catalogue cut into K contiguous
row ranges, one FAISS index of the configured kind over each, one file each, searched together
as one ``faiss.IndexShards``.

**Build** (:class:`ShardBuilder`). The item vectors come from an encoder ``encode(rows)`` ->
[len(rows), D] (the item tower: :func:`item_tower_encoder`), always called on at most
``chunk`` rows, and each chunk goes into its shard's index at once. So the build holds one
chunk of float vectors, the training sample and the codes of the shard being filled; with a
folder (``ItemIndex.from_encoder(directory=...)``) a full shard is written and dropped, so no
more than one shard's codes are ever in memory. Kinds that train (IVF's coarse quantizer,
SQ8's ranges) train ONCE, on a seeded sample of ``train_sample`` rows (at least 39 per IVF
cell, faiss's minimum), and every shard starts from a copy of that trained empty index: the
shards share cells and code ranges, so their scores are comparable and their merged top-k is
one index's. The MIPS transform needs the largest item norm before the first shard: one more
pass of the encoder finds it. The embedding fingerprint is hashed chunk by chunk in row order
and equals ``vectors.embedding_fingerprint`` of the whole matrix.

**Search**. ``faiss.IndexShards(d, threaded=False, successive_ids=True)`` (IVF kinds: its
subclass ``IndexShardsIVF``, the coarse cells found once for every shard): each shard's local
rows are offset by its start and the shards' top-k are merged (the first shard's metric). Not
threaded: each shard's search already spreads a batch over faiss's OpenMP threads, and a thread
per shard per query on top of that oversubscribes a small machine (2 cores here) and adds a
thread start to every batch-1 query; on a machine with a core per shard ``threaded=True`` is
the one argument to change. Loaded shards are memory-mapped as the single file is
(``kinds.read_faiss``), each checked against the sha256 that ``meta.json`` recorded for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from common.io import ArtifactError
from student.serving.config import IndexConfig
from student.serving.kinds import faiss_threads, new_faiss_index, read_faiss
from student.serving.vectors import as_matrix, check_norms, index_items, pad_columns

logger = logging.getLogger(__name__)

Encoder = Callable[[np.ndarray], np.ndarray]  # item rows [m] int64 -> vectors [m, D]
ENCODE_CHUNK = 100_000  # rows per encoder call (and per faiss add)
MIN_POINTS_PER_CELL = 39  # faiss k-means warns and degrades below this many points a centroid


def shard_bounds(n: int, shards: int) -> list[tuple[int, int]]:
    """K contiguous row ranges [start, stop) covering 0..n, sizes differing by at most 1."""
    if shards > n:
        raise ValueError(
            f"IndexConfig.shards={shards} exceeds the number of items N={n}; "
            f"expected 1 <= shards <= {n}"
        )
    edges = np.linspace(0, n, shards + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def row_chunks(start: int, stop: int, chunk: int) -> Iterator[np.ndarray]:
    """The rows start..stop-1 as int64 arrays of at most ``chunk`` rows."""
    for a in range(start, stop, chunk):
        yield np.arange(a, min(a + chunk, stop), dtype=np.int64)


def item_tower_encoder(model: Any) -> Encoder:
    """``encode(rows)`` for a student: its item tower's vectors of ``rows`` (with the bias
    column of an ``item_bias`` model: what ``ItemIndex.build`` takes), float32."""
    import torch

    def encode(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.encode_items(torch.as_tensor(rows)).numpy().astype(np.float32)

    return encode


class ShardBuilder:
    """Builds the shards of ``config`` (``shards`` > 1) over ``n`` items from ``encode``, one
    at a time (:meth:`shards`); ``config`` (sized: nlist from ``n``), ``dim``, ``index_dim``,
    ``mips_max_norm`` and, once every shard is built, ``fingerprint`` describe the result."""

    def __init__(
        self,
        encode: Encoder,
        n: int,
        config: IndexConfig,
        threads: int | None = None,
        chunk: int = ENCODE_CHUNK,
    ) -> None:
        self.bounds = shard_bounds(n, config.shards)
        self.encode, self.n, self.chunk, self.threads = encode, n, int(chunk), threads
        self.config = config.spec.structure.sized(config, n)
        self.dim: int | None = None
        self._hash: Any = None
        self._digest: str | None = None
        with faiss_threads(threads):
            self.mips_max_norm = self._max_norm() if config.mips_transform else None
            self._template = self._trained_template()

    def _raw(self, rows: np.ndarray) -> np.ndarray:
        """The encoder's vectors of ``rows``, checked (``as_matrix``: finite, [len(rows), D])."""
        x = as_matrix(self.encode(rows), "item_emb", self.dim)
        if len(x) != len(rows):
            raise ValueError(f"item_emb: the encoder gave {len(x)} rows for {len(rows)} items")
        if self.dim is None:
            self.dim = int(x.shape[1])
        return x

    def _stored(self, x: np.ndarray) -> np.ndarray:
        """Raw vectors as the index stores them (normalised, transformed, padded)."""
        x, _ = index_items(x, self.config, self.mips_max_norm)
        return pad_columns(x, self.config.spec.index_dim(x.shape[1]))

    def _max_norm(self) -> float:
        """The largest norm of the vectors the MIPS transform augments (a pass of the encoder)."""
        plain = dataclasses.replace(self.config, mips_transform=False)
        top = 0.0
        for rows in row_chunks(0, self.n, self.chunk):
            x, _ = index_items(self._raw(rows), plain)
            top = max(top, float(np.sqrt(np.einsum("ij,ij->i", x, x).max())))
        return top

    def _trained_template(self) -> bytes:
        """The serialised empty index every shard starts from, trained once on a sample."""
        probe = self._raw(np.arange(min(self.n, self.chunk, 1024), dtype=np.int64))
        check_norms(probe, self.config)  # the norm-spread warnings of ItemIndex.build
        index, _ = new_faiss_index(self.config, self._stored(probe[:1]).shape[1])
        self.index_dim = int(index.d)
        if not index.is_trained:
            rows = self._sample_rows()
            parts = [rows[a : a + self.chunk] for a in range(0, len(rows), self.chunk)]
            sample = np.vstack([self._stored(self._raw(r)) for r in parts])
            logger.info("training %s once for %d shards on %d sampled vectors",
                        self.config.kind, self.config.shards, len(sample))  # fmt: skip
            index.train(sample)
        return faiss.serialize_index(index).tobytes()

    def _sample_rows(self) -> np.ndarray:
        """Seeded sorted training rows: ``train_sample`` (at least 39 a cell), at most all."""
        want = self.config.train_sample
        if self.config.is_ivf:
            want = max(want, MIN_POINTS_PER_CELL * int(self.config.nlist))
        if want >= self.n:
            return np.arange(self.n, dtype=np.int64)
        rng = np.random.default_rng(self.config.seed)
        return np.sort(rng.choice(self.n, want, replace=False)).astype(np.int64)

    def shards(self) -> Iterator[tuple[int, int, faiss.Index]]:
        """(start, stop, the shard's filled faiss index), one shard at a time, in row order."""
        self._hash = None
        for start, stop in self.bounds:
            index = faiss.deserialize_index(np.frombuffer(self._template, dtype=np.uint8))
            base = faiss.downcast_index(index.base_index) if self.config.refine else index
            self.config.spec.structure.configure(base, self.config)
            with faiss_threads(self.threads):
                for rows in row_chunks(start, stop, self.chunk):
                    x = self._raw(rows)
                    if self._hash is None:  # vectors.embedding_fingerprint, chunk by chunk
                        self._hash = hashlib.sha256(str((self.n, self.dim)).encode())
                    self._hash.update(x.tobytes())
                    index.add(self._stored(x))
            logger.info("shard %d..%d: %d vectors", start, stop, index.ntotal)
            yield start, stop, index
        self._digest = self._hash.hexdigest()

    @property
    def fingerprint(self) -> str:
        if self._digest is None:
            raise RuntimeError("ShardBuilder.fingerprint: build every shard first")
        return self._digest


def assemble(parts: list[faiss.Index]) -> faiss.IndexShards:
    """One ``IndexShards`` over ``parts`` (rows offset by the shards before; not threaded:
    see the module note). IVF shards (not under refine) share one trained quantizer, so they
    go into ``faiss.IndexShardsIVF``, which probes the coarse cells once a query for all shards
    (the first shard's quantizer and nprobe) instead of once a shard. The python wrapper keeps
    ``parts`` alive with it (the first one owns the shared quantizer)."""
    ivf = faiss.try_extract_index_ivf(parts[0])
    if ivf is not None and not isinstance(parts[0], faiss.IndexRefine):
        quantizer = faiss.downcast_index(ivf.quantizer)
        out = faiss.IndexShardsIVF(quantizer, int(ivf.nlist), False, True)
    else:
        out = faiss.IndexShards(int(parts[0].d), False, True)
    for p in parts:
        out.add_shard(p)
    return out


def parts_of(index: faiss.Index) -> list[faiss.Index]:
    """The faiss indexes under ``index``: its shards, or ``[index]`` itself."""
    if isinstance(index, faiss.IndexShards):
        return [faiss.downcast_index(index.at(i)) for i in range(index.count())]
    return [index]


def shard_file(i: int) -> str:
    return f"shard_{i:05d}.faiss"


def write_shard(index: faiss.Index, folder: Path, i: int, start: int, stop: int) -> dict:
    """Write shard ``i`` into ``folder``; its ``meta.json`` entry (file, rows, sha256)."""
    faiss.write_index(index, str(folder / shard_file(i)))
    return {"file": shard_file(i), "start": start, "stop": stop,
            "sha256": file_sha256(folder / shard_file(i))}  # fmt: skip


def combined_sha256(shas: list[str]) -> str:
    """One sha256 for a set of shard files (of their sha256s, in order)."""
    return hashlib.sha256("\n".join(shas).encode()).hexdigest()


def read_shards(src: Path, meta: dict, mmap: bool) -> tuple[faiss.IndexShards, str]:
    """The shards ``meta.json`` lists in ``src``, each checked against its recorded sha256 and
    row range, as one ``IndexShards``; returns (it, :func:`combined_sha256` of the files)."""
    entries = meta.get("shard_files")
    if not isinstance(entries, list) or not entries:
        raise ArtifactError(f"{src / 'meta.json'}: no field 'shard_files'; rebuild the index")
    parts, shas, expect = [], [], 0
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or e.get("file") != shard_file(i):  # never a path elsewhere
            raise ArtifactError(
                f"{src / 'meta.json'}: shard_files[{i}] does not name {shard_file(i)}; "
                "rebuild the index"
            )
        path = src / e["file"]
        if not path.is_file():
            raise FileNotFoundError(f"ItemIndex.load: {path} is missing")
        got = file_sha256(path)
        if got != e.get("sha256"):
            raise ValueError(
                f"{path}: sha256 differs from the one meta.json recorded at save time (recorded "
                f"{e.get('sha256')}, computed {got}: a truncated, edited or swapped shard); "
                "rebuild the index"
            )
        try:
            part = read_faiss(path, mmap)
        except RuntimeError as exc:
            raise ValueError(f"{path}: unreadable FAISS shard ({exc}); rebuild the index") from exc
        if (e.get("start"), e.get("stop")) != (expect, expect + part.ntotal):
            raise ValueError(
                f"{path}: holds rows {expect}..{expect + part.ntotal}, meta.json says "
                f"{e.get('start')}..{e.get('stop')}; rebuild the index"
            )
        parts.append(part)
        shas.append(got)
        expect += part.ntotal
    return assemble(parts), combined_sha256(shas)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
