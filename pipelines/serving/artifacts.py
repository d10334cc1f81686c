"""Find a finished run's artifacts and load them once into an :class:`Engine`.

A run folder is what ``recdistill demo`` writes (``compressed/``, ``student_distilled/``, ...)
or a single ``train-student`` / ``compress`` output. The model is the first of
``RunLayout.servable()`` that exists (``--model`` overrides). The dataset spec comes from the JSON the
job that made the model wrote beside it (``compression.json`` or ``metrics.json``); the
protocol, split seed and the dataset and split fingerprints from the model folder's own
provenance (``config.json``). A model saved without provenance falls back to the training
job's ``metrics.json`` (found from ``compression.json``). Loading refuses data whose
fingerprints differ. The item index is
``<run>/index`` if present (``--index`` overrides; it must match the model's item embeddings),
else it is built from the student's item tower over every item, cold ones included.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.io import read_json, resolve_recorded
from pipelines.core.layout import RunLayout

logger = logging.getLogger(__name__)

RUN_INDEX = "index"


class ServeError(ValueError):
    """A run that cannot be served: the message names the file, what is wrong and the fix."""


@dataclass
class RunSource:
    """Where a run's artifacts are and which data made them (see :func:`resolve_run`)."""

    model: Path
    dataset: str
    protocol: str
    split_seed: int
    dataset_fingerprint: str
    split_fingerprint: str
    provenance: list[str]
    index: Path | None = None
    run: Path | None = None
    cold_setting: str = "inductive"  # cold_items only (pipelines.data.splits)


def _read(path: Path) -> dict:
    try:
        return read_json(path, "a run's metadata written by a recdistill job")
    except FileNotFoundError as exc:
        raise ServeError(str(exc)) from None


def _job_record(model_dir: Path) -> Path:
    """The JSON the job that made ``model_dir`` wrote beside it (it names the dataset spec)."""
    for name in ("metrics.json", "compression.json"):  # train-student, compress
        if (model_dir.parent / name).is_file():
            return model_dir.parent / name
    raise ServeError(
        f"{model_dir}: cannot tell which data made this model; expected "
        f"{model_dir.parent / 'metrics.json'} (train-student) or "
        f"{model_dir.parent / 'compression.json'} (compress) beside it"
    )


def _from_provenance(model_dir: Path, record: Path, prov: dict) -> dict:
    """The data of ``model_dir`` from its own provenance, the dataset spec from ``record``."""
    from student.model_io import CONFIG_NAME

    where = str(model_dir / CONFIG_NAME)
    cfg = _read(record).get("config", {})
    try:
        out = {
            "dataset": cfg["dataset"],
            "protocol": prov["split"]["protocol"],
            "split_seed": int(prov["split"]["seed"]),
            "dataset_fingerprint": prov["dataset"]["fingerprint"],
            "split_fingerprint": prov["split"]["fingerprint"],
            "cold_setting": prov["split"].get("cold_setting", "inductive"),
        }
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ServeError(
            f"{where} / {record}: expected provenance.dataset.fingerprint, provenance.split"
            ".protocol/seed/fingerprint (written with the model) and config.dataset in "
            f"{record.name}"
        ) from None
    for key in ("protocol", "split_seed"):
        if key in cfg and cfg[key] != out[key]:
            raise ServeError(
                f"{record}: {key}={cfg[key]!r} but the model's provenance ({where}) says "
                f"{out[key]!r}"
            )
    return {**out, "provenance": [str(record), where]}


def _from_training_metrics(model_dir: Path, run: Path | None) -> dict:
    """Fallback for a model saved without provenance: the training job's ``metrics.json``."""
    metrics, provenance = _training_metrics(model_dir, run)
    cfg = metrics.get("config", {})
    try:
        return {
            "dataset": cfg["dataset"],
            "protocol": cfg["protocol"],
            "split_seed": int(cfg["split_seed"]),
            "dataset_fingerprint": metrics["dataset"]["fingerprint"],
            "split_fingerprint": metrics["split"]["fingerprint"],
            "cold_setting": cfg.get("cold_setting", "inductive"),
            "provenance": provenance,
        }
    except (KeyError, TypeError, ValueError):
        raise ServeError(
            f"{provenance[-1]}: expected config.dataset/protocol/split_seed and "
            "dataset.fingerprint / split.fingerprint (written by train-student)"
        ) from None


