"""Compression steps for :class:`~student.model.TwoTower`: each is ``model -> (new model, record)``.

- :func:`structured_prune` removes hidden units (and optionally id-embedding dims) and rebuilds
  physically smaller layers; the config changes, so the result saves and loads like any model.
- :func:`magnitude_prune` zeroes the smallest weights. Zeros alone make the model neither
  smaller nor faster; it exists to compare against structured pruning.
- :func:`quantize_int8` stores Linear weights (per output channel) and embedding tables (per
  row) as int8 with float scales; :func:`save_quantized` / :func:`load_quantized` write and read
  them as safetensors plus ``compression.json``, never pickle.
- :func:`measure_latency` and :func:`choose_int8_parts` measure, for benchmarks, and keep fp32
  where int8 is slower at the serving batch size.

The input model is never modified.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
import os
import statistics
import time
import warnings
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

from .model import (
    COMPRESSION_NAME,
    TwoTower,
    TwoTowerConfig,
    count_parameters,
    load_config,
    load_state_strict,
    load_tensors,
    model_bytes,
    read_json,
    write_model_dir,
)

logger = logging.getLogger(__name__)

PARTS = ("user_linear", "user_embedding", "item_linear", "item_embedding")
LINEAR_KERNELS = ("qlinear", "dequant")
ZEROS_NOTE = (
    "unstructured zeros make the model neither smaller nor faster: tensors keep their shape "
    "and dense kernels multiply the zeros; use structured_prune for a smaller model"
)


def _check_model(model: Any, what: str, allow_int8: bool = False) -> TwoTower:
    if not isinstance(model, TwoTower):
        raise ValueError(f"{what}: expected a student.model.TwoTower, got {type(model).__name__}")
    if not allow_int8 and any(isinstance(m, (Int8Linear, Int8Embedding)) for m in model.modules()):
        raise ValueError(f"{what}: the model already has int8 parts; apply {what} before int8")
    return model


def _size_record(before: nn.Module, after: nn.Module) -> dict[str, int]:
    return {
        "params_before": count_parameters(before),
        "params_after": count_parameters(after),
        "bytes_before": model_bytes(before),
        "bytes_after": model_bytes(after),
    }


def _new_model(config: TwoTowerConfig) -> TwoTower:
    with torch.random.fork_rng(devices=[]):  # building must not move the caller's RNG
        return TwoTower(config)


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
    Tower outputs (``out_dim``) are never pruned. Returns a new model with an updated config.
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
    if prune_embeddings_dim:
        new_id_dim = max(1, round(config.id_dim * keep_ratio))
        record["id_dim"] = {"before": config.id_dim, "after": new_id_dim}
        for tower in ("user", "item"):
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
    hidden: dict[str, tuple[int, ...]] = {}
    for tower in ("user", "item"):
        mlp = getattr(model, f"{tower}_mlp")
        positions = _linear_positions(mlp)
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
        hidden[tower] = tuple(widths)
    new_config = dataclasses.replace(
        config, id_dim=new_id_dim, user_hidden=hidden["user"], item_hidden=hidden["item"]
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


# ---- int8 modules -------------------------------------------------------------------------------
def _quantized_ops_available() -> bool:
    try:
        return hasattr(torch.ops.quantized, "linear_dynamic") and (
            torch.backends.quantized.engine != "none"
        )
    except (AttributeError, RuntimeError):
        return False


class Int8Linear(nn.Module):
    """Inference-only Linear with int8 weights and a float scale per output channel.

    Buffers (all saved): ``weight_int8`` [out, in] int8, ``weight_scale`` [out] float32 (weight
    = int8 * scale, symmetric, zero point 0), ``bias`` [out] float32. ``kernel="qlinear"`` runs
    ``torch.ops.quantized.linear_dynamic`` (fbgemm/x86: activations quantized per call, int8
    GEMM; the packed weight is rebuilt after loading and not saved), the same kernel as
    ``quantize_dynamic``; ``kernel="dequant"`` multiplies by the dequantised float weight.
    """

    def __init__(self, in_features: int, out_features: int, kernel: str = "qlinear") -> None:
        super().__init__()
        if kernel not in LINEAR_KERNELS:
            raise ValueError(f"kernel={kernel!r}: expected one of {list(LINEAR_KERNELS)}")
        self.in_features, self.out_features = in_features, out_features
        self.kernel = kernel if kernel == "dequant" or _quantized_ops_available() else "dequant"
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.register_buffer("bias", torch.zeros(out_features))
        self._packed: tuple[tuple[int, ...], Any] | None = None

    @classmethod
    def from_quantized_tensor(
        cls, qweight: torch.Tensor, bias: torch.Tensor | None, kernel: str = "qlinear"
    ) -> Int8Linear:
        """From a per-channel symmetric qint8 weight (as made by ``quantize_dynamic``)."""
        if qweight.qscheme() not in (torch.per_channel_affine, torch.per_channel_symmetric):
            raise ValueError(f"expected a per-channel quantized weight, got {qweight.qscheme()}")
        if bool((qweight.q_per_channel_zero_points() != 0).any()):
            raise ValueError("expected symmetric quantization (zero points 0)")
        out_f, in_f = qweight.shape
        module = cls(in_f, out_f, kernel)
        module.weight_int8.copy_(qweight.int_repr())
        module.weight_scale.copy_(qweight.q_per_channel_scales().to(torch.float32))
        if bias is not None:
            module.bias.copy_(bias.detach())
        return module

    @classmethod
    def from_float(cls, linear: nn.Linear, kernel: str = "qlinear") -> Int8Linear:
        """Own symmetric per-channel quantization: scale = max|w_row| / 127."""
        weight = linear.weight.detach().to(torch.float32)
        scale = weight.abs().amax(dim=1) / 127.0
        q = torch.round(weight / scale.clamp_min(1e-12)[:, None]).clamp(-127, 127)
        module = cls(linear.in_features, linear.out_features, kernel)
        module.weight_int8.copy_(q.to(torch.int8))
        module.weight_scale.copy_(scale)
        if linear.bias is not None:
            module.bias.copy_(linear.bias.detach())
        return module

    def dequantized_weight(self) -> torch.Tensor:
        """[out, in] float32."""
        return self.weight_int8.to(torch.float32) * self.weight_scale[:, None]

    def _packed_params(self) -> Any:
        key = tuple(
            (t.data_ptr(), t._version) for t in (self.weight_int8, self.weight_scale, self.bias)
        )
        if self._packed is None or self._packed[0] != key:
            with warnings.catch_warnings():  # quantized-tensor creation warns it is deprecated
                warnings.simplefilter("ignore")
                qweight = torch._make_per_channel_quantized_tensor(
                    self.weight_int8,
                    self.weight_scale.to(torch.float64),
                    torch.zeros(self.out_features, dtype=torch.int64),
                    0,
                )
                packed = torch.ops.quantized.linear_prepack(qweight, self.bias)
            self._packed = (key, packed)
        return self._packed[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., in] -> [..., out]."""
        if self.kernel == "dequant" or x.requires_grad or x.dtype != torch.float32 or x.is_cuda:
            return F.linear(x, self.dequantized_weight().to(x.dtype), self.bias.to(x.dtype))
        flat = x.reshape(-1, self.in_features).contiguous()
        out = torch.ops.quantized.linear_dynamic(flat, self._packed_params(), True)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


