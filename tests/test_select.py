"""--exclude and sparsity tables: node names, op types and glob patterns of either."""

from __future__ import annotations

import json

import pytest

from fq_onnx import api
from fq_onnx.digits import default_model_path
from fq_onnx.errors import FqOnnxError
from fq_onnx.graph import select

# The bundled digits CNN: stem/conv, block1/conv1, block1/conv2, down/conv, block2/conv1,
# block2/conv2 (Conv) and fc (Gemm).
NODES = [("stem/conv", "Conv"), ("block1/conv1", "Conv"), ("block1/conv2", "Conv"), ("down/conv", "Conv"),
         ("block2/conv1", "Conv"), ("block2/conv2", "Conv"), ("fc", "Gemm")]


@pytest.mark.parametrize("key, name, op, expected", [
    ("block1/conv1", "block1/conv1", "Conv", True),
    ("block1/conv", "block1/conv1", "Conv", False),   # a plain key is exact, not a prefix
    ("Conv", "block1/conv1", "Conv", True),
    ("block*/conv2", "block2/conv2", "Conv", True),
    ("block?/conv[12]", "block1/conv1", "Conv", True),
    ("*/conv2", "fc", "Gemm", False),
    ("Ge*", "fc", "Gemm", True),                      # patterns match op types too
    ("conv", "Conv_3", "Conv", False),                # case-sensitive
])
def test_matches(key, name, op, expected):
    assert select.matches(key, name, op) is expected


def test_resolve_table_precedence():
    table = {"block*": 0.2, "*/conv2": 0.7, "Conv": 0.5, "block1/conv2": 0.9, "fc": 0.0}
    resolved = select.resolve_table(table, NODES, "t.json")
    assert resolved["block1/conv2"] == 0.9   # its own name first
    assert resolved["stem/conv"] == 0.5      # then its op type
    assert resolved["fc"] == 0.0
    # without the op-type key: the first pattern in the table's order
    del table["Conv"]
    resolved = select.resolve_table(table, NODES, "t.json")
    assert resolved["block2/conv2"] == 0.2   # "block*" comes before "*/conv2"
    assert resolved["block1/conv2"] == 0.9
    assert "stem/conv" not in resolved and "down/conv" not in resolved  # no key: the default applies


def test_a_key_that_selects_nothing_is_an_error():
    with pytest.raises(FqOnnxError, match=r"t.json: no compressible node named or matching 'blokc\*'"):
        select.resolve_table({"blokc*": 0.5, "fc": 0.1}, NODES, "t.json")


def test_convert_with_patterns(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"*": 0.3, "block2/*": 0.8, "Gemm": 0.0}))
    report = api.convert(default_model_path(), tmp_path / "out.onnx", sparsity_file=tmp_path / "s.json",
                         exclude=["stem*"], bits=5)
    sparsity = {row.name: row.sparsity for row in report.layers}
    assert sparsity["stem/conv"] == 0.0 and next(r for r in report.layers if r.name == "stem/conv").mode == "float"
    assert abs(sparsity["block2/conv1"] - 0.8) < 0.01 and abs(sparsity["block2/conv2"] - 0.8) < 0.01
    assert abs(sparsity["block1/conv1"] - 0.3) < 0.01 and abs(sparsity["down/conv"] - 0.3) < 0.01
    assert sparsity["fc"] == 0.0
    # the stored settings hold the table resolved per node, so a replay needs no patterns
    table = report.settings["per_layer_sparsity"] if "per_layer_sparsity" in report.settings else None
    assert table is None or all(not select.is_pattern(key) for key in table)


def test_exclude_by_op_type_pattern_keeps_every_match_float(tmp_path):
    report = api.convert(default_model_path(), tmp_path / "out.onnx", exclude=["block?/conv*", "G*"], sparsity=0.5)
    modes = {row.name: row.mode for row in report.layers}
    assert [n for n, m in modes.items() if m == "float"] == ["block1/conv1", "block1/conv2", "block2/conv1",
                                                             "block2/conv2", "fc"]
