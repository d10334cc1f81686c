"""Provenance: the dataset and split an artifact was made from, recorded in its metadata and
checked by every consumer (labels, students, compressed students; a mismatch is refused with
both fingerprints named). An artifact that records none (stripped, or made before recdistill
recorded it) cannot be checked: it is refused unless the job is told to take it unchecked
(``--allow-unchecked`` of compress and benchmark; the benchmark report marks it)."""

from __future__ import annotations

import logging
from typing import Any

from common.io import ArtifactError

logger = logging.getLogger(__name__)


def stamp(data, split) -> dict[str, Any]:
    """``{"dataset": {name, fingerprint}, "split": {protocol, seed, fingerprint}}`` of an
    ``InteractionData`` and a ``Split`` (either view: the fingerprint is the same); under
    ``cold_items`` the split also names its ``cold_setting``."""
    s = {"protocol": split.protocol, "seed": split.seed, "fingerprint": split.fingerprint()}
    if split.is_cold:
        s["cold_setting"] = split.cold_setting
    return {"dataset": {"name": data.name, "fingerprint": data.fingerprint()}, "split": s}


def check(
    where: str,
    recorded: dict[str, Any] | None,
    data,
    split,
    *,
    what: str,
    allow_unchecked: bool = False,
) -> bool:
    """Refuse ``recorded`` provenance (``stamp`` of the artifact's inputs) that differs from
    this run's ``data`` and ``split``. An artifact without one is refused, or with
    ``allow_unchecked`` logged and let through. Returns whether it was checked."""
    now = stamp(data, split)
    if not recorded or "dataset" not in recorded:
        if not allow_unchecked:
            raise ArtifactError(
                f"{where}: {what} records no dataset or split fingerprint (its provenance was "
                "removed, or an older recdistill made it), so it cannot be checked against this "
                "data; retrain it with this recdistill, or pass --allow-unchecked to use it "
                "unchecked"
            )
        logger.warning("%s: %s records no dataset or split fingerprint; not checked", where, what)
        return False
    d, s = recorded.get("dataset", {}), recorded.get("split", {})
    if d.get("fingerprint") != now["dataset"]["fingerprint"]:
        raise ArtifactError(
            f"{where}: {what} was made for dataset {d.get('name')!r} (fingerprint "
            f"{d.get('fingerprint')}), but --dataset gives {now['dataset']['name']!r} (fingerprint "
            f"{now['dataset']['fingerprint']}); pass the dataset it was made for, or remake it"
        )
    if s and s.get("fingerprint") != now["split"]["fingerprint"]:
        raise ArtifactError(
            f"{where}: {what} was made for the {s.get('protocol')} split with seed "
            f"{s.get('seed')}{_setting(s)} (fingerprint {s.get('fingerprint')}), but this run uses "
            f"the {now['split']['protocol']} split with seed {now['split']['seed']}"
            f"{_setting(now['split'])} (fingerprint {now['split']['fingerprint']}); pass the same "
            "--protocol, --split-seed and --cold-setting, or remake it"
        )
    return True


def _setting(split_record: dict) -> str:
    setting = split_record.get("cold_setting")
    return f" ({setting} cold items)" if setting else ""
