"""`recdistill compress`: prune and int8-quantize a trained student.

Steps (each a function ``model -> model`` from ``student.compress``):
1. structured pruning: physically smaller layers (and optionally embedding dims);
2. a short distillation fine-tune of the pruned model from the unpruned student: for
   batches of about 64 train users, the listwise KL (temperature ``temperature``) between
   the two models' scores over the full catalogue (above ``finetune_items`` items, over a
   fresh seeded sample of that many per step), ``finetune_epochs`` passes over the train
   users (0 = none; above ``finetune_users`` users, over a fresh seeded sample of that many
   each epoch). The unpruned student is the only target: no hard labels, the observed
   positives enter only through the user histories both models read;
3. int8: ``all`` quantizes every part (smallest; written to ``int8/``); ``auto`` times each
   part (user tower at batch 1, item tower at batch 1024), says where int8 is slower on this
   CPU and keeps fp32 there (written to ``int8_fast/``); ``both`` (default) writes both;
   ``none`` skips it.
Unstructured magnitude pruning can be run for comparison: it zeroes weights but makes the
model neither smaller nor faster. Everything it did is recorded in ``compression.json``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import torch

from common.config import to_dict
from common.io import claim_output, portable_paths, refuse_out_inside, write_json
from pipelines.compression.int8_guard import guarded_int8
from pipelines.core import provenance
from pipelines.core.args import OutputArgs, ThreadArgs
from pipelines.core.metrics import evaluate, sample_users
from pipelines.core.progress import Progress
from pipelines.data import histories, load_dataset, training_split
from pipelines.data.args import DataArgs
from student.compress import (
    choose_int8_parts,
    magnitude_prune,
    save_quantized,
    structured_prune,
)
from student.losses import listwise_kl_loss
from student.model import TwoTower, count_parameters, model_bytes
from student.model_io import MODEL_FILES
from student.scoring import score_fn

logger = logging.getLogger(__name__)
# all a compress folder holds (``--overwrite`` replaces nothing else)
COMPRESSED_FILES = frozenset({"compression.json", "pruned", "int8", "int8_fast"})

Int8Mode = Literal["both", "all", "auto", "none"]
INT8_MODES: tuple[str, ...] = get_args(Int8Mode)


@dataclass
class CompressConfig(DataArgs, OutputArgs, ThreadArgs):
    defaults: ClassVar[dict[str, Any]] = {"out": "runs/compressed"}

    model: str = field(
        default="runs/student/model", metadata={"help": "trained student folder (save_pretrained)"}
    )
    keep_ratio: float = field(
        default=0.5,
        metadata={"help": "fraction of hidden units kept by structured pruning (1 = no pruning)"},
    )
    prune_embeddings: bool = field(
        default=True, metadata={"help": "also prune id-embedding dims by keep_ratio"}
    )
    finetune_epochs: int = field(
        default=20, metadata={"help": "distillation fine-tune epochs after pruning (0 = none)"}
    )
    finetune_lr: float = field(default=2e-3, metadata={"help": "fine-tune learning rate"})
    int8_tolerance: float = field(
        default=0.01,
        metadata={
            "help": "int8 quality guard: a module whose int8 alone loses more than this share "
            "of the float model's validation quality (warm NDCG@10; cold-validation NDCG@20 "
            "under cold_items) stays float32; int8_safe says whether the whole keeps 1 - this"
        },
    )
    finetune_items: int = field(
        default=20000,
        metadata={
            "help": "items each fine-tune step ranks: the whole catalogue up to this size, "
            "above it a fresh seeded sample of this many per step (a sampled listwise KL)"
        },
    )
    finetune_users: int = field(
        default=0,
        metadata={
            "help": "train users each fine-tune epoch passes over: a fresh seeded sample of "
            "this many per epoch when there are more (0 = every train user)"
        },
    )
    temperature: float = field(default=1.0, metadata={"help": "fine-tune listwise KL temperature"})
    int8: Int8Mode = field(default="both", metadata={"help": f"int8 mode: one of {INT8_MODES}"})
    magnitude_sparsity: float = field(
        default=0.5, metadata={"help": "sparsity of the unstructured comparison (0 = skip)"}
    )
    valid_users: int = field(
        default=0,
        metadata={
            "help": "validation users (seeded sample) each step's quality is measured on; 0 = all"
        },
    )
    seed: int = field(default=0, metadata={"help": "seed"})
    allow_unchecked: bool = field(
        default=False,
        metadata={
            "help": "compress a student that records no dataset or split fingerprint (its "
            "provenance was removed); refused otherwise: it cannot be checked against --dataset"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.keep_ratio <= 1:
            raise ValueError(
                f"CompressConfig.keep_ratio={self.keep_ratio}; expected a value in (0, 1]"
            )
        if not 0 <= self.magnitude_sparsity < 1:
            raise ValueError(
                f"CompressConfig.magnitude_sparsity={self.magnitude_sparsity}; expected [0, 1)"
            )
        if self.valid_users < 0:
            raise ValueError(f"CompressConfig.valid_users={self.valid_users}; expected >= 0")
        if not 0 < self.int8_tolerance < 1:
            raise ValueError(
                f"CompressConfig.int8_tolerance={self.int8_tolerance}; expected a float in (0, 1)"
            )
        if self.finetune_items < 2:
            raise ValueError(f"CompressConfig.finetune_items={self.finetune_items}; expected >= 2")
        if self.finetune_users < 0:
            raise ValueError(f"CompressConfig.finetune_users={self.finetune_users}; expected >= 0")
        if self.finetune_epochs < 0:
            raise ValueError(
                f"CompressConfig.finetune_epochs={self.finetune_epochs}; expected >= 0"
            )


def distill_finetune(
    student: TwoTower,
    teacher: TwoTower,
    split,
    hist,
    epochs: int,
    lr: float,
    temperature: float,
    seed: int,
    max_items: int | None = None,
    max_users: int = 0,
) -> list[float]:
    """Fine-tune ``student`` to reproduce ``teacher``'s full-catalogue ranking (listwise KL).

    With more than ``max_items`` items, each step ranks a fresh seeded uniform sample of
    ``max_items`` of them instead (both towers encode only those): the step's cost stays
    bounded as the catalogue grows, and the KL is over a sampled sub-list. Only the items the
    training side knows are ranked (``Split.training_items``: under the inductive cold
    setting not the cold-test items). With more than ``max_users`` train users (> 0), each
    epoch passes over a fresh seeded sample of ``max_users`` of them."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    users = np.unique(split.train["user"].to_numpy())
    pool = split.training_items()  # the catalogue the training side knows (cold setting)
    sample = max_items is not None and len(pool) > max_items
    items = torch.as_tensor(pool)
    teacher.eval()
    losses = []
    per_epoch = min(len(users), max_users) if max_users > 0 else len(users)
    n_batches = max(1, per_epoch // 64)
    for epoch in range(1, epochs + 1):
        student.train()
        total = 0.0
        bar = Progress(n_batches, f"fine-tune epoch {epoch}", "step")
        for b in np.array_split(rng.permutation(users)[:per_epoch], n_batches):
            u = torch.as_tensor(b)
            if sample:
                items = torch.as_tensor(np.sort(rng.choice(pool, max_items, replace=False)))
            with torch.no_grad():
                t = teacher.score(teacher.encode_users(u, hist[u]), teacher.encode_items(items))
            s = student.score(student.encode_users(u, hist[u]), student.encode_items(items))
            loss = listwise_kl_loss(s, t, temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            bar.update()
        bar.close()
        losses.append(total)
    student.eval()
    return losses


def run(config: CompressConfig) -> dict:
    c = config
    torch.set_num_threads(c.threads)
    torch.manual_seed(c.seed)
    t0 = time.perf_counter()
    out = Path(c.out)
    refuse_out_inside(out, {"--model": c.model})
    for name in ("pruned", "int8", "int8_fast"):  # first: their stale temporaries sit in out
        claim_output(out / name, "config.json", overwrite=c.overwrite, what="a student model",
                     only=MODEL_FILES)  # fmt: skip
    claim_output(c.out, ("compression.json", "pruned/config.json"), overwrite=c.overwrite,
                 what="compressed students", only=COMPRESSED_FILES)  # fmt: skip
    data = load_dataset(c.dataset)
    split = training_split(data, c.protocol, c.split_seed, c.cold_setting)
    base, checked = load_base(c, data, split)
    # a student taken unchecked (--allow-unchecked) passes on no provenance: its compressed
    # students are unchecked too (the benchmark refuses or marks them)
    stamp = provenance.stamp(data, split) if checked else {}
    hist = torch.as_tensor(
        histories(split.train, data.n_users, base.config.history_len, data.n_items)
    )
    v_users = sample_users(split.matrix("valid"), c.valid_users, c.seed)
    quality = Quality(split, hist, v_users)
    steps: dict = {"original": quality(base)}
    model = prune_and_finetune(c, base, split, hist, quality, steps)
    model.provenance = stamp
    model.save_pretrained(out / "pruned")
    if c.magnitude_sparsity > 0:
        mag, rec = magnitude_prune(base, c.magnitude_sparsity)
        steps["magnitude_prune"] = {
            **quality(mag),
            "record": rec,
            "note": "unstructured zeros: same tensor shapes, so the model is neither smaller nor faster",
        }
    outputs = {"pruned": "pruned", **quantize(c, model, stamp, out, quality, steps)}
    result = {  # paths relative to ``out`` where they are inside its run (a run can move)
        "config": portable_paths(to_dict(c), out, ("model",)),
        **(stamp or {"provenance": "unchecked"}),
        "steps": steps,
        "valid_users": {"users": int(len(v_users)), "requested": c.valid_users, "seed": c.seed},
        "seconds": time.perf_counter() - t0,
        "outputs": outputs,
    }
    write_json(out / "compression.json", result)
    return result


def load_base(c: CompressConfig, data, split) -> tuple[TwoTower, bool]:
    """The trained student (fp32: compressing starts from it), checked against the data, and
    whether it could be (``False``: no provenance, taken with ``--allow-unchecked``)."""
    base = TwoTower.from_pretrained(c.model)
    if base.config.n_users != data.n_users or base.config.n_items != data.n_items:
        raise ValueError(
            f"{c.model}: model has {base.config.n_users} users / {base.config.n_items} items but "
            f"{c.dataset} has {data.n_users} / {data.n_items}; compress with the dataset it was trained on"
        )
    checked = provenance.check(c.model, base.provenance, data, split, what="the student",
                               allow_unchecked=c.allow_unchecked)  # fmt: skip
    return base, checked


class Quality:
    """A step's record: validation NDCG@10 on the sampled users (under ``cold_items`` also the
    cold-validation NDCG@20), parameters and bytes."""

    def __init__(self, split, hist: torch.Tensor, v_users: np.ndarray) -> None:
        self.truth, self.seen = split.matrix("valid"), split.seen_for("valid")
        self.split, self.hist, self.users = split, hist, v_users

    def validation(self, m: TwoTower) -> dict[str, float]:
        """The metrics the int8 guard keeps (``pipelines.compression.int8_guard``)."""
        v = evaluate(score_fn(m, self.hist), self.truth, self.seen, users=self.users)
        out = {"valid_ndcg@10": v["ndcg@10"]}
        if self.split.is_cold:
            from pipelines.training.loop import cold_valid

            out["cold_valid_ndcg@20"] = cold_valid(m, self.hist, self.split)["ndcg@20"]
        return out

    def __call__(self, m: TwoTower) -> dict:
        return {**self.validation(m), "params": count_parameters(m), "bytes": model_bytes(m)}


def prune_and_finetune(c: CompressConfig, base, split, hist, quality, steps: dict) -> TwoTower:
    """Structured pruning, then the distillation fine-tune from ``base`` (each recorded in
    ``steps``); ``base`` itself when ``keep_ratio`` is 1."""
    if c.keep_ratio >= 1:
        return base
    model, rec = structured_prune(base, c.keep_ratio, prune_embeddings_dim=c.prune_embeddings)
    steps["structured_prune"] = {**quality(model), "record": rec}
    if c.finetune_epochs:
        losses = distill_finetune(model, base, split, hist, c.finetune_epochs, c.finetune_lr,
                                  c.temperature, c.seed, max_items=c.finetune_items,
                                  max_users=c.finetune_users)  # fmt: skip
        steps["finetune"] = {**quality(model), "losses": losses, "from": "unpruned student"}
    if model.config.content_head:  # the pruned item vectors moved: refit the map onto them
        from pipelines.training.head import fit_head

        steps["finetune" if c.finetune_epochs else "structured_prune"]["content_head"] = fit_head(
            model, hist, split
        )
    return model


def quantize(c: CompressConfig, model, stamp: dict, out: Path, quality, steps: dict) -> dict:
    """The int8 students ``c.int8`` asks for, saved and recorded; ``{name: folder}``."""
    outputs = {}
    module_ratios = None  # each module's int8 measured alone: once for both outputs
    if c.int8 in ("all", "both"):
        q, rec = guarded_int8(model, quality.validation, c.int8_tolerance)
        module_ratios = rec["quality_guard"]["module_ratios"]
        q.provenance = stamp
        save_quantized(q, out / "int8")
        steps["int8"] = {**quality(q), "mode": "all", "record": rec}
        outputs["int8"] = "int8"
    if c.int8 in ("auto", "both"):
        _, timing = choose_int8_parts(model, num_threads=1)
        q, rec = guarded_int8(model, quality.validation, c.int8_tolerance,
                              timing["int8_parts"], module_ratios)  # fmt: skip
        rec |= {"step": "choose_int8_parts", "decisions": timing["decisions"]}
        q.provenance = stamp
        save_quantized(q, out / "int8_fast")
        steps["int8_fast"] = {**quality(q), "mode": "auto", "record": rec}
        outputs["int8_fast"] = "int8_fast"
    return outputs


def format_summary(result: dict) -> str:
    lines = [f"{'step':<18} {'valid ndcg@10':>14} {'params':>10} {'bytes':>10}"]
    for name, s in result["steps"].items():
        lines.append(f"{name:<18} {s['valid_ndcg@10']:>14.4f} {s['params']:>10} {s['bytes']:>10}")
    return "\n".join(lines)
