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
skipped. Finished stages are reused by a rerun with the same command (``stage.json`` beside
each stage's output), so a long run resumes where it stopped; a stage that runs starts from
an empty output folder (and ``prepare`` from an empty fit cache), so its time is its work.

Times depend on the machine and on what else runs on it: ``loadavg`` is recorded before each
stage. Nothing here is asserted by tests; they check the plumbing on a tiny size.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from common.io import claim_output, write_json, write_text

logger = logging.getLogger(__name__)

Stage = Literal[
    "data", "prepare", "labels", "student_hard", "student_distilled", "compress", "benchmark"
]
STAGES: tuple[str, ...] = get_args(Stage)
RESULT = "bench_scale.json"
# what a stage writes inside the size's folder; removed before the stage runs, so a job (e.g.
# generate-labels on the same config) times its work, not the reuse of an earlier result
STAGE_OUTPUTS = {
    "prepare": ("prepare", "collab_cache"),
    "labels": ("labels",),
    "student_hard": ("student_hard",),
    "student_distilled": ("student_distilled",),
    "compress": ("compressed",),
    "benchmark": ("benchmark",),
}


@dataclass
class BenchScaleConfig:
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
    finetune_epochs: int = field(
        default=2, metadata={"help": "compress: distillation fine-tune epochs after pruning"}
    )
    threads: int = field(default=2, metadata={"help": "torch threads of every stage"})
    stage_timeout_s: int = field(
        default=3600, metadata={"help": "a stage running longer is stopped and recorded"}
    )
    out: str = field(default="runs/bench-scale", metadata={"help": "output folder"})
    overwrite: bool = field(
        default=False, metadata={"help": "replace --out if it holds an earlier bench-scale run"}
    )

    def __post_init__(self):
        for s in self.sizes:
            parse_size(s)
        bad = [s for s in self.stages if s not in STAGES]
        if bad or not self.stages:
            raise ValueError(
                f"BenchScaleConfig.stages={self.stages!r}; expected a non-empty subset of {STAGES}"
            )
        if self.user_encoding not in ("item_mean", "text"):
            raise ValueError(
                f"BenchScaleConfig.user_encoding={self.user_encoding!r}; expected item_mean or text"
            )
        for name in ("epochs", "eval_users", "topk_users", "threads", "stage_timeout_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"BenchScaleConfig.{name}={getattr(self, name)}; expected >= 1")


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
    ds = dataset_spec(size, c.seed)
    common = ["--dataset", ds, "--protocol", c.protocol]
    cache = ["--collab-cache", str(d / "collab_cache")]  # one ALS / EASE^R fit per size
    student = [
        *common,
        "--epochs", str(c.epochs),
        "--patience", str(c.epochs),
        "--batch-size", str(c.student_batch_size),
        "--valid-users", str(c.eval_users),
        "--threads", str(c.threads),
        "--overwrite",
    ]  # fmt: skip
    return {
        "data": ["-c", f"from {__name__} import data_stage; data_stage({ds!r}, {c.protocol!r})"],
        "prepare": [
            "prepare", "--dataset", ds, "--protocols", c.protocol,
            "--eval-users", str(c.eval_users), *cache, "--out", str(d / "prepare"),
            "--overwrite",
        ],
        "labels": [
            "generate-labels", *common, "--out", str(d / "labels"),
            "--n-negatives", str(c.n_negatives), "--topk-users", str(c.topk_users),
            "--user-encoding", c.user_encoding, *cache,
            "--threads", str(c.threads), "--overwrite",
        ],
        "student_hard": [
            "train-student", *student, "--no-teacher", "--out", str(d / "student_hard"),
        ],
        "student_distilled": [
            "train-student", *student, "--labels", str(d / "labels"),
            "--out", str(d / "student_distilled"),
        ],
        "compress": [
            "compress", *common, "--model", str(d / "student_distilled" / "model"),
            "--finetune-epochs", str(c.finetune_epochs), "--valid-users", str(c.eval_users),
            "--threads", str(c.threads), "--out", str(d / "compressed"), "--overwrite",
        ],
        "benchmark": [
            "benchmark", *common, "--labels", str(d / "labels"),
            "--student-hard", str(d / "student_hard" / "model"),
            "--student-distilled", str(d / "student_distilled" / "model"),
            "--student-int8", str(d / "compressed" / "int8"),
            "--eval-users", str(c.eval_users), *cache, "--out", str(d / "benchmark"),
            "--overwrite",
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


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def stage_outputs(stage: str, d: Path, res: dict, log: Path) -> dict[str, Any]:
    """What the stage's own output says: sizes, throughput, quality."""
    out: dict[str, Any] = {}
    if stage == "data":
        line = log.read_text().strip().splitlines()[-1]
        out = json.loads(line)
    elif stage == "prepare":
        stats = _read(d / "prepare" / "stats.json") or {}
        out = {"protocols": stats.get("protocols")}
    elif stage == "labels":
        meta = _read_meta(d / "labels")
        if meta:
            out = {
                "pairs": meta.get("n_pairs"),
                "users": meta.get("n_users"),
                "pairs_per_second_scoring": meta.get("pairs_per_second"),
                "pairs_per_second": (meta.get("n_pairs") or 0) / res["seconds"],
                "collab": meta.get("teacher", {}).get("collab") or meta.get("collab"),
                "mix_weights": meta.get("teacher", {}).get("mix", {}).get("weights"),
                "teacher_quality": meta.get("teacher_quality", {}).get("parts"),
            }
    elif stage.startswith("student"):
        m = _read(d / stage / "metrics.json")
        if m:
            out = {
                "epochs_run": m["epochs_run"],
                "train_seconds": m["train_seconds"],
                "valid": m["valid"],
                "params": m["params"],
            }
    elif stage == "compress":
        m = _read(d / "compressed" / "compression.json")
        if m:
            out = {
                name: {k: v for k, v in step.items() if k in ("valid_ndcg@10", "params", "bytes")}
                for name, step in m.get("steps", {}).items()
            }
    elif stage == "benchmark":
        r = _read(d / "benchmark" / "report.json")
        if r:
            out = {
                "models": {
                    k: {m: v.get(m) for m in ("ndcg@10", "recall@10", "users") if m in v}
                    for k, v in r.get("models", {}).items()
                },
                "indexes": {
                    kind: {
                        k: e.get(k)
                        for k in (
                            "recall@10_vs_exact",
                            "ndcg@10",
                            "qps_batch1",
                            "qps_batch256",
                            "p50_ms",
                            "p99_ms",
                            "bytes",
                            "build_seconds",
                            "items_per_second_indexed",
                        )
                    }
                    for kind, e in (r.get("indexes") or {}).items()
                },
                "evaluation": r.get("evaluation"),
            }
    return out


def _read_meta(folder: Path) -> dict | None:
    from pipelines.labels.schema import META_FILE

    return _read(folder / META_FILE)


def fit_exponent(x: list[float], y: list[float]) -> float | None:
    """b of ``y = a * x^b`` by least squares on log-log; None with fewer than 2 points."""
    pts = [(a, b) for a, b in zip(x, y) if a and b and a > 0 and b > 0]
    if len(pts) < 2 or len({a for a, _ in pts}) < 2:
        return None
    lx = np.log([a for a, _ in pts])
    ly = np.log([b for _, b in pts])
    return float(np.polyfit(lx, ly, 1)[0])


# the settings a size's stages ran with (a rerun of some sizes may use others)
SIZE_SETTINGS = (
    "epochs", "student_batch_size", "eval_users", "topk_users", "n_negatives", "user_encoding",
    "finetune_epochs", "threads",
)  # fmt: skip


def run(config: BenchScaleConfig) -> dict:
    c = config
    out = Path(c.out)
    existing = _read(out / RESULT)
    if existing is None:
        claim_output(out, RESULT, overwrite=c.overwrite, what="a bench-scale run")
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
        cmds = stage_commands(c, size, d)
        rows: dict[str, Any] = {}
        failed, ran = None, False
        for stage in STAGES:
            marker = d / f"{stage}.stage.json"
            prev = _read(marker)
            if stage not in c.stages:  # kept from an earlier run, if there was one
                if prev:
                    rows[stage] = prev
                continue
            if failed:
                rows[stage] = {"skipped": f"stage {failed} did not finish"}
                continue
            log = d / f"{stage}.log"
            # reused only while every stage before it was reused too (else its inputs changed)
            if not ran and prev and prev.get("rc") == 0 and prev.get("command_argv") == cmds[stage]:
                logger.info("[%s %s] done before: reusing", size, stage)
                rows[stage] = prev
                continue
            for name in STAGE_OUTPUTS.get(stage, ()):  # a job must not reuse its old output:
                shutil.rmtree(d / name, ignore_errors=True)  # the time would be the reuse's
            logger.info("[%s %s] running", size, stage)
            ran = True
            res = run_stage(cmds[stage], log, c.stage_timeout_s, c.threads)
            res["command_argv"] = cmds[stage]
            if res["rc"] == 0:
                res["outputs"] = stage_outputs(stage, d, res, log)
            else:
                failed = stage
            logger.info(
                "[%s %s] rc %d in %.0fs, peak RSS %.2f GB",
                size, stage, res["rc"], res["seconds"], res["peak_rss_gb"],
            )  # fmt: skip
            write_json(marker, res)
            rows[stage] = res
        result["sizes"][size] = _with_rates(rows)
        if ran or size not in result.setdefault("size_config", {}):
            result["size_config"][size] = {k: getattr(c, k) for k in SIZE_SETTINGS}
        result["growth"] = growth(result["sizes"], result["size_config"])
        write_json(out / RESULT, result)
        write_text(out / "report.md", format_report(result))
    return result


def _with_rates(rows: dict) -> dict:
    """Per-stage throughput in the units the issue names, from the data stage's counts."""
    n = (rows.get("data", {}).get("outputs") or {}).get("interactions")
    train = (rows.get("data", {}).get("outputs") or {}).get("train")
    for stage, r in rows.items():
        o = r.get("outputs")
        if not o or r.get("rc"):
            continue
        if stage.startswith("student") and train:
            r["interactions_per_second"] = train * o["epochs_run"] / o["train_seconds"]
        if stage in ("data", "prepare") and n:
            r["interactions_per_second"] = n / r["seconds"]
    return rows


# the settings that change a stage's cost per interaction: a growth fit mixes no two of them
STAGE_SETTINGS = {
    "labels": ("topk_users", "n_negatives", "user_encoding"),
    "student_hard": ("epochs", "student_batch_size"),
    "student_distilled": ("epochs", "student_batch_size"),
    "compress": ("epochs", "student_batch_size", "finetune_epochs"),
    "benchmark": ("eval_users",),
    "prepare": ("eval_users",),
}


# stages whose cost is mostly the collaborative fit: EASE^R's and ALS's costs grow differently
COLLAB_STAGES = ("prepare", "labels", "benchmark")


def collab_kind(rows: dict) -> str | None:
    """The collaborative model a size's chain used ("ease" or "als"), as its prepare and
    labels stages recorded it; None if neither says."""
    prep = (rows.get("prepare") or {}).get("outputs") or {}
    for entry in (prep.get("protocols") or {}).values():
        for part in entry.values():
            if isinstance(part, dict) and part.get("kind"):
                return part["kind"]
    labels = ((rows.get("labels") or {}).get("outputs") or {}).get("collab") or {}
    return labels.get("kind")


def growth(sizes: dict, size_config: dict | None = None) -> dict:
    """Per stage, the fitted exponent of seconds and of peak RSS against interactions, over
    the sizes whose settings for that stage (``STAGE_SETTINGS``, plus threads, plus the
    collaborative model for ``COLLAB_STAGES``) match those of the largest size that finished
    it; the others are named in ``left_out``."""
    size_config = size_config or {}
    out = {}
    for stage in STAGES:
        done = []
        for size, rows in sizes.items():
            n = (rows.get("data", {}).get("outputs") or {}).get("interactions")
            r = rows.get(stage)
            if n and r and r.get("rc") == 0:
                done.append((n, size, r))
        if not done:
            continue
        keys = (*STAGE_SETTINGS.get(stage, ()), "threads")
        settings = {
            size: tuple(size_config.get(size, {}).get(k) for k in keys) for _, size, _ in done
        }
        if stage in COLLAB_STAGES:
            keys = (*keys, "collaborative model")
            settings = {s: (*v, collab_kind(sizes[s])) for s, v in settings.items()}
        ref = settings[max(done, key=lambda d: d[0])[1]]
        used = [(n, size, r) for n, size, r in done if settings[size] == ref]
        out[stage] = {
            "points": len(used),
            "sizes": [size for _, size, _ in used],
            "seconds_exponent": fit_exponent(
                [n for n, *_ in used], [r["seconds"] for *_, r in used]
            ),
            "rss_exponent": fit_exponent(
                [n for n, *_ in used], [r["peak_rss_gb"] for *_, r in used]
            ),
        }
        left = [size for _, size, _ in done if settings[size] != ref]
        if left:
            out[stage]["left_out"] = {
                "sizes": left,
                "why": f"other {', '.join(keys)} than the largest size",
            }
    return out


def _fmt(v, spec=".0f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def format_report(result: dict) -> str:
    lines = ["# Scale benchmark", ""]
    lines.append(
        "Synthetic data (`recdistill bench-scale`), each stage in its own process; wall time, "
        "peak RSS of that process, throughput from the job's own output."
    )
    lines.append("")
    lines.append("| size | stage | rc | seconds | peak RSS GB | throughput |")
    lines.append("|---|---|---:|---:|---:|---|")
    for size, rows in result["sizes"].items():
        for stage, r in rows.items():
            if "skipped" in r:
                lines.append(f"| {size} | {stage} | - | - | - | skipped: {r['skipped']} |")
                continue
            lines.append(
                f"| {size} | {stage} | {r['rc']} | {_fmt(r['seconds'])} | "
                f"{_fmt(r['peak_rss_gb'], '.2f')} | {_throughput(stage, r)} |"
            )
    if result.get("size_config"):
        keys = list(SIZE_SETTINGS)
        lines += ["", "Settings each size ran with:", ""]
        lines.append("| size | " + " | ".join(keys) + " |")
        lines.append("|---|" + "---:|" * len(keys))
        for size, conf in result["size_config"].items():
            lines.append(f"| {size} | " + " | ".join(str(conf.get(k)) for k in keys) + " |")
    lines += ["", "Growth with interactions (fitted exponent b of `y ~ n^b`):", ""]
    lines.append("| stage | sizes | seconds b | peak RSS b | left out (other settings) |")
    lines.append("|---|---:|---:|---:|---|")
    for stage, g in result.get("growth", {}).items():
        left = ", ".join((g.get("left_out") or {}).get("sizes", []))
        lines.append(
            f"| {stage} | {g['points']} | {_fmt(g['seconds_exponent'], '.2f')} | "
            f"{_fmt(g['rss_exponent'], '.2f')} | {left} |"
        )
    q = []
    for size, rows in result["sizes"].items():
        o = (rows.get("benchmark") or {}).get("outputs") or {}
        ev = o.get("evaluation") or {}
        for name, m in (o.get("models") or {}).items():
            users = ev.get("teacher_users") if name == "teacher" else ev.get("users")
            q.append(
                f"| {size} | {name} | {_fmt(m.get('ndcg@10'), '.4f')} | {users} of {ev.get('of')} |"
            )
    if q:
        lines += ["", "Quality (test NDCG@10, full catalogue, seeded sample of test users):", ""]
        lines += ["| size | model | NDCG@10 | users |", "|---|---|---:|---:|", *q]
    return "\n".join(lines) + "\n"


def _throughput(stage: str, r: dict) -> str:
    o = r.get("outputs") or {}
    if stage == "labels" and o.get("pairs"):
        return f"{o['pairs_per_second']:,.0f} pairs/s ({o['pairs']:,} pairs)"
    if r.get("interactions_per_second"):
        return f"{r['interactions_per_second']:,.0f} interactions/s"
    if stage == "benchmark" and o.get("indexes"):
        flat = o["indexes"].get("flat") or next(iter(o["indexes"].values()))
        return (
            f"{_fmt(flat.get('items_per_second_indexed'), ',.0f')} items/s indexed, "
            f"{_fmt(flat.get('qps_batch1'), ',.0f')} queries/s (flat, batch 1)"
        )
    return ""


def format_summary(result: dict) -> str:
    return format_report(result)
