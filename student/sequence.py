"""Sequence encoders of the user tower (``TwoTowerConfig.user_encoder``: sasrec, gru).

Both read the history as the model gets it (``[B, L]`` item ids, most recent first, padded with
``n_items``), embedded by the item tower's id table, and return one vector per position in that
same layout: ``out[:, j]`` is the state after the items of columns ``j, j+1, ...`` (the item at
column j and everything older; causal: never a more recent item), so ``out[:, 0]`` is the user
after their whole history. Internally a row runs oldest first (its real items compacted to the
front, padding behind them), so padding never changes a real position's output and a history
padded to any length encodes the same. Positions count from the oldest item of the window
(0 = oldest), so a prefix of a history encodes exactly as the same positions of the whole one.

SASRec (Kang & McAuley, 2018): learned positions, ``seq_layers`` pre-LayerNorm blocks of causal
self-attention (q/k/v/out are ``nn.Linear``, so int8 and pruning reach them) and a ReLU
feed-forward, residuals, dropout, a final LayerNorm. GRU (GRU4Rec): ``nn.GRU`` over the same
inputs (its weights stay fp32 under int8). Padding positions output zeros.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def chronological(history: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """history [B, L] most recent first -> (order [B, L], real [B, L] bool).

    ``history.gather(1, order)`` is the row oldest first, its real items at the front; the same
    ``order`` maps a chronological output back (``out.gather`` with it is an involution on the
    real part). ``real[b, t]``: position t of row b holds an item.
    """
    is_pad = history == pad
    compact = torch.argsort(is_pad.to(torch.int8), dim=1, stable=True)  # real items first
    n = (~is_pad).sum(1, keepdim=True)  # [B, 1]
    t = torch.arange(history.shape[1], device=history.device).expand_as(history)
    real = t < n
    # chronological position t holds the compacted column n - 1 - t (t < n)
    rev = torch.where(real, n - 1 - t, t)
    return compact.gather(1, rev), real


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention from four ``nn.Linear`` (q, k, v, out)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """x [B, T, D], allowed [B, T, T] bool (query, key) -> [B, T, D]."""
        b, t, d = x.shape
        h = self.heads

        def split(z: torch.Tensor) -> torch.Tensor:
            return z.reshape(b, t, h, d // h).transpose(1, 2)  # [B, H, T, D/H]

        q, k, v = split(self.q(x)), split(self.k(x)), split(self.v(x))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(d // h)
        att = att.masked_fill(~allowed[:, None], float("-inf")).softmax(-1)
        y = (self.dropout(att) @ v).transpose(1, 2).reshape(b, t, d)
        return self.out(y)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: attention and a ReLU feed-forward, each residual."""

    def __init__(self, dim: int, heads: int, ffn: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1, self.ff2 = nn.Linear(dim, ffn), nn.Linear(ffn, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        x = x + self.dropout(self.attn(self.norm1(x), allowed))
        return x + self.dropout(self.ff2(self.dropout(F.relu(self.ff1(self.norm2(x))))))


class SASRecEncoder(nn.Module):
    """[B, T, D] item embeddings oldest first, real [B, T] -> [B, T, D] causal states."""

    def __init__(self, dim: int, max_len: int, layers: int, heads: int, ffn: int,
                 dropout: float) -> None:  # fmt: skip
        super().__init__()
        # a plain parameter, not an nn.Embedding: it stays fp32 and out of the sparse tables
        self.positions = nn.Parameter(torch.randn(max_len, dim) * dim**-0.5)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(dim, heads, ffn, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        x = self.dropout((x + self.positions[:t]) * real[..., None])
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        # a query sees the real keys at or before it; itself always (no empty row: padding)
        allowed = (causal & real[:, None, :]) | torch.eye(t, dtype=torch.bool, device=x.device)
        for block in self.blocks:
            x = block(x, allowed)
        return self.norm(x) * real[..., None]


class GRUEncoder(nn.Module):
    """``nn.GRU`` over the items oldest first; padding sits behind the real items, so it never
    reaches a real position's state."""

    def __init__(self, dim: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(dim, dim, num_layers=layers, batch_first=True,
                          dropout=dropout if layers > 1 else 0.0)  # fmt: skip

    def forward(self, x: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        out, _ = self.gru(self.dropout(x * real[..., None]))
        return out * real[..., None]


def build_encoder(config) -> nn.Module:
    """The encoder ``config.user_encoder`` names (sasrec or gru), sized by the config."""
    c = config
    if c.user_encoder == "sasrec":
        return SASRecEncoder(c.id_dim, c.history_len, c.seq_layers, c.seq_heads, c.seq_ffn,
                             c.seq_dropout)  # fmt: skip
    if c.user_encoder == "gru":
        return GRUEncoder(c.id_dim, c.seq_layers, c.seq_dropout)
    raise ValueError(f"user_encoder={c.user_encoder!r}: no sequence encoder (sasrec or gru)")


def encode_sequence(encoder: nn.Module, table: nn.Module, history: torch.Tensor, pad: int,
                    id_mask: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """history [B, L] (most recent first, padded with ``pad``) -> [B, L, D] states in the
    same layout (column j: after the item at j and the older ones; zeros where padding).

    ``table``: the item id table (any module ``ids -> [*, D]``, e.g. an int8 one); padding is
    looked up as row 0 and zeroed. ``id_mask`` [n_items]: items marked 0 enter as zeros.
    """
    order, real = chronological(history, pad)
    seq = history.gather(1, order)  # oldest first
    safe = torch.where(real, seq, torch.zeros_like(seq))
    x = table(safe)
    if id_mask is not None:
        x = x * id_mask[safe][..., None]
    states = encoder(x, real)  # [B, L, D] oldest first
    # back to most-recent-first columns: the compacted column j is chronological n - 1 - j
    n = real.sum(1, keepdim=True)
    j = torch.arange(history.shape[1], device=history.device).expand_as(history)
    back = torch.where(j < n, n - 1 - j, j)
    return states.gather(1, back[..., None].expand_as(states))
