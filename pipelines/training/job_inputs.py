"""What a train-student job reads besides its config: the teacher's lists and text, the
DropoutNet id masks, and the inputs of the objective that stay fixed from step to step.
``c`` is the job's ``TrainStudentConfig`` (not imported: that module imports this one)."""

from __future__ import annotations

import numpy as np
import torch

from pipelines.data import InteractionData, Split, histories
from pipelines.training.batch import ObjectiveInputs
from pipelines.training.soft_lists import SoftLists, label_item_embeddings, soft_lists
from student.model import TwoTower


def teacher_inputs(c, data: InteractionData, split: Split) -> tuple:
    """``(lists, label metadata, item text embeddings, cold lists)``; None where unused."""
    lists, meta = (None, None)
    if not c.no_teacher:
        lists, meta = soft_lists(c.labels, data, split, keep_observed=c.soft_observed)
    text = None
    if c.use_text:
        text = (
            lists.item_embeddings
            if lists is not None
            else label_item_embeddings(c.labels, data.fingerprint())
        )
        if text is None:
            raise ValueError(
                f"{c.labels}: --use-text needs item embeddings in the labels (embedding teacher)"
            )
    cold_lists = None
    if lists is not None and c.loss.cold_kl > 0:
        cold_lists, _ = soft_lists(c.labels, data, split, source="cold")
        if cold_lists.mask.shape[1] == 0:
            raise ValueError(
                f"{c.labels}: w_cold_kl > 0 needs cold candidates (labels made with a content "
                "map, e.g. generate-labels --protocol cold_items)"
            )
    return lists, meta, text, cold_lists


def set_id_masks(model: TwoTower, c, data: InteractionData, split: Split) -> None:
    """DropoutNet: items (users) without train interactions never use their id embedding."""
    if c.model.item_id_dropout > 0:
        has_id = np.bincount(split.train["item"].to_numpy(), minlength=data.n_items) > 0
        model.set_item_id_mask(has_id)
    if c.model.user_id_dropout > 0:
        model.set_user_id_mask(
            np.bincount(split.train["user"].to_numpy(), minlength=data.n_users) > 0
        )


def objective_inputs(
    c,
    data: InteractionData,
    split: Split,
    lists: SoftLists | None,
    cold_lists: SoftLists | None,
    teacher_emb: bool,
) -> ObjectiveInputs:
    """Train histories, the popularity of the logQ and of the negatives (drawn from the items
    the training side knows, ``Split.training_items``), and the labels."""
    hist = torch.as_tensor(histories(split.train, data.n_users, c.model.history_len, data.n_items))
    pop = np.bincount(split.train["item"].to_numpy().astype(np.int64), minlength=data.n_items)
    pop = pop.astype(np.float64)
    items = split.training_items()  # the catalogue training knows (inductive: no cold-test)
    p_neg = np.zeros(data.n_items)
    p_neg[items] = (pop[items] + 1) ** 0.5
    p_neg /= p_neg.sum()
    emb = torch.as_tensor(lists.item_embeddings) if teacher_emb else None
    known = None if len(items) == data.n_items else items
    return ObjectiveInputs(hist, pop / pop.sum(), p_neg, lists, cold_lists, emb, known)
