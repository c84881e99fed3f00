"""A quick run of the accuracy grid with one epoch per phase: output files and structure."""

import json

import numpy as np
import pytest

from weights import grid


@pytest.fixture(scope="module")
def grid_output(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid")
    status = grid.main(["--output", str(folder), "--study", "digits:mlp",
                        "--study", "digits:cnn", "--config", "1x1", "--config", "3x2",
                        "--seeds", "2", "--fp-epochs", "1", "--abc-epochs", "1"])
    return status, folder


def test_grid_exit_status(grid_output):
    status, _ = grid_output
    assert status == 0


def test_grid_writes_files(grid_output):
    _, folder = grid_output
    for suffix in ("json", "md", "png"):
        assert (folder / f"accuracy-grid.{suffix}").is_file()
    assert (folder / "accuracy-grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_grid_json_structure(grid_output):
    _, folder = grid_output
    result = json.loads((folder / "accuracy-grid.json").read_text())

    assert result["format"] == "abcnet-accuracy-grid"
    assert result["configurations"] == ["full precision", "M=1 N=1", "M=3 N=2"]
    assert result["settings"]["seeds"] == [0, 1]
    assert result["settings"]["full_precision_epochs"] == 1
    assert [(s["dataset"], s["architecture"]) for s in result["studies"]] == [
        ("digits", "mlp"), ("digits", "cnn")]
    for study in result["studies"]:
        assert study["test_samples"] == 360
        assert study["weight_bits_per_base"] > 0
        labels = [entry["configuration"] for entry in study["results"]]
        assert labels == result["configurations"]
        for entry in study["results"]:
            accuracies = entry["accuracies"]
            assert len(accuracies) == 2
            assert all(0.0 <= value <= 1.0 for value in accuracies)
            assert entry["mean"] == pytest.approx(np.mean(accuracies))
            assert entry["std"] == pytest.approx(np.std(accuracies, ddof=1))
            assert entry["min"] == min(accuracies)
            assert entry["max"] == max(accuracies)


def test_grid_bases_recorded(grid_output):
    _, folder = grid_output
    result = json.loads((folder / "accuracy-grid.json").read_text())

    entries = result["studies"][0]["results"]
    assert (entries[0]["weight_bases"], entries[0]["input_bases"]) == (None, None)
    assert (entries[2]["weight_bases"], entries[2]["input_bases"]) == (3, 2)


def test_grid_learns(grid_output):
    # One epoch of the MLP already classifies most digits; chance is 10 %.
    _, folder = grid_output
    result = json.loads((folder / "accuracy-grid.json").read_text())

    assert result["studies"][0]["results"][0]["mean"] > 0.5


def test_grid_markdown_table(grid_output):
    _, folder = grid_output
    text = (folder / "accuracy-grid.md").read_text()
    table = [line for line in text.splitlines() if line.startswith("|")]

    assert table[0] == "| configuration | digits mlp | digits cnn |"
    rows = {line.split("|")[1].strip(): line for line in table[2:5]}
    assert set(rows) == {"full precision", "M=1 N=1", "M=3 N=2"}
    assert all(line.count("±") == 2 for line in rows.values())


def test_grid_single_seed_has_no_spread():
    entry = grid._summary([0.9])

    assert entry["mean"] == 0.9
    assert entry["std"] is None
    assert grid._cell(entry) == "90.00"


@pytest.mark.parametrize("argument", [
    ["--study", "digits"],
    ["--study", "nosuchdata:mlp"],
    ["--study", "digits:resnet"],
    ["--config", "3"],
    ["--config", "0x1"],
    ["--seeds", "0"],
    ["--abc-epochs", "-1"],
    ["--abc-lr", "0"],
])
def test_grid_rejects_invalid_options(argument, capsys):
    with pytest.raises(SystemExit) as error:
        grid.main(argument)

    assert error.value.code == 2
    message = capsys.readouterr().err
    assert "invalid" in message or "must be" in message
