import dataclasses
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amaranth_streams import unpack_elements
from conv_factory import (assert_rejected, geometries, model_transfers, output_size,
                          position_payloads, random_conv_layer, random_conv_network,
                          stream_through)
from gen.compile import compile_model
from hw.conv import ConvolutionStage, Flatten
from hw.network import Accelerator
from layer_factory import random_inputs, random_network
from model_factory import random_model
from sim import cycles, integer
from sim.handshake import EngineModel, FlattenModel, PoolModel, WindowModel

IMAGES = 2


def divisors(value):
    return [d for d in range(1, value + 1) if value % d == 0]


@st.composite
def conv_layers(draw):
    """Arguments of ``random_conv_layer``: geometry, widths, bases, folding and pool."""
    geometry = draw(geometries(max_kernel=4, max_stride=3, max_extra=4))
    channels = draw(st.integers(1, 3))
    out_channels = draw(st.integers(1, 4))
    fan_in = geometry["kernel"][0] * geometry["kernel"][1] * channels
    conv_height = output_size(geometry["height"], geometry["kernel"][0], geometry["stride"][0],
                              geometry["padding"][0])
    conv_width = output_size(geometry["width"], geometry["kernel"][1], geometry["stride"][1],
                             geometry["padding"][1])
    pool = None
    if draw(st.booleans()):
        kernel = (draw(st.integers(1, min(3, conv_height))),
                  draw(st.integers(1, min(3, conv_width))))
        pool = (kernel, (draw(st.integers(1, 3)), draw(st.integers(1, 3))))
    return dict(
        channels=channels, height=geometry["height"], width=geometry["width"],
        kernel=geometry["kernel"], stride=geometry["stride"], padding=geometry["padding"],
        in_bits=draw(st.integers(1, 3)), out_channels=out_channels,
        m_bases=draw(st.integers(1, 3)), out_bits=draw(st.integers(1, 3)),
        pe=draw(st.sampled_from(divisors(out_channels))),
        simd=draw(st.sampled_from(divisors(fan_in))), pool=pool)


def build_conv(spec, seed):
    """A random conv layer from ``spec`` and IMAGES feature maps (batch, H, W, C) for it."""
    rng = np.random.default_rng(seed)
    spec = dict(spec)
    shape = (IMAGES, spec.pop("height"), spec.pop("width"), spec.pop("channels"))
    maps = rng.integers(0, 1 << spec["in_bits"], shape)
    return random_conv_layer(rng, feature_maps=maps, **spec), maps


def stage_models(layer):
    """The ``sim.handshake`` models of a convolution stage, in stream order."""
    _, height, width = layer.in_shape
    window = WindowModel(height=height, width=width, kernel=layer.kernel, stride=layer.stride,
                         padding=layer.padding)
    models = [window, EngineModel(synapse_fold=layer.synapse_fold,
                                  neuron_fold=layer.neuron_fold)]
    if layer.pool is not None:
        models.append(PoolModel(height=window.out_height, width=window.out_width,
                                kernel=layer.pool[0], stride=layer.pool[1]))
    return models


def check_conv_stage(layer, maps, seed):
    """Stream ``maps`` through a convolution stage, without and with stalls.

    The output must equal ``sim.integer.conv_forward`` in both of its orders (pool the
    thresholded bits, the hardware's order, and threshold the pooled y, the model's), and
    without stalls every transfer cycle must equal the ``sim.handshake`` models' chain.
    """
    hardware_order = integer.conv_forward(layer, maps)
    model_order = integer.conv_forward(layer, maps, pool_first=True)
    np.testing.assert_array_equal(hardware_order, model_order, err_msg=f"seed {seed}")
    expected = hardware_order.reshape(-1, layer.out_features)
    payloads = position_payloads(maps, layer.in_bits)

    def outputs(received):
        return np.array([unpack_elements(payload, layer.out_features, layer.out_bits)
                         for payload, _ in received])

    sent, received = stream_through(ConvolutionStage(params=layer), payloads, len(expected))
    np.testing.assert_array_equal(outputs(received), expected, err_msg=f"seed {seed}")
    np.testing.assert_array_equal(outputs(received), model_order.reshape(expected.shape),
                                  err_msg=f"model order, seed {seed}")
    model_sent, model_received = model_transfers(stage_models(layer), len(payloads),
                                                 len(expected))
    assert sent == model_sent, f"input transfer cycles, seed {seed}"
    assert [at for _, at in received] == model_received, f"output transfer cycles, seed {seed}"

    _, received = stream_through(ConvolutionStage(params=layer), payloads, len(expected),
                                 seed=seed, idle=0.3, busy=0.5)
    np.testing.assert_array_equal(outputs(received), expected, err_msg=f"stalls, seed {seed}")


# --- convolution stages --------------------------------------------------------------------

