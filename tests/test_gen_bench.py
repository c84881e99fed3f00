"""``abcnet bench`` on tiny random models, with synthesis and the HDL simulators off.

These tests check that the page, the JSON record and the plots are written with every
section and figure; they assert no speeds.
"""

import json

import numpy as np
import pytest
from model_factory import random_model

from gen.bench import binary_macs
from gen.cli import main
from gen.compile import compile_model
from weights.format import save_model

DENSE_LAYERS = [
    {"type": "dense", "out": 8, "m": 2},
    {"type": "dense", "out": 4, "m": 1, "n": 2},
]
CONV_LAYERS = [
    {"type": "conv2d", "out": 4, "m": 2, "kernel": (3, 3), "stride": (1, 1),
     "padding": (1, 1), "pool": ((2, 2), (2, 2))},
    {"type": "dense", "out": 5, "m": 1, "n": 2},
]
SECTIONS = ["# Benchmarks", "## Run", "## Cycles and images per second", "## FPGA resources",
            "## Binary multiply-accumulates", "## Pipeline balance", "## Golden models",
            "## Simulators", "## Not measured in this run"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def dense_model():
    return random_model(np.random.default_rng(5), input_shape=(16,), input_bits=3,
                        layers=DENSE_LAYERS, name="tiny-mlp")


def conv_model():
    return random_model(np.random.default_rng(6), input_shape=(2, 6, 6), input_bits=2,
                        layers=CONV_LAYERS, name="tiny-cnn")


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    """One bench run over both tiny models; returns (exit status, page, record, folder)."""
    folder = tmp_path_factory.mktemp("bench")
    paths = []
    for model in (dense_model(), conv_model()):
        path = folder / f"{model.name}.npz"
        save_model(model, path)
        paths.append(str(path))
    page = folder / "BENCHMARKS.md"
    status = main(["bench", *paths, "--no-synth", "--simulators", "amaranth",
                   "--sim-images", "3", "--cycle-images", "3", "--golden-seconds", "0.01",
                   "--target-cycles", "16", "--page", str(page),
                   "--data-dir", str(folder / "data"), "--build-dir", str(folder / "build")])
    record = json.loads((folder / "data" / "results.json").read_text())
    return status, page.read_text(), record, folder


def test_bench_exits_zero(bench_run):
    status, _, _, _ = bench_run
    assert status == 0


def test_page_has_every_section(bench_run):
    _, page, _, _ = bench_run
    headings = [line for line in page.splitlines() if line.startswith("#")]
    for section in SECTIONS:
        assert section in headings
    assert "### tiny-mlp on icebreaker" in headings
    assert "### tiny-cnn on ulx3s-85f" in headings


def test_page_names_command_and_machine(bench_run):
    _, page, record, _ = bench_run
    assert f"- command: `{record['command']}`" in page
    assert "every raw number in `data/results.json`" in page
    assert record["command"].startswith("abcnet bench ")
    assert "--no-synth" in record["command"]
    assert f"{record['machine']['cpu']}, {record['machine']['cores']} cores" in page
    assert record["date"][:10] in page


def test_page_links_existing_plots(bench_run):
    _, page, record, folder = bench_run
    for entry in record["pairs"]:
        name = f"balance-{entry['model']}-{entry['board']}.png"
        assert f"](data/{name})" in page
        assert (folder / "data" / name).read_bytes().startswith(PNG_SIGNATURE)


def test_no_temporary_files_left(bench_run):
    _, _, _, folder = bench_run
    leftovers = [path.name for path in folder.rglob(".tmp-*")]
    assert leftovers == []


def test_boards_follow_model_kind(bench_run):
    _, _, record, _ = bench_run
    pairs = {(entry["model"], entry["board"]) for entry in record["pairs"]}
    assert pairs == {("tiny-mlp", "icebreaker"), ("tiny-cnn", "ulx3s-85f")}


def test_measured_cycles_match_cycle_model(bench_run):
    _, _, record, _ = bench_run
    for entry in record["pairs"]:
        measured = entry["measured"]
        assert measured["images"] == 3
        assert measured["matches_schedule"], entry["model"]
        assert measured["labels_match_golden_model"], entry["model"]
        assert measured["latency"] == entry["model_latency"]


def test_cnn_input_streams_positions(bench_run):
    _, _, record, _ = bench_run
    (cnn,) = [entry for entry in record["pairs"] if entry["model"] == "tiny-cnn"]
    assert cnn["measured"]["input_transfers_per_image"] == 36
    assert cnn["cocotb_checks"] == []


def test_record_mac_counts(bench_run):
    _, _, record, _ = bench_run
    macs = {entry["model"]: entry["macs_per_image"] for entry in record["pairs"]}
    # conv: M·N·K·O·positions = 2·2·(2·3·3)·4·36; dense: 1·2·36·5.
    assert macs["tiny-cnn"] == 2 * 2 * 18 * 4 * 36 + 1 * 2 * 36 * 5
    # dense: 2·3·16·8 + 1·2·8·4.
    assert macs["tiny-mlp"] == 2 * 3 * 16 * 8 + 1 * 2 * 8 * 4
    for entry in record["pairs"]:
        assert entry["macs_per_cycle"] == pytest.approx(
            entry["macs_per_image"] / entry["model_cycles_per_image"])
        assert "macs_per_cycle_per_lut" not in entry


def test_record_golden_runs(bench_run):
    _, _, record, _ = bench_run
    assert [golden["model"] for golden in record["golden"]] == ["tiny-mlp", "tiny-cnn"]
    for golden in record["golden"]:
        assert "random images" in golden["source"]
        runs = {(run["model_kind"], run["batch"]) for run in golden["runs"]}
        assert runs == {("integer", 256), ("integer", 1), ("float", 256), ("float", 1)}
        for run in golden["runs"]:
            assert run["images_per_second"] > 0


def test_record_simulator_runs(bench_run):
    _, page, record, _ = bench_run
    assert record["simulator_model"] == "tiny-mlp"
    assert [run["simulator"] for run in record["simulators"]] == ["amaranth"]
    assert record["simulators"][0]["images"] == 3
    assert "| amaranth | amaranth.sim.Simulator (Python) | 3 |" in page
    (mlp,) = [entry for entry in record["pairs"] if entry["model"] == "tiny-mlp"]
    assert record["simulators"][0]["cycles_per_image"] == mlp["model_cycles_per_image"]


def test_record_lists_skipped_synthesis(bench_run):
    _, page, record, _ = bench_run
    assert "synthesis: switched off with --no-synth" in record["skipped"]
    assert "Not measured: synthesis was switched off" in page
    assert "cocotb timing test" in page


def test_binary_macs_per_layer():
    net = compile_model(conv_model(), target_cycles=16)
    conv, dense = binary_macs(net)
    assert (conv["m"], conv["n"], conv["k"], conv["o"], conv["positions"]) == (2, 2, 18, 4, 36)
    assert conv["lanes"] == net.layers[0].pe * net.layers[0].simd * 2 * 2
    assert (dense["m"], dense["n"], dense["k"], dense["o"], dense["positions"]) == (1, 2, 36, 5, 1)


def test_unknown_simulator_rejected(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--simulators", "verilator,modelsim"])
    assert exit_info.value.code == 2
    assert "unknown simulator 'modelsim'" in capsys.readouterr().err


def test_unknown_board_rejected(tmp_path, capsys):
    path = tmp_path / "tiny.npz"
    save_model(dense_model(), path)
    status = main(["bench", str(path), "--board", "de10-nano", "--no-synth",
                   "--simulators", "none", "--page", str(tmp_path / "B.md"),
                   "--data-dir", str(tmp_path / "data")])
    assert status == 2
    assert "--board 'de10-nano': unknown board" in capsys.readouterr().err
    assert not (tmp_path / "B.md").exists()
