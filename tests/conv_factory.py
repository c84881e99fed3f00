"""Random convolution layers and stream drivers for the convolution hardware tests."""

import dataclasses
import gc
import warnings

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable
from hypothesis import strategies as st

from amaranth_streams import Harness, get_stream, pack_elements, put_stream, run_simulation
from gen.params import NetworkParams
from layer_factory import random_layer
from sim import integer

__all__ = ["geometries", "random_conv_layer", "random_conv_network", "position_payloads",
           "stream_through", "model_transfers", "output_size", "assert_rejected"]


def output_size(size, kernel, stride, padding=0):
    """Floor-mode output length along one axis."""
    return (size + 2 * padding - kernel) // stride + 1


@st.composite
def geometries(draw, *, max_kernel=7, max_stride=3, max_extra=6, padding=True):
    """A window geometry: kernel (1..max_kernel), stride, padding < kernel, and an image
    from the smallest size the kernel fits up to ``max_extra`` more rows and columns."""
    kernel = (draw(st.integers(1, max_kernel)), draw(st.integers(1, max_kernel)))
    stride = (draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride)))
    if padding:
        pad = (draw(st.integers(0, kernel[0] - 1)), draw(st.integers(0, kernel[1] - 1)))
    else:
        pad = (0, 0)
    smallest = [max(1, kernel[axis] - 2 * pad[axis]) for axis in (0, 1)]
    height = draw(st.integers(smallest[0], smallest[0] + max_extra))
    width = draw(st.integers(smallest[1], smallest[1] + max_extra))
    return dict(height=height, width=width, kernel=kernel, stride=stride, padding=pad)


def random_conv_layer(rng, *, feature_maps, in_bits, kernel, stride, padding, out_channels,
                      m_bases, out_bits, pe, simd, pool=None, name="conv"):
    """A "conv2d" LayerParams with random weights, whose thresholds are placed on y values
    that the windows of ``feature_maps`` (batch, H, W, C) reach, so ties occur."""
    _, height, width, channels = feature_maps.shape
    windows = integer.im2col(feature_maps, kernel, stride, padding)
    fan_in = kernel[0] * kernel[1] * channels
    layer = random_layer(rng, in_features=fan_in, out_features=out_channels, in_bits=in_bits,
                         m_bases=m_bases, out_bits=out_bits, pe=pe, simd=simd,
                         inputs=windows.reshape(-1, fan_in), name=name)
    out_height, out_width = windows.shape[1:3]
    if pool is not None:
        out_height = output_size(out_height, pool[0][0], pool[1][0])
        out_width = output_size(out_width, pool[0][1], pool[1][1])
    return dataclasses.replace(
        layer, type="conv2d", in_shape=(channels, height, width), kernel=tuple(kernel),
        stride=tuple(stride), padding=tuple(padding), pool=pool,
        out_shape=(out_channels, out_height, out_width))


def random_conv_network(rng, *, pixels, input_bits, layers, name="random_conv"):
    """A network of convolutions then dense layers, described by dicts.

    ``pixels`` is (batch, C, H, W). Every layer has ``out``, ``m``, ``pe`` and ``simd``;
    every layer but the last has ``out_bits``; a convolution adds ``kernel``, ``stride``,
    ``padding`` and optionally ``pool``. The last layer is dense and outputs scores. Each
    layer's thresholds are placed on y values that ``pixels`` reach through the layers
    before it.
    """
    built = []
    values = pixels.transpose(0, 2, 3, 1)
    bits = input_bits
    for index, spec in enumerate(layers):
        last = index == len(layers) - 1
        common = dict(out_bits=None if last else spec["out_bits"], m_bases=spec["m"],
                      pe=spec["pe"], simd=spec["simd"], in_bits=bits)
        if "kernel" in spec:
            layer = random_conv_layer(
                rng, feature_maps=values, kernel=spec["kernel"], stride=spec["stride"],
                padding=spec["padding"], pool=spec.get("pool"), out_channels=spec["out"],
                name=f"conv{index}", **common)
            values = integer.conv_forward(layer, values)
        else:
            flat = values.reshape(len(values), -1)
            layer = random_layer(rng, in_features=flat.shape[1], out_features=spec["out"],
                                 inputs=flat, name=f"dense{index}", **common)
            if not last:
                values = integer.layer_forward(layer, flat)
        built.append(layer)
        bits = spec.get("out_bits")
    return NetworkParams(name=name, input_shape=tuple(pixels.shape[1:]), input_bits=input_bits,
                         classes=layers[-1]["out"], layers=tuple(built), coefficient_bits=8)


def position_payloads(feature_maps, bits):
    """Payloads of a (batch, H, W, C) array, one position per transfer, row-major."""
    batch, height, width, channels = feature_maps.shape
    flat = feature_maps.reshape(-1, channels)
    return [pack_elements(row, bits) for row in flat]


def stream_through(dut, payloads, count, *, seed=None, idle=0.0, busy=0.0, timeout=50_000):
    """Send ``payloads`` into ``dut.input`` and receive ``count`` payloads from
    ``dut.output``; with a seed, ``valid`` and ``ready`` have random gaps.

    Returns (sent cycles, [(payload, cycle), ...]).
    """
    harness = Harness(dut)
    source_rng = None if seed is None else np.random.default_rng([seed, 0])
    sink_rng = None if seed is None else np.random.default_rng([seed, 1])
    result = {}

    async def source(ctx):
        result["sent"] = await put_stream(ctx, dut.input, payloads, cycle=harness.cycle,
                                          rng=source_rng, idle=idle)

    async def sink(ctx):
        result["received"] = await get_stream(ctx, dut.output, count, cycle=harness.cycle,
                                              rng=sink_rng, busy=busy, timeout=timeout)

    run_simulation(harness, [source, sink])
    return result["sent"], result["received"]


def model_transfers(models, inputs, outputs, *, limit=200_000):
    """Step a chain of ``sim.handshake`` models (or one model) with ``inputs``
    always-valid input transfers and an always-ready output until ``outputs`` outputs
    transferred and every input transferred, since positions that no output needs (floor
    mode) may follow the last output.

    Returns (input transfer cycles, output transfer cycles), counting from cycle 0.
    """
    if not isinstance(models, (list, tuple)):
        models = [models]
    count = len(models)
    accepted, emitted = [], []
    for cycle in range(limit):
        if len(emitted) == outputs and len(accepted) == inputs:
            return accepted, emitted
        out_ready = [True] * count
        ready = [False] * count
        for index in reversed(range(count)):
            ready[index] = models[index].ready(out_ready[index])
            if index:
                out_ready[index - 1] = ready[index]
        accept = [len(accepted) < inputs and ready[0]]
        accept += [models[index - 1].valid and ready[index] for index in range(1, count)]
        if models[-1].valid:
            emitted.append(cycle)
        if accept[0]:
            accepted.append(cycle)
        for index, model in enumerate(models):
            model.step(accept[index], out_ready[index])
    raise TimeoutError(f"the model emitted {len(emitted)} of {outputs} outputs in {limit} "
                       f"cycles")


def assert_rejected(build, match):
    """Check that ``build()`` raises ValueError matching ``match``. The half-built
    component's warning about never being elaborated is expected and silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=match):
            build()
        gc.collect()