def _training_metrics(model_dir: Path, run: Path | None) -> tuple[dict, list[str]]:
    """The config (dataset, protocol, split_seed) and fingerprints behind ``model_dir``."""
    record = _job_record(model_dir)
    if record.name == "metrics.json":  # a train-student output: <out>/model + <out>/metrics.json
        return _read(record), [str(record)]
    # a compress output: its config names the trained student (relative to the record's
    # folder when inside its run: a copied or moved run finds it)
    comp = _read(record)
    source = resolve_recorded(comp.get("config", {}).get("model", ""), record.parent)
    # the run's own student first (a copied or moved run still records the old path)
    candidates = [RunLayout(model_dir.parent.parent).student_distilled / "metrics.json"]
    if run is not None:
        candidates.append(RunLayout(run).student_distilled / "metrics.json")
    root = (run or model_dir.parent.parent).resolve()
    outside = source.resolve().parent != root and root not in source.resolve().parents
    if not outside:  # a path the metadata names is read only inside the run
        candidates.append(source.parent / "metrics.json")
    for m in candidates:
        if m.is_file():
            data = _read(m)
            cfg = comp["config"]
            for key in ("dataset", "protocol", "split_seed"):
                if data.get("config", {}).get(key) != cfg.get(key):
                    raise ServeError(
                        f"{record}: {key}={cfg.get(key)!r} but the student's {m} says "
                        f"{data.get('config', {}).get(key)!r}"
                    )
            return data, [str(record), str(m)]
    where = f"lies outside the run {root} (not read)" if outside else "has no metrics.json"
    raise ServeError(
        f"{record}: the student it compressed ({source}) {where}; looked at "
        f"{[str(c) for c in candidates]} (needed for the dataset and split fingerprints)"
    )


def _find_model(run_dir: Path | None, model: str | Path | None) -> Path:
    """``--model``, else the first of ``RunLayout(run_dir).servable()`` that exists."""
    if model:
        model_dir = Path(model)
    elif run_dir is not None:
        places = RunLayout(run_dir).servable()
        found = [m for m in places if (m / "config.json").is_file()]
        if not found:
            looked = [str(m.relative_to(run_dir)) for m in places]
            raise ServeError(
                f"--run {run_dir}: holds no model; looked for {looked} (each a folder "
                "with config.json); pass --model"
            )
        model_dir = found[0]
    else:
        raise ServeError("serve: give --run (a finished run folder) or --model")
    if not (model_dir / "config.json").is_file():
        raise ServeError(f"--model {model_dir}: no config.json (expected a saved student folder)")
    return model_dir


def _find_index(run_dir: Path | None, index: str | Path | None) -> Path | None:
    """``--index``, else ``<run>/index`` if it holds one, else None (built at load)."""
    if index:
        index_dir = Path(index)
        if not (index_dir / "meta.json").is_file():
            raise ServeError(
                f"--index {index_dir}: no meta.json (expected an ItemIndex.save folder)"
            )
        return index_dir
    if run_dir is not None and (run_dir / RUN_INDEX / "meta.json").is_file():
        return run_dir / RUN_INDEX
    return None


def resolve_run(
    run: str | Path | None, model: str | Path | None = None, index: str | Path | None = None
) -> RunSource:
    """Find the model, index and data of ``run`` (``model`` / ``index`` override). Cheap: reads
    JSON files only, so the CLI reports a bad path as a one-line error."""
    from student.model import read_provenance

    run_dir = Path(run) if run else None
    if run_dir is not None and not run_dir.is_dir():
        raise ServeError(
            f"--run {run_dir}: no such folder (a finished `recdistill demo --out` run)"
        )
    model_dir = _find_model(run_dir, model)
    record = _job_record(model_dir)
    try:
        prov = read_provenance(model_dir)
    except (OSError, ValueError) as exc:
        raise ServeError(f"{model_dir}: cannot read its provenance: {exc}") from None
    if prov.get("dataset") and prov.get("split"):
        found = _from_provenance(model_dir, record, prov)
    else:  # saved before models carried their provenance
        found = _from_training_metrics(model_dir, run_dir)
    return RunSource(model=model_dir, index=_find_index(run_dir, index), run=run_dir, **found)


