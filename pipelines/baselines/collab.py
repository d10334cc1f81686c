"""The collaborative model, chosen by catalogue size: EASE^R while its dense fit fits a memory
budget, else implicit-feedback ALS (Hu, Koren, Volinsky 2008; the ``implicit`` package).

EASE^R holds an I x I float64 Gram matrix, its inverse and the weights at once
(:func:`ease_bytes`: about 32.5 I^2 bytes, 2.6 GB at 9k items, 325 GB at 100k), so past a few
tens of thousands of items it cannot be fit at all. ALS keeps two factor matrices, [U, D] and
[I, D], and scores a (user, item) pair with one dot product. ``fit_collab`` picks between them
against a fixed budget (``DEFAULT_MEMORY_GB``), never against the memory free right now, so
the same data gives the same model on every machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import scipy.sparse as sp

from common.io import atomic_write
from pipelines.baselines.als import (
    ALS,
    ALS_GRID_MAX_NNZ,
    ALS_REGULARIZATIONS,
    ALS_VALID_USERS,
    ALSConfig,
    fit_als,
)
from pipelines.baselines.ease import EASE, EASE_LAMBDAS, fit_ease

logger = logging.getLogger(__name__)

CollabKind = Literal["auto", "ease", "als"]
COLLAB_KINDS: tuple[str, ...] = get_args(CollabKind)

DEFAULT_MEMORY_GB = 4.0  # fixed, so the auto choice is the same on every machine

# Peak resident memory of one EASE^R fit above the process's resident memory before it, per
# I^2, measured with ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` in a fresh process per size
# (4000 users, 200k random interactions, numpy/OpenBLAS, one thread): 32.9 at 3000 items
# (296 MB), 32.5 at 6000 (1.17 GB), 32.3 at 9000 (2.62 GB). It is the float32 Gram densified
# and cast to float64 (12), the float64 Gram, its inverse and -P / diag(P) alive together (24)
# plus the float32 B (4). Rounded up to 33.
EASE_BYTES_PER_ITEM2 = 33.0
EASE_BYTES_FIXED = 64 * 2**20  # sparse train matrix, Gram in sparse form, small temporaries


def ease_bytes(n_items: int) -> int:
    """Estimated peak bytes of fitting EASE^R on ``n_items`` items (see the constant's note)."""
    if n_items < 0:
        raise ValueError(f"ease_bytes(n_items={n_items}); expected >= 0")
    return int(EASE_BYTES_PER_ITEM2 * float(n_items) ** 2 + EASE_BYTES_FIXED)


def physical_memory_bytes() -> int:
    """The machine's physical memory (``os.sysconf``, else /proc/meminfo MemTotal)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    raise OSError("cannot read the physical memory size (os.sysconf or /proc/meminfo)")


class CollabMemoryError(ValueError):
    """EASE^R was asked for on a catalogue whose dense fit cannot fit in this machine."""


def check_ease_fits(n_items: int) -> None:
    """Raise :class:`CollabMemoryError` before allocating when EASE^R's estimated peak exceeds
    the physical memory."""
    need, have = ease_bytes(n_items), physical_memory_bytes()
    if need > have:
        raise CollabMemoryError(
            f"EASE^R on {n_items} items needs about {need / 1e9:.1f} GB (an I x I float64 "
            f"Gram, its inverse and the weights) but this machine has {have / 1e9:.1f} GB: "
            "use --collab als (or --collab auto) for a catalogue this size"
        )


CACHE_VERSION = 1  # bump when a fit's result would change for the same inputs


def _hash_csr(h, m: sp.csr_matrix) -> None:
    m = m.tocsr()
    m.sort_indices()
    h.update(repr(m.shape).encode())
    for a in (m.indptr, m.indices, m.data):
        h.update(np.ascontiguousarray(a).tobytes())


def fit_key(split, kind: str, als: ALSConfig | None = None, ease_lambdas=EASE_LAMBDAS) -> str:
    """What a fit of ``kind`` ('ease' or 'als') depends on: the train and validation
    interactions (never test), the hyperparameters and their grid, the library version."""
    h = hashlib.sha256()
    if kind == "ease":
        params = {"lambdas": [float(x) for x in ease_lambdas]}
    else:
        import implicit

        params = {
            # threads do not change the fit (see ALSConfig), so jobs with other threads share it
            "als": {k: v for k, v in asdict(als or ALSConfig()).items() if k != "num_threads"},
            "grid": [float(x) for x in ALS_REGULARIZATIONS],
            "grid_max_nnz": ALS_GRID_MAX_NNZ,
            "valid_users": ALS_VALID_USERS,
            "implicit": implicit.__version__,
        }
    meta = {"version": CACHE_VERSION, "kind": kind, "metric": "ndcg@10", **params}
    h.update(json.dumps(meta, sort_keys=True).encode())
    _hash_csr(h, split.matrix("train"))
    _hash_csr(h, split.matrix("valid"))
    return h.hexdigest()[:20]


def _save_fit(path: Path, model, info: dict) -> None:
    arrays = (
        {"B": model.B}
        if model.kind == "ease"
        else {"user_factors": model.user_factors, "item_factors": model.item_factors}
    )

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, info=np.array(json.dumps(info)), **arrays)

    atomic_write(path, write)


def _load_fit(path: Path, split, kind: str):
    with np.load(path, allow_pickle=False) as z:
        info = json.loads(str(z["info"]))
        if kind == "ease":
            model = EASE.from_weights(split.matrix("train"), z["B"], info["lambda"])
        else:
            cfg = ALSConfig(**{k: info[k] for k in ALSConfig.__dataclass_fields__})
            model = ALS.from_factors(cfg, z["user_factors"], z["item_factors"])
    n_items = model.B.shape[0] if kind == "ease" else len(model.item_factors)
    if n_items != split.n_items:
        raise ValueError(f"holds a model of {n_items} items, expected {split.n_items}")
    return model, info


def fit_collab(
    split,
    kind: str = "auto",
    memory_gb: float = DEFAULT_MEMORY_GB,
    als: ALSConfig | None = None,
    ease_lambdas=EASE_LAMBDAS,
    cache: str | Path | None = None,
):
    """The collaborative model for ``split``: ``kind`` 'ease', 'als', or 'auto' (EASE^R when
    :func:`ease_bytes` of the catalogue is within ``memory_gb``, else ALS).

    Returns ``(model, info)``: ``model(users [B]) -> [B, I]`` and ``model.score_pairs(users
    [P], items [P]) -> [P]``; ``info`` names the model (``kind``), why it was chosen
    (``chosen_by``), its hyperparameters and validation scores. EASE^R past the physical
    memory raises :class:`CollabMemoryError` before anything is allocated.

    ``cache``: a folder where the fit (with its validation grid) is kept under
    :func:`fit_key`, so the jobs of one chain (``prepare``, ``generate-labels``,
    ``benchmark``) fit it once; ``info["cache"]`` says whether it was a hit."""
    if kind not in COLLAB_KINDS:
        raise ValueError(f"fit_collab kind={kind!r}; expected one of {COLLAB_KINDS}")
    if not memory_gb > 0:
        raise ValueError(f"fit_collab memory_gb={memory_gb!r}; expected > 0")
    # the fit is training-side (generate-labels reads it from the shared cache) whichever job
    # asks for it: it gets the split without its test parts, so a read of them raises LeakError
    split = split.training_view()
    n_items = split.n_items
    need_gb = ease_bytes(n_items) / 1e9
    if kind == "auto":
        kind = "ease" if need_gb <= memory_gb else "als"
        verdict = "within" if kind == "ease" else "over"
        chosen_by = (
            f"auto: EASE^R needs {need_gb:.2f} GB for {n_items} items, {verdict} the "
            f"{memory_gb:g} GB budget"
        )
    else:
        chosen_by = f"forced: collab={kind!r}"
    logger.info("collaborative model: %s (%s)", kind, chosen_by)
    base = {"kind": kind, "chosen_by": chosen_by, "n_items": int(n_items),
            "ease_gb_estimate": round(need_gb, 3), "memory_gb": float(memory_gb)}  # fmt: skip
    if kind == "ease":
        check_ease_fits(n_items)
    path = None
    if cache is not None:
        key = fit_key(split, kind, als, ease_lambdas)
        path = Path(cache) / f"{kind}-{key}.npz"
        if path.exists():
            try:
                model, info = _load_fit(path, split, kind)
            except (OSError, ValueError, KeyError, TypeError) as e:
                logger.warning("%s: unreadable cached fit (%s); fitting again", path, e)
            else:
                logger.info("collaborative model: %s fit read from the cache %s", kind, path)
                return model, {**base, **info, "cache": {"path": str(path), "hit": True}}
    if kind == "ease":
        model, info = fit_ease(split, lambdas=ease_lambdas)
    else:
        model, info = fit_als(split, als)
    if path is not None:
        _save_fit(path, model, info)
        logger.info("collaborative model: fit written to the cache %s", path)
    cached = {"cache": {"path": str(path), "hit": False}} if path is not None else {}
    return model, {**base, **info, **cached}
