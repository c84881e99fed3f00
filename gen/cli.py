"""The ``abcnet`` command line: compile an exported model to Verilog and report on it."""

import argparse
import logging
import os
import re
import sys

from weights.format import ModelFormatError, load_model

from .compile import (DEFAULT_COEFFICIENT_BITS, DEFAULT_TARGET_CYCLES, CompileError,
                      compile_model)
from .files import write_atomic
from .report import build_report, report_json, report_markdown

__all__ = ["main"]

logger = logging.getLogger("abcnet")

_FOLD_PATTERN = re.compile(r"([A-Za-z0-9_]+)=(\d+),(\d+)")


class UsageError(Exception):
    """A command-line option with an invalid value."""


def parse_fold(text):
    """Parse ``LAYER=PE,SIMD`` into (layer, (pe, simd))."""
    match = _FOLD_PATTERN.fullmatch(text)
    if not match:
        raise UsageError(f"--fold {text!r}: expected LAYER=PE,SIMD with positive integers, "
                         f"for example --fold fc1=4,16")
    pe, simd = int(match.group(2)), int(match.group(3))
    if pe < 1 or simd < 1:
        raise UsageError(f"--fold {text!r}: PE and SIMD must be at least 1")
    return match.group(1), (pe, simd)


def add_compile_options(parser):
    parser.add_argument("model", help="exported model file (.npz, see docs/model-format.md)")
    parser.add_argument("--fold", action="append", default=[], metavar="LAYER=PE,SIMD",
                        help="folding of one layer: PE output channels and SIMD input elements "
                             "processed per cycle; both must divide the layer (repeatable)")
    parser.add_argument("--target-cycles", type=int, default=DEFAULT_TARGET_CYCLES,
                        metavar="CYCLES",
                        help="for layers without --fold, the cheapest folding whose engine "
                             "cycles per image (cycles per input vector times output "
                             f"positions) are at most CYCLES (default {DEFAULT_TARGET_CYCLES})")
    parser.add_argument("--coef-bits", type=int, default=DEFAULT_COEFFICIENT_BITS, metavar="BITS",
                        help="width in bits of the signed fixed-point coefficients that replace "
                             f"alpha·beta (default {DEFAULT_COEFFICIENT_BITS})")


def load_and_compile(args):
    folding = dict(parse_fold(text) for text in args.fold)
    model = load_model(args.model)
    return model, compile_model(model, folding=folding, target_cycles=args.target_cycles,
                                coefficient_bits=args.coef_bits)


def command_compile(args):
    model, net = load_and_compile(args)
    # Imported here so that option and model errors do not wait for Amaranth to load.
    from .verilog import convert

    report = build_report(net, model_path=args.model)
    base = os.path.join(args.output, net.name)
    logger.info("elaborating %s (%d layers)", net.name, len(net.layers))
    text = convert(net)
    write_atomic(base + ".v", text)
    write_atomic(base + ".report.json", report_json(report))
    write_atomic(base + ".report.md", report_markdown(report))
    print(report_markdown(report), end="")
    print(f"wrote {base}.v, {base}.report.json and {base}.report.md")
    return 0


def command_evaluate(args):
    import numpy as np

    from sim.integer import network_forward
    from sim.reference import forward_float
    from weights.data import load_dataset

    model, net = load_and_compile(args)
    dataset = args.dataset or model.training.get("dataset")
    if not dataset:
        raise UsageError(f"{args.model}: the model does not record its data set; pass --dataset")
    try:
        data = load_dataset(dataset)
    except KeyError as error:
        raise UsageError(f"--dataset: {error.args[0]}") from None
    pixels = data.test_pixels.reshape((-1,) + tuple(model.input.shape))
    labels = data.test_labels
    reference = forward_float(model, pixels)
    integer = network_forward(net, pixels)
    float_accuracy = float(np.mean(reference.labels == labels))
    integer_accuracy = float(np.mean(integer.labels == labels))
    print(f"{model.name} on the {dataset} test split ({len(labels)} images)")
    print(f"  float model accuracy:   {100 * float_accuracy:.2f} %")
    print(f"  integer model accuracy: {100 * integer_accuracy:.2f} %")
    print(f"  predictions that agree: {100 * np.mean(reference.labels == integer.labels):.2f} %")
    for params, ours, theirs in zip(net.layers, integer.activations, reference.activations):
        planes = (ours[..., None] >> np.arange(params.out_bits)) & 1
        expected = (theirs[..., None] >> np.arange(params.out_bits)) & 1
        print(f"  {params.name}: activation bits that agree {100 * np.mean(planes == expected):.3f} %")
    return 0


def build_parser():
    parser = argparse.ArgumentParser(
        prog="abcnet",
        description="Compile trained ABC-Net models to XNOR-popcount accelerators in Verilog.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log the compiler's decisions")
    commands = parser.add_subparsers(dest="command", required=True)

    compile_parser = commands.add_parser(
        "compile", help="write the Verilog of a model and its report (JSON and Markdown)")
    add_compile_options(compile_parser)
    compile_parser.add_argument("-o", "--output", default="build", metavar="DIR",
                                help="folder for MODEL_NAME.v and its reports (default: build)")
    compile_parser.set_defaults(handler=command_compile)

    evaluate_parser = commands.add_parser(
        "evaluate", help="test accuracy of the float and the integer model on the test split")
    add_compile_options(evaluate_parser)
    evaluate_parser.add_argument("--dataset", help="data set name (default: the one the model "
                                                   "records)")
    evaluate_parser.set_defaults(handler=command_evaluate)

    # Board builds and the UART host client, in their own modules.
    from .synth import add_synth_commands
    add_synth_commands(commands)
    from .host import add_host_commands
    add_host_commands(commands)
    from .bench import add_bench_command
    add_bench_command(commands)
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    try:
        return args.handler(args)
    except (ModelFormatError, CompileError, UsageError) as error:
        print(f"abcnet: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