def model_fingerprint(model_dir: Path) -> str:
    """sha256 (first 16 hex) of the model folder's files: the weights and their config."""
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "compression.json"):
        p = model_dir / name
        if p.is_file():
            h.update(name.encode())
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class Engine:
    """Everything one served run needs, loaded once; replaced whole on reload."""

    source: RunSource
    model: Any
    index: Any
    retriever: Any
    item_emb: np.ndarray  # [n_items, D] item tower outputs (the index holds these)
    item_ids: np.ndarray  # [n_items] str
    titles: list[str]
    user_ids: np.ndarray  # [n_users] str
    user_pos: dict[str, int]
    item_pos: dict[str, int]
    cold: np.ndarray  # [n_items] bool: no train interaction (served through content)
    model_fingerprint: str
    index_fingerprint: str
    index_kind: str
    int8_linear_switched: int = 0  # int8 Linear layers moved to the dequant kernel
    loaded_at: float = field(default_factory=time.time)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def describe(self) -> dict:
        s = self.source
        return {
            "run": None if s.run is None else str(s.run),
            "model": str(s.model),
            "model_fingerprint": self.model_fingerprint,
            "index": str(s.index) if s.index else f"built ({self.index_kind})",
            "index_kind": self.index_kind,
            "index_fingerprint": self.index_fingerprint,
            "dataset": s.dataset,
            "dataset_fingerprint": s.dataset_fingerprint,
            "split": {
                "protocol": s.protocol,
                "seed": s.split_seed,
                "fingerprint": s.split_fingerprint,
            },
            "users": self.n_users,
            "items": self.n_items,
            "cold_items": int(self.cold.sum()),
            "dim": int(self.index.dim),
            "int8_linear_dequant": self.int8_linear_switched,
            "loaded_at": self.loaded_at,
        }


def _load_model(model_dir: Path):
    from student.loading import load_student

    try:
        return load_student(model_dir)
    except (OSError, ValueError) as exc:
        raise ServeError(f"{model_dir}: cannot load the student: {exc}") from None


def load_engine(
    source: RunSource, index_kind: str = "flat", batch_independent: bool = True
) -> Engine:
    """Load model, data, histories and index of ``source``; check they belong together. A
    known user's history and seen items: its train + valid rows (``Split.known_before``).

    ``batch_independent``: see :func:`student.compress.int8.make_batch_independent`.

    Checks: the model's users and items match the dataset; the dataset and split fingerprints
    match those the model recorded; a stored index has the model's dimension, the dataset's
    item ids in order and the fingerprint of the model's item embeddings. Raises
    :class:`ServeError` naming what differs.
    """
    import torch

    from pipelines.data import histories, to_csr
    from student.serving import Retriever

    model = _load_model(source.model)
    from student.compress.int8 import make_batch_independent

    switched = make_batch_independent(model) if batch_independent else 0
    cfg = model.config
    data, split = _load_data(source, cfg)
    item_ids = data.items["item_id"].to_numpy().astype(str)
    with torch.no_grad():
        item_emb = model.encode_items(torch.arange(data.n_items)).numpy().astype(np.float32)
    index, kind = _item_index(source, cfg, item_emb, item_ids, index_kind)
    known = split.known_before("test")  # a served run knows its train and validation
    hist = histories(known, data.n_users, cfg.history_len, data.n_items)
    seen = to_csr(known, data.n_users, data.n_items)
    counts = np.bincount(split.train["item"].to_numpy(), minlength=data.n_items)  # its training
    user_ids = data.users["user_id"].to_numpy().astype(str)
    engine = Engine(
        source=source,
        model=model,
        index=index,
        retriever=Retriever(model, index, hist, seen, popularity=counts),
        item_emb=item_emb,
        item_ids=item_ids,
        titles=[str(t) for t in data.items["title"]],
        user_ids=user_ids,
        user_pos={u: i for i, u in enumerate(user_ids)},
        item_pos={m: j for j, m in enumerate(item_ids)},
        cold=counts == 0,
        model_fingerprint=model_fingerprint(source.model),
        index_fingerprint=index.sha256[:16],  # of the FAISS file as loaded (computed)
        index_kind=kind,
        int8_linear_switched=switched,
    )
    logger.info(
        "loaded %s (%s): %d users, %d items (%d cold), %s index %s",
        source.model,
        engine.model_fingerprint,
        engine.n_users,
        engine.n_items,
        int(engine.cold.sum()),
        kind,
        engine.index_fingerprint,
    )
    return engine


