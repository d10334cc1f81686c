"""Is an :class:`ItemIndex` what the model made? A seeded sample of its stored vectors against
the item tower's output (the FAISS file's sha256 is checked by ``ItemIndex.load``)."""

from __future__ import annotations

import faiss
import numpy as np

from student.serving.index import ItemIndex
from student.serving.shards import parts_of
from student.serving.vectors import as_matrix, index_items, pad_columns


def check_vectors(index: ItemIndex, item_emb: np.ndarray, sample: int = 64, seed: int = 0) -> None:
    """Refuse ``index`` if its stored vectors are not ``item_emb`` [N, D] (the item tower's
    output): ``sample`` seeded rows reconstructed from the index must equal the rows as
    ``build`` would have added them, within the code's tolerance (SQ8: 5% of the norm)."""
    x = as_matrix(item_emb, "item_emb", index.dim)
    rows = np.sort(np.random.default_rng(seed).choice(len(x), min(sample, len(x)), False))
    want, _ = index_items(x[rows], index.config, index.mips_max_norm)
    want = pad_columns(want, int(index.index.d))
    got = np.empty_like(want)
    parts = parts_of(index.index)  # one, or each shard's rows (offset by the ones before)
    starts = np.cumsum([0] + [p.ntotal for p in parts])
    shard = np.searchsorted(starts, rows, side="right") - 1
    for s in np.unique(shard):
        got[shard == s] = _reconstruct(parts[s], rows[shard == s] - starts[s])
    err = np.linalg.norm(got - want, axis=1) / np.maximum(np.linalg.norm(want, axis=1), 1e-12)
    tol = 1e-4 if index.config.refine or index.config.spec.codes == "Flat" else 0.05
    bad = np.flatnonzero(err > tol)
    if len(bad):
        r = int(rows[bad[0]])
        raise ValueError(
            f"index vectors differ from the item tower's output: {len(bad)} of {len(rows)} "
            f"sampled rows off by more than {tol:g} (relative), e.g. row {r} (item "
            f"{index.item_ids[r].item()!r}) by {float(err[bad[0]]):.3g}; the index was "
            "built from another model: rebuild it"
        )


def _reconstruct(fi: faiss.Index, rows: np.ndarray) -> np.ndarray:
    """[len(rows), d] stored vectors (decoded) of ``rows``; IVF gets a direct map for it."""
    base = faiss.downcast_index(fi.base_index) if isinstance(fi, faiss.IndexRefine) else fi
    ivf = None if isinstance(fi, faiss.IndexRefine) else faiss.try_extract_index_ivf(base)
    if ivf is not None:
        ivf.make_direct_map()
    try:
        return np.stack([fi.reconstruct(int(r)) for r in rows]).astype(np.float32)
    finally:
        if ivf is not None:
            ivf.set_direct_map_type(faiss.DirectMap.NoMap)
