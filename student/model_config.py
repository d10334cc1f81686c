"""The two-tower student's config: sizes and switches, checked on construction."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from common.config import ConfigMixin, is_int

UserEncoder = Literal["mean", "sasrec", "gru"]
USER_ENCODERS: tuple[str, ...] = get_args(UserEncoder)


@dataclass
class TwoTowerConfig(ConfigMixin):
    """Sizes and switches of the two-tower student; the only input to :class:`TwoTower`."""

    n_users: int = field(metadata={"help": "Number of users (user ids are 0..n_users-1)."})
    n_items: int = field(
        metadata={"help": "Number of items (item ids 0..n_items-1; n_items pads histories)."}
    )
    n_user_features: int = field(
        default=0, metadata={"cli": False, "help": "Dense float features per user (0 = none)."}
    )
    n_item_features: int = field(
        default=0,
        metadata={
            "cli": False,
            "help": "Dense float features per item, e.g. genre multi-hot + year (0 = none).",
        },
    )
    text_dim: int = field(
        default=0,
        metadata={
            "cli": False,
            "help": "Dim of the frozen teacher item-text embedding (0 = none).",
        },
    )
    id_dim: int = field(
        default=64, metadata={"help": "Dim of the id embeddings and of the text projection."}
    )
    history_len: int = field(
        default=50,
        metadata={"help": "History length the data pipeline pads to (0 = no history input)."},
    )
    user_encoder: UserEncoder = field(
        default="mean",
        metadata={
            "help": "How the user tower reads the history: mean (order-blind average of a "
            "history table), sasrec (causal self-attention over the last history_len items "
            "with learned positions) or gru; sasrec and gru embed the items with the item "
            "tower's id table and train every position to predict its next item"
        },
    )
    seq_layers: int = field(
        default=2, metadata={"help": "sasrec: self-attention blocks; gru: stacked GRU layers."}
    )
    seq_heads: int = field(
        default=1, metadata={"help": "sasrec: attention heads (id_dim must be divisible by it)."}
    )
    seq_ffn: int = field(
        default=128, metadata={"help": "sasrec: hidden width of each block's feed-forward."}
    )
    seq_dropout: float = field(
        default=0.2,
        metadata={"help": "sasrec / gru: dropout on the item inputs, attention and feed-forward."},
    )
    user_hidden: tuple[int, ...] = field(
        default=(256,), metadata={"help": "Hidden layer sizes of the user tower MLP."}
    )
    item_hidden: tuple[int, ...] = field(
        default=(256,), metadata={"help": "Hidden layer sizes of the item tower MLP."}
    )
    out_dim: int = field(default=64, metadata={"help": "Output embedding dim of both towers."})
    dropout: float = field(default=0.1, metadata={"help": "Dropout after each hidden layer."})
    item_id_dropout: float = field(
        default=0.0,
        metadata={
            "help": "DropoutNet: probability of zeroing an item's id embedding in training, so "
            "the item tower learns to score from content alone. > 0 also adds the buffer "
            "item_id_mask [n_items]: items marked 0 (no train interactions) never use their id."
        },
    )
    user_id_dropout: float = field(
        default=0.0,
        metadata={
            "help": "DropoutNet for users: probability of zeroing a user's id embedding in "
            "training, so the user tower learns to score from the history alone (new users, "
            "served by encode_users(None, history)). > 0 also adds the buffer user_id_mask "
            "[n_users]: users marked 0 (no train interactions) never use their id."
        },
    )
    normalize: bool = field(
        default=True,
        metadata={
            "help": "Unit-norm tower outputs; score = cosine * exp(log_scale) with a learned, "
            "clamped log_scale. False: score = plain dot product."
        },
    )
    use_user_id: bool = field(
        default=True,
        metadata={"help": "Feed a user id embedding to the user tower (False: cold-start style)."},
    )
    init_scale: float = field(
        default=10.0, metadata={"help": "Initial score scale exp(log_scale) when normalize."}
    )
    max_scale: float = field(
        default=100.0, metadata={"help": "Upper clamp of the score scale when normalize."}
    )
    item_bias: bool = field(
        default=False,
        metadata={
            "help": "A learned score bias per item (the popularity a short history cannot "
            "give): score = user . item (x scale when normalize) + b_item. encode_items then "
            "returns [N, out_dim + 1], b last; the FAISS index holds that column and queries "
            "[user (x scale), 1] (TwoTower.index_queries)."
        },
    )

    content_head: bool = field(
        default=False,
        metadata={
            "help": "Items without a train interaction (no id) are encoded by a linear map from "
            "their content (item features, text embedding) onto the item vectors, fit in "
            "closed form after training on the items with an id (ridge, CB2CF: "
            "student.content_head), instead of the item MLP with a dropped id. Needs "
            "item_id_dropout > 0 and item content."
        },
    )

    def __post_init__(self) -> None:
        self.user_hidden = self._hidden("user_hidden", self.user_hidden)
        self.item_hidden = self._hidden("item_hidden", self.item_hidden)
        for name, low in [("n_users", 1), ("n_items", 1), ("id_dim", 1), ("out_dim", 1)]:
            value = getattr(self, name)
            if not is_int(value) or value < low:
                raise ValueError(f"TwoTowerConfig.{name}={value!r}: expected an integer >= {low}")
        for name in ["n_user_features", "n_item_features", "text_dim", "history_len"]:
            value = getattr(self, name)
            if not is_int(value) or value < 0:
                raise ValueError(
                    f"TwoTowerConfig.{name}={value!r}: expected an integer >= 0 (0 = none)"
                )
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)):
            raise ValueError(f"TwoTowerConfig.dropout={self.dropout!r}: expected a float in [0, 1)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"TwoTowerConfig.dropout={self.dropout!r}: expected a float in [0, 1)")
        for name in ["item_id_dropout", "user_id_dropout"]:
            p = getattr(self, name)
            if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
                raise ValueError(f"TwoTowerConfig.{name}={p!r}: expected a float in [0, 1)")
        if self.user_id_dropout > 0 and not self.use_user_id:
            raise ValueError(
                f"TwoTowerConfig.user_id_dropout={self.user_id_dropout!r} needs use_user_id=True "
                "(without a user id there is nothing to drop)"
            )
        for name in ["normalize", "use_user_id", "item_bias", "content_head"]:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"TwoTowerConfig.{name}={getattr(self, name)!r}: expected true or false"
                )
        if not (isinstance(self.init_scale, (int, float)) and math.isfinite(self.init_scale)):
            raise ValueError(f"TwoTowerConfig.init_scale={self.init_scale!r}: expected a float > 0")
        if self.init_scale <= 0:
            raise ValueError(f"TwoTowerConfig.init_scale={self.init_scale!r}: expected a float > 0")
        if not (isinstance(self.max_scale, (int, float)) and self.max_scale >= self.init_scale):
            raise ValueError(
                f"TwoTowerConfig.max_scale={self.max_scale!r}: expected a float >= init_scale "
                f"({self.init_scale})"
            )
        self._check_encoder()
        if not self.use_user_id and self.history_len == 0 and self.n_user_features == 0:
            raise ValueError(
                "TwoTowerConfig: the user tower has no input (use_user_id=False, history_len=0, "
                "n_user_features=0); enable at least one of them"
            )

    def check_content(self) -> None:
        """A content head needs items without an id and their content: checked when the
        model is built (the job fills n_item_features and text_dim from the data after the
        flags are read)."""
        if self.content_head and self.item_id_dropout <= 0:
            raise ValueError(
                "TwoTowerConfig.content_head=True needs item_id_dropout > 0 (items without an "
                f"id); got {self.item_id_dropout}"
            )
        if self.content_head and self.content_dim == 0:
            raise ValueError(
                "TwoTowerConfig.content_head=True needs item content (n_item_features + "
                "text_dim > 0, e.g. train-student --use-features/--use-text); got none"
            )

    @property
    def content_dim(self) -> int:
        """Width of an item's content (dense features, then the text embedding)."""
        return self.n_item_features + self.text_dim

    @property
    def item_dim(self) -> int:
        """Width of an item vector (``encode_items``, the index): out_dim, + 1 with item_bias."""
        return self.out_dim + int(self.item_bias)

    def _check_encoder(self) -> None:
        if self.user_encoder not in USER_ENCODERS:
            raise ValueError(
                f"TwoTowerConfig.user_encoder={self.user_encoder!r}: expected one of "
                f"{list(USER_ENCODERS)}"
            )
        for name in ["seq_layers", "seq_heads", "seq_ffn"]:
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ValueError(f"TwoTowerConfig.{name}={value!r}: expected an integer >= 1")
        p = self.seq_dropout
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"TwoTowerConfig.seq_dropout={p!r}: expected a float in [0, 1)")
        if self.user_encoder == "mean":
            return
        if self.history_len == 0:
            raise ValueError(
                f"TwoTowerConfig.user_encoder={self.user_encoder!r} reads the history: it needs "
                "history_len > 0 (got 0)"
            )
        if self.user_encoder == "sasrec" and self.id_dim % self.seq_heads:
            raise ValueError(
                f"TwoTowerConfig.seq_heads={self.seq_heads}: id_dim={self.id_dim} must be "
                "divisible by it (each head reads id_dim / seq_heads dims)"
            )

    @staticmethod
    def _hidden(name: str, value: Any) -> tuple[int, ...]:
        if is_int(value):
            value = (value,)
        if not isinstance(value, (list, tuple)) or not all(is_int(v) and v >= 1 for v in value):
            raise ValueError(
                f"TwoTowerConfig.{name}={value!r}: expected a list of integers >= 1 "
                "(an empty list = no hidden layer)"
            )
        return tuple(int(v) for v in value)
