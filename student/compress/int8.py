"""int8 weights for :class:`~student.model.TwoTower`: ``Int8Linear`` (per output channel) and
``Int8Embedding`` (per row) store int8 values with float scales; :func:`quantize_int8` swaps
them in for the chosen parts and returns ``(new model, record)``. The input model is never
modified. Also the checks and size records the other compression steps share.
"""

from __future__ import annotations

import copy
import logging
import warnings
from collections.abc import Collection
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from student.model import TwoTower, TwoTowerConfig, count_parameters, model_bytes

logger = logging.getLogger(__name__)

PARTS = ("user_linear", "user_embedding", "item_linear", "item_embedding")
LINEAR_KERNELS = ("qlinear", "dequant")


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
            "user"
            if name.split(".")[0] in ("user_id_emb", "history_emb", "user_seq", "user_mlp")
            else "item"
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
    keep_fp32: Collection[str] = (),
) -> tuple[TwoTower, dict[str, Any]]:
    """int8 copy of the model for inference: Linear layers and/or embedding tables.

    ``keep_fp32``: module names (``int8_modules``) left in float32 whatever their part.

    ``parts`` (a subset of ``PARTS``: user_linear, user_embedding, item_linear,
    item_embedding) overrides ``linear``/``embeddings`` for per-tower choices. The history
    table and a sequence encoder (its q/k/v/out and feed-forward Linears) belong to the user
    tower, the text projection and the id table a sequence encoder reads to the item tower;
    what stays float (LayerNorm, a GRU, positions) is listed in ``fp32_parameters``. Linear weights are
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
    unknown = sorted(set(keep_fp32) - {n for ns in names.values() for n in ns})
    if unknown:
        raise ValueError(f"keep_fp32: {unknown} are not quantizable modules of this model")
    keep = set(keep_fp32)
    linear_names = [n for p in chosen if p.endswith("linear") for n in names[p] if n not in keep]
    emb_names = [n for p in chosen if p.endswith("embedding") for n in names[p] if n not in keep]
    quantizer = _quantize_linears(new_model, linear_names, linear_kernel)
    for name in emb_names:
        new_model.set_submodule(name, Int8Embedding.from_float(new_model.get_submodule(name)))
    record = {
        "step": "quantize_int8",
        "int8_parts": chosen,
        "fp32_parts": [p for p in PARTS if p not in chosen],
        "int8_linear": linear_names,
        "int8_embedding": emb_names,
        "fp32_modules": sorted(keep),
        # left in float32: the score scale, the item bias and any part not chosen above
        "linear_quantizer": quantizer,
        "linear_kernel": sorted({new_model.get_submodule(n).kernel for n in linear_names}),
        "fp32_parameters": fp32_parameters(new_model),
        "torchao": _torchao_status(),
        **_size_record(model, new_model),
    }
    logger.info("quantize_int8: bytes %d -> %d", record["bytes_before"], record["bytes_after"])
    return new_model, record


def int8_modules(model: TwoTower, parts: Collection[str] | None = None) -> list[str]:
    """The names of the modules ``quantize_int8`` converts in ``parts`` (default all)."""
    names = _part_modules(model)
    return [n for p in _resolve_parts(True, True, parts) for n in names[p]]


def fp32_parameters(model: nn.Module) -> list[str]:
    """The weights left in float32 (embedding tables not converted, LayerNorm, a GRU, the
    sequence encoder's positions, the score scale): int8 modules hold buffers, not parameters."""
    return sorted(name for name, _ in model.named_parameters())


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


def make_batch_independent(model) -> int:
    """Switch int8 Linear layers from the ``qlinear`` kernel to ``dequant``; returns how many.

    ``qlinear`` (fbgemm ``linear_dynamic``) quantizes the activations with one scale per call,
    so a user's embedding depends on the other users in its batch: behind a micro-batcher the
    answer would depend on the traffic. ``dequant`` multiplies by the same int8 weights
    dequantized, one row at a time in effect, so answers do not depend on the batch.
    """
    n = 0
    for m in model.modules():
        if isinstance(m, Int8Linear) and m.kernel != "dequant":
            m.kernel = "dequant"
            n += 1
    return n