@settings(max_examples=25, deadline=None, derandomize=True)
@given(spec=conv_layers(), seed=st.integers(0, 2**32 - 1))
def test_conv_stage_random_layer(spec, seed):
    layer, maps = build_conv(spec, seed)
    check_conv_stage(layer, maps, seed)


@pytest.mark.parametrize("spec", [
    # 3×3 convolution with padding, then an overlapping 3×3 pool of stride 2.
    dict(channels=2, height=7, width=7, kernel=(3, 3), stride=(1, 1), padding=(1, 1),
         in_bits=2, out_channels=4, m_bases=2, out_bits=2, pe=2, simd=6,
         pool=((3, 3), (2, 2))),
    # Stride larger than the kernel on a 1×L map; the pool's stride exceeds its kernel.
    dict(channels=1, height=1, width=13, kernel=(1, 2), stride=(1, 3), padding=(0, 1),
         in_bits=3, out_channels=3, m_bases=3, out_bits=1, pe=3, simd=2,
         pool=((1, 1), (1, 2))),
    # 7×7 kernel, padding 3, PE = 1 and SIMD = 1: the engine is the bottleneck.
    dict(channels=1, height=5, width=6, kernel=(7, 7), stride=(2, 2), padding=(3, 3),
         in_bits=1, out_channels=2, m_bases=1, out_bits=3, pe=1, simd=1, pool=None),
], ids=["pad_overlapping_pool", "1xL_stride_gt_kernel", "k7_slow_engine"])
def test_conv_stage_edge_cases(spec):
    seed = zlib.crc32(repr(spec).encode())
    layer, maps = build_conv(spec, seed)
    check_conv_stage(layer, maps, seed)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(spec=conv_layers(), seed=st.integers(0, 2**32 - 1))
def test_integer_pool_orders_agree(spec, seed):
    """``sim.integer``: pooling the thresholded bits equals thresholding the pooled y."""
    layer, maps = build_conv(spec, seed)
    if layer.pool is None:
        # Pool 2 positions along an axis where the convolution output has 2 or more.
        _, height, width = layer.out_shape
        if height > 1:
            layer = dataclasses.replace(layer, pool=((2, 1), (1, 1)))
        elif width > 1:
            layer = dataclasses.replace(layer, pool=((1, 2), (1, 1)))
    np.testing.assert_array_equal(integer.conv_forward(layer, maps),
                                  integer.conv_forward(layer, maps, pool_first=True),
                                  err_msg=f"seed {seed}")


def test_conv_stage_rejects_scores_layer():
    layer, _ = build_conv(dict(channels=1, height=4, width=4, kernel=(3, 3), stride=(1, 1),
                               padding=(0, 0), in_bits=1, out_channels=2, m_bases=1,
                               out_bits=1, pe=1, simd=9, pool=None), seed=1)
    scores = dataclasses.replace(layer, output="scores", out_bits=None, thresholds=None,
                                 polarity=None, score_offset=np.zeros(2, dtype=np.int64))
    assert_rejected(lambda: ConvolutionStage(params=scores),
                    r"layer conv: a convolution must output bases")


def test_conv_stage_rejects_mismatched_fan_in():
    layer, _ = build_conv(dict(channels=2, height=4, width=4, kernel=(3, 3), stride=(1, 1),
                               padding=(0, 0), in_bits=1, out_channels=2, m_bases=1,
                               out_bits=1, pe=1, simd=9, pool=None), seed=2)
    wrong = dataclasses.replace(layer, in_shape=(3, 4, 4))
    assert_rejected(lambda: ConvolutionStage(params=wrong),
                    r"in_features \(18\) must equal kernel rows × kernel columns × input "
                    r"channels \(3·3·3 = 27\)")


def test_conv_stage_rejects_mismatched_out_shape():
    layer, _ = build_conv(dict(channels=1, height=5, width=5, kernel=(3, 3), stride=(1, 1),
                               padding=(1, 1), in_bits=1, out_channels=2, m_bases=1,
                               out_bits=1, pe=1, simd=9, pool=((2, 2), (2, 2))), seed=3)
    wrong = dataclasses.replace(layer, out_shape=(2, 3, 3))
    assert_rejected(lambda: ConvolutionStage(params=wrong),
                    r"out_shape \(2, 3, 3\) does not match the geometry, which gives "
                    r"\(2, 2, 2\)")


