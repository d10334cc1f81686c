"""Two-tower student recommender, built only from :class:`TwoTowerConfig`.

User tower: ``concat[user id emb, history block, user dense features]`` -> MLP -> ``out_dim``;
the history block is the masked mean of a history table (``user_encoder="mean"``) or a sequence
encoder's state at the most recent item (``sasrec``, ``gru``: :mod:`student.sequence`, over the
item tower's id table; ``encode_users_every`` gives the state at every position). A new user (no id: ``encode_users(None, history)``) gets zeros for the id
and the features, so ``user_id_dropout`` in training teaches the tower to score from a history
alone. Item tower: ``concat[item id emb, item dense features, Linear(text emb)]``
-> MLP -> ``out_dim``; with ``item_bias`` a learned scalar per item rides along as one extra
column (see :meth:`TwoTower.score`); with ``content_head`` an item without an id is encoded by
a linear map of its content fit after training (:mod:`student.content_head`). Static side features (dense features, frozen teacher text embeddings)
are registered buffers, so ``forward`` takes only indices and the features travel with the
weights. The model never computes its own loss (see :mod:`student.losses`).

The config is in :mod:`student.model_config`, the saved folder's format in
:mod:`student.model_io`.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from student.layers import as_float_tensor, check_idx, mlp
from student.model_config import TwoTowerConfig
from student.model_io import (
    COMPRESSION_NAME,
    WEIGHTS_NAME,
    load_config,
    load_state_strict,
    load_tensors,
    read_provenance,
    write_model_dir,
)
from student.sequence import build_encoder, encode_sequence
from student.sizes import count_parameters, model_bytes

# imported from here across the repo: the model, its config, the compressed-folder marker,
# a folder's provenance, and the size counts
__all__ = [
    "COMPRESSION_NAME",
    "TwoTower",
    "TwoTowerConfig",
    "count_parameters",
    "model_bytes",
    "read_provenance",
]

logger = logging.getLogger(__name__)


class TwoTower(nn.Module):
    """Two-tower retrieval model; ``forward(user_idx, history, item_idx) -> scores [B, N]``."""

    def __init__(
        self,
        config: TwoTowerConfig,
        user_features: Any = None,
        item_features: Any = None,
        item_text: Any = None,
    ) -> None:
        super().__init__()
        # where the model came from (dataset and split fingerprints, set by the job that
        # trains or compresses it); saved in config.json and read back by from_pretrained
        self.provenance: dict[str, Any] = {}
        if not isinstance(config, TwoTowerConfig):
            raise ValueError(f"TwoTower: expected a TwoTowerConfig, got {type(config).__name__}")
        self.config = config
        c = config
        if c.use_user_id:
            self.user_id_emb = nn.Embedding(c.n_users, c.id_dim)
        if c.history_len > 0 and c.user_encoder == "mean":
            self.history_emb = nn.Embedding(c.n_items + 1, c.id_dim, padding_idx=c.n_items)
        elif c.history_len > 0:  # the history is read with item_id_emb: no table of its own
            self.user_seq = build_encoder(c)
        self.item_id_emb = nn.Embedding(c.n_items, c.id_dim)
        if c.text_dim > 0:
            self.text_proj = nn.Linear(c.text_dim, c.id_dim)
        if c.n_user_features > 0:
            self.register_buffer("user_features", torch.zeros(c.n_users, c.n_user_features))
        if c.n_item_features > 0:
            self.register_buffer("item_features", torch.zeros(c.n_items, c.n_item_features))
        if c.text_dim > 0:
            self.register_buffer("item_text", torch.zeros(c.n_items, c.text_dim))
        if c.item_id_dropout > 0:
            self.register_buffer("item_id_mask", torch.ones(c.n_items))
        if c.user_id_dropout > 0:
            self.register_buffer("user_id_mask", torch.ones(c.n_users))
        user_in = sum(w for _, w in self.input_layout("user"))
        item_in = sum(w for _, w in self.input_layout("item"))
        self.user_mlp = mlp(user_in, c.user_hidden, c.out_dim, c.dropout)
        self.item_mlp = mlp(item_in, c.item_hidden, c.out_dim, c.dropout)
        if c.normalize:
            self.log_scale = nn.Parameter(torch.tensor(math.log(c.init_scale)))
        if c.item_bias:  # fp32 and dense: compression keeps it as it is (one float per item)
            self.item_bias = nn.Parameter(torch.zeros(c.n_items))
            # the bias's weight for known users (new users: 1); 1 in training, then chosen on
            # validation by the prior fit (pipelines.training.prior)
            self.register_buffer("known_bias_weight", torch.ones(()))
        c.check_content()
        if c.content_head:  # fit after training (student.content_head); unused until then
            self.content_head = nn.Linear(c.content_dim, c.item_dim)
            self.register_buffer("content_head_ready", torch.zeros(()))
        self._init_embeddings()
        self.set_features(user_features, item_features, item_text)

    def _init_embeddings(self) -> None:
        std = self.config.id_dim**-0.5  # rows of roughly unit norm
        for name in ["user_id_emb", "history_emb", "item_id_emb"]:
            emb = getattr(self, name, None)
            if isinstance(emb, nn.Embedding):
                nn.init.normal_(emb.weight, std=std)
                if emb.padding_idx is not None:
                    with torch.no_grad():
                        emb.weight[emb.padding_idx].zero_()

    def input_layout(self, tower: str) -> list[tuple[str, int]]:
        """Blocks of the first Linear's input in concat order: ``[(source, width), ...]``.

        Sources are module names (``user_id_emb``, ``history_emb`` or ``user_seq``,
        ``item_id_emb``, ``text_proj``) or buffer names (``user_features``, ``item_features``).
        """
        c = self.config
        if tower == "user":
            blocks = [("user_id_emb", c.id_dim)] if c.use_user_id else []
            if c.history_len > 0:
                blocks.append(("history_emb" if c.user_encoder == "mean" else "user_seq", c.id_dim))
            if c.n_user_features > 0:
                blocks.append(("user_features", c.n_user_features))
            return blocks
        if tower == "item":
            blocks = [("item_id_emb", c.id_dim)]
            if c.n_item_features > 0:
                blocks.append(("item_features", c.n_item_features))
            if c.text_dim > 0:
                blocks.append(("text_proj", c.id_dim))
            return blocks
        raise ValueError(f"tower={tower!r}: expected 'user' or 'item'")

    @torch.no_grad()
    def set_features(
        self, user_features: Any = None, item_features: Any = None, item_text: Any = None
    ) -> None:
        """Copy static side features into the buffers (``None`` leaves a buffer as it is).

        Shapes: user_features [n_users, n_user_features], item_features
        [n_items, n_item_features], item_text [n_items, text_dim]; numpy or torch, finite.
        Features enter the MLPs as given: standardise wide-range columns (e.g. year) first.
        """
        c = self.config
        for name, value, rows, cols, cfg_name in [
            ("user_features", user_features, c.n_users, c.n_user_features, "n_user_features"),
            ("item_features", item_features, c.n_items, c.n_item_features, "n_item_features"),
            ("item_text", item_text, c.n_items, c.text_dim, "text_dim"),
        ]:
            if value is None:
                continue
            if cols == 0:
                raise ValueError(
                    f"{name} given but config.{cfg_name}=0; set {cfg_name} to its column count"
                )
            buf = getattr(self, name)
            buf.copy_(as_float_tensor(value, name, (rows, cols)).to(buf.device))

    def set_item_id_mask(self, has_id: Any) -> None:
        """``has_id`` [n_items] bool: False for items seen in no training interaction; their id
        embedding is never used, so their score depends on content only."""
        self._set_id_mask("item", has_id)

    def set_user_id_mask(self, has_id: Any) -> None:
        """``has_id`` [n_users] bool: False for users with no training interaction; their id
        embedding (never trained) is not used, so they are scored from their history."""
        self._set_id_mask("user", has_id)

    @torch.no_grad()
    def _set_id_mask(self, side: str, has_id: Any) -> None:
        c = self.config
        if getattr(c, f"{side}_id_dropout") <= 0:
            raise ValueError(f"set_{side}_id_mask needs config.{side}_id_dropout > 0")
        n = c.n_items if side == "item" else c.n_users
        mask = torch.as_tensor(np.asarray(has_id), dtype=torch.float32)
        if mask.shape != (n,):
            raise ValueError(f"{side} id mask: expected shape [{n}], got {list(mask.shape)}")
        getattr(self, f"{side}_id_mask").copy_(mask)

    # ---- encoding -------------------------------------------------------------------------
    def encode_users(
        self, user_idx: torch.Tensor | None, history: torch.Tensor | None
    ) -> torch.Tensor:
        """user_idx [B] int64, history [B, L] item ids padded with ``n_items`` -> [B, out_dim].

        ``user_idx=None`` encodes new users (not in the training data) from ``history`` alone:
        the id embedding and the user features are zeros, as for a dropped id in training
        (``user_id_dropout``). ``history`` may be None only when ``config.history_len == 0``;
        any L is accepted (a sequence encoder reads the first, most recent, history_len).
        """
        c = self.config
        batch = self._check_user_inputs(user_idx, history)
        if c.history_len == 0:
            block = None
        elif c.user_encoder == "mean":
            block = self._pool_history(history)
        else:
            block = self._sequence(history)[:, 0]
        return self._user_tower(user_idx, batch, block)

    def encode_users_every(
        self, user_idx: torch.Tensor | None, history: torch.Tensor
    ) -> torch.Tensor:
        """The user vector at every history position: [B, L] -> [B, L', out_dim], L' = min(L,
        history_len); column j = ``encode_users(user_idx, history[:, j:])`` (the item at j and
        the older ones only: causal), column 0 = ``encode_users``. Sequence encoders only."""
        c = self.config
        if c.user_encoder == "mean" or c.history_len == 0:
            raise ValueError(
                f"encode_users_every needs a sequence encoder (user_encoder sasrec or gru); "
                f"config.user_encoder={c.user_encoder!r}, history_len={c.history_len}"
            )
        batch = self._check_user_inputs(user_idx, history)
        return self._user_tower(user_idx, batch, self._sequence(history))

    def _check_user_inputs(
        self, user_idx: torch.Tensor | None, history: torch.Tensor | None
    ) -> int:
        """Check the user tower's inputs; the batch size B."""
        c = self.config
        if user_idx is None:
            if c.history_len == 0 or history is None:
                raise ValueError(
                    "encode_users(None, history) encodes new users from their history; it needs "
                    "config.history_len > 0 and a [B, L] history"
                )
            batch = int(history.shape[0]) if history.dim() == 2 else -1
        else:
            check_idx(user_idx, "user_idx", c.n_users, "n_users")
            if user_idx.dim() != 1:
                raise ValueError(f"user_idx: expected shape [B], got {list(user_idx.shape)}")
            batch = int(user_idx.shape[0])
        if c.history_len > 0:
            if history is None:
                raise ValueError(
                    "history is None but config.history_len > 0; pass [B, L] item ids padded "
                    f"with {c.n_items}"
                )
            check_idx(history, "history", c.n_items + 1, f"padding id = {c.n_items}")
            if history.dim() != 2 or history.shape[0] != batch:
                raise ValueError(
                    f"history: expected shape [B={batch}, L], got {list(history.shape)}"
                )
        return batch

    def _user_tower(
        self, user_idx: torch.Tensor | None, batch: int, block: torch.Tensor | None
    ) -> torch.Tensor:
        """concat[id emb, history ``block`` [B, D] or [B, T, D], features] -> MLP -> [B, (T,) out]."""
        c = self.config
        # keep [B]: 1 = use the user's id (and features), 0 = score as a new user
        if user_idx is None:
            keep = torch.zeros(batch)
        elif c.user_id_dropout > 0:
            keep = self.user_id_mask[user_idx]
            if self.training:
                keep = keep * (torch.rand_like(keep) >= c.user_id_dropout)
        else:
            keep = None
        parts: list[torch.Tensor] = []
        if c.use_user_id:
            ids = (torch.zeros(batch, c.id_dim) if user_idx is None
                   else self.user_id_emb(user_idx))  # fmt: skip
            parts.append(ids if keep is None or user_idx is None else ids * keep[:, None])
        if c.n_user_features > 0:
            if user_idx is None:
                parts.append(self.user_features.new_zeros(batch, c.n_user_features))
            else:
                feats = self.user_features[user_idx]
                parts.append(feats if keep is None else feats * keep[:, None])
        if block is not None and block.dim() == 3:  # every position: the rest is per user
            parts = [p[:, None, :].expand(-1, block.shape[1], -1) for p in parts]
        if block is not None:
            parts.insert(1 if c.use_user_id else 0, block)
        out = self.user_mlp(torch.cat(parts, dim=-1))
        return F.normalize(out, dim=-1) if c.normalize else out

    def _sequence(self, history: torch.Tensor) -> torch.Tensor:
        """The sequence encoder's states [B, min(L, history_len) or 1, id_dim] (zeros if L = 0)."""
        c = self.config
        history = history[:, : c.history_len]
        if history.shape[1] == 0:
            return torch.zeros(history.shape[0], 1, c.id_dim)
        mask = self.item_id_mask if c.item_id_dropout > 0 else None
        return encode_sequence(self.user_seq, self.item_id_emb, history, c.n_items, mask)

    def _pool_history(self, history: torch.Tensor) -> torch.Tensor:
        """Mean of the non-padding history item embeddings: [B, L] -> [B, id_dim] (0 if none)."""
        pad = self.config.n_items
        table = self.history_emb
        if isinstance(table, nn.Embedding) and history.shape[1] > 0:
            # embedding_bag skips padding_idx in sum and count, without a [B, L, D] temporary
            # (about 18x faster than gather + mask at B=1024, L=50, D=64 on one CPU thread).
            return F.embedding_bag(
                history, table.weight, mode="mean", padding_idx=pad, sparse=table.sparse
            )
        mask = (history != pad).unsqueeze(-1).to(torch.float32)  # [B, L, 1]
        summed = (table(history) * mask).sum(dim=1)  # any table module, e.g. an int8 one
        return summed / mask.sum(dim=1).clamp_min(1.0)

    def encode_items(self, item_idx: torch.Tensor) -> torch.Tensor:
        """item_idx [N] (or any shape S) int64 -> [N, item_dim] (or [*S, item_dim]).

        ``item_dim`` is ``out_dim``, plus one column with ``item_bias``: the item's bias b
        (zero where the id is dropped or masked, like the id embedding).
        """
        c = self.config
        check_idx(item_idx, "item_idx", c.n_items, "n_items")
        flat = item_idx.reshape(-1)
        ids = self.item_id_emb(flat)
        keep = None
        if c.item_id_dropout > 0:
            keep = self.item_id_mask[flat]
            if self.training:
                keep = keep * (torch.rand_like(keep) >= c.item_id_dropout)
            ids = ids * keep[:, None]
        parts = [ids]
        if c.n_item_features > 0:
            parts.append(self.item_features[flat])
        if c.text_dim > 0:
            parts.append(self.text_proj(self.item_text[flat]))
        out = self.item_mlp(torch.cat(parts, dim=-1))
        if c.normalize:
            out = F.normalize(out, dim=-1)
        if c.item_bias:
            bias = self.item_bias[flat] if keep is None else self.item_bias[flat] * keep
            out = torch.cat([out, bias[:, None]], dim=-1)
        if c.content_head and not self.training and bool(self.content_head_ready):
            no_id = self.item_id_mask[flat] == 0  # scored from content by the fitted map
            out = torch.where(no_id[:, None], self.content_head(self.item_content(flat)), out)
        return out.reshape(*item_idx.shape, c.item_dim)

    def item_content(self, item_idx: torch.Tensor) -> torch.Tensor:
        """[N] -> [N, content_dim]: the items' dense features, then their text embedding."""
        parts = [self.item_features[item_idx]] if self.config.n_item_features else []
        if self.config.text_dim:
            parts.append(self.item_text[item_idx])
        return torch.cat(parts, dim=-1)

    def scale(self) -> torch.Tensor:
        """Score multiplier: ``exp(clamp(log_scale, max=log(max_scale)))``; 1 if not normalize."""
        if not self.config.normalize:
            return torch.ones(())
        return self.log_scale.clamp(max=math.log(self.config.max_scale)).exp()

    def score(
        self, user_emb: torch.Tensor, item_emb: torch.Tensor, new_users: bool = False
    ) -> torch.Tensor:
        """user_emb [B, D] with item_emb [N, D'] (shared) or [B, N, D'] (per user) -> [B, N].

        D = out_dim, D' = item_dim. Score = user . item (x scale when normalize), plus the
        item's bias b (item_emb's last column) with ``item_bias``, times ``known_bias_weight``
        unless ``new_users`` (users encoded from a history alone: ``encode_users(None, ...)``).

        How b learns popularity: it is one more logit term, so the hard loss's logQ
        correction (``s - log q``, applied to the whole score) treats it like the dot product.
        That correction is what makes the sampled softmax estimate the full softmax over the
        catalogue, whose optimum is ``s(u, i) = log p(i | u) + c(u)``: what the user vector
        does not explain, the marginal ``log p(i)`` (train popularity), goes to b. Without
        logQ, in-batch negatives would cancel it (``log p(i) - log q(i)``). A cosine score is
        bounded by the scale, so without b popularity must be squeezed into a direction of
        every vector; with b a history of 5 items moves the ranking away from popularity
        only as far as it is informative.
        """
        d = self.config.out_dim
        if item_emb.dim() not in (2, 3) or item_emb.shape[-1] != self.config.item_dim:
            raise ValueError(
                f"item_emb: expected [N, {self.config.item_dim}] or [B, N, "
                f"{self.config.item_dim}] (encode_items' output), got {list(item_emb.shape)}"
            )
        vec = item_emb[..., :d] if self.config.item_bias else item_emb
        if item_emb.dim() == 2:
            raw = user_emb @ vec.T
        else:
            raw = torch.einsum("bd,bnd->bn", user_emb, vec)
        raw = raw * self.scale() if self.config.normalize else raw
        if not self.config.item_bias:
            return raw
        return raw + item_emb[..., d] * (1.0 if new_users else self.known_bias_weight)

    def index_queries(self, user_emb: torch.Tensor, new_users: bool = False) -> torch.Tensor:
        """User vectors [B, out_dim] -> the index's queries [B, item_dim].

        Without ``item_bias`` unchanged (the index normalises them when normalize). With it
        ``[user x scale, a]``, a = 1 for ``new_users``, else ``known_bias_weight``: their inner
        product with ``encode_items``' ``[item, b]`` is :meth:`score` itself, so the index
        must take them as they are (its ``bias`` flag).
        """
        if not self.config.item_bias:
            return user_emb
        scaled = user_emb * self.scale() if self.config.normalize else user_emb
        weight = scaled.new_ones(len(scaled), 1)
        return torch.cat([scaled, weight if new_users else weight * self.known_bias_weight], -1)

    def forward(
        self, user_idx: torch.Tensor, history: torch.Tensor | None, item_idx: torch.Tensor
    ) -> torch.Tensor:
        """Scores [B, N]: item_idx [N] is scored for every user, [B, N] per user."""
        user_emb = self.encode_users(user_idx, history)
        if item_idx.dim() == 2 and item_idx.shape[0] != user_idx.shape[0]:
            raise ValueError(
                f"item_idx: per-user candidates need shape [B={user_idx.shape[0]}, N], got "
                f"{list(item_idx.shape)}"
            )
        if item_idx.dim() not in (1, 2):
            raise ValueError(f"item_idx: expected [N] or [B, N], got {list(item_idx.shape)}")
        return self.score(user_emb, self.encode_items(item_idx))

    # ---- persistence ------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write ``config.json`` + ``model.safetensors`` atomically (temp folder + os.replace)."""
        if any(t.dtype == torch.int8 for t in self.state_dict().values()):
            raise ValueError(
                "this model has int8 parts; save it with student.compress.save_quantized"
            )
        return write_model_dir(
            directory, self.config, self.state_dict(), provenance=self.provenance
        )

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> TwoTower:
        """Rebuild from ``config.json`` and load ``model.safetensors`` strictly; eval mode."""
        directory = Path(directory)
        if (directory / COMPRESSION_NAME).exists():
            raise ValueError(
                f"{directory} holds a compressed model ({COMPRESSION_NAME} present); load it "
                "with student.compress.load_quantized"
            )
        config = load_config(directory)
        with torch.random.fork_rng(devices=[]):  # building must not move the caller's RNG
            model = cls(config)
        load_state_strict(model, load_tensors(directory), directory / WEIGHTS_NAME)
        model.provenance = read_provenance(directory)
        return model.eval()
