"""`recdistill prepare`: load a dataset, split it, print statistics and the baselines.

Popularity and the collaborative baseline (EASE^R, or ALS when EASE^R's dense fit would not
fit the memory budget: ``pipelines.baselines.collab``) under each protocol tell a user whether a
distilled student is worth anything. The collaborative row keeps the key ``ease`` for
compatibility; its ``kind`` says which model it is.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from common.config import to_dict
from common.io import claim_output, refuse_out_inside, write_json
from pipelines.baselines.collab import COLLAB_KINDS, DEFAULT_MEMORY_GB, CollabKind, fit_collab
from pipelines.baselines.popularity import Popularity
from pipelines.core.args import OutputArgs
from pipelines.core.metrics import evaluate, sample_users
from pipelines.data import PROTOCOLS, ProtocolName, load_dataset, make_split, to_csr

logger = logging.getLogger(__name__)


@dataclass
class PrepareConfig(OutputArgs):
    defaults: ClassVar[dict[str, Any]] = {"out": "runs/prepare"}

    dataset: str = field(
        default="ml-100k",
        metadata={"help": "dataset spec (ml-100k, grouplens:/path, synthetic:..., file.csv)"},
    )
    protocols: tuple[ProtocolName, ...] = field(
        default=("random", "temporal"), metadata={"help": f"split protocols, from {PROTOCOLS}"}
    )
    seed: int = field(default=0, metadata={"help": "split seed"})
    collab: CollabKind = field(
        default="auto",
        metadata={
            "help": f"collaborative baseline, one of {COLLAB_KINDS}: 'auto' fits EASE^R when "
            "its dense fit fits --collab-memory-gb, else ALS"
        },
    )
    collab_memory_gb: float = field(
        default=DEFAULT_MEMORY_GB,
        metadata={"help": "collab='auto': memory budget (GB) for EASE^R's estimated peak"},
    )
    collab_cache: str | None = field(
        default=None,
        metadata={
            "help": "folder where the collaborative fit (with its validation grid) is kept, keyed by the train and validation data and its settings, so a chain's jobs fit it once; none = no cache"
        },
    )
    eval_users: int = field(
        default=0,
        metadata={
            "help": "test users (seeded sample) the baselines rank the full catalogue for; 0 = all"
        },
    )

    def __post_init__(self):
        super().__post_init__()
        bad = [p for p in self.protocols if p not in PROTOCOLS]
        if bad or not self.protocols:
            raise ValueError(
                f"PrepareConfig.protocols={self.protocols!r}; expected a non-empty subset of {PROTOCOLS}"
            )
        if self.eval_users < 0:
            raise ValueError(f"PrepareConfig.eval_users={self.eval_users}; expected >= 0 (0 = all)")
        if not self.collab_memory_gb > 0:
            raise ValueError(
                f"PrepareConfig.collab_memory_gb={self.collab_memory_gb!r}; expected > 0"
            )


def run(config: PrepareConfig) -> dict:
    t0 = time.perf_counter()
    refuse_out_inside(config.out, {"--collab-cache": config.collab_cache})
    claim_output(config.out, "stats.json", overwrite=config.overwrite, what="statistics",
                 only=frozenset({"stats.json"}))  # fmt: skip
    data = load_dataset(config.dataset)
    result = {"config": to_dict(config), "stats": data.stats(), "protocols": {}}
    for protocol in config.protocols:
        split = make_split(data, protocol, config.seed)
        truth, exclude = split.matrix("test"), split.seen_for("test")
        users = sample_users(truth, config.eval_users, config.seed)
        known = to_csr(split.known_before("test"), split.n_users, split.n_items)
        collab, info = fit_collab(
            split, config.collab, config.collab_memory_gb, cache=config.collab_cache
        )
        hyper = (
            {"lambda": info["lambda"]}
            if collab.kind == "ease"
            else {k: info[k] for k in ("factors", "regularization", "alpha", "iterations")}
        )
        result["protocols"][protocol] = {
            "sizes": {p: len(split.part(p)) for p in ("train", "valid", "test")},
            "popularity": _strip(
                evaluate(Popularity(split.matrix("train")), truth, exclude, users=users)
            ),
            collab.kind: {  # "ease" or "als", as the benchmark names it; fit on train, a test
                # user read from all before its test items (train + validation)
                **_strip(evaluate(collab.from_histories(known), truth, exclude, users=users)),
                **hyper,
                "kind": collab.kind,
                "chosen_by": info["chosen_by"],
            },
        }
    result["seconds"] = time.perf_counter() - t0
    write_json(Path(config.out) / "stats.json", result)
    return result


def _collab_label(m: dict) -> str:
    if m.get("kind", "ease") == "ease":
        return f"ease(l={m['lambda']:g})"
    return f"als(d={m['factors']})"


def _strip(m: dict) -> dict:
    return {k: v for k, v in m.items() if k in ("users",) or "@" in k}


def format_summary(result: dict) -> str:
    s = result["stats"]
    lines = [
        f"dataset {s['name']}: {s['users']} users, {s['items']} items, {s['interactions']} "
        f"interactions (density {s['density']:.4f}, fingerprint {s['fingerprint']})",
        f"{'protocol':<10} {'model':<11} {'users':>6} "
        + " ".join(
            f"{m:>10}" for m in ("ndcg@10", "recall@10", "mrr@10", "hit_rate@10", "ndcg@20")
        ),
    ]
    for protocol, r in result["protocols"].items():
        for name in ("popularity", "ease", "als"):
            if name not in r:
                continue
            m = r[name]
            label = name if name == "popularity" else _collab_label(m)
            lines.append(
                f"{protocol:<10} {label:<11} {m['users']:>6} "
                + " ".join(
                    f"{m[k]:>10.4f}"
                    for k in ("ndcg@10", "recall@10", "mrr@10", "hit_rate@10", "ndcg@20")
                )
            )
    return "\n".join(lines)