def _load_data(source: RunSource, cfg):
    """The dataset and training split of ``source``, checked against the recorded
    fingerprints and the model config ``cfg`` (users, items)."""
    from pipelines.data import load_dataset, training_split

    try:
        data = load_dataset(source.dataset)
    except (OSError, ValueError) as exc:
        # never the parser's message: it may quote the file's rows (a recorded path can name
        # any readable file); a missing file is said as such
        why = "no such file" if isinstance(exc, FileNotFoundError) else type(exc).__name__
        raise ServeError(
            f"{source.provenance[-1]}: dataset {source.dataset!r} cannot be read as the data "
            f"this run was made with (fingerprint {source.dataset_fingerprint}): {why}; serve "
            "the matching data"
        ) from None
    if data.fingerprint() != source.dataset_fingerprint:
        raise ServeError(
            f"dataset {source.dataset!r} has fingerprint {data.fingerprint()}, but "
            f"{source.provenance[-1]} says the model was trained on {source.dataset_fingerprint}"
            " (the data changed; retrain or serve the matching data)"
        )
    if (cfg.n_users, cfg.n_items) != (data.n_users, data.n_items):
        raise ServeError(
            f"{source.model}: model has {cfg.n_users} users / {cfg.n_items} items, dataset "
            f"{source.dataset!r} has {data.n_users} / {data.n_items}"
        )
    split = training_split(data, source.protocol, source.split_seed, source.cold_setting)
    if split.fingerprint() != source.split_fingerprint:
        raise ServeError(
            f"split {source.protocol}/{source.split_seed} has fingerprint {split.fingerprint()}, "
            f"but {source.provenance[-1]} recorded {source.split_fingerprint}"
        )
    return data, split


def _item_index(
    source: RunSource, cfg, item_emb: np.ndarray, item_ids: np.ndarray, index_kind: str
):
    """``source``'s stored index, checked against the model's item embeddings, or one of
    ``index_kind`` built over them; returns (index, its kind)."""
    from student.serving import IndexConfig, ItemIndex, embedding_fingerprint
    from student.serving.integrity import check_vectors

    if source.index is not None:
        try:
            index = ItemIndex.load(
                source.index,
                expected_dim=cfg.item_dim,
                expected_item_ids=item_ids,
                expected_fingerprint=embedding_fingerprint(item_emb),
                mmap=True,  # page cache, shared by --workers N
            )
            check_vectors(index, item_emb)
        except (OSError, ValueError) as exc:
            raise ServeError(f"--index {source.index}: {exc}") from None
        kind = index.config.kind
    else:
        config = IndexConfig(kind=index_kind, normalize=cfg.normalize, bias=cfg.item_bias)
        index, kind = ItemIndex.build(item_emb, item_ids, config), index_kind
    if (index.dim, index.config.bias) != (cfg.item_dim, cfg.item_bias):
        raise ServeError(
            f"index dimension {index.dim} (bias {index.config.bias}) != the model's item "
            f"vectors' {cfg.item_dim} (item_bias {cfg.item_bias}); rebuild the index"
        )
    return index, kind


def check_replacement(old: Engine, new: Engine, allow_new_dataset: bool = False) -> None:
    """Refuse a reload that would change what the clients' ids mean, unless allowed."""
    if new.index.dim != new.model.config.item_dim:  # item_bias: load_engine checked it
        raise ServeError(f"new run: index dim {new.index.dim} != {new.model.config.item_dim}")
    if not allow_new_dataset:
        if new.source.dataset_fingerprint != old.source.dataset_fingerprint:
            raise ServeError(
                f"new run was trained on dataset {new.source.dataset_fingerprint}, the served one on "
                f"{old.source.dataset_fingerprint}; user and item ids would change meaning "
                "(pass allow_new_dataset=true to switch datasets)"
            )
        if not np.array_equal(new.item_ids, old.item_ids):
            raise ServeError("new run's item id map differs from the served one")
