"""The accelerator behind its UART under cocotb, driven bit by bit on the serial line,
with every result compared with the golden model. The converted Verilog and the iCE40
gate-level netlist both run under Verilator."""

import sys
from pathlib import Path

import numpy as np
import pytest

from gen.compile import compile_model
from gen.synth import BOARDS, board_compile_options
from model_factory import random_model
from sim.testbench.uart_runner import run_uart_cocotb, run_uart_ice40_netlist
from weights.data import load_dataset
from weights.format import load_model

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "weights" / "models" / "digits-mlp.npz"

# Few clock cycles per bit keep the simulations short.
DIVISOR = 8
# For the netlist: a 65-byte request then takes 10400 cycles, more than the 8192 cycles
# per image of the iCEBreaker preset, so requests can be pipelined.
GATE_LEVEL_DIVISOR = 16


def shipped_net_for(board):
    """The shipped model compiled as ``abcnet synth --board`` compiles it."""
    model = load_model(SHIPPED_MODEL)
    folding, bits = board_compile_options(BOARDS[board], model.name, {}, None)
    return compile_model(model, folding=folding, coefficient_bits=bits)


def digits_test_images(count):
    data = load_dataset("digits")
    return data.test_pixels[:count].reshape(count, -1).astype(np.int64)


def report(run):
    print(f"{run.simulator}: build {run.build_seconds:.1f} s, tests {run.test_seconds:.1f} s: "
          + ", ".join(f"{test.name} {test.outcome}" for test in run.tests))


def test_uart_random_model(tmp_path):
    """A small random network: info, pipelined classify requests, error recovery."""
    rng = np.random.default_rng(31)
    model = random_model(rng, input_shape=(24,), input_bits=4, layers=[
        dict(type="dense", out=12, m=2), dict(type="dense", out=5, m=3, n=2)], name="small")
    net = compile_model(model, target_cycles=16)
    images = rng.integers(0, 16, (6, 24))
    run = run_uart_cocotb(net, images, tmp_path, divisor=DIVISOR, timeout_cycles=1500)
    report(run)
    assert [test.outcome for test in run.tests] == ["passed"] * 3


@pytest.mark.slow
def test_uart_digits_mlp_with_host_client(tmp_path):
    """The shipped MLP with the iCEBreaker preset on 8 digits test images. Then the host
    client, a separate process, sends the first 3 again through a pseudo terminal."""
    net = shipped_net_for("icebreaker")
    host = [sys.executable, "-m", "gen.cli", "uart-client", str(SHIPPED_MODEL), "--board",
            "icebreaker", "--port", "{port}", "--count", "3", "--json", "--timeout", "120"]
    run = run_uart_cocotb(net, digits_test_images(8), tmp_path, divisor=DIVISOR,
                          timeout_cycles=4000, host_command=host)
    report(run)
    assert [test.name for test in run.tests if test.outcome == "passed"] == [
        "info_response", "classify_images", "errors_and_recovery", "host_client_over_pty"]


@pytest.mark.slow
def test_ice40_netlist_digits_mlp(tmp_path):
    """Yosys's synth_ice40 netlist of the UART accelerator of the shipped MLP with the
    iCEBreaker preset, simulated with Yosys's iCE40 cell models on 20 digits test images."""
    net = shipped_net_for("icebreaker")
    run = run_uart_ice40_netlist(net, digits_test_images(20), tmp_path,
                                 divisor=GATE_LEVEL_DIVISOR, timeout_cycles=4000)
    report(run)
    assert [test.outcome for test in run.tests] == ["passed"] * 2
