"""Benchmark: naive vs shared-prefix yes/no scoring with a real causal LM teacher.

    recdistill bench-prefix --users 4 --candidates 50 --out runs/bench/prefix.json

Builds realistic prompts (fake movie titles, ``--history`` items per user), scores every
(user, candidate) pair both ways, and writes pairs/s, the speedup and the largest score
difference to JSON. Timings are measured here and never asserted in tests.
"""

from __future__ import annotations

import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from common.io import write_json
from common.versions import versions
from pipelines.core.args import ThreadArgs

logger = logging.getLogger(__name__)

_ADJ = (
    "Silent Crimson Last Hidden Broken Golden Distant Electric Frozen Wild Secret Midnight "
    "Burning Lonely Savage Velvet Iron Paper Glass Northern"
).split()
_NOUN = (
    "River Kingdom Detective Garden Horizon Machine Summer Empire Promise Station Harbor "
    "Witness Orchard Frontier Symphony Lantern Voyage Mirror Tide Circus"
).split()
_GENRES = (
    "Action Adventure Animation Children's Comedy Crime Documentary Drama Fantasy "
    "Film-Noir Horror Musical Mystery Romance Sci-Fi Thriller War Western"
).split()


def fake_items(n: int, rng: np.random.Generator) -> list[dict[str, Any]]:
    """``n`` fake movies: title, year, 1-3 genres."""
    items = []
    for _ in range(n):
        title = f"The {rng.choice(_ADJ)} {rng.choice(_NOUN)}"
        if rng.random() < 0.3:
            title += f" {int(rng.integers(2, 5))}"
        genres = list(rng.choice(_GENRES, size=int(rng.integers(1, 4)), replace=False))
        items.append({"title": title, "year": int(rng.integers(1930, 1999)), "genres": genres})
    return items


def make_workload(scorer, tokenizer, users: int, candidates: int, history: int, rng):
    """Per user: (encoded prompt prefix of ``history`` rated fake items, ``candidates`` items)."""
    from llm_teacher.prompts import encode_prefix

    occupations = ["student", "engineer", "writer", "educator", "programmer", "artist"]
    workload = []
    for u in range(users):
        hist = fake_items(history, rng)
        for h in hist:
            h["rating"] = float(rng.integers(1, 6))
        features = {
            "age": int(rng.integers(18, 70)),
            "gender": str(rng.choice(["M", "F"])),
            "occupation": occupations[u % len(occupations)],
        }
        prefix = encode_prefix(tokenizer, scorer.render_prefix(hist, features))
        workload.append((prefix, fake_items(candidates, rng)))
    return workload


def time_both(scorer, workload) -> tuple[dict, dict, dict]:
    """Score every user naive and shared-prefix, alternating so both see the same machine
    load; (scores, wall seconds, CPU seconds), each keyed by path."""
    results: dict[str, list[np.ndarray]] = {"naive": [], "shared_prefix": []}
    seconds = {"naive": 0.0, "shared_prefix": 0.0}
    cpu_seconds = {"naive": 0.0, "shared_prefix": 0.0}
    for i, (prefix, cands) in enumerate(workload):
        for name, shared in (("naive", False), ("shared_prefix", True)):
            t0, c0 = time.perf_counter(), time.process_time()
            results[name].append(scorer.score(prefix, cands, shared_prefix=shared, user=i))
            seconds[name] += time.perf_counter() - t0
            cpu_seconds[name] += time.process_time() - c0
        logger.info(
            "user %d/%d: naive %.1f s, shared prefix %.1f s so far",
            i + 1,
            len(workload),
            seconds["naive"],
            seconds["shared_prefix"],
        )
    return results, seconds, cpu_seconds


