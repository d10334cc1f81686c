"""Structured pruning (physically smaller layers) and magnitude pruning (for comparison)."""

from __future__ import annotations

import copy
import dataclasses
import logging
from typing import Any

import torch
from torch import nn
from torch.nn.utils import prune

from student.compress.int8 import _check_model, _new_model, _size_record
from student.model import TwoTower
from student.model_io import load_state_strict

logger = logging.getLogger(__name__)

SEQUENCE_DIMS_NOTE = (
    "not pruned: the sequence encoder reads the item id table and all its layers are id_dim wide"
)
ZEROS_NOTE = (
    "unstructured zeros make the model neither smaller nor faster: tensors keep their shape "
    "and dense kernels multiply the zeros; use structured_prune for a smaller model"
)


# ---- structured pruning -----------------------------------------------------------------------
def _linear_positions(mlp: nn.Sequential) -> list[int]:
    return [i for i, m in enumerate(mlp) if isinstance(m, nn.Linear)]


def _importance(x: torch.Tensor, dim: int, norm: str) -> torch.Tensor:
    return x.abs().sum(dim=dim) if norm == "l1" else x.norm(dim=dim)


def _topk_sorted(scores: torch.Tensor, k: int) -> torch.Tensor:
    return scores.topk(k).indices.sort().values


def structured_prune(
    model: TwoTower,
    keep_ratio: float = 0.5,
    prune_embeddings_dim: bool = False,
    importance: str = "l2",
) -> tuple[TwoTower, dict[str, Any]]:
    """Keep the most important hidden units of every MLP hidden layer; rebuild smaller layers.

    Unit j of a hidden layer scores ``||[W_in[j, :], b_in[j]]|| * ||W_out[:, j]||`` (L2 or L1
    norms): a unit with small incoming or outgoing weights contributes little. Layers are pruned
    in order, each ``max(1, round(width * keep_ratio))`` units kept. With
    ``prune_embeddings_dim`` every id table (and the text projection's output) keeps the same
    number of dims, ``max(1, round(id_dim * keep_ratio))``, chosen per table by
    ``||table[:, d]|| * ||W_first[:, d]||``; the first Linear loses the matching input columns.
    Tower outputs (``out_dim``) are never pruned. A SASRec user tower also keeps the most
    important feed-forward units of each block (``seq_ffn``); a sequence encoder keeps its id
    dims (recorded under ``id_dim``). Returns a new model with an updated config.
    """
    _check_model(model, "structured_prune")
    if isinstance(keep_ratio, bool) or not isinstance(keep_ratio, (int, float)):
        raise ValueError(f"keep_ratio={keep_ratio!r}: expected a float in (0, 1]")
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio={keep_ratio!r}: expected a float in (0, 1]")
    if importance not in ("l1", "l2"):
        raise ValueError(f"importance={importance!r}: expected 'l1' or 'l2'")
    config = model.config
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    record: dict[str, Any] = {
        "step": "structured_prune",
        "keep_ratio": keep_ratio,
        "importance": importance,
        "kept_units": {},
    }
    new_id_dim = config.id_dim
    sequential = config.user_encoder != "mean"
    if prune_embeddings_dim and sequential:  # the encoder's every layer is id_dim wide
        record["id_dim"] = {"before": config.id_dim, "after": config.id_dim,
                            "kept": SEQUENCE_DIMS_NOTE}  # fmt: skip
    elif prune_embeddings_dim:
        new_id_dim = max(1, round(config.id_dim * keep_ratio))
        record["id_dim"] = {"before": config.id_dim, "after": new_id_dim}
        for tower in ("user", "item"):
            _prune_input_dims(model, tower, state, new_id_dim, importance)
    hidden = {
        tower: _prune_hidden_units(model, tower, state, keep_ratio, importance, record)
        for tower in ("user", "item")
    }
    seq_ffn = config.seq_ffn
    if config.user_encoder == "sasrec":
        seq_ffn = _prune_feed_forward(config, state, keep_ratio, importance, record)
    elif sequential:
        record["kept_modules"] = {"user_seq": "a GRU has no hidden units to prune alone"}
    new_config = dataclasses.replace(
        config,
        id_dim=new_id_dim,
        user_hidden=hidden["user"],
        item_hidden=hidden["item"],
        seq_ffn=seq_ffn,
    )
    new_model = _new_model(new_config)
    load_state_strict(new_model, state, "structured_prune")
    new_model.train(model.training)
    record.update(_size_record(model, new_model))
    record["config_changes"] = {
        k: v
        for k, v in new_config.to_dict().items()
        if v != config.to_dict()[k]  # e.g. {"user_hidden": [128]}
    }
    logger.info(
        "structured_prune: params %d -> %d", record["params_before"], record["params_after"]
    )
    return new_model, record


