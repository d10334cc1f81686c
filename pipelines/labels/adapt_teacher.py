"""`recdistill adapt-teacher`: adapt the LLM teacher to the train interactions with LoRA.

- ``causal_lm``: TALLRec-style yes/no instruction tuning. For a user's train positive, the
  prompt shows the user's other train items (most recent first, the target left out) and the
  target as the candidate (answer Yes); sampled items the user never interacted with are the
  No examples.
- ``embedding``: contrastive tuning (in-batch negatives) of user text -> item text, the user
  text being their other train items.

Only the train split is used: validation and test items are never seen in adaptation. The
adapter (peft) is written to ``out``; pass it to ``generate-labels --adapter``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from common.config import to_dict
from common.io import claim_output, refuse_out_inside, write_json
from pipelines.core import provenance
from pipelines.core.args import OutputArgs, ThreadArgs
from pipelines.data import load_dataset, training_split
from pipelines.data.args import DataArgs
from pipelines.labels.config import TeacherName
from pipelines.labels.parts import PARTS

logger = logging.getLogger(__name__)
# all an adapter folder holds (a LoRA adapter, or a fully tuned sentence-transformers model)
ADAPTER_FILES = frozenset(
    {"adapt_teacher.json", "training_meta.json", "adapter_*", "README.md", "*.safetensors",
     "config*.json", "tokenizer*", "special_tokens_map.json", "vocab.txt", "merges.txt",
     "modules.json", "sentence_bert_config.json", "[0-9]_*"}
)  # fmt: skip


@dataclass
class AdaptTeacherConfig(DataArgs, OutputArgs, ThreadArgs):
    defaults: ClassVar[dict[str, Any]] = {"out": "runs/adapter"}

    teacher: TeacherName = field(default="embedding", metadata={"help": "embedding or causal_lm"})
    model: str | None = field(
        default=None, metadata={"help": "base model (default: packaged MiniLM / SmolLM2)"}
    )
    max_users: int = field(
        default=300, metadata={"help": "users whose train items make the examples (0 = all)"}
    )
    positives_per_user: int = field(default=8, metadata={"help": "train positives per user"})
    negatives_per_user: int = field(
        default=8, metadata={"help": "causal_lm: sampled No examples per user"}
    )
    history_items: int = field(default=20, metadata={"help": "history items shown per example"})
    max_history_tokens: int = field(
        default=256, metadata={"help": "causal_lm: history token budget"}
    )
    max_seq_length: int = field(default=128, metadata={"help": "embedding: tokens per text"})
    r: int = field(default=8, metadata={"help": "LoRA rank"})
    lr: float = field(default=3e-4, metadata={"help": "learning rate"})
    epochs: int = field(default=1, metadata={"help": "passes over the examples"})
    batch_size: int = field(default=16, metadata={"help": "examples per step"})
    max_steps: int = field(
        default=0, metadata={"help": "stop after this many steps (0 = all epochs)"}
    )
    full_finetune: bool = field(
        default=False, metadata={"help": "embedding: train all weights, not LoRA"}
    )
    seed: int = field(default=0, metadata={"help": "seed"})

    def __post_init__(self):
        super().__post_init__()
        for name in ("positives_per_user", "history_items", "r", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"AdaptTeacherConfig.{name}={getattr(self, name)!r}; expected >= 1"
                )

    def lora(self) -> dict:
        """The LoRA settings every teacher kind takes (``CausalLoRAConfig``,
        ``EmbeddingLoRAConfig``)."""
        return dict(
            r=self.r,
            lr=self.lr,
            epochs=self.epochs,
            batch_size=self.batch_size,
            max_steps=self.max_steps or None,
            seed=self.seed,
        )


def _examples(c: AdaptTeacherConfig, data, split, rng):
    """(user, target item, other train items most recent first, label) from the train split."""
    train = split.train.sort_values(["user", "timestamp"], ascending=[True, False])
    by_user = train.groupby("user")["item"].apply(lambda s: s.to_numpy())
    users = by_user.index.to_numpy()
    if c.max_users and c.max_users < len(users):
        users = np.sort(rng.choice(users, c.max_users, replace=False))
    # negatives: any item training knows (Split.training_items) outside the user's train part
    blocked = split.matrix("train")
    out = []
    for u in users:
        items = by_user[u]
        if len(items) < 2:
            continue
        for t in rng.choice(len(items), min(c.positives_per_user, len(items)), replace=False):
            others = np.r_[items[:t], items[t + 1 :]][: c.history_items]
            out.append((u, items[t], others, 1))
        if PARTS[c.teacher].adapt_no_examples:
            seen = set(blocked.indices[blocked.indptr[u] : blocked.indptr[u + 1]])
            negs = [
                j
                for j in rng.permutation(split.training_items())[: 4 * c.negatives_per_user]
                if j not in seen
            ]
            for j in negs[: c.negatives_per_user]:
                out.append((u, j, items[: c.history_items], 0))
    return out


def run(config: AdaptTeacherConfig) -> dict:
    import torch

    c = config
    torch.set_num_threads(c.threads)
    t0 = time.perf_counter()
    local_model = c.model if c.model and Path(c.model).is_dir() else None  # not a hub id
    refuse_out_inside(c.out, {"--model": local_model})
    claim_output(
        c.out,
        ("adapt_teacher.json", "training_meta.json"),
        overwrite=c.overwrite,
        what="an adapter",
        only=ADAPTER_FILES,
    )
    rng = np.random.default_rng(c.seed)
    data = load_dataset(c.dataset)
    split = training_split(data, c.protocol, c.split_seed, c.cold_setting)
    examples = _examples(c, data, split, rng)
    logger.info("%d adaptation examples from the train split", len(examples))
    out = Path(c.out)
    metrics = PARTS[c.teacher].adapt(c, data, split, examples, out)
    result = {
        "config": to_dict(c),
        **provenance.stamp(data, split),  # generate-labels --adapter checks it
        "examples": len(examples),
        "metrics": metrics,
        "seconds": time.perf_counter() - t0,
        "adapter": str(out),
    }
    write_json(out / "adapt_teacher.json", result)
    return result


def format_summary(result: dict) -> str:
    m = result["metrics"]
    losses = m.get("losses") or m.get("loss_curve") or []
    first = f"{losses[0]:.4f}" if losses else "-"
    last = f"{losses[-1]:.4f}" if losses else "-"
    return f"adapter -> {result['adapter']}: {result['examples']} examples, loss {first} -> {last}, {result['seconds']:.0f}s"
