"""The abcnet command line: errors a user can act on, and the files it writes."""

import json

import numpy as np
import pytest

from gen.cli import build_parser, main
from model_factory import random_model
from weights.format import save_model


@pytest.fixture
def model_path(tmp_path):
    model = random_model(np.random.default_rng(0), input_shape=(16,), input_bits=3, layers=[
        dict(type="dense", out=8, m=2), dict(type="dense", out=4, m=2, n=2)], name="tiny")
    path = tmp_path / "tiny.npz"
    save_model(model, path)
    return path


def test_missing_model_file(tmp_path, capsys):
    missing = tmp_path / "absent.npz"
    assert main(["compile", str(missing)]) == 2
    error = capsys.readouterr().err
    assert f"{missing}: model file not found" in error


def test_malformed_model_file(tmp_path, capsys):
    broken = tmp_path / "broken.npz"
    broken.write_text("this is not an archive")
    assert main(["compile", str(broken)]) == 2
    error = capsys.readouterr().err
    assert str(broken) in error
    assert "not a zip archive" in error


def test_fold_syntax_error(model_path, capsys):
    assert main(["compile", str(model_path), "--fold", "layer0=4"]) == 2
    error = capsys.readouterr().err
    assert "--fold 'layer0=4': expected LAYER=PE,SIMD" in error


def test_fold_not_dividing_layer(model_path, capsys):
    assert main(["compile", str(model_path), "--fold", "layer0=3,5"]) == 2
    error = capsys.readouterr().err
    assert "layer layer0: pe=3 does not divide the 8 output channels" in error
    assert "simd=5 does not divide the 16 inputs" in error
    assert "--fold layer0=" in error


def test_help_names_units():
    text = build_parser()._subparsers._group_actions[0].choices["compile"].format_help()
    text = " ".join(text.split())
    assert "cycles per image" in text
    assert "width in bits" in text
    assert "PE output channels and SIMD input elements" in text


def test_compile_writes_verilog_and_reports(model_path, tmp_path, capsys):
    output = tmp_path / "out"
    assert main(["compile", str(model_path), "-o", str(output), "--fold", "layer0=2,4"]) == 0
    verilog = (output / "tiny.v").read_text()
    assert "module abcnet_tiny" in verilog
    report = json.loads((output / "tiny.report.json").read_text())
    assert report["layers"][0]["pe"] == 2
    assert report["layers"][0]["simd"] == 4
    assert report["cycles_per_image"] == max(l["cycles_per_vector"] for l in report["layers"])
    assert "| layer0 | dense | 16 | 8 |" in (output / "tiny.report.md").read_text()
    assert not [p for p in output.iterdir() if p.name.startswith(".tmp-")]
