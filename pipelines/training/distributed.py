"""Data-parallel `train-student --num-workers N`: torch DDP launched by Ray Train's
``TorchTrainer``.

Why Ray Train: the labels already run on a Ray cluster (Ray Data) and the server scales out on
Ray Serve, so one cluster (``--ray-address`` or ``$RAY_ADDRESS``; a local Ray otherwise) serves
the whole chain; Ray Train places the workers, sets up the process group and carries the kept
model back through its storage, which torchrun would leave to the user.

Each worker runs the one-process job (``train_student.train``) on ``--threads`` CPUs with the
same seed, so all draw the same global steps; a worker trains on its rows of each step
(``batch.Shard``) and ``DistributedDataParallel`` averages the gradients (gloo: the CPU
backend; the student has no GPU training path, hence no NCCL). The id tables are replicated
in every worker, as DDP does; with sparse gradients (``--sparse-embeddings``) gloo exchanges
only the rows a step touched. Replicas cost ``(users + items) x dim x 16`` bytes per worker
(the weights and Adam's two moments, fp32): 1M + 1M ids at 64 dims is 2 GB; a table that does
not fit one worker needs row-wise sharding (torchrec), which this job does not do.

Worker 0 validates after each epoch and tells the others (``loop.from_first``), so every worker
stops after the same epoch; it writes the kept model and ``metrics.json`` to a temporary folder
reported as the Ray Train checkpoint, which the driver copies into ``--out``. ``--ray-storage``
is where that checkpoint travels (a path every node sees, or a URI such as s3://...); its default,
a temporary folder beside ``--out`` removed afterwards, is enough on one machine.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from torch import nn

from common.io import atomic_dir, read_json, write_json
from pipelines.core import ray_cluster
from pipelines.training.batch import Shard

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'recdistill[ray]'  (or: pip install 'ray[data,train]==2.60.0')"
BACKEND = "gloo"
ERROR_FILE = "error.txt"  # in worker 0's checkpoint: the input error every worker met


class StepLoss(nn.Module):
    """The objective as one module over the student and the terms' own weights, so that DDP
    sees each step as one forward (it hooks the gradients of these parameters)."""

    def __init__(self, model: nn.Module, objective) -> None:
        super().__init__()
        self.model = model
        self.term_weights = nn.ParameterList(objective.parameters())
        self.objective = objective

    def forward(self, step):
        return self.objective(step)


def ddp_objective(model: nn.Module, objective) -> nn.Module:
    """``objective`` wrapped for DDP in an initialised process group: called on a step, it
    returns the objective's ``(loss, log)``; backward averages the gradients over workers."""
    from torch.nn.parallel import DistributedDataParallel

    # find_unused_parameters: a step may leave parameters untouched (a term at weight 0, the
    # content head, fit after training)
    return DistributedDataParallel(
        StepLoss(model, objective), find_unused_parameters=True, forward_sync_buffers=False
    )


def import_train():
    """``(ray, TorchTrainer and its configs)``, or an ImportError saying how to install them."""
    try:
        import ray
        from ray.train import RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer
    except ImportError as e:
        raise ImportError(
            f"train-student --num-workers > 1 needs Ray Train, which is not installed here "
            f"({e}); install it with: {INSTALL_HINT}, or run with --num-workers 1"
        ) from e
    return ray, TorchTrainer, TorchConfig, ScalingConfig, RunConfig


def _worker(loop_config: dict) -> None:
    """One Ray Train worker: its part of the job; worker 0 reports the kept model."""
    import ray.train

    ctx = ray.train.get_context()
    shard = Shard(ctx.get_world_rank(), ctx.get_world_size())
    config, train = loop_config["config"], loop_config["train"]
    with tempfile.TemporaryDirectory(prefix="recdistill-student-") as tmp:
        try:
            result = train(config, shard, Path(tmp))
        except (ValueError, FileNotFoundError) as e:  # bad input, the same in every worker:
            (Path(tmp) / ERROR_FILE).write_text(str(e))  # the driver raises it, no traceback
            result = {"best_epoch": None}
        if shard.rank == 0:
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report({"best_epoch": result["best_epoch"]}, checkpoint=checkpoint)
        else:
            ray.train.report({})


def data_parallel(config, train: Callable) -> dict:
    """Run ``train(config, shard, folder)`` on ``config.num_workers`` Ray Train workers and
    install worker 0's model and metrics in ``config.out``; returns the metrics."""
    c = config
    ray, TorchTrainer, TorchConfig, ScalingConfig, RunConfig = import_train()
    out = Path(c.out)
    out.parent.mkdir(parents=True, exist_ok=True)  # --out itself only once a model is in
    started = ray_cluster.connect(
        ray, c.ray_address, c.num_workers * c.threads,
        f"--num-workers {c.num_workers} x --threads {c.threads}",
    )  # fmt: skip
    storage = c.ray_storage or tempfile.mkdtemp(prefix=".ray-train-", dir=out.parent)
    if "://" not in storage:
        storage = str(Path(storage).resolve())
    t0 = time.perf_counter()
    try:
        trainer = TorchTrainer(
            _worker,
            train_loop_config={"config": c, "train": train},
            scaling_config=ScalingConfig(
                num_workers=c.num_workers, resources_per_worker={"CPU": c.threads}
            ),
            torch_config=TorchConfig(backend=BACKEND),
            run_config=RunConfig(storage_path=storage, name=f"train-student-{uuid.uuid4().hex}"),
        )
        result = trainer.fit()
        with result.checkpoint.as_directory() as folder:
            metrics = _install(Path(folder), out)
    finally:
        if started:
            ray.shutdown()
        if not c.ray_storage:
            shutil.rmtree(storage, ignore_errors=True)
    metrics["data_parallel"]["wall_seconds"] = time.perf_counter() - t0
    write_json(out / "metrics.json", metrics)
    return metrics


def _install(folder: Path, out: Path) -> dict:
    """Move the reported model into ``out/model`` (atomically); the reported metrics. An input
    error the workers met is raised here as it was."""
    if (folder / ERROR_FILE).exists():
        raise ValueError((folder / ERROR_FILE).read_text())
    with atomic_dir(out / "model") as tmp:
        for f in (folder / "model").iterdir():
            shutil.copy2(f, tmp / f.name)
    return read_json(folder / "metrics.json", "the metrics a train-student worker reported")
