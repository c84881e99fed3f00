import dataclasses
import functools
import gc
import re
import warnings
import zlib

import numpy as np
import pytest
from amaranth.back import verilog
from amaranth.hdl import UnusedElaboratable

from amaranth_streams import (Harness, get_stream, monitor_stream, pack_elements, put_stream,
                              run_simulation, unpack_elements)
from conv_factory import random_conv_layer
from gen.params import NetworkParams
from hw.conv import Flatten
from hw.network import Accelerator
from layer_factory import random_inputs, random_layer, random_network
from sim import cycles, integer

NETWORKS = {
    # The first layer is the slowest (II 16, then 8 and 6).
    "slow_first": dict(in_features=48, input_bits=3, images=6, layers=[
        dict(out=16, m=2, out_bits=2, pe=4, simd=12),
        dict(out=12, m=3, out_bits=2, pe=3, simd=8),
        dict(out=10, m=2, pe=5, simd=4),
    ]),
    # II 1, then 100: images queue in front of the second layer.
    "slow_last": dict(in_features=30, input_bits=2, images=4, layers=[
        dict(out=20, m=1, out_bits=1, pe=20, simd=30),
        dict(out=5, m=3, pe=1, simd=1),
    ]),
    # II 3, 12, 4: the bottleneck in the middle.
    "slow_middle": dict(in_features=27, input_bits=1, images=5, layers=[
        dict(out=9, m=2, out_bits=3, pe=3, simd=27),
        dict(out=8, m=2, out_bits=1, pe=2, simd=3),
        dict(out=4, m=1, pe=1, simd=8),
    ]),
}


def seed_for(name):
    return zlib.crc32(name.encode())


def make_network(name):
    """The network of NETWORKS[name] and the pixels its thresholds were placed for."""
    if name == "conv":
        return make_conv_network()
    config = NETWORKS[name]
    rng = np.random.default_rng(seed_for(name))
    pixels = random_inputs(rng, config["images"], config["in_features"], config["input_bits"])
    net = random_network(rng, in_features=config["in_features"],
                         input_bits=config["input_bits"], layers=config["layers"],
                         inputs=pixels, name=name)
    return net, pixels


def make_conv_network():
    """A 3×3 convolution with a 2×2 max-pool on a 2×6×6 image, then a dense scores layer,
    and the pixels (batch, C, H, W) its thresholds were placed for."""
    rng = np.random.default_rng(seed_for("conv"))
    pixels = rng.integers(0, 4, (3, 2, 6, 6))
    maps = pixels.transpose(0, 2, 3, 1)
    conv = random_conv_layer(rng, feature_maps=maps, in_bits=2, kernel=(3, 3), stride=(1, 1),
                             padding=(1, 1), out_channels=4, m_bases=2, out_bits=2, pe=2,
                             simd=9, pool=((2, 2), (2, 2)), name="conv0")
    flat = integer.conv_forward(conv, maps).reshape(len(pixels), -1)
    dense = random_layer(rng, in_features=36, out_features=5, in_bits=2, m_bases=2,
                         out_bits=None, pe=5, simd=12, inputs=flat, name="dense1")
    net = NetworkParams(name="conv", input_shape=(2, 6, 6), input_bits=2, classes=5,
                        layers=(conv, dense), coefficient_bits=8)
    return net, pixels


def input_payloads(net, pixels):
    """Input transfers: one per image for a dense first layer, else one per position."""
    if net.layers[0].type == "conv2d":
        channels = net.input_shape[0]
        positions = pixels.transpose(0, 2, 3, 1).reshape(-1, channels)
        return [pack_elements(row, net.input_bits) for row in positions]
    return [pack_elements(row, net.input_bits) for row in pixels]


def run_network(net, pixels, *, seed=None, idle=0.0, busy=0.0):
    """Stream ``pixels`` through the accelerator and record every stream transfer.

    Returns a dict with ``sent`` (input transfer cycles), ``received`` ((payload, cycle) at
    the output) and ``activations`` ((payload, cycle) at each layer's output but the last).
    """
    dut = Accelerator(net)
    harness = Harness(dut)
    source_rng = None if seed is None else np.random.default_rng([seed, 0])
    sink_rng = None if seed is None else np.random.default_rng([seed, 1])
    payloads = input_payloads(net, pixels)
    layer_stages = [stage for stage in dut.stages[:-1] if not isinstance(stage, Flatten)]
    result = {"dut": dut, "activations": [[] for _ in layer_stages]}

    async def source(ctx):
        result["sent"] = await put_stream(ctx, dut.input, payloads, cycle=harness.cycle,
                                          rng=source_rng, idle=idle)

    async def sink(ctx):
        result["received"] = await get_stream(ctx, dut.output, len(pixels),
                                              cycle=harness.cycle, rng=sink_rng, busy=busy)

    monitors = [monitor_stream(stage.output, harness.cycle, transfers)
                for stage, transfers in zip(layer_stages, result["activations"])]
    run_simulation(harness, [source, sink], background=monitors)
    return result


def assert_matches_golden(net, pixels, result, seed):
    expected = integer.network_forward(net, pixels)
    payloads = [payload for payload, _ in result["received"]]
    scores = np.array([list(p.scores) for p in payloads], dtype=np.int64)
    labels = np.array([p.label for p in payloads], dtype=np.int64)
    np.testing.assert_array_equal(scores, expected.scores, err_msg=f"scores, seed {seed}")
    np.testing.assert_array_equal(labels, expected.labels, err_msg=f"labels, seed {seed}")
    for layer, transfers, activations in zip(net.layers, result["activations"],
                                              expected.activations):
        got = np.array([unpack_elements(p, layer.out_features, layer.out_bits)
                        for p, _ in transfers], dtype=np.int64)
        np.testing.assert_array_equal(got, activations.reshape(-1, layer.out_features),
                                      err_msg=f"layer {layer.name}, seed {seed}")