def run_bench(
    *,
    source: str = "smollm2",
    users: int = 4,
    candidates: int = 50,
    history: int = 20,
    batch_size: int = 16,
    threads: int = 2,
    max_history_tokens: int = 512,
    template: str = "yes_no_v1",
    seed: int = 0,
) -> dict[str, Any]:
    """Score ``users x candidates`` pairs naive and shared-prefix; return the numbers."""
    import torch

    from llm_teacher.causal_lm import CausalLMScorer, CausalLMScorerConfig
    from llm_teacher.loading import load_causal_lm

    torch.set_num_threads(threads)
    start = time.perf_counter()
    model, tokenizer = load_causal_lm(source)
    load_s = time.perf_counter() - start
    config = CausalLMScorerConfig(
        batch_size=batch_size, max_history_tokens=max_history_tokens, template=template
    )
    scorer = CausalLMScorer(model, tokenizer, config)
    workload = make_workload(
        scorer, tokenizer, users, candidates, history, np.random.default_rng(seed)
    )
    scorer.score(workload[0][0], workload[0][1][:2], shared_prefix=False)  # warm-up
    scorer.score(workload[0][0], workload[0][1][:2], shared_prefix=True)
    load_before = os.getloadavg()
    results, seconds, cpu_seconds = time_both(scorer, workload)
    pairs = users * candidates
    naive_all = np.concatenate(results["naive"])
    shared_all = np.concatenate(results["shared_prefix"])
    suffix_lens = [len(s) for _, c in workload for s in scorer.suffix_ids(c)]
    settings = {
        "source": source,
        "users": users,
        "candidates": candidates,
        "history": history,
        "batch_size": batch_size,
        "threads": threads,
        "max_history_tokens": max_history_tokens,
        "seed": seed,
        "dtype": str(next(model.parameters()).dtype),
    }
    return {
        "pairs": pairs,
        "pairs_per_s": {k: pairs / v for k, v in seconds.items()},
        "seconds": seconds,
        "speedup": seconds["naive"] / seconds["shared_prefix"],
        # CPU time of this process: less sensitive to other jobs on a shared machine
        "cpu_seconds": cpu_seconds,
        "speedup_cpu_time": cpu_seconds["naive"] / cpu_seconds["shared_prefix"],
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0]},
        "max_abs_diff": float(np.max(np.abs(naive_all - shared_all))),
        "score_mean": float(shared_all.mean()),
        "score_std": float(shared_all.std()),
        "prefix_tokens_mean": float(np.mean([len(p) for p, _ in workload])),
        "suffix_tokens_mean": float(np.mean(suffix_lens)),
        "model_load_s": load_s,
        "settings": settings,
        "teacher": scorer.info(),
        "versions": versions(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }


@dataclass
class BenchPrefixConfig(ThreadArgs):
    source: str = field(
        default="smollm2", metadata={"help": "teacher: 'smollm2', .gguf, folder or hub id"}
    )
    users: int = field(default=4, metadata={"help": "users"})
    candidates: int = field(default=50, metadata={"help": "candidates per user"})
    history: int = field(default=20, metadata={"help": "history items per user"})
    batch_size: int = field(default=16, metadata={"help": "scoring batch size"})
    max_history_tokens: int = field(default=512, metadata={"help": "history token budget"})
    template: str = field(default="yes_no_v1", metadata={"help": "prompt template"})
    seed: int = field(default=0, metadata={"help": "seed"})
    out: str = field(default="runs/bench/prefix.json", metadata={"help": "JSON file to write"})

    def __post_init__(self):
        super().__post_init__()
        for name in ("users", "candidates", "history", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"BenchPrefixConfig.{name}={getattr(self, name)}; expected >= 1")
        if self.max_history_tokens < 1:
            raise ValueError(
                f"BenchPrefixConfig.max_history_tokens={self.max_history_tokens}; expected >= 1"
            )


def run(config: BenchPrefixConfig) -> dict[str, Any]:
    """Run the benchmark; returns (and writes to ``config.out``) its result."""
    result = run_bench(
        source=config.source,
        users=config.users,
        candidates=config.candidates,
        history=config.history,
        batch_size=config.batch_size,
        threads=config.threads,
        max_history_tokens=config.max_history_tokens,
        template=config.template,
        seed=config.seed,
    )
    write_json(Path(config.out), result)
    logger.info(
        "naive %.1f pairs/s, shared prefix %.1f pairs/s, speedup %.2fx, max |diff| %.2e -> %s",
        result["pairs_per_s"]["naive"],
        result["pairs_per_s"]["shared_prefix"],
        result["speedup"],
        result["max_abs_diff"],
        config.out,
    )
    return result
