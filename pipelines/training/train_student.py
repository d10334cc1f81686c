"""`recdistill train-student`: train the two-tower student on hard labels, plus soft labels.

Hard labels: the observed train interactions, with a logQ-corrected sampled softmax over
in-batch positives plus shared popularity-sampled negatives (or BPR). Soft labels: the
teacher's scores over each user's candidate list (listwise KL at temperature T, pointwise
soft BCE, margin-MSE, DLLM2Rec-style rank distillation), and optionally the teacher's item
embeddings. Early stopping on validation NDCG@10; the best epoch's weights are kept. It sees the
training view of the split (no test part): test quality is the benchmark's job.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from common.config import to_dict
from common.io import claim_output, portable_paths, refuse_out_inside, write_json
from pipelines.core import provenance
from pipelines.core.args import OutputArgs, ThreadArgs
from pipelines.core.metrics import sample_users
from pipelines.data import (
    InteractionData,
    load_dataset,
    training_split,
)
from pipelines.data.args import DataArgs
from pipelines.data.features import student_features
from pipelines.training.batch import ONE_PROCESS, Shard
from pipelines.training.distributed import BACKEND, data_parallel, ddp_objective
from pipelines.training.head import fit_head
from pipelines.training.job_inputs import objective_inputs, set_id_masks, teacher_inputs
from pipelines.training.loop import Schedule, cold_valid, train_epochs
from pipelines.training.objective import Objective
from pipelines.training.optim import make_optimizer
from pipelines.training.prior import fit_prior
from pipelines.training.select import check_grid, has_grid, run_grid
from pipelines.training.soft_lists import SoftLists
from pipelines.training.terms import HARD_LOSSES, HardLoss, TermSettings
from student.losses import DistillLossWeights
from student.model import TwoTower, TwoTowerConfig, count_parameters
from student.model_io import MODEL_FILES

logger = logging.getLogger(__name__)

STUDENT_FILES = frozenset({"metrics.json", "model"})  # all a train-student folder holds
SPARSE_AUTO_ROWS = 100_000  # users + items above which sparse_embeddings="auto" turns on


@dataclass
class TrainStudentConfig(DataArgs, OutputArgs, ThreadArgs):
    defaults: ClassVar[dict[str, Any]] = {"out": "runs/student"}

    labels: str | None = field(
        default=None, metadata={"help": "soft-label dataset folder (from generate-labels)"}
    )
    no_teacher: bool = field(
        default=False, metadata={"help": "hard labels only (the baseline distillation must beat)"}
    )
    seed: int = field(default=0, metadata={"help": "training seed"})
    epochs: int = field(default=40, metadata={"help": "maximum epochs"})
    patience: int = field(
        default=5, metadata={"help": "early stopping: epochs without validation gain"}
    )
    batch_size: int = field(
        default=512,
        metadata={
            "help": "train interactions per step (a sasrec/gru student: batch_size // "
            "history_len users, every position of each)"
        },
    )
    lr: float = field(default=2e-3, metadata={"help": "Adam learning rate"})
    weight_decay: float = field(default=0.0, metadata={"help": "AdamW weight decay"})
    sparse_embeddings: Literal["auto", "on", "off"] = field(
        default="auto",
        metadata={
            "help": "sparse gradients for the id tables, stepped by SparseAdam (AdamW for the "
            "rest): a step costs the rows it touches, not the whole tables. auto: on above "
            f"{SPARSE_AUTO_ROWS:,} users + items when weight_decay is 0 (SparseAdam has none)"
        },
    )
    use_features: bool = field(
        default=True,
        metadata={
            "help": "user (age, gender, occupation) and item (genres, year) features, those the "
            "data has (none for a side without them)"
        },
    )
    use_text: bool = field(
        default=False,
        metadata={
            "help": "feed the teacher's frozen item text embedding to the item tower (read from "
            "--labels, which must hold item_embeddings; with --no-teacher only that file is used)"
        },
    )
    hard_loss: HardLoss = field(default="softmax", metadata={"help": f"one of {HARD_LOSSES}"})
    n_negatives: int = field(
        default=512, metadata={"help": "shared popularity-sampled negatives per step"}
    )
    soft_users: int = field(
        default=128, metadata={"help": "users whose candidate lists enter each step's soft loss"}
    )
    soft_observed: bool = field(
        default=True, metadata={"help": "keep observed train positives in the soft lists"}
    )
    teacher_norm: Literal["none", "list"] = field(
        default="list",
        metadata={
            "help": "none: teacher logits and probs as stored; list: standardise the logits within each user's list before the KL, and centre them there before soft BCE (sigmoid of the centred logit: invariant to the calibration's sampling ratio)"
        },
    )
    rank_k: int = field(default=10, metadata={"help": "teacher top-K used by rank distillation"})
    model: TwoTowerConfig = field(
        default_factory=lambda: TwoTowerConfig(n_users=1, n_items=1),
        metadata={
            "help": "the student's towers (student.model.TwoTowerConfig); the sizes read from "
            "the data (users, items, feature and text widths) are set by the job"
        },
    )
    loss: DistillLossWeights = field(
        default_factory=lambda: DistillLossWeights(listwise_kl=1.0),
        metadata={
            "help": "the weight of each loss term, 0 = off (student.losses.DistillLossWeights; "
            "flag --w-<term>), and the listwise KL temperature; with --no-teacher only "
            "--w-hard counts",
            "prefix": "w_",
            "bare": ("temperature",),
        },
    )
    select_best: bool = field(
        default=True,
        metadata={"help": "keep the best validation epoch's weights (False: the last epoch's)"},
    )
    prior_history: int = field(
        default=0,
        metadata={
            "help": "with --item-bias: after training add w * log(1 + train count) to the item "
            "bias, w chosen on validation users scored as new users from their first this many "
            "train items (pipelines.training.prior; grid with 0), and known users' weight of the "
            "bias on their validation; 0 = the learned bias alone"
        },
    )
    distill_scales: tuple[float, ...] = field(
        default=(),
        metadata={
            "help": "choose the distillation on validation: one student per scale (every soft-"
            "label weight, --w-* but --w-hard, times it) and --temperatures value, same seed and "
            "split; scale 0 (the hard student) is always in the grid; the best validation "
            "NDCG@10 is kept (ties: the smaller scale); () = off"
        },
    )
    temperatures: tuple[float, ...] = field(
        default=(),
        metadata={
            "help": "the temperatures of the --distill-scales grid (() = --temperature alone; "
            "given alone, the scales are 0 and 1)"
        },
    )
    teacher_confidence: bool = field(
        default=False,
        metadata={
            "help": "DLLM2Rec-style importance weights on the teacher's ranked pairs "
            "(margin-MSE and rank terms): by teacher rank, teacher margin and whether the "
            "student already agrees (README, the student)"
        },
    )
    num_workers: int = field(
        default=1,
        metadata={
            "help": "data-parallel workers: torch DDP (gloo) launched by Ray Train's "
            "TorchTrainer, each on --threads CPUs, training on its share of every step; the id "
            "tables are replicated in each (pipelines.training.distributed); 1 = this process"
        },
    )
    ray_address: str | None = field(
        default=None,
        metadata={
            "help": "with --num-workers > 1: the Ray cluster to join (default $RAY_ADDRESS, "
            "else a local Ray started for the job)"
        },
    )
    ray_storage: str | None = field(
        default=None,
        metadata={
            "help": "with --num-workers > 1: Ray Train's storage, where the kept model travels "
            "from worker 0 (a path every node sees, or a URI like s3://bucket/x); default a "
            "temporary folder beside --out, removed after (one machine)"
        },
    )
    valid_users: int = field(
        default=0,
        metadata={
            "help": "early stopping and the reported validation metrics on a seeded sample of "
            "this many validation users (full catalogue each; 0 = all): the per-epoch check "
            "costs users x items scores"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.use_text and not self.labels:
            raise ValueError("TrainStudentConfig.use_text needs --labels (the item embeddings)")
        for name in (
            "epochs",
            "batch_size",
            "n_negatives",
            "soft_users",
        ):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"TrainStudentConfig.{name}={getattr(self, name)!r}; expected >= 1"
                )
        if self.sparse_embeddings == "on" and self.weight_decay > 0:
            raise ValueError(
                f"TrainStudentConfig: sparse_embeddings='on' with weight_decay="
                f"{self.weight_decay}: SparseAdam has no weight decay; use 'off' or weight_decay 0"
            )
        if self.prior_history < 0 or (self.prior_history and not self.model.item_bias):
            raise ValueError(
                f"TrainStudentConfig.prior_history={self.prior_history}: expected 0, or >= 1 "
                "with --item-bias (the prior is added to the item bias)"
            )
        if self.valid_users < 0:
            raise ValueError(
                f"TrainStudentConfig.valid_users={self.valid_users}; expected >= 0 (0 = all)"
            )
        if self.num_workers < 1:
            raise ValueError(
                f"TrainStudentConfig.num_workers={self.num_workers}; expected >= 1 (1 = this process)"
            )
        for name in ("batch_size", "soft_users"):  # every worker needs a row of every step
            if self.num_workers > getattr(self, name):
                raise ValueError(
                    f"TrainStudentConfig.num_workers={self.num_workers} > {name}="
                    f"{getattr(self, name)}: every worker takes a share of each step's {name}"
                )
        if self.num_workers == 1 and (self.ray_address or self.ray_storage):
            raise ValueError(
                "TrainStudentConfig.ray_address/ray_storage apply to --num-workers > 1 only"
            )
        if not self.no_teacher and not self.labels:
            raise ValueError(
                "TrainStudentConfig: give --labels <folder> from generate-labels, or --no-teacher"
            )
        check_grid(self)

    def weights(self) -> DistillLossWeights:
        """The loss weights in force: with ``no_teacher`` the hard loss alone."""
        return DistillLossWeights(hard=self.loss.hard) if self.no_teacher else self.loss


def build_student(
    config: TrainStudentConfig, data: InteractionData, text: np.ndarray | None
) -> TwoTower:
    uf, itf = student_features(data) if config.use_features else (None, None)
    mc = dataclasses.replace(
        config.model,
        n_users=data.n_users,
        n_items=data.n_items,
        n_user_features=0 if uf is None else uf.shape[1],
        n_item_features=0 if itf is None else itf.shape[1],
        text_dim=0 if text is None else text.shape[1],
    )
    return TwoTower(mc, user_features=uf, item_features=itf, item_text=text)


def use_sparse(c: TrainStudentConfig, n_users: int, n_items: int) -> bool:
    """Whether the id tables get sparse gradients (see ``sparse_embeddings``)."""
    if c.sparse_embeddings != "auto":
        return c.sparse_embeddings == "on"
    return c.weight_decay == 0 and n_users + n_items > SPARSE_AUTO_ROWS


def run(config: TrainStudentConfig) -> dict:
    """Train, validate after each epoch, save the kept weights; the metrics (metrics.json)."""
    c = config
    out = Path(c.out)
    # before any work: never replace what this job did not make, nor its own without --overwrite
    refuse_out_inside(
        out, {"--labels": c.labels, "--collab-cache": getattr(c, "collab_cache", None)}
    )
    claim_output(out / "model", "config.json", overwrite=c.overwrite, what="a student model",
                 only=MODEL_FILES)  # fmt: skip
    claim_output(out, ("metrics.json", "model/config.json"), overwrite=c.overwrite,
                 what="a trained student", only=STUDENT_FILES)  # fmt: skip
    if has_grid(c):  # one student per grid point, the best on validation kept (select.py)
        return run_grid(c, run)
    if c.num_workers > 1:
        return data_parallel(c, train)
    return train(c)


def train(c: TrainStudentConfig, shard: Shard = ONE_PROCESS, folder: Path | None = None) -> dict:
    """The job in this process (under ``shard``: its part of each step); the process that
    validates (the only one, or worker 0) writes the model and metrics.json to ``folder``
    (default ``c.out``; recorded paths stay relative to ``c.out``) and returns the metrics."""
    torch.set_num_threads(c.threads)
    torch.manual_seed(c.seed)
    rng = np.random.default_rng(c.seed)
    t_start = time.perf_counter()
    data = load_dataset(c.dataset)
    split = training_split(data, c.protocol, c.split_seed, c.cold_setting)
    lists, meta, text, cold_lists = teacher_inputs(c, data, split)
    model = build_student(c, data, text)
    set_id_masks(model, c, data, split)
    weights = c.weights()
    if weights.embed > 0 and (lists is None or lists.item_embeddings is None):
        raise ValueError(f"{c.labels}: w_embed > 0 needs item embeddings in the labels")
    objective = Objective(weights, term_settings(c, lists))
    params = list(model.parameters()) + objective.parameters()
    sparse = use_sparse(c, data.n_users, data.n_items)
    opt = make_optimizer(model, params, c.lr, c.weight_decay, sparse)
    step_loss = objective if shard.world == 1 else ddp_objective(model, objective)
    inputs = objective_inputs(c, data, split, lists, cold_lists, weights.embed > 0)
    valid_truth = split.matrix("valid")
    # all validation users unless --valid-users; the same users every epoch
    v_users = sample_users(valid_truth, c.valid_users, c.seed)
    schedule = Schedule(c.epochs, c.patience, c.batch_size, c.n_negatives)
    fit = train_epochs(schedule, model, step_loss, opt, inputs, split, v_users, rng, shard)
    if shard.rank > 0:
        return {}
    # the kept weights were validated at the end of their epoch (eval mode, the same users):
    # those metrics are the model's, without scoring the catalogue once more
    valid = fit.last_metrics
    if c.select_best:
        model.load_state_dict(fit.best_state)
        valid = fit.best_metrics
    model.eval()
    train_seconds = time.perf_counter() - t_start
    head = fit_head(model, inputs.hist, split) if c.model.content_head else None
    prior = fit_prior(model, split, c.prior_history, v_users) if c.prior_history else None
    cold = _metrics(cold_valid(model, inputs.hist, split)) if split.is_cold else None
    model.provenance = provenance.stamp(data, split)
    folder = Path(c.out) if folder is None else folder
    model.save_pretrained(folder / "model")
    result = {  # the labels' path relative to ``out`` where it is inside its run
        "config": portable_paths(to_dict(c), c.out, ("labels", "collab_cache")),
        "mode": "hard" if c.no_teacher else "distilled",
        **model.provenance,
        "teacher": None if meta is None else meta.get("teacher"),
        "best_epoch": fit.best_epoch,
        "epochs_run": len(fit.history),
        "train_seconds": train_seconds,
        "params": count_parameters(model),
        "sparse_embeddings": sparse,
        "data_parallel": _parallel_record(c, shard),
        "valid": _metrics(valid),
        "valid_users": {
            "users": int(len(v_users)),
            "of": int((np.diff(valid_truth.indptr) > 0).sum()),
            "seed": c.seed,
        },
        "cold_valid": cold,
        "content_head": head,
        "popularity_prior": prior,
        "history": fit.history,
    }
    write_json(folder / "metrics.json", result)
    return result


def _parallel_record(c: TrainStudentConfig, shard: Shard) -> dict:
    """How the job was spread: one process, or DDP workers on Ray Train."""
    if shard.world == 1:
        return {"workers": 1}
    return {"workers": shard.world, "engine": "ray_train", "backend": BACKEND,
            "threads_per_worker": c.threads, "id_tables": "replicated"}  # fmt: skip


def term_settings(c: TrainStudentConfig, lists: SoftLists | None) -> TermSettings:
    """The values of the job config the objective's terms need besides the loss weights."""
    emb = None if lists is None else lists.item_embeddings
    return TermSettings(
        hard_loss=c.hard_loss,
        n_negatives=c.n_negatives,
        teacher_norm=c.teacher_norm,
        rank_k=c.rank_k,
        soft_users=c.soft_users,
        out_dim=c.model.out_dim,
        teacher_dim=0 if emb is None else emb.shape[1],
        teacher_confidence=c.teacher_confidence,
    )


def _metrics(m: dict) -> dict:
    return {k: v for k, v in m.items() if "@" in k or k == "users"}


def format_summary(result: dict) -> str:
    t = result["valid"]
    return (
        f"student ({result['mode']}) {result['split']['protocol']} split: validation ndcg@10 {t['ndcg@10']:.4f} "
        f"recall@10 {t['recall@10']:.4f} mrr@10 {t['mrr@10']:.4f} | best epoch {result['best_epoch']} "
        f"| {result['params']} params | {result['train_seconds']:.0f}s"
    )
