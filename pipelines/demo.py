"""`recdistill demo` (`make demo`): the whole chain on the packaged defaults.

MovieLens-100K -> embedding teacher (+ EASE^R) soft labels -> hard-only and distilled
students -> pruned and int8 student -> FAISS indexes -> benchmark report, all under ``out``.
Each step records a key (its config plus the keys of the steps it reads); a rerun reuses a
step whose key is unchanged and redoes it (and what follows) when it changed.

``overrides`` passes settings to the steps' own configs: a mapping (or its YAML/JSON text on
the command line) of step name -> {field: value}, e.g.
``--overrides '{labels: {n_negatives: 10, max_users: 100}, compress: {finetune_epochs: 2}}'``.
Steps: ``prepare``, ``labels``, ``student_hard``, ``student_distilled``, ``compress``,
``benchmark``; fields are those of the step's job (``recdistill <job> --help``). Fields the
demo sets itself (paths between steps, dataset, protocol, teacher, seed, epochs) are refused:
use the demo's own field.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Literal

import yaml

from pipelines.baselines import prepare
from pipelines.compression import compress
from common.config import to_dict
from common.io import write_json
from pipelines.evaluation import benchmark
from pipelines.labels import generate_labels
from pipelines.labels.config import TeacherName
from pipelines.training import train_student

logger = logging.getLogger(__name__)

STEP_FILE = "recdistill_step.json"
COLD_KL = 1.0  # the cold chain's distilled student: weight of the KL over cold candidates


@dataclass
class DemoConfig:
    dataset: str = field(default="ml-100k", metadata={"help": "dataset spec"})
    protocol: Literal["random", "temporal"] = field(
        default="random", metadata={"help": "split protocol"}
    )
    teacher: TeacherName = field(
        default="embedding", metadata={"help": "LLM part of the teacher: embedding or causal_lm"}
    )
    teacher_model: str | None = field(
        default=None, metadata={"help": "teacher model (default: the packaged one)"}
    )
    seed: int = field(default=0, metadata={"help": "training seed"})
    epochs: int = field(default=40, metadata={"help": "maximum student epochs"})
    cold_start: bool = field(
        default=True,
        metadata={
            "help": "also run the cold-start chain (cold_items protocol) under <out>/cold: "
            "content-map teacher, content-tower students with id dropout, int8, cold report"
        },
    )
    item_id_dropout: float = field(
        default=0.5, metadata={"help": "cold chain: the students' item id dropout (DropoutNet)"}
    )
    user_id_dropout: float = field(
        default=0.3,
        metadata={
            "help": "cold chain: the students' user id dropout, so they also serve new users "
            "from a history alone"
        },
    )
    out: str = field(default="runs/demo", metadata={"help": "output folder for every artifact"})
    overrides: str | dict = field(
        default="",
        metadata={
            "help": "per-step config fields, YAML/JSON: '{labels: {n_negatives: 10}, "
            "student_hard: {hidden: 64}}' (steps: prepare, labels, student_hard, "
            "student_distilled, compress, benchmark and the cold chain's cold_labels, "
            "cold_student_hard, cold_student_distilled, cold_compress, cold_benchmark); a "
            "mapping in --config files"
        },
    )

    def __post_init__(self):
        if self.protocol not in ("random", "temporal"):
            raise ValueError(
                f"DemoConfig.protocol={self.protocol!r}; expected 'random' or 'temporal'"
            )
        for name in STEPS:
            self.step_overrides(name)  # validates every step's overrides

    def step_overrides(self, name: str) -> dict:
        """The override fields of step ``name`` (checked against its config class)."""
        raw = self.overrides
        steps = yaml.safe_load(raw) if isinstance(raw, str) else raw
        steps = steps or {}
        if not isinstance(steps, dict) or not all(isinstance(v, dict) for v in steps.values()):
            raise ValueError(
                f"DemoConfig.overrides={raw!r}; expected a mapping of step -> {{field: value}}"
            )
        unknown = sorted(set(steps) - set(STEPS))
        if unknown:
            raise ValueError(
                f"DemoConfig.overrides: unknown step(s) {unknown}; expected some of {list(STEPS)}"
            )
        cls, wired = STEPS[name]
        mine = steps.get(name, {})
        allowed = {f.name for f in fields(cls)} - wired
        bad = sorted(set(mine) - allowed)
        if bad:
            set_here = sorted(set(bad) & wired)
            raise ValueError(
                f"DemoConfig.overrides[{name!r}]: field(s) {bad} cannot be overridden"
                + (f" ({set_here} are set by the demo itself)" if set_here else "")
                + f"; expected fields of {cls.__name__} other than {sorted(wired)}"
            )
        return dict(mine)


_DATA = {"dataset", "protocol", "out"}
# step -> (config class, fields the demo sets itself)
STEPS: dict[str, tuple[type, set[str]]] = {
    "prepare": (prepare.PrepareConfig, {"dataset", "out"}),
    "labels": (
        generate_labels.GenerateLabelsConfig,
        _DATA | {"teacher", "model", "overwrite"},
    ),
    "student_hard": (train_student.TrainStudentConfig, _DATA | {"no_teacher", "seed", "epochs"}),
    "student_distilled": (train_student.TrainStudentConfig, _DATA | {"labels", "seed", "epochs"}),
    "compress": (compress.CompressConfig, _DATA | {"model"}),
    "benchmark": (
        benchmark.BenchmarkConfig,
        _DATA
        | {
            "labels",
            "student_hard",
            "student_distilled",
            "student_pruned",
            "student_int8",
            "student_int8_fast",
        },
    ),
}
_CONTENT = {"labels", "use_text", "item_id_dropout", "user_id_dropout"}
# the cold-start chain's steps (same configs, protocol cold_items)
STEPS |= {
    "cold_labels": STEPS["labels"],
    "cold_student_hard": (STEPS["student_hard"][0], STEPS["student_hard"][1] | _CONTENT),
    "cold_student_distilled": (STEPS["student_distilled"][0], STEPS["student_distilled"][1] | _CONTENT),
    "cold_compress": STEPS["compress"],
    "cold_benchmark": STEPS["benchmark"],
}  # fmt: skip


def step(
    name: str, module, config, out_dir: Path, upstream: list[str], result_file: str
) -> tuple[dict, str]:
    """Run ``module.run(config)`` unless ``out_dir`` holds a result made with the same key."""
    key = hashlib.sha256(
        json.dumps([name, to_dict(config), upstream], sort_keys=True).encode()
    ).hexdigest()[:16]
    marker = out_dir / STEP_FILE
    if (
        marker.exists()
        and json.loads(marker.read_text()).get("key") == key
        and (out_dir / result_file).exists()
    ):
        logger.info("[%s] unchanged (key %s): reusing %s", name, key, out_dir)
        return json.loads((out_dir / result_file).read_text()), key
    logger.info("[%s] running -> %s", name, out_dir)
    t0 = time.perf_counter()
    if "overwrite" in {f.name for f in fields(config)}:  # its own step folder (not in the key)
        config = replace(config, overwrite=True)
    result = module.run(config)
    write_json(marker, {"key": key, "step": name, "seconds": time.perf_counter() - t0})
    return result, key


def run(config: DemoConfig) -> dict:
    c = config
    out = Path(c.out)
    t0 = time.perf_counter()
    timings = {}

    def timed(name, *args):
        s = time.perf_counter()
        res = step(name, *args)
        timings[name] = time.perf_counter() - s
        return res

    common = dict(dataset=c.dataset, protocol=c.protocol)
    prep, k_prep = timed(
        "prepare",
        prepare,
        prepare.PrepareConfig(
            dataset=c.dataset, out=str(out / "prepare"), **c.step_overrides("prepare")
        ),
        out / "prepare",
        [],
        "stats.json",
    )
    labels_cfg = generate_labels.GenerateLabelsConfig(
        **common,
        teacher=c.teacher,
        model=c.teacher_model,
        overwrite=True,
        out=str(out / "labels"),
        **c.step_overrides("labels"),
    )
    labels_meta = generate_labels.run(labels_cfg)  # reuses an identical finished job itself
    k_labels = labels_meta["job_hash"]
    timings["labels"] = labels_meta.get("seconds") if not labels_meta.get("reused") else 0.0
    hard_cfg = train_student.TrainStudentConfig(
        **common,
        no_teacher=True,
        seed=c.seed,
        epochs=c.epochs,
        out=str(out / "student_hard"),
        **c.step_overrides("student_hard"),
    )
    hard, k_hard = timed(
        "student_hard", train_student, hard_cfg, out / "student_hard", [k_prep], "metrics.json"
    )
    dist_cfg = train_student.TrainStudentConfig(
        **common,
        labels=str(out / "labels"),
        seed=c.seed,
        epochs=c.epochs,
        out=str(out / "student_distilled"),
        **c.step_overrides("student_distilled"),
    )
    dist, k_dist = timed(
        "student_distilled",
        train_student,
        dist_cfg,
        out / "student_distilled",
        [k_labels],
        "metrics.json",
    )
    comp_cfg = compress.CompressConfig(
        **common,
        model=str(out / "student_distilled" / "model"),
        out=str(out / "compressed"),
        **c.step_overrides("compress"),
    )
    _, k_comp = timed(
        "compress", compress, comp_cfg, out / "compressed", [k_dist], "compression.json"
    )
    bench_cfg = benchmark.BenchmarkConfig(
        **common,
        labels=str(out / "labels"),
        student_hard=str(out / "student_hard" / "model"),
        student_distilled=str(out / "student_distilled" / "model"),
        student_pruned=str(out / "compressed" / "pruned"),
        student_int8=str(out / "compressed" / "int8"),
        student_int8_fast=str(out / "compressed" / "int8_fast"),
        out=str(out / "benchmark"),
        **c.step_overrides("benchmark"),
    )
    report, _ = timed(
        "benchmark",
        benchmark,
        bench_cfg,
        out / "benchmark",
        [k_labels, k_hard, k_dist, k_comp],
        "report.json",
    )
    if c.cold_start:
        report["cold"] = _cold_chain(c, out / "cold", timed, k_prep)
    report["demo"] = {"seconds": time.perf_counter() - t0, "step_seconds": timings, "out": str(out)}
    report["prepare"] = prep
    write_json(out / "demo.json", report["demo"])
    return report


def _cold_chain(c: DemoConfig, out: Path, timed, k_prep: str) -> dict:
    """The cold-start chain: the same steps on the ``cold_items`` protocol. Both students see
    the items' content (genres, year, the teacher's frozen text embedding) and drop item ids
    with ``item_id_dropout`` and user ids with ``user_id_dropout`` (so they also serve new
    users from a history); only the distilled one learns from the teacher's soft labels,
    the only supervision the cold items have."""
    common = dict(dataset=c.dataset, protocol="cold_items")
    labels_meta = generate_labels.run(
        generate_labels.GenerateLabelsConfig(
            **common,
            teacher=c.teacher,
            model=c.teacher_model,
            overwrite=True,
            out=str(out / "labels"),
            **c.step_overrides("cold_labels"),
        )
    )
    k_labels = labels_meta["job_hash"]
    content = dict(
        labels=str(out / "labels"),
        use_text=True,
        item_id_dropout=c.item_id_dropout,
        user_id_dropout=c.user_id_dropout,
    )
    keys = {}
    for name, extra in (
        ("student_hard", {"no_teacher": True}),
        ("student_distilled", {"w_cold_kl": COLD_KL}),
    ):
        cfg = train_student.TrainStudentConfig(
            **common,
            **content,
            **{**extra, **c.step_overrides(f"cold_{name}")},
            seed=c.seed,
            epochs=c.epochs,
            out=str(out / name),
        )
        _, keys[name] = timed(
            f"cold_{name}", train_student, cfg, out / name, [k_labels], "metrics.json"
        )
    comp_cfg = compress.CompressConfig(
        **common,
        model=str(out / "student_distilled" / "model"),
        out=str(out / "compressed"),
        **c.step_overrides("cold_compress"),
    )
    _, k_comp = timed(
        "cold_compress", compress, comp_cfg, out / "compressed", [keys["student_distilled"]],
        "compression.json",
    )  # fmt: skip
    bench_cfg = benchmark.BenchmarkConfig(
        **common,
        labels=str(out / "labels"),
        student_hard=str(out / "student_hard" / "model"),
        student_distilled=str(out / "student_distilled" / "model"),
        student_int8=str(out / "compressed" / "int8"),
        out=str(out / "benchmark"),
        **c.step_overrides("cold_benchmark"),
    )
    report, _ = timed(
        "cold_benchmark", benchmark, bench_cfg, out / "benchmark",
        [k_labels, *keys.values(), k_comp], "report.json",
    )  # fmt: skip
    return report


def format_summary(report: dict) -> str:
    parts = [prepare.format_summary(report["prepare"]), benchmark.format_summary(report)]
    if report.get("cold"):
        parts.append(
            "cold start (cold_items protocol):\n" + benchmark.format_summary(report["cold"])
        )
    parts.append(f"demo took {report['demo']['seconds']:.0f}s")
    run_dir = Path(report["demo"].get("out", "runs/demo"))
    parts.append(
        f"serve it: recdistill serve --run {run_dir}  (the cold chain's students, which also "
        f"serve new users from a history: --run {run_dir / 'cold'})"
    )
    return "\n\n".join(parts)
