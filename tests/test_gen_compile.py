"""The compiler's integer parameters: folding, thresholds and their rounding direction."""

import dataclasses

import numpy as np
import pytest

from gen.compile import CompileError, choose_folding, compile_model
from model_factory import random_model
from sim import integer


def _model(rng, **overrides):
    layers = [dict(type="dense", out=12, m=2), dict(type="dense", out=10, m=3, n=3),
              dict(type="dense", out=4, m=2, n=2)]
    return random_model(rng, input_shape=(30,), input_bits=4, layers=layers, **overrides)


def test_folding_that_does_not_divide_is_rejected():
    model = _model(np.random.default_rng(1))
    with pytest.raises(CompileError) as error:
        compile_model(model, folding={"layer1": (4, 5)})
    message = str(error.value)
    assert "layer1" in message
    assert "pe=4 does not divide the 10 output channels" in message
    assert "simd=5 does not divide the 12 inputs" in message
    assert "--fold layer1=5,6" in message or "--fold layer1=2,6" in message or "--fold layer1=5,4" in message


def test_suggested_folding_compiles():
    model = _model(np.random.default_rng(1))
    with pytest.raises(CompileError) as error:
        compile_model(model, folding={"layer0": (7, 7)})
    suggestion = str(error.value).split("--fold ")[1].split(" ")[0]
    name, numbers = suggestion.split("=")
    pe, simd = map(int, numbers.split(","))
    net = compile_model(model, folding={name: (pe, simd)})
    assert (net.layers[0].pe, net.layers[0].simd) == (pe, simd)


def test_folding_of_unknown_layer_is_rejected():
    model = _model(np.random.default_rng(1))
    with pytest.raises(CompileError, match="unknown layer 'fc9'; the layers are layer0, layer1, layer2"):
        compile_model(model, folding={"fc9": (1, 1)})


@pytest.mark.parametrize("fan_in,outputs,target", [(64, 128, 512), (128, 10, 100), (7, 5, 1),
                                                   (30, 12, 1000)])
def test_default_folding_meets_target(fan_in, outputs, target):
    pe, simd = choose_folding(fan_in, outputs, target)
    assert outputs % pe == 0
    assert fan_in % simd == 0
    assert (fan_in // simd) * (outputs // pe) <= max(target, 1)


def _float_bits(model, layer_index, pixels):
    from sim.reference import forward_float
    return forward_float(model, pixels).activations[layer_index]


def test_threshold_rounding_matches_float_comparison():
    """Around every threshold, the integer decision equals the exact float comparison."""
    rng = np.random.default_rng(4)
    model = _model(rng)
    net = compile_model(model)
    params = net.layers[1]
    layer = model.layers[1]
    following = model.layers[2]
    deviation = np.sqrt(layer.bn_var + layer.bn_eps)
    for channel in range(params.out_features):
        gamma = layer.bn_weight[channel]
        if gamma == 0:
            continue
        for n in range(params.out_bits):
            t = int(params.thresholds[channel, n])
            if abs(t) > params.y_bound:
                continue
            for y in (t - 1, t, t + 1):
                real = y / params.scale
                normalised = gamma * (real - layer.bn_mean[channel]) / deviation[channel] \
                    + layer.bn_bias[channel]
                expected = normalised + following.input_shift[n] >= 0.5
                got = (integer.threshold(params, np.full((1, params.out_features), y))[0, channel]
                       >> n) & 1
                assert bool(got) == bool(expected), (channel, n, y, t)


def test_negative_and_zero_gamma():
    rng = np.random.default_rng(8)
    model = _model(rng)
    layer = model.layers[0]
    gamma = layer.bn_weight.copy()
    gamma[:4] = -np.abs(gamma[:4]) - 0.1
    gamma[4:8] = 0.0
    bias = layer.bn_bias.copy()
    bias[4:6] = 2.0     # b + v_n >= 0.5 for every shift drawn in [-0.5, 1.5]: constant 1
    bias[6:8] = -3.0    # constant 0
    layer = dataclasses.replace(layer, bn_weight=gamma, bn_bias=bias)
    model = dataclasses.replace(model, layers=(layer,) + model.layers[1:])
    net = compile_model(model, coefficient_bits=20)
    params = net.layers[0]
    assert np.all(params.polarity[:4] == -1)
    assert np.all(params.polarity[4:8] == 1)
    pixels = rng.integers(0, 16, (200, 30))
    elements = integer.network_forward(net, pixels).activations[0]
    full = (1 << params.out_bits) - 1
    assert np.all(elements[:, 4:6] == full)
    assert np.all(elements[:, 6:8] == 0)
    assert np.array_equal(elements, _float_bits(model, 0, pixels))


def test_zero_alpha_is_rejected():
    rng = np.random.default_rng(2)
    model = _model(rng)
    layer = dataclasses.replace(model.layers[1], alpha=np.zeros(3))
    model = dataclasses.replace(model, layers=(model.layers[0], layer, model.layers[2]))
    with pytest.raises(CompileError, match="layer layer1: every alpha·beta product is 0"):
        compile_model(model)


def test_tiny_beta_keeps_integer_form():
    """A β far smaller than the others rounds to coefficient 0 without breaking anything."""
    rng = np.random.default_rng(6)
    model = _model(rng)
    layer = model.layers[1]
    layer = dataclasses.replace(layer, input_scale=np.array([1e-9, 0.4, 0.5]))
    model = dataclasses.replace(model, layers=(model.layers[0], layer, model.layers[2]))
    net = compile_model(model)
    assert np.all(net.layers[1].coefficients[:, 0] == 0)
    integer.network_forward(net, rng.integers(0, 16, (10, 30)))


def test_coefficient_bits_bound_coefficients():
    model = _model(np.random.default_rng(3))
    for bits in (2, 4, 8, 12):
        net = compile_model(model, coefficient_bits=bits)
        for params in net.layers[1:]:
            assert np.abs(params.coefficients).max() == (1 << (bits - 1)) - 1
            assert params.coefficient_width <= bits


def test_convolution_as_last_layer_is_rejected():
    model = random_model(np.random.default_rng(0), input_shape=(1, 6, 6), input_bits=2, layers=[
        dict(type="conv2d", out=4, m=1, kernel=(3, 3), stride=(1, 1), padding=(0, 0)),
        dict(type="conv2d", out=3, m=1, n=1, kernel=(4, 4), stride=(1, 1), padding=(0, 0))])
    with pytest.raises(CompileError, match="layer layer1: the last layer is a convolution"):
        compile_model(model)