# --- flatten -------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(3, 2, 5), (1, 1, 1), (2, 1, 7)], ids=str)
def test_flatten_row_column_channel_order(shape):
    channels, height, width = shape
    bits = 2
    seed = zlib.crc32(repr(shape).encode())
    maps = np.random.default_rng(seed).integers(0, 1 << bits, (3, height, width, channels))
    expected = maps.reshape(len(maps), -1)           # (row, column, channel) order
    payloads = position_payloads(maps, bits)
    elements = height * width * channels

    def vectors(received):
        return np.array([unpack_elements(payload, elements, bits) for payload, _ in received])

    dut = Flatten(channels=channels, element_bits=bits, height=height, width=width)
    sent, received = stream_through(dut, payloads, len(maps))
    np.testing.assert_array_equal(vectors(received), expected)
    model_sent, model_received = model_transfers(FlattenModel(positions=height * width),
                                                 len(payloads), len(maps))
    assert sent == model_sent
    assert [at for _, at in received] == model_received

    dut = Flatten(channels=channels, element_bits=bits, height=height, width=width)
    _, received = stream_through(dut, payloads, len(maps), seed=seed, idle=0.3, busy=0.6)
    np.testing.assert_array_equal(vectors(received), expected, err_msg=f"seed {seed}")


# --- whole networks: results and the cycle model -------------------------------------------

NETWORKS = {
    # conv → pool → conv → dense, the first convolution is the bottleneck (II 9 per window).
    "slow_first_conv": dict(shape=(1, 8, 8), input_bits=2, layers=[
        dict(out=4, m=2, out_bits=2, pe=4, simd=1, kernel=(3, 3), stride=(1, 1),
             padding=(1, 1), pool=((2, 2), (2, 2))),
        dict(out=4, m=2, out_bits=1, pe=2, simd=12, kernel=(3, 3), stride=(1, 1),
             padding=(0, 0)),
        dict(out=5, m=2, pe=5, simd=4),
    ]),
    # Strided convolution on an odd map, an overlapping pool, and a slow dense layer.
    "slow_dense": dict(shape=(2, 7, 9), input_bits=3, layers=[
        dict(out=3, m=1, out_bits=2, pe=3, simd=12, kernel=(3, 2), stride=(2, 1),
             padding=(1, 1), pool=((3, 3), (2, 2))),
        dict(out=2, m=2, out_bits=2, pe=1, simd=3, kernel=(1, 1), stride=(1, 1),
             padding=(0, 0)),
        dict(out=4, m=1, pe=1, simd=1),
    ]),
    # A 1×L input with II 1 everywhere, so the input rate sets the pace; the second
    # convolution's stride exceeds its kernel.
    "input_bound_1xL": dict(shape=(2, 1, 15), input_bits=1, layers=[
        dict(out=2, m=1, out_bits=1, pe=2, simd=6, kernel=(1, 3), stride=(1, 1),
             padding=(0, 1), pool=((1, 2), (1, 2))),
        dict(out=3, m=1, out_bits=2, pe=3, simd=2, kernel=(1, 1), stride=(1, 3),
             padding=(0, 0)),
        dict(out=3, m=2, pe=3, simd=9),
    ]),
}
RUN_IMAGES = 4


