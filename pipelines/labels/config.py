"""Config of the label job (`recdistill generate-labels`): what the teacher is, which
candidates it scores, where the labels go. Shared by the job and its engines."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, get_args

from common.config import to_dict
from pipelines.baselines.collab import DEFAULT_MEMORY_GB
from pipelines.core.args import OutputArgs, ThreadArgs
from pipelines.data.args import DataArgs
from pipelines.labels.candidates import CandidateConfig, Strategy
from pipelines.labels.parts import LLM_PARTS

# the LLM parts of the registry (``pipelines.labels.parts``), in their order
TeacherName = Literal[LLM_PARTS]  # type: ignore[valid-type]
TEACHERS: tuple[str, ...] = get_args(TeacherName)


Collab = Literal["auto", "ease", "als", "none"]
COLLAB: tuple[str, ...] = get_args(Collab)


Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = get_args(Engine)
ContentMap = Literal["auto", "text", "no_text", "off"]
Toggle = Literal["auto", "on", "off"]  # "auto": on where the split keeps time order (temporal)
CONTENT_MAPS: tuple[str, ...] = get_args(ContentMap)


# Fields that choose where and how fast the job runs, never what it computes: not hashed.
RUN_FIELDS = (
    "out",
    "overwrite",
    "threads",
    "batch_size",
    "engine",
    "ray_concurrency",
    "ray_num_cpus",
    "ray_num_gpus",
    "ray_address",
    "collab_cache",  # where a fit is kept, not what it is
)


SLEEP_ENV = "RECDISTILL_SHARD_SLEEP"  # test hook: seconds to sleep after each shard


@dataclass
class GenerateLabelsConfig(DataArgs, OutputArgs, ThreadArgs):
    defaults: ClassVar[dict[str, Any]] = {"out": "runs/labels"}

    teacher: TeacherName = field(default="embedding", metadata={"help": "LLM part"})
    model: str | None = field(
        default=None,
        metadata={
            "help": "model: 'minilm' / 'smollm2' (packaged defaults), a local folder, a .gguf, or a hub id"
        },
    )
    adapter: str | None = field(
        default=None, metadata={"help": "peft (LoRA) adapter folder from adapt-teacher"}
    )
    template: str = field(default="yes_no_v1", metadata={"help": "prompt template (causal_lm)"})
    collab: Collab = field(
        default="auto",
        metadata={
            "help": f"collaborative part joined with the LLM: one of {COLLAB}. 'auto' fits "
            "EASE^R when its dense I x I fit fits --collab-memory-gb, else ALS (the part is "
            "named after the model); 'ease' past the machine's memory is refused"
        },
    )
    collab_memory_gb: float = field(
        default=DEFAULT_MEMORY_GB,
        metadata={
            "help": "collab='auto': the memory budget (GB) EASE^R's estimated peak must fit in, "
            "else ALS is fit. A fixed number, not the free memory, so the choice is the same "
            "on every machine"
        },
    )
    collab_cache: str | None = field(
        default=None,
        metadata={
            "help": "folder where the collaborative fit (with its validation grid) is kept, keyed by the train and validation data and its settings, so a chain's jobs fit it once; none = no cache"
        },
    )
    popularity: bool = field(default=True, metadata={"help": "add a popularity part to the mix"})
    transition: Toggle = field(
        default="auto",
        metadata={
            "help": "add the transition part (item -> next item from the train sequences, "
            "scored from the user's last items): 'on', 'off', or 'auto' (on under "
            "--protocol temporal)"
        },
    )
    recency: Toggle = field(
        default="auto",
        metadata={
            "help": "add the recency-weighted collaborative part (the collaborative model on a "
            "user row weighted by decay^position-from-the-end, decay chosen on validation): "
            "'on', 'off', or 'auto' (on under --protocol temporal with a collaborative part)"
        },
    )
    history_items: int = field(default=20, metadata={"help": "history items rendered per user"})
    max_history_tokens: int = field(
        default=256, metadata={"help": "token budget of the causal-LM history"}
    )
    temperature: float = field(
        default=0.05, metadata={"help": "embedding teacher: score = cosine / temperature"}
    )
    max_seq_length: int = field(
        default=128, metadata={"help": "embedding teacher: tokens per text"}
    )
    embedding_precision: Literal["fp32", "bf16", "int8"] = field(
        default="fp32",
        metadata={
            "help": "embedding teacher: the encoder's weights: 'fp32'; 'bf16' (CPU with "
            "AVX-512 BF16 / AMX, or CUDA; 2.7x faster item encoding, embeddings within cosine "
            "0.9999 of fp32); 'int8' (CPU only, dynamic int8 Linear layers: on ML-100K it lost "
            "4-7% of the cold items' NDCG@20). See docs/scale.md"
        },
    )
    user_encoding: Literal["text", "item_mean"] = field(
        default="text",
        metadata={
            "help": "embedding teacher: how a user is embedded: 'text' encodes the rendered "
            "history (one transformer pass per user), 'item_mean' averages the history items' "
            "embeddings (no pass per user: the lever at 10^5+ users, see docs/scale.md)"
        },
    )
    batch_size: int = field(default=32, metadata={"help": "teacher batch size"})
    n_negatives: int = field(
        default=200,
        metadata={
            "help": "sampled negatives per user (200: +2.5% distilled validation NDCG@10 over 100, "
            "docs/results.md)"
        },
    )
    max_positives: int = field(
        default=20, metadata={"help": "most recent train positives per user"}
    )
    strategy: Strategy = field(
        default="mixed", metadata={"help": "negative sampling: uniform, popularity, hard, mixed"}
    )
    candidate_seed: int = field(default=0, metadata={"help": "candidate sampling seed"})
    content_map: ContentMap = field(
        default="auto",
        metadata={
            "help": "cold items (no train interactions): scored through a ridge map from content "
            "onto the collaborative model's targets (EASE^R columns or ALS item factors). 'text' (genres, year and the LLM's item embedding), 'no_text' "
            "(genres and year only), 'off', or 'auto' ('text' under the cold_items protocol, "
            "else 'off')"
        },
    )
    cold_negatives: int = field(
        default=30,
        metadata={
            "help": "with a content map: candidates per user drawn from the items without train "
            "interactions (their only supervision is the teacher's soft labels)"
        },
    )
    max_users: int = field(
        default=0, metadata={"help": "score only this many users (seeded sample; 0 = all)"}
    )
    eval_users: int = field(
        default=300, metadata={"help": "users for the teacher-quality check and mix fitting"}
    )
    topk_users: int = field(
        default=0,
        metadata={
            "help": "users whose full-catalogue teacher top-k is saved for the benchmark (a "
            "seeded sample of the labelled users, teacher_topk_users.npy; 0 = all users)"
        },
    )
    eval_negatives: int = field(
        default=50, metadata={"help": "negatives per validation user in that check"}
    )
    shard_users: int = field(default=100, metadata={"help": "users per shard"})
    engine: Engine = field(
        default="local",
        metadata={
            "help": f"where the teacher runs: one of {ENGINES} ('ray' needs pip install 'recdistill[ray]')"
        },
    )
    ray_concurrency: int = field(
        default=2, metadata={"help": "ray engine: teacher actors (each loads the teacher once)"}
    )
    ray_num_cpus: float = field(
        default=1.0, metadata={"help": "ray engine: CPUs per actor (also its torch threads)"}
    )
    ray_num_gpus: float = field(
        default=0.0,
        metadata={"help": "ray engine: GPUs per actor; > 0 runs the teacher on CUDA"},
    )
    ray_address: str | None = field(
        default=None,
        metadata={"help": "ray engine: cluster to join (default $RAY_ADDRESS, else a local Ray)"},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.cold_negatives < 0:
            raise ValueError(
                f"GenerateLabelsConfig.cold_negatives={self.cold_negatives}; expected >= 0"
            )
        if self.embedding_precision != "fp32" and self.teacher != "embedding":
            raise ValueError(
                f"GenerateLabelsConfig.embedding_precision={self.embedding_precision!r} sets the "
                f"embedding teacher's precision; teacher is {self.teacher!r} (use 'fp32')"
            )
        if self.embedding_precision == "int8" and self.ray_num_gpus:
            raise ValueError(
                f"GenerateLabelsConfig.embedding_precision='int8' runs on the CPU only; "
                f"ray_num_gpus is {self.ray_num_gpus}"
            )
        if self.content_map not in ("off", "auto") and self.collab == "none":
            raise ValueError(
                f"GenerateLabelsConfig.content_map={self.content_map!r} maps content onto the "
                "collaborative model: it needs collab='auto', 'ease' or 'als', not 'none'"
            )
        if self.recency == "on" and self.collab == "none":
            raise ValueError(
                "GenerateLabelsConfig.recency='on' reweighs the collaborative model's user row: "
                "it needs collab='auto', 'ease' or 'als', not 'none'"
            )
        if not self.collab_memory_gb > 0:
            raise ValueError(
                f"GenerateLabelsConfig.collab_memory_gb={self.collab_memory_gb!r}; expected > 0"
            )
        for name in ("shard_users", "eval_users", "batch_size", "history_items"):
            if getattr(self, name) < 1:
                raise ValueError(
                    f"GenerateLabelsConfig.{name}={getattr(self, name)!r}; expected >= 1"
                )
        if self.max_users < 0:
            raise ValueError(f"GenerateLabelsConfig.max_users={self.max_users}; expected >= 0")
        if self.topk_users < 0:
            raise ValueError(
                f"GenerateLabelsConfig.topk_users={self.topk_users}; expected >= 0 (0 = all users)"
            )
        if self.temperature <= 0:
            raise ValueError(f"GenerateLabelsConfig.temperature={self.temperature}; expected > 0")
        if self.ray_concurrency < 1:
            raise ValueError(
                f"GenerateLabelsConfig.ray_concurrency={self.ray_concurrency!r}; expected >= 1"
            )
        for name in ("ray_num_cpus", "ray_num_gpus"):
            if not getattr(self, name) >= 0:
                raise ValueError(
                    f"GenerateLabelsConfig.{name}={getattr(self, name)!r}; expected a number >= 0"
                )
        self.candidate_config()

    def candidate_config(self, cold: bool = False) -> CandidateConfig:
        """Each user's candidate list; ``cold``: with ``cold_negatives`` items drawn from
        those without train interactions (a teacher with a content map)."""
        return CandidateConfig(
            self.n_negatives,
            self.max_positives,
            self.strategy,
            seed=self.candidate_seed,
            n_cold=self.cold_negatives if cold else 0,
        )

    def resolved_content_map(self) -> str:
        """'text', 'no_text' or 'off' ('auto' resolved by the protocol)."""
        if self.content_map == "auto":
            return "text" if self.protocol == "cold_items" and self.collab != "none" else "off"
        return self.content_map

    def sequence_part(self, name: str) -> bool:
        """Whether the sequence part ``name`` ('transition' or 'recency') joins the mix
        ('auto': under the temporal protocol; recency also needs a collaborative part)."""
        value = getattr(self, name)
        on = self.protocol == "temporal" if value == "auto" else value == "on"
        return on and (name != "recency" or self.collab != "none")

    def job_hash(self, dataset_fingerprint: str, split_fingerprint: str) -> str:
        """What the labels depend on: the config (less ``RUN_FIELDS``) and the data it
        reads, so edited data (same spec, e.g. a changed CSV) is never taken for done."""
        d = to_dict(self)
        for k in RUN_FIELDS:
            d.pop(k)
        d["_data"] = {"dataset": dataset_fingerprint, "split": split_fingerprint}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]