class Int8Embedding(nn.Module):
    """Inference-only embedding table stored row-wise as int8 plus one float scale per row.

    Buffers (all saved): ``weight_int8`` [n, d] int8 and ``weight_scale`` [n] float32, with
    row = int8 * scale and scale = max|row| / 127. Looked-up rows are dequantised.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.register_buffer(
            "weight_int8", torch.zeros(num_embeddings, embedding_dim, dtype=torch.int8)
        )
        self.register_buffer("weight_scale", torch.ones(num_embeddings))

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> Int8Embedding:
        weight = embedding.weight.detach().to(torch.float32)
        scale = weight.abs().amax(dim=1) / 127.0
        q = torch.round(weight / scale.clamp_min(1e-12)[:, None]).clamp(-127, 127)
        module = cls(embedding.num_embeddings, embedding.embedding_dim)
        module.weight_int8.copy_(q.to(torch.int8))
        module.weight_scale.copy_(scale)
        return module

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """idx [*S] -> [*S, d] float32."""
        return self.weight_int8[idx].to(torch.float32) * self.weight_scale[idx].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}"


# ---- int8 quantization ------------------------------------------------------------------------
def _part_modules(model: TwoTower) -> dict[str, list[str]]:
    """Module names of each part (tower x kind) that quantize_int8 may convert."""
    parts: dict[str, list[str]] = {p: [] for p in PARTS}
    for name, module in model.named_modules():
        if not name:
            continue
        tower = (
            "user" if name.split(".")[0] in ("user_id_emb", "history_emb", "user_mlp") else "item"
        )
        if isinstance(module, (nn.Linear, Int8Linear)):
            parts[f"{tower}_linear"].append(name)
        elif isinstance(module, (nn.Embedding, Int8Embedding)):
            parts[f"{tower}_embedding"].append(name)
    return parts


def _torchao_status() -> str:
    try:
        import torchao  # noqa: F401
    except ImportError:
        return "torchao not installed"
    return (
        f"torchao {getattr(torchao, '__version__', '?')} importable but not used: its eager int8 "
        "was 3-20x slower than fp32 for towers this small (shared/ASSETS.md)"
    )


def _resolve_parts(linear: bool, embeddings: bool, parts: Collection[str] | None) -> list[str]:
    if parts is None:
        return [
            p
            for p in PARTS
            if (linear and p.endswith("linear")) or (embeddings and p.endswith("embedding"))
        ]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise ValueError(f"parts: unknown part(s) {unknown}; allowed: {list(PARTS)}")
    return [p for p in PARTS if p in parts]


def _quantize_linears(model: TwoTower, names: list[str], kernel: str) -> str:
    """Replace the named nn.Linear modules in place; return which quantizer was used."""
    if not names:
        return "none"
    try:
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic
    except ImportError:
        quantize_dynamic = None
    if quantize_dynamic is None:
        for name in names:
            model.set_submodule(name, Int8Linear.from_float(model.get_submodule(name), kernel))
        return "own per-channel symmetric int8 (torch.ao.quantization unavailable)"
    with warnings.catch_warnings():  # torch.ao.quantization warns it is deprecated for torchao
        warnings.simplefilter("ignore")
        # quantize_dynamic only swaps modules; run it on a copy so `model` stays float until
        # each Linear is replaced by a saveable Int8Linear holding the same int8 weights.
        qmodel = quantize_dynamic(
            copy.deepcopy(model),
            {name: per_channel_dynamic_qconfig for name in names},
            dtype=torch.qint8,
        )
        for name in names:
            qlinear = qmodel.get_submodule(name)
            module = Int8Linear.from_quantized_tensor(qlinear.weight(), qlinear.bias(), kernel)
            model.set_submodule(name, module)
    return "torch.ao.quantization.quantize_dynamic (per-channel qint8 weights)"


def quantize_int8(
    model: TwoTower,
    linear: bool = True,
    embeddings: bool = True,
    parts: Collection[str] | None = None,
    linear_kernel: str = "qlinear",
) -> tuple[TwoTower, dict[str, Any]]:
    """int8 copy of the model for inference: Linear layers and/or embedding tables.

    ``parts`` (a subset of ``PARTS``: user_linear, user_embedding, item_linear,
    item_embedding) overrides ``linear``/``embeddings`` for per-tower choices. The history
    table belongs to the user tower, the text projection to the item tower. Linear weights are
    quantized by ``quantize_dynamic`` (per output channel) and stored in :class:`Int8Linear`
    (which saves to safetensors; torch's own dynamic modules do not); tables become
    :class:`Int8Embedding`. The result is in eval mode and cannot be trained.
    """
    _check_model(model, "quantize_int8")
    if linear_kernel not in LINEAR_KERNELS:
        raise ValueError(f"linear_kernel={linear_kernel!r}: expected one of {list(LINEAR_KERNELS)}")
    chosen = _resolve_parts(linear, embeddings, parts)
    new_model = copy.deepcopy(model).eval()
    names = _part_modules(new_model)
    linear_names = [n for p in chosen if p.endswith("linear") for n in names[p]]
    emb_names = [n for p in chosen if p.endswith("embedding") for n in names[p]]
    quantizer = _quantize_linears(new_model, linear_names, linear_kernel)
    for name in emb_names:
        new_model.set_submodule(name, Int8Embedding.from_float(new_model.get_submodule(name)))
    record = {
        "step": "quantize_int8",
        "int8_parts": chosen,
        "fp32_parts": [p for p in PARTS if p not in chosen],
        "int8_linear": linear_names,
        "int8_embedding": emb_names,
        "linear_quantizer": quantizer,
        "linear_kernel": sorted({new_model.get_submodule(n).kernel for n in linear_names}),
        "torchao": _torchao_status(),
        **_size_record(model, new_model),
    }
    logger.info("quantize_int8: bytes %d -> %d", record["bytes_before"], record["bytes_after"])
    return new_model, record


def save_quantized(model: TwoTower, directory: str | os.PathLike) -> Path:
    """Write config.json, model.safetensors (int8 weights + scales) and compression.json."""
    _check_model(model, "save_quantized", allow_int8=True)
    layers: dict[str, dict[str, Any]] = {}
    for name, module in model.named_modules():
        if isinstance(module, Int8Linear):
            layers[name] = {
                "type": "int8_linear",
                "in_features": module.in_features,
                "out_features": module.out_features,
                "kernel": module.kernel,
            }
        elif isinstance(module, Int8Embedding):
            layers[name] = {
                "type": "int8_embedding",
                "num_embeddings": module.num_embeddings,
                "embedding_dim": module.embedding_dim,
            }
    compression = {
        "format_version": 1,
        "scheme": "symmetric int8; Linear: one scale per output channel; embedding: one scale per row",
        "int8_modules": layers,
    }
    return write_model_dir(
        directory, model.config, model.state_dict(), extra_json={COMPRESSION_NAME: compression}
    )


def load_quantized(directory: str | os.PathLike) -> TwoTower:
    """Rebuild a model saved by :func:`save_quantized`; strict name/shape/dtype checks; eval."""
    directory = Path(directory)
    comp_path = directory / COMPRESSION_NAME
    compression = read_json(comp_path, "a folder written by student.compress.save_quantized")
    layers = compression.get("int8_modules")
    if compression.get("format_version") != 1 or not isinstance(layers, dict):
        raise ValueError(f"{comp_path}: expected format_version 1 and an 'int8_modules' object")
    model = _new_model(load_config(directory))
    for name, spec in layers.items():
        try:
            current = model.get_submodule(name)
        except AttributeError:
            raise ValueError(
                f"{comp_path}: module {name!r} does not exist in this config"
            ) from None
        kind = spec.get("type") if isinstance(spec, dict) else None
        if kind == "int8_linear" and isinstance(current, nn.Linear):
            shape = (spec.get("in_features"), spec.get("out_features"))
            if shape != (current.in_features, current.out_features):
                raise ValueError(
                    f"{comp_path}: {name} is {list(shape)} (in, out) but config.json gives "
                    f"{[current.in_features, current.out_features]}"
                )
            replacement: nn.Module = Int8Linear(*shape, kernel=spec.get("kernel", "qlinear"))
        elif kind == "int8_embedding" and isinstance(current, nn.Embedding):
            shape = (spec.get("num_embeddings"), spec.get("embedding_dim"))
            if shape != (current.num_embeddings, current.embedding_dim):
                raise ValueError(
                    f"{comp_path}: {name} is {list(shape)} but config.json gives "
                    f"{[current.num_embeddings, current.embedding_dim]}"
                )
            replacement = Int8Embedding(*shape)
        else:
            raise ValueError(
                f"{comp_path}: {name!r} has type {kind!r}, expected int8_linear on a Linear or "
                f"int8_embedding on an Embedding (found {type(current).__name__})"
            )
        model.set_submodule(name, replacement)
    load_state_strict(model, load_tensors(directory), directory / "model.safetensors")
    return model.eval()


# ---- latency ------------------------------------------------------------------------------------
def _tower_inputs(
    model: TwoTower, batch: int, history_len: int | None, gen: torch.Generator
) -> dict[str, tuple[torch.Tensor, ...]]:
    c = model.config
    length = c.history_len if history_len is None else history_len
    users = torch.randint(0, c.n_users, (batch,), generator=gen)
    history = torch.randint(0, c.n_items + 1, (batch, length), generator=gen) if length else None
    items = torch.randint(0, c.n_items, (batch,), generator=gen)
    return {"user": (users, history), "item": (items,)}


def measure_latency(
    model: TwoTower,
    batch_sizes: Sequence[int] = (1, 1024),
    towers: Sequence[str] = ("user", "item"),
    n_warmup: int = 3,
    n_repeats: int = 20,
    history_len: int | None = None,
    num_threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Median milliseconds per batch of each tower: ``{"user": {"1": ms, ...}, "item": ...}``.

    For benchmarks, not tests. Inputs are random ids (histories of ``history_len``, default the
    config's). ``num_threads`` sets torch threads for the call and restores them after.
    """
    _check_model(model, "measure_latency", allow_int8=True)
    for tower in towers:
        if tower not in ("user", "item"):
            raise ValueError(f"towers: {tower!r} is not 'user' or 'item'")
    if n_repeats < 1 or n_warmup < 0:
        raise ValueError(f"n_repeats={n_repeats}, n_warmup={n_warmup}: need >= 1 and >= 0")
    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {t: {} for t in towers}
    try:
        with torch.inference_mode():
            for batch in batch_sizes:
                inputs = _tower_inputs(model, int(batch), history_len, gen)
                for tower in towers:
                    fn = model.encode_users if tower == "user" else model.encode_items
                    args = inputs[tower]
                    for _ in range(n_warmup):
                        fn(*args)
                    times = []
                    for _ in range(n_repeats):
                        start = time.perf_counter()
                        fn(*args)
                        times.append((time.perf_counter() - start) * 1e3)
                    out[tower][str(batch)] = statistics.median(times)
    finally:
        model.train(was_training)
        torch.set_num_threads(old_threads)
    out["num_threads"] = torch.get_num_threads() if num_threads is None else num_threads
    out["n_repeats"] = n_repeats
    out["statistic"] = "median ms per batch"
    return out


def choose_int8_parts(
    model: TwoTower,
    user_batch_size: int = 1,
    item_batch_size: int = 1024,
    parts: Collection[str] = PARTS,
    min_speedup: float = 1.0,
    linear_kernel: str = "qlinear",
    measure: Callable[..., Mapping[str, Any]] = measure_latency,
    **measure_kwargs: Any,
) -> tuple[TwoTower, dict[str, Any]]:
    """int8 only where it is not slower: each part is timed alone at its tower's batch size.

    The user tower is timed at ``user_batch_size`` (online queries), the item tower at
    ``item_batch_size`` (index building). A part stays int8 if ``fp32_ms / int8_ms >=
    min_speedup``, else it is kept fp32 and the record says why. ``measure`` is
    :func:`measure_latency` (injectable, e.g. for tests); extra kwargs go to it.
    """
    _check_model(model, "choose_int8_parts")
    if not (isinstance(min_speedup, (int, float)) and min_speedup > 0):
        raise ValueError(f"min_speedup={min_speedup!r}: expected a float > 0")
    requested = _resolve_parts(True, True, parts)
    batch_of = {"user": int(user_batch_size), "item": int(item_batch_size)}

    def timed(m: TwoTower, tower: str) -> float:
        result = measure(m, batch_sizes=(batch_of[tower],), towers=(tower,), **measure_kwargs)
        return float(result[tower][str(batch_of[tower])])

    available = _part_modules(model)
    decisions: dict[str, Any] = {}
    baseline: dict[str, float] = {}
    chosen = []
    for part in requested:
        tower = part.split("_")[0]
        if not available[part]:
            decisions[part] = {"int8": False, "reason": "no module in this part"}
            continue
        if tower not in baseline:
            baseline[tower] = timed(model, tower)
        candidate, _ = quantize_int8(model, parts=[part], linear_kernel=linear_kernel)
        int8_ms = timed(candidate, tower)
        speedup = baseline[tower] / int8_ms if int8_ms > 0 else math.inf
        keep = speedup >= min_speedup
        decisions[part] = {
            "int8": keep,
            "batch_size": batch_of[tower],
            "fp32_ms": baseline[tower],
            "int8_ms": int8_ms,
            "speedup": speedup,
            "reason": (
                f"int8 {speedup:.2f}x fp32 speed at batch {batch_of[tower]}"
                + ("" if keep else f" (< {min_speedup}): kept fp32")
            ),
        }
        if keep:
            chosen.append(part)
    new_model, record = quantize_int8(model, parts=chosen, linear_kernel=linear_kernel)
    record["step"] = "choose_int8_parts"
    record["decisions"] = decisions
    return new_model, record