def make_network(name):
    config = NETWORKS[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    pixels = rng.integers(0, 1 << config["input_bits"], (RUN_IMAGES,) + config["shape"])
    net = random_conv_network(rng, pixels=pixels, input_bits=config["input_bits"],
                              layers=config["layers"], name=name)
    return net, pixels


def compiled_network():
    """conv → pool → conv → dense compiled from an exported model by ``gen.compile``."""
    rng = np.random.default_rng(zlib.crc32(b"compiled"))
    model = random_model(rng, input_shape=(2, 6, 7), input_bits=2, layers=[
        dict(type="conv2d", out=4, m=2, kernel=(3, 3), stride=(1, 1), padding=(1, 1),
             pool=((2, 2), (2, 2))),
        dict(type="conv2d", out=2, m=1, n=2, kernel=(2, 2), stride=(1, 1), padding=(0, 0)),
        dict(type="dense", out=3, m=2, n=1),
    ], name="compiled")
    net = compile_model(model, target_cycles=6)
    pixels = rng.integers(0, 4, (RUN_IMAGES, 2, 6, 7))
    return net, pixels


def run_network(net, pixels, *, seed=None, idle=0.0, busy=0.0):
    """Stream ``pixels`` (batch, C, H, W) through the accelerator, one position per
    transfer. Returns (input transfer cycles, [(payload, cycle), ...])."""
    payloads = position_payloads(pixels.transpose(0, 2, 3, 1), net.input_bits)
    return stream_through(Accelerator(net), payloads, len(pixels), seed=seed, idle=idle,
                          busy=busy, timeout=200_000)


def check_network(net, pixels, seed):
    """Results equal ``sim.integer``; transfer cycles equal ``sim.cycles``, and the
    hardware's first-image latency and steady-state interval equal ``network_timing``."""
    expected = integer.network_forward(net, pixels)

    def check_results(received, label):
        scores = np.array([list(payload.scores) for payload, _ in received])
        labels = np.array([payload.label for payload, _ in received])
        np.testing.assert_array_equal(scores, expected.scores, err_msg=f"{label}, seed {seed}")
        np.testing.assert_array_equal(labels, expected.labels, err_msg=f"{label}, seed {seed}")

    sent, received = run_network(net, pixels)
    check_results(received, "scores without stalls")
    results = [at for _, at in received]
    model_inputs, model_results = cycles.network_schedule(net, len(pixels))
    assert sent == model_inputs, f"input transfer cycles, seed {seed}"
    assert results == model_results, f"result cycles, seed {seed}"

    timing = cycles.network_timing(net)
    assert results[0] - sent[0] == timing.latency
    # The model's steady state: the last intervals of a longer run.
    _, long_run = cycles.network_schedule(net, 3 * len(pixels))
    assert long_run[-1] - long_run[-2] == timing.cycles_per_image
    assert long_run[-2] - long_run[-3] == timing.cycles_per_image

    _, received = run_network(net, pixels, seed=seed, idle=0.3, busy=0.5)
    check_results(received, "scores with stalls")
    return results


@pytest.mark.parametrize("name", NETWORKS)
def test_conv_network_matches_golden_and_cycle_model(name):
    net, pixels = make_network(name)
    results = check_network(net, pixels, zlib.crc32(name.encode()))
    # These networks reach the steady state with the second image.
    gaps = list(np.diff(results))
    assert gaps == [cycles.network_timing(net).cycles_per_image] * len(gaps)


def test_compiled_conv_network_matches_golden_and_cycle_model():
    net, pixels = compiled_network()
    results = check_network(net, pixels, zlib.crc32(b"compiled"))
    gaps = list(np.diff(results))
    assert gaps == [cycles.network_timing(net).cycles_per_image] * len(gaps)


@st.composite
def conv_network_layers(draw, channels, height, width):
    """Two convolutions (the first may pool) and a dense scores layer, small and random,
    for an input of ``channels``×``height``×``width``."""
    layers = []
    for index in range(2):
        kernel = (draw(st.integers(1, min(3, height))), draw(st.integers(1, min(3, width))))
        padding = (draw(st.integers(0, kernel[0] - 1)), draw(st.integers(0, kernel[1] - 1)))
        stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
        height = output_size(height, kernel[0], stride[0], padding[0])
        width = output_size(width, kernel[1], stride[1], padding[1])
        out = draw(st.integers(1, 3))
        fan_in = kernel[0] * kernel[1] * channels
        spec = dict(out=out, m=draw(st.integers(1, 2)), out_bits=draw(st.integers(1, 2)),
                    pe=draw(st.sampled_from(divisors(out))),
                    simd=draw(st.sampled_from(divisors(fan_in))), kernel=kernel,
                    stride=stride, padding=padding)
        if index == 0 and height >= 2 and width >= 2 and draw(st.booleans()):
            pool_kernel = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
            pool_stride = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
            spec["pool"] = (pool_kernel, pool_stride)
            height = output_size(height, pool_kernel[0], pool_stride[0])
            width = output_size(width, pool_kernel[1], pool_stride[1])
        layers.append(spec)
        channels = out
    fan_in = height * width * channels
    out = draw(st.integers(2, 4))
    layers.append(dict(out=out, m=draw(st.integers(1, 2)),
                       pe=draw(st.sampled_from(divisors(out))),
                       simd=draw(st.sampled_from(divisors(fan_in)))))
    return layers


@settings(max_examples=8, deadline=None, derandomize=True)
@given(data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_random_conv_network(data, seed):
    rng = np.random.default_rng(seed)
    input_channels = data.draw(st.integers(1, 2))
    height, width = data.draw(st.integers(3, 7)), data.draw(st.integers(3, 7))
    layers = data.draw(conv_network_layers(input_channels, height, width))
    input_bits = data.draw(st.integers(1, 3))
    pixels = rng.integers(0, 1 << input_bits, (3, input_channels, height, width))
    net = random_conv_network(rng, pixels=pixels, input_bits=input_bits, layers=layers)
    check_network(net, pixels, seed)


def test_stepped_model_equals_closed_form_for_dense():
    """The handshake models, stepped, reproduce the dense closed form exactly."""
    rng = np.random.default_rng(7)
    pixels = random_inputs(rng, 4, 24, 2)
    net = random_network(rng, in_features=24, input_bits=2, inputs=pixels, layers=[
        dict(out=8, m=2, out_bits=2, pe=2, simd=3),
        dict(out=6, m=1, out_bits=1, pe=6, simd=8),
        dict(out=4, m=2, pe=1, simd=2),
    ])
    closed = cycles.network_timing(net)
    inputs, results = cycles.network_schedule(net, 6)
    assert results[0] - inputs[0] == closed.latency
    assert list(np.diff(results)) == [closed.cycles_per_image] * 5