def _prune_input_dims(
    model: TwoTower, tower: str, state: dict[str, torch.Tensor], new_id_dim: int, importance: str
) -> None:
    """Keep ``new_id_dim`` dims of each id table (and of the text projection's output) feeding
    ``tower``'s first Linear, and the matching input columns of that Linear (in ``state``)."""
    first = f"{tower}_mlp.{_linear_positions(getattr(model, f'{tower}_mlp'))[0]}.weight"
    keep_cols: list[torch.Tensor] = []
    offset = 0
    for source, width in model.input_layout(tower):
        cols = torch.arange(offset, offset + width)
        if source.endswith("_emb") or source == "text_proj":
            if source == "text_proj":  # output dim d of the projection = its row d
                table = torch.cat(
                    [state["text_proj.weight"], state["text_proj.bias"][:, None]], 1
                ).T
            else:
                table = state[f"{source}.weight"]
            score = _importance(table, 0, importance) * _importance(
                state[first][:, cols], 0, importance
            )
            kept = _topk_sorted(score, new_id_dim)
            if source == "text_proj":
                state["text_proj.weight"] = state["text_proj.weight"][kept]
                state["text_proj.bias"] = state["text_proj.bias"][kept]
            else:
                state[f"{source}.weight"] = state[f"{source}.weight"][:, kept]
            cols = cols[kept]
        keep_cols.append(cols)
        offset += width
    state[first] = state[first][:, torch.cat(keep_cols)]


def _prune_hidden_units(
    model: TwoTower,
    tower: str,
    state: dict[str, torch.Tensor],
    keep_ratio: float,
    importance: str,
    record: dict[str, Any],
) -> tuple[int, ...]:
    """Prune each hidden layer of ``tower``'s MLP (in ``state``); its new widths."""
    positions = _linear_positions(getattr(model, f"{tower}_mlp"))
    widths = []
    for here, nxt in zip(positions[:-1], positions[1:], strict=True):
        w_in, b_in = state[f"{tower}_mlp.{here}.weight"], state[f"{tower}_mlp.{here}.bias"]
        w_out = state[f"{tower}_mlp.{nxt}.weight"]
        score = _importance(torch.cat([w_in, b_in[:, None]], 1), 1, importance)
        score = score * _importance(w_out, 0, importance)
        width = w_in.shape[0]
        kept = _topk_sorted(score, max(1, round(width * keep_ratio)))
        state[f"{tower}_mlp.{here}.weight"] = w_in[kept]
        state[f"{tower}_mlp.{here}.bias"] = b_in[kept]
        state[f"{tower}_mlp.{nxt}.weight"] = w_out[:, kept]
        record["kept_units"][f"{tower}_mlp.{here}"] = {"before": width, "after": len(kept)}
        widths.append(len(kept))
    return tuple(widths)


def _prune_feed_forward(
    config, state: dict[str, torch.Tensor], keep_ratio: float, importance: str, record: dict
) -> int:
    """Keep the most important hidden units of each SASRec block's feed-forward (``ff1`` rows,
    ``ff2`` columns; the same count in every block); the new ``seq_ffn``."""
    keep = max(1, round(config.seq_ffn * keep_ratio))
    for i in range(config.seq_layers):
        ff1, ff2 = f"user_seq.blocks.{i}.ff1", f"user_seq.blocks.{i}.ff2"
        w_in, b_in, w_out = state[f"{ff1}.weight"], state[f"{ff1}.bias"], state[f"{ff2}.weight"]
        score = _importance(torch.cat([w_in, b_in[:, None]], 1), 1, importance)
        kept = _topk_sorted(score * _importance(w_out, 0, importance), keep)
        state[f"{ff1}.weight"], state[f"{ff1}.bias"] = w_in[kept], b_in[kept]
        state[f"{ff2}.weight"] = w_out[:, kept]
        record["kept_units"][ff1] = {"before": config.seq_ffn, "after": keep}
    return keep


# ---- unstructured magnitude pruning -----------------------------------------------------------
def magnitude_prune(
    model: TwoTower, sparsity: float, include_embeddings: bool = False
) -> tuple[TwoTower, dict[str, Any]]:
    """Zero the ``sparsity`` fraction of smallest-|w| weights of each Linear (and embedding).

    Uses ``torch.nn.utils.prune.l1_unstructured`` per tensor, then ``prune.remove`` so the zeros
    are baked into plain weights (no masks or hooks remain). Biases are not pruned. The model
    keeps every tensor shape: zeros alone make it neither smaller nor faster.
    """
    _check_model(model, "magnitude_prune")
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)):
        raise ValueError(f"sparsity={sparsity!r}: expected a float in [0, 1)")
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity={sparsity!r}: expected a float in [0, 1)")
    new_model = copy.deepcopy(model)
    kinds: tuple[type[nn.Module], ...] = (
        (nn.Linear, nn.Embedding) if include_embeddings else (nn.Linear,)
    )
    per_tensor: dict[str, float] = {}
    zeros = total = 0
    for name, module in new_model.named_modules():
        if not isinstance(module, kinds):
            continue
        prune.l1_unstructured(module, "weight", amount=float(sparsity))
        prune.remove(module, "weight")
        n_zero = int((module.weight == 0).sum())
        per_tensor[f"{name}.weight"] = n_zero / module.weight.numel()
        zeros += n_zero
        total += module.weight.numel()
    record = {
        "step": "magnitude_prune",
        "requested_sparsity": float(sparsity),
        "achieved_sparsity": zeros / max(total, 1),
        "per_tensor_sparsity": per_tensor,
        "include_embeddings": include_embeddings,
        "note": ZEROS_NOTE,
        **_size_record(model, new_model),
    }
    return new_model, record