@functools.cache
def unstalled_run(name):
    """One run of NETWORKS[name] with the input always valid and the output always ready."""
    net, pixels = make_network(name)
    return net, pixels, run_network(net, pixels)


ALL_NETWORKS = [*NETWORKS, "conv"]


@pytest.mark.parametrize("name", ALL_NETWORKS)
def test_network_matches_golden(name):
    net, pixels, result = unstalled_run(name)
    assert_matches_golden(net, pixels, result, seed_for(name))


@pytest.mark.parametrize("name", NETWORKS)
def test_network_first_image_latency(name):
    net, _, result = unstalled_run(name)
    dut = result["dut"]
    first_latency = result["received"][0][1] - result["sent"][0]
    assert dut.latency == sum(layer.cycles_per_vector + 4 for layer in net.layers)
    assert dut.latency == cycles.network_timing(net).latency
    assert first_latency == dut.latency


def test_conv_network_timing_matches_cycle_model():
    net, _, result = unstalled_run("conv")
    dut = result["dut"]
    timing = cycles.network_timing(net)
    first_latency = result["received"][0][1] - result["sent"][0]
    output_gaps = np.diff([at for _, at in result["received"]])
    assert (dut.latency, dut.cycles_per_image) == (timing.latency, timing.cycles_per_image)
    assert first_latency == dut.latency
    assert list(output_gaps) == [dut.cycles_per_image] * len(output_gaps)


def test_network_latency_when_first_layer_slowest():
    """Every image has the minimum latency when no layer is slower than the first, because
    each later layer is idle again before the next image reaches it."""
    _, _, result = unstalled_run("slow_first")
    latencies = [out_at - in_at for (_, out_at), in_at in zip(result["received"], result["sent"])]
    assert latencies == [result["dut"].latency] * len(latencies)


@pytest.mark.parametrize("name", NETWORKS)
def test_network_cycles_per_image(name):
    net, _, result = unstalled_run(name)
    dut = result["dut"]
    output_gaps = np.diff([at for _, at in result["received"]])
    assert dut.cycles_per_image == max(layer.cycles_per_vector for layer in net.layers)
    assert dut.cycles_per_image == cycles.network_timing(net).cycles_per_image
    assert list(output_gaps) == [dut.cycles_per_image] * (len(output_gaps))


@pytest.mark.parametrize("name", ALL_NETWORKS)
def test_network_random_stalls(name):
    net, pixels = make_network(name)
    seed = seed_for(name) + 1
    result = run_network(net, pixels, seed=seed, idle=0.3, busy=0.5)
    assert_matches_golden(net, pixels, result, seed)


def test_network_converts_to_verilog():
    net, _ = make_network("slow_middle")
    text = verilog.convert(Accelerator(net), name="abcnet_test", emit_src=False)
    header = re.search(r"^module abcnet_test\((.*?)\);", text, re.MULTILINE)
    ports = set(header.group(1).replace(" ", "").split(","))
    payload_width = net.layers[-1].score_width * net.classes + net.label_width
    assert ports == {"clk", "rst", "input__payload", "input__valid", "input__ready",
                     "output__payload", "output__valid", "output__ready"}
    assert f"input [{27 * 1 - 1}:0] input__payload;" in text
    assert f"output [{payload_width - 1}:0] output__payload;" in text
    # One weight memory per layer, as a Verilog array that synthesis can map to block RAM.
    assert len(re.findall(r"reg \[\d+:0\] weights \[\d+:0\];", text)) == len(net.layers)


def test_conv_network_converts_to_verilog():
    net, _ = make_conv_network()
    text = verilog.convert(Accelerator(net), name="abcnet_test", emit_src=False)
    channels = net.input_shape[0]
    assert re.search(r"^module abcnet_test\(", text, re.MULTILINE)
    assert f"input [{channels * net.input_bits - 1}:0] input__payload;" in text
    assert "output output__valid;" in text
    assert "input output__ready;" in text


def assert_rejected(params, match):
    """Check that the constructor raises ValueError. The half-built accelerator's warning
    about never being elaborated is expected and silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(ValueError, match=match):
            Accelerator(params)
        gc.collect()


def test_network_rejects_mismatched_layers():
    net, _ = make_network("slow_first")
    narrow = dataclasses.replace(net.layers[1], in_bits=1,
                                 coefficients=net.layers[1].coefficients[:, :1])
    broken = dataclasses.replace(net, layers=(net.layers[0], narrow, net.layers[2]))
    assert_rejected(broken, "layer dense0 outputs 2-bit elements, but layer dense1 takes "
                            "1-bit elements")


def test_network_rejects_mismatched_features():
    net, _ = make_network("slow_first")
    narrow = dataclasses.replace(net.layers[1], in_features=12, simd=4,
                                 weights=net.layers[1].weights[:, :, :12])
    broken = dataclasses.replace(net, layers=(net.layers[0], narrow, net.layers[2]))
    assert_rejected(broken, "layer dense0 outputs 16 elements, but layer dense1 takes 12")


def test_network_rejects_bases_last_layer():
    net, _ = make_network("slow_first")
    assert_rejected(dataclasses.replace(net, layers=net.layers[:2], classes=12),
                    "the last layer dense1 must be a dense layer that outputs \"scores\"")
