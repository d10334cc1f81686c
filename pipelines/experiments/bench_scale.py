"""`recdistill bench-scale`: the whole chain on seeded synthetic data at growing sizes.

    recdistill bench-scale --sizes 10000x10000x20 30000x30000x30 100000x100000x50 \
        --out runs/bench-scale

Each size is ``USERSxITEMSxPER_USER`` (the synthetic generator's ``users``, ``items`` and median
``per_user``). For each size the chain's jobs run one after the other, each in its own process
(``recdistill <job> ...``, the commands are in the JSON), so that each stage's wall time and
peak resident memory (``ru_maxrss`` of that process, from ``os.wait4``) are its own:

- ``data``: generate the synthetic interactions and split them (every later job does this
  again on load: subtract it to read a job's own cost);
- ``prepare``: popularity and the collaborative baseline (EASE^R or ALS, chosen by size), fit
  once per size: ``labels`` and ``benchmark`` read it from ``<size>/collab_cache``
  (``--collab-cache``; the fit's key covers the train and validation data and its settings);
- ``labels``: the embedding teacher plus the collaborative part score the candidates;
- ``student_hard``, ``student_distilled``: the two-tower students;
- ``compress``: prune and int8;
- ``benchmark``: quality over the full catalogue for a seeded sample of ``eval_users`` test
  users, agreement with the teacher, and the FAISS indexes (build rate, QPS, recall).

Throughput per stage comes from the job's own output (pairs/s labelled, interactions/s
trained, items/s indexed, queries/s served). Per stage, the exponent ``b`` of
``seconds ~ a * interactions^b`` is fit by least squares on log-log over the sizes that
finished (and the same for peak RSS). A stage that fails or runs past ``stage_timeout_s``
is recorded with its exit code and the last lines of its log; the size's later stages are
skipped. The stages are the steps of :mod:`pipelines.experiments.steps`, each reading the one
before: a finished stage is reused by a rerun with the same command on the same data (its key
in ``<stage>.stage.json`` beside the outputs) while no stage before it ran again, so a long
run resumes where it stopped; a stage that runs starts from an empty output folder (and
``prepare`` from an empty fit cache), so its time is its work.

Times depend on the machine and on what else runs on it: ``loadavg`` is recorded before each
stage. Nothing here is asserted by tests; they check the plumbing on a tiny size.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

from common.io import claim_output, write_json, write_text
from pipelines.core.args import OutputArgs, ThreadArgs
from pipelines.core.layout import RunLayout
from pipelines.data import load_dataset
from pipelines.experiments.scale_outputs import read_result, stage_outputs, with_rates
from pipelines.experiments.scale_report import STAGES, Stage, format_report, growth, size_settings
from pipelines.experiments.steps import Step, StepGraph

logger = logging.getLogger(__name__)

RESULT = "bench_scale.json"
# all a bench-scale folder holds: its result, report and one folder per size
BENCH_SCALE_FILES = frozenset({RESULT, "report.md", "*x*x*"})


# what a stage writes inside the size's folder; removed before the stage runs, so a job (e.g.
# generate-labels on the same config) times its work, not the reuse of an earlier result
def stage_output_dirs(stage: str, r: RunLayout) -> tuple[Path, ...]:
    return {
        "prepare": (r.prepare, r.collab_cache),
        # and the shards an interrupted label job left: a rerun would resume from them
        "labels": (r.labels, r.labels.with_name(r.labels.name + ".partial")),
        "student_hard": (r.student_hard,),
        "student_distilled": (r.student_distilled,),
        "compress": (r.compressed,),
        "benchmark": (r.benchmark,),
    }.get(stage, ())


@dataclass
class BenchScaleConfig(OutputArgs, ThreadArgs):
    defaults: ClassVar[dict[str, Any]] = {"out": "runs/bench-scale"}

    sizes: tuple[str, ...] = field(
        default=("10000x10000x20", "30000x30000x30", "100000x100000x50"),
        metadata={"help": "sizes USERSxITEMSxPER_USER, smallest first"},
    )
    stages: tuple[Stage, ...] = field(default=STAGES, metadata={"help": f"stages, from {STAGES}"})
    protocol: str = field(default="temporal", metadata={"help": "split protocol"})
    seed: int = field(default=0, metadata={"help": "synthetic data seed"})
    epochs: int = field(default=3, metadata={"help": "student epochs"})
    student_batch_size: int = field(
        default=4096, metadata={"help": "student train interactions per step"}
    )
    eval_users: int = field(
        default=10000,
        metadata={"help": "test users sampled (seeded) for the benchmark and validation"},
    )
    topk_users: int = field(
        default=10000, metadata={"help": "users whose teacher top-k over the catalogue is kept"}
    )
    n_negatives: int = field(default=50, metadata={"help": "teacher candidates per user"})
    user_encoding: Literal["item_mean", "text"] = field(
        default="item_mean",
        metadata={"help": "the embedding teacher's users: item_mean or text (see docs/scale.md)"},
    )
    bf16_from_items: int = field(
        default=100_000,
        metadata={
            "help": "labels: encode the texts in bf16 (--embedding-precision bf16) from this "
            "many items up where the CPU has native bf16, else fp32 (the report says which; "
            "0 = never): 2.7x faster, within 1% of fp32's label quality on ML-100K (docs/scale.md)"
        },
    )
    finetune_epochs: int = field(
        default=2, metadata={"help": "compress: distillation fine-tune epochs after pruning"}
    )
    finetune_users: int = field(
        default=100_000,
        metadata={
            "help": "compress: train users each fine-tune epoch passes over (a seeded sample "
            "where there are more; 0 = all): a pass over 1M users would cost what a "
            "student epoch does"
        },
    )
    label_engine: Literal["local", "ray"] = field(
        default="local",
        metadata={
            "help": "generate-labels --engine: local (in-process) or ray (Ray Data actors, "
            "--label-actors of them sharing --threads CPUs, at least 1 each)"
        },
    )
    label_actors: int = field(
        default=2, metadata={"help": "with --label-engine ray: the teacher actors"}
    )
    train_workers: int = field(
        default=1,
        metadata={
            "help": "train-student --num-workers for both students (DDP on Ray Train, "
            "--threads CPUs each; 1 = one process)"
        },
    )
    index_shards: int = field(
        default=4, metadata={"help": "benchmark row 'ivf_sq8 xK shards' (K shards); 1 = none"}
    )
    stage_timeout_s: int = field(
        default=3600, metadata={"help": "a stage running longer is stopped and recorded"}
    )

    def __post_init__(self):
        super().__post_init__()
        for s in self.sizes:
            parse_size(s)
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ValueError(
                f"BenchScaleConfig.stages={self.stages!r}; expected a non-empty subset of {STAGES}"
            )
        for name in ("epochs", "eval_users", "topk_users", "stage_timeout_s", "index_shards",
                     "label_actors", "train_workers"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"BenchScaleConfig.{name}={getattr(self, name)}; expected >= 1")
        if self.bf16_from_items < 0:
            raise ValueError(f"BenchScaleConfig.bf16_from_items={self.bf16_from_items}; want >= 0")


def parse_size(s: str) -> tuple[int, int, int]:
    """``"100000x100000x50"`` -> (users, items, per_user)."""
    parts = s.lower().replace("_", "").split("x")
    try:
        u, i, p = (int(float(x)) for x in parts)
    except ValueError:
        raise ValueError(
            f"size {s!r}: expected USERSxITEMSxPER_USER, e.g. 100000x100000x50"
        ) from None
    if min(u, i, p) < 1 or p >= i:
        raise ValueError(f"size {s!r}: expected positive numbers with PER_USER < ITEMS")
    return u, i, p


def dataset_spec(size: str, seed: int) -> str:
    u, i, p = parse_size(size)
    return f"synthetic:users={u},items={i},per_user={p},seed={seed}"


def stage_commands(c: BenchScaleConfig, size: str, d: Path) -> dict[str, list[str]]:
    """The command of each stage (argv after ``recdistill``; ``data`` is a Python call)."""
    ds, r = dataset_spec(size, c.seed), RunLayout(d)
    precision = size_settings(c, parse_size(size)[1])["embedding_precision"]
    common = ["--dataset", ds, "--protocol", c.protocol]
    cache = ["--collab-cache", str(r.collab_cache)]  # one ALS / EASE^R fit per size
    student = [
        *common,
        "--epochs", str(c.epochs),
        "--patience", str(c.epochs),
        "--batch-size", str(c.student_batch_size),
        "--valid-users", str(c.eval_users),
        "--threads", str(c.threads),
        "--num-workers", str(c.train_workers),
        "--overwrite",
    ]  # fmt: skip
    engine = ["--engine", c.label_engine]
    if c.label_engine == "ray":
        # the actors share --threads (the driver's own encoding and fit use all of them)
        per_actor = max(1.0, c.threads / c.label_actors)
        engine += ["--ray-concurrency", str(c.label_actors), "--ray-num-cpus", f"{per_actor:g}"]
    return {
        "data": ["-c", f"from {__name__} import data_stage; data_stage({ds!r}, {c.protocol!r})"],
        "prepare": [
            "prepare", "--dataset", ds, "--protocols", c.protocol,
            "--eval-users", str(c.eval_users), *cache, "--out", str(r.prepare),
            "--overwrite",
        ],
        "labels": [
            "generate-labels", *common, "--out", str(r.labels),
            "--n-negatives", str(c.n_negatives), "--topk-users", str(c.topk_users),
            "--user-encoding", c.user_encoding, *cache, *engine, "--threads", str(c.threads),
            *(["--embedding-precision", precision] if precision != "fp32" else []), "--overwrite",
        ],
        "student_hard": [
            "train-student", *student, "--no-teacher", "--out", str(r.student_hard),
        ],
        "student_distilled": [
            "train-student", *student, "--labels", str(r.labels),
            "--out", str(r.student_distilled),
        ],
        "compress": [
            "compress", *common, "--model", str(r.model("student_distilled")),
            "--finetune-epochs", str(c.finetune_epochs),
            "--finetune-users", str(c.finetune_users), "--valid-users", str(c.eval_users),
            "--threads", str(c.threads), "--out", str(r.compressed), "--overwrite",
        ],
        "benchmark": [
            "benchmark", *common, "--labels", str(r.labels),
            "--student-hard", str(r.model("student_hard")),
            "--student-distilled", str(r.model("student_distilled")),
            "--student-int8", str(r.int8),
            "--eval-users", str(c.eval_users), *cache, "--out", str(r.benchmark),
            "--index-shards", str(c.index_shards), "--overwrite",
        ],
    }  # fmt: skip


def data_stage(spec: str, protocol: str) -> None:
    """Load ``spec`` and split it (the ``data`` stage); prints one JSON line of sizes."""
    from pipelines.data import load_dataset, training_split

    t0 = time.perf_counter()
    data = load_dataset(spec)
    t1 = time.perf_counter()
    split = training_split(data, protocol, 0)
    t2 = time.perf_counter()
    print(
        json.dumps(
            {
                "users": data.n_users,
                "items": data.n_items,
                "interactions": len(data.interactions),
                "train": len(split.train),
                "load_seconds": t1 - t0,
                "split_seconds": t2 - t1,
            }
        )
    )


def run_stage(argv: list[str], log: Path, timeout_s: int, threads: int) -> dict[str, Any]:
    """Run one stage in a child process; wall time, peak RSS and CPU time of that child."""
    if argv[0] == "-c":
        cmd = [sys.executable, *argv]
    else:
        cmd = [sys.executable, "-m", "pipelines.cli", *argv]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "OPENBLAS_NUM_THREADS": str(threads),
        "TOKENIZERS_PARALLELISM": "false",
    }
    load = os.getloadavg()
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout_s
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                proc.kill()
                timed_out = True
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    tail = log.read_text(errors="replace").splitlines()[-15:]
    return {
        "command": ["recdistill", *argv] if argv[0] != "-c" else ["python", *argv],
        "rc": proc.returncode,
        "timed_out": timed_out,
        "seconds": wall,
        "peak_rss_gb": usage.ru_maxrss * 1024 / 1e9,  # Linux reports KiB
        "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "loadavg_before": load,
        "log": log.name,
        **({"log_tail": tail} if proc.returncode != 0 else {}),
    }


def _stage_run(stage: str, d: Path, c: BenchScaleConfig):
    """The job of one stage as a step: its command -> its row (rc, time, RSS, outputs)."""

    def run_it(argv: list[str]) -> dict[str, Any]:
        for folder in stage_output_dirs(stage, RunLayout(d)):  # a job must not reuse its old
            shutil.rmtree(folder, ignore_errors=True)  # output: the time would be the reuse's
        log = d / f"{stage}.log"
        res = run_stage(argv, log, c.stage_timeout_s, c.threads)
        res["command_argv"] = argv
        if res["rc"] == 0:
            res["outputs"] = stage_outputs(stage, d, res, log)
        logger.info(
            "[%s %s] rc %d in %.0fs, peak RSS %.2f GB",
            d.name, stage, res["rc"], res["seconds"], res["peak_rss_gb"],
        )  # fmt: skip
        return res

    return run_it


def _finished(row: dict) -> bool:
    return row.get("rc") == 0


def size_steps(c: BenchScaleConfig, size: str, d: Path) -> list[Step]:
    """The chain of one size as steps: each reads the one before (a rerun stage reruns every
    stage after it), with its command as its config and ``<stage>.stage.json`` as marker."""
    cmds = stage_commands(c, size, d)
    return [
        Step(stage, _stage_run(stage, d, c), cmds[stage], d, STAGES[i - 1 : i],
             marker=d / f"{stage}.stage.json", done=_finished)
        for i, stage in enumerate(STAGES)
    ]  # fmt: skip


def _run_size(c: BenchScaleConfig, size: str, d: Path) -> tuple[dict[str, Any], bool]:
    """Run (or reuse) the size's stages; (rows by stage, whether any stage ran)."""
    graph = StepGraph(load_dataset(dataset_spec(size, c.seed)).fingerprint())
    rows: dict[str, Any] = {}
    for step in size_steps(c, size, d):
        res = graph.run(step, selected=step.name in c.stages)
        if res.blocked_by:
            rows[step.name] = {"skipped": f"stage {res.blocked_by} did not finish"}
        elif res.result is not None:  # an unselected stage: kept from an earlier run
            rows[step.name] = res.result
    return rows, any(r.ran for r in graph.runs.values())


def run(config: BenchScaleConfig) -> dict:
    c = config
    out = Path(c.out)
    existing = read_result(out / RESULT)
    # a resumed run (its RESULT there) only checks that the folder holds nothing else
    claim_output(out, RESULT, overwrite=c.overwrite or existing is not None,
                 what="a bench-scale run", only=BENCH_SCALE_FILES)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "config": {k: getattr(c, k) for k in c.__dataclass_fields__},
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "sizes": dict(existing.get("sizes", {})) if existing else {},  # earlier sizes stay
        "size_config": dict(existing.get("size_config", {})) if existing else {},
    }
    if existing is None:  # claims the folder at once, so an interrupted run can resume
        write_json(out / RESULT, result)
    for size in c.sizes:
        d = out / size
        d.mkdir(exist_ok=True)
        rows, ran = _run_size(c, size, d)
        result["sizes"][size] = with_rates(rows)
        if ran or size not in result.setdefault("size_config", {}):
            result["size_config"][size] = size_settings(c, parse_size(size)[1])
        result["growth"] = growth(result["sizes"], result["size_config"])
        write_json(out / RESULT, result)
        write_text(out / "report.md", format_report(result))
    return result


def format_summary(result: dict) -> str:
    return format_report(result)
