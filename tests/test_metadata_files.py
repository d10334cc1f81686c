"""Every metadata file's error names its path (and the field): a malformed index
``meta.json`` is bad input (exit 2, one line), not a traceback."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipelines.cli import error_line
from student.serving.config import IndexConfig
from student.serving.index import ItemIndex


@pytest.fixture
def index_dir(tmp_path):
    rng = np.random.default_rng(0)
    items = rng.standard_normal((50, 8)).astype(np.float32)
    ItemIndex.build(items, np.arange(50), IndexConfig(kind="flat")).save(tmp_path / "idx")
    return tmp_path / "idx"


def _load_error(folder) -> tuple[int, str]:
    with pytest.raises(Exception) as exc:
        ItemIndex.load(folder)
    return error_line(exc.value)


def test_an_index_meta_without_dim_or_holding_a_list_exits_2(index_dir):
    meta_path = index_dir / "meta.json"
    meta = json.loads(meta_path.read_text())
    assert ItemIndex.load(index_dir).dim == 8
    meta_path.write_text(json.dumps({k: v for k, v in meta.items() if k != "dim"}))
    code, line = _load_error(index_dir)
    assert code == 2 and line.startswith(f"{meta_path}: no field 'dim'")
    meta_path.write_text(json.dumps({**meta, "n": "fifty"}))
    code, line = _load_error(index_dir)
    assert code == 2 and f"{meta_path}: field 'n' is 'fifty'; expected int" in line
    meta_path.write_text(json.dumps([meta]))
    code, line = _load_error(index_dir)
    assert code == 2 and line.startswith(f"{meta_path}: holds a JSON list, expected an object")
    meta_path.write_text('{"dim": 8,')
    code, line = _load_error(index_dir)
    assert code == 2 and line.startswith(f"{meta_path}: not valid JSON (line 1 column")


def test_one_json_reader():
    import common.io
    import student.model_io

    assert student.model_io.read_json is common.io.read_json  # one definition
