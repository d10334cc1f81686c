"""The training loop both adaptations share: seeded batches, clipped AdamW steps, the loss
curve, and the atomic save of the result with its ``training_meta.json``."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from common.io import atomic_dir, write_json

logger = logging.getLogger(__name__)

META_FILE = "training_meta.json"


def _plan_steps(n: int, batch_size: int, epochs: int, max_steps: int | None) -> tuple[int, int]:
    per_epoch = math.ceil(n / batch_size)
    total = per_epoch * epochs
    return per_epoch, total if max_steps is None else min(total, max_steps)


def _batches(n: int, batch_size: int, epochs: int, total: int, seed: int):
    """Yield index arrays: a fresh seeded shuffle per epoch, stopping after ``total`` batches."""
    rng = np.random.default_rng(seed)
    done = 0
    for _ in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, batch_size):
            if done == total:
                return
            done += 1
            yield order[start : start + batch_size]


def _lora_config(cfg: Any, task_type: str | None) -> Any:
    from peft import LoraConfig

    return LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=cfg.target_modules,
        task_type=task_type,
    )


def _model_name(model: Any) -> str:
    config = getattr(model, "config", None)
    return str(getattr(config, "_name_or_path", "") or type(model).__name__)


def _step(loss, optimizer, trainable, losses: list[float], bar, error: str) -> None:
    """One optimizer step with gradient clipping; a non-finite loss raises ``error``."""
    if not torch.isfinite(loss):
        raise FloatingPointError(error.format(loss.item()))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(trainable, 1.0)
    optimizer.step()
    losses.append(float(loss.item()))
    bar.update(1)
    bar.set_postfix(loss=f"{losses[-1]:.4f}")


def train_steps(
    model: Any,
    batch_loss: Callable[[np.ndarray], torch.Tensor],
    trainable: list,
    n: int,
    config: Any,
    desc: str,
    error: str,
) -> tuple[list[float], int, float]:
    """Train ``model`` with AdamW on ``trainable``: ``batch_loss(indices)`` for each seeded
    batch of the ``n`` examples (``config``: lr, batch_size, epochs, max_steps, seed).
    ``error`` (with ``{step}`` and the loss as ``{{}}``) names a non-finite loss. Returns
    ``(loss curve, steps per epoch, seconds)``; the model is left in eval mode."""
    optimizer = torch.optim.AdamW(trainable, lr=config.lr)
    per_epoch, total = _plan_steps(n, config.batch_size, config.epochs, config.max_steps)
    losses: list[float] = []
    start = time.perf_counter()
    model.train()
    bar = tqdm(total=total, desc=desc, unit="step")
    for idx in _batches(n, config.batch_size, config.epochs, total, config.seed):
        loss = batch_loss(idx)
        _step(loss, optimizer, trainable, losses, bar, error.format(step=len(losses)))
    bar.close()
    model.eval()
    return losses, per_epoch, time.perf_counter() - start


def curve_metrics(
    losses: list[float], per_epoch: int, data: dict, trainable: list, seconds: float, out_dir
) -> dict[str, Any]:
    """The metrics of a run: steps, ``data`` (what it trained on), size and loss curve."""
    return {
        "steps": len(losses),
        "steps_per_epoch": per_epoch,
        **data,
        "trainable_params": int(sum(p.numel() for p in trainable)),
        "loss_first": losses[0],
        "loss_last": losses[-1],
        "loss_curve": losses,
        "seconds": seconds,
        "out_dir": str(out_dir),
    }


def save_run(
    out_dir: str | Path, save_model: Callable[[Path], None], meta: dict, what: str
) -> None:
    """Write the model (``save_model(folder)``) and ``META_FILE`` atomically to ``out_dir``."""
    with atomic_dir(out_dir) as tmp:
        save_model(tmp)
        write_json(tmp / META_FILE, meta)
    m = meta["metrics"]
    logger.info(
        "%s: %d steps, loss %.4f -> %.4f, saved to %s",
        what,
        m["steps"],
        m["loss_first"],
        m["loss_last"],
        out_dir,
    )
