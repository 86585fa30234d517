"""The HTML conversion report: complete, well-formed, written atomically, same numbers as inspect."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

import pytest
from conftest import conv_model, save
from typer.testing import CliRunner

from fq_onnx import api, report, svg
from fq_onnx.cli import app
from fq_onnx.digits import default_model_path
from fq_onnx.errors import FqOnnxError

SVG_NS = "{http://www.w3.org/2000/svg}"


class TableParser(HTMLParser):
    """Rows of the table with id="layers" as lists of cell texts (header row first)."""

    def __init__(self):
        super().__init__()
        self.rows, self.inside, self.cell = [], False, None

    def handle_starttag(self, tag, attrs):
        if tag == "table" and ("id", "layers") in attrs:
            self.inside = True
        elif self.inside and tag == "tr":
            self.rows.append([])
        elif self.inside and tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.inside = False
        elif self.inside and tag in ("td", "th") and self.cell is not None:
            self.rows[-1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def svgs(page: str) -> list[ET.Element]:
    """Every inline chart, parsed as standalone XML (raises on malformed SVG)."""
    return [ET.fromstring(s) for s in re.findall(r"<svg .*?</svg>", page, flags=re.S)]


def number(text: str) -> float:
    return float(text.replace(",", "").rstrip("%x"))


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    """One calibrated conversion of the bundled model through the CLI, with --report and --json."""
    tmp = tmp_path_factory.mktemp("report")
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(default_model_path()), "-o", str(tmp / "d.fq.onnx"), "--calib", "digits",
                                 "--calib-size", "64", "--sparsity", "0.6", "--report", str(tmp / "rep"),
                                 "--json", str(tmp / "convert.json")])
    assert result.exit_code == 0, result.output
    inspected = runner.invoke(app, ["inspect", str(tmp / "d.fq.onnx"), "--json", str(tmp / "inspect.json")])
    assert inspected.exit_code == 0, inspected.output
    return tmp, result.output, (tmp / "rep" / "index.html").read_text(), json.loads((tmp / "inspect.json").read_text())


def test_table_numbers_equal_inspect(calibrated):
    tmp, output, page, inspected = calibrated
    parser = TableParser()
    parser.feed(page)
    header, *rows = parser.rows
    assert header == list(report.COLUMNS)  # calibrated: the output-error column is there
    layers = inspected["layers"]
    assert [r[0] for r in rows[:-1]] == [layer["name"] for layer in layers] and len(layers) == 7
    for cells, layer in zip(rows, layers):
        cell = dict(zip(header, cells))
        assert cell["op"] == layer["op"] and cell["mode"] == layer["mode"]
        assert cell["weight shape"] == "x".join(map(str, layer["shape"]))
        assert abs(number(cell["sparsity"]) - 100 * layer["sparsity"]) <= 0.05 + 1e-9
        assert int(cell["bits"]) == layer["bits"]
        assert abs(number(cell["W2"]) - layer["w2"]) <= 0.005 + 1e-9
        assert int(number(cell["bytes before"])) == layer["fp32_bytes"]
        assert int(number(cell["bytes after"])) == layer["stored_bytes"]
        assert abs(number(cell["ratio"]) - layer["ratio"]) <= 0.05 + 1e-9
        assert abs(number(cell["rel. error"]) - layer["rel_error"]) <= 0.0005 + 1e-9
        assert layer["out_error"] is not None and abs(number(cell["out. error"]) - layer["out_error"]) <= 0.0005 + 1e-9
    total = dict(zip(header, rows[-1]))
    totals = inspected["totals"]
    assert int(number(total["bytes after"])) == totals["compressed_bytes"]
    assert abs(number(total["ratio"]) - totals["ratio"]) <= 0.05 + 1e-9
    assert f"report: {tmp / 'rep' / 'index.html'}" in output


def test_every_chart_is_wellformed_svg_and_every_layer_has_its_picture(calibrated):
    _, _, page, inspected = calibrated
    charts = svgs(page)
    titles = [c.find(f"{SVG_NS}title").text for c in charts]
    assert titles[:3] == ["Sparsity per layer", "Bits per layer", "Bytes per layer (log scale)"]
    names = [layer["name"] for layer in inspected["layers"]]
    assert titles[3:] == names  # one distribution per compressed layer, in graph order
    for chart in charts[3:]:
        rects = chart.findall(f".//{SVG_NS}rect")
        assert len(rects) > 20  # the histogram's bins
        assert chart.findall(f".//{SVG_NS}polyline")  # the mixture density
        levels = chart.findall(f".//{SVG_NS}g[@stroke-width='1.5']/{SVG_NS}line")
        assert len(levels) == 32  # 5-bit codes: 32 levels, all inside the plotted range
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org/2000/svg", "")


def test_max_drop_trials_are_plotted(tmp_path):
    # magnitude pruning and nearest rounding: the allocator's search without the slow OBS/GPTQ passes
    result = api.convert(default_model_path(), tmp_path / "m.fq.onnx", calib="digits", calib_size=32, max_drop=2.0,
                         data="digits", eval_size=120, prune_method="magnitude", rounding="nearest",
                         report_dir=tmp_path / "rep")
    page = (tmp_path / "rep" / "index.html").read_text()
    trials = result.settings["allocation"]["trials"]
    chart = next(c for c in svgs(page) if c.find(f"{SVG_NS}title").text.startswith("Allocation trials"))
    dots = chart.findall(f".//{SVG_NS}g/{SVG_NS}circle")
    assert len(dots) == len(trials) + 1  # every measured plan, and the ring on the written one
    legend = "".join(t.text or "" for t in chart.iter(f"{SVG_NS}text"))
    assert f"written: {result.totals.ratio:.2f}x" in legend
    assert result.report_path == str(tmp_path / "rep" / "index.html")


def test_written_atomically(tmp_path, rng, monkeypatch):
    src = save(conv_model((1, 8, 8, 8), (16, 8, 3, 3), rng), tmp_path / "in.onnx")
    target = tmp_path / "rep"
    target.mkdir()
    (target / "index.html").write_text("previous report")

    real_replace = report.os.replace

    def crash(src, dst):  # the model is saved; renaming the finished report fails
        if str(dst).endswith("index.html"):
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(report.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        api.convert(src, tmp_path / "out.onnx", report_dir=target)
    assert (target / "index.html").read_text() == "previous report"
    assert [p.name for p in target.iterdir()] == ["index.html"]  # no temporary file left
    assert (tmp_path / "out.onnx").exists()
    monkeypatch.undo()
    result = api.convert(src, tmp_path / "out.onnx", report_dir=target)
    page = (target / "index.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>") and "conv" in page
    assert "out. error" not in page  # not calibrated: no output-error column
    assert result.report_path == str(target / "index.html")


def test_report_path_that_is_a_file_fails_before_any_work(tmp_path, rng):
    src = save(conv_model((1, 8, 8, 8), (16, 8, 3, 3), rng), tmp_path / "in.onnx")
    (tmp_path / "taken").write_text("")
    with pytest.raises(FqOnnxError, match="taken: --report needs a directory"):
        api.convert(src, tmp_path / "out.onnx", report_dir=tmp_path / "taken")
    assert not (tmp_path / "out.onnx").exists()


def test_svg_ticks_and_scales():
    assert svg.nice_ticks(0, 100, 5) == [0, 20, 40, 60, 80, 100]
    assert svg.nice_ticks(-0.23, 0.31, 5) == pytest.approx([-0.2, 0.0, 0.2])  # step 0.2: at most 5
    assert svg.log_ticks(100, 1e6) == [100, 1e3, 1e4, 1e5, 1e6]
    chart = svg.Chart(300, 200, x_range=(0, 10), y_range=(1, 1000), y_log=True)
    assert chart.py(10) == pytest.approx((chart.py(1) + chart.py(100)) / 2)
    assert chart.px(0) == chart.left and chart.px(10) == 300 - chart.right
    chart.line([0, 5, float("nan"), 8, 10], [1, 10, 1, 100, 1000], "#000", "a & b")
    root = ET.fromstring(chart.svg("x < y"))
    assert len(root.findall(f"{SVG_NS}polyline")) == 2  # the NaN breaks the line
    assert "a & b" in "".join(t.text or "" for t in root.iter(f"{SVG_NS}text"))
