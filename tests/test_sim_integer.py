"""The integer golden model against independent formulations of the same arithmetic."""

import numpy as np
import pytest

from gen.compile import compile_model
from gen.params import LayerParams
from model_factory import random_model
from sim import integer
from sim.reference import forward_float


def _layer(rng, *, fan_in, outputs, m_bases, in_bits, coefficients=None, output="bases"):
    if coefficients is None:
        coefficients = rng.integers(-127, 128, (m_bases, in_bits))
    return LayerParams(
        name="layer", type="dense", in_features=fan_in, out_features=outputs, in_bits=in_bits,
        m_bases=m_bases, weights=rng.integers(0, 2, (m_bases, outputs, fan_in), dtype=np.uint8),
        coefficients=np.asarray(coefficients, dtype=np.int64), scale=1.0, output=output,
        out_bits=2 if output == "bases" else None,
        thresholds=rng.integers(-50, 50, (outputs, 2)) if output == "bases" else None,
        polarity=rng.choice([-1, 1], outputs).astype(np.int8) if output == "bases" else None,
        score_offset=np.zeros(outputs, dtype=np.int64) if output == "scores" else None,
        pe=1, simd=1)


@pytest.mark.parametrize("fan_in", [1, 7, 64, 75, 100, 129])
def test_popcounts_match_signed_dot_product(fan_in):
    rng = np.random.default_rng(fan_in)
    params = _layer(rng, fan_in=fan_in, outputs=5, m_bases=3, in_bits=4)
    x = rng.integers(0, 16, (11, fan_in))
    counts = integer.popcounts(params, x)
    weights = 2 * params.weights.astype(np.int64) - 1                        # (M, O, K)
    planes = 2 * ((x[:, :, None] >> np.arange(4)) & 1) - 1                   # (B, K, N)
    dot = np.einsum("mok,bkn->bomn", weights, planes)
    assert np.array_equal(2 * counts - fan_in, dot)


def test_popcounts_at_extremes():
    rng = np.random.default_rng(5)
    fan_in = 256
    params = _layer(rng, fan_in=fan_in, outputs=2, m_bases=1, in_bits=1,
                    coefficients=[[127]], output="scores")
    matching = params.weights[0, 0][None, :].astype(np.int64)
    mismatching = 1 - matching
    assert integer.popcounts(params, matching)[0, 0, 0, 0] == fan_in
    assert integer.popcounts(params, mismatching)[0, 0, 0, 0] == 0
    y_high = integer.layer_y(params, matching)[0, 0]
    y_low = integer.layer_y(params, mismatching)[0, 0]
    assert y_high == params.y_bound
    assert y_low == -params.y_bound
    assert -(1 << (params.y_width - 1)) <= y_low
    assert y_high <= (1 << (params.y_width - 1)) - 1


def test_thresholds_decide_ties_by_integer_comparison():
    rng = np.random.default_rng(9)
    params = _layer(rng, fan_in=32, outputs=8, m_bases=2, in_bits=2)
    x = rng.integers(0, 4, (400, 32))
    y = integer.layer_y(params, x)
    elements = integer.threshold(params, y)
    bits = (elements[..., None] >> np.arange(2)) & 1
    for channel in range(8):
        for n in range(2):
            t = params.thresholds[channel, n]
            expected = y[:, channel] >= t if params.polarity[channel] > 0 else y[:, channel] <= t
            assert np.array_equal(bits[:, channel, n], expected.astype(np.int64))
    # Force exact ties: y equal to the threshold sets the bit for both polarities.
    tied = np.broadcast_to(params.thresholds[:, 0], (1, 8))
    tie_bits = integer.threshold(params, tied) & 1
    assert np.all(tie_bits == 1)


def test_argmax_ties_go_to_lowest_index():
    scores = np.array([[3, 7, 7, 1], [-2, -2, -2, -2], [0, 0, 5, 5]])
    assert integer.argmax_lowest(scores).tolist() == [1, 0, 2]


def _dense_model(rng):
    return random_model(rng, input_shape=(40,), input_bits=5, layers=[
        dict(type="dense", out=24, m=3), dict(type="dense", out=16, m=2, n=3),
        dict(type="dense", out=6, m=3, n=2)])


def _conv_model(rng):
    return random_model(rng, input_shape=(2, 9, 7), input_bits=4, layers=[
        dict(type="conv2d", out=6, m=2, kernel=(3, 2), stride=(2, 1), padding=(1, 1),
             pool=((2, 2), (1, 2))),
        dict(type="conv2d", out=4, m=2, n=2, kernel=(2, 3), stride=(1, 3), padding=(0, 1)),
        dict(type="dense", out=5, m=3, n=3)])


def _dense_on_image_model(rng):
    return random_model(rng, input_shape=(2, 3, 4), input_bits=3, layers=[
        dict(type="dense", out=12, m=2), dict(type="dense", out=5, m=2, n=2)])


@pytest.mark.parametrize("make_model", [_dense_model, _conv_model, _dense_on_image_model])
def test_integer_model_tracks_float_model(make_model):
    """With wide coefficients the integer form must reproduce the float model's bits."""
    rng = np.random.default_rng(21)
    model = make_model(rng)
    net = compile_model(model, coefficient_bits=20)
    pixels = rng.integers(0, 1 << model.input.bits, (300,) + model.input.shape)
    ours = integer.network_forward(net, pixels)
    theirs = forward_float(model, pixels)
    for index, (a, b) in enumerate(zip(ours.activations, theirs.activations)):
        assert a.shape == b.shape, f"layer {index}"
        assert np.mean(a == b) > 0.999, f"layer {index}"
    assert np.mean(ours.labels == theirs.labels) > 0.99
    # Scores are the float scores times the layer's scale, up to coefficient rounding.
    last = net.layers[-1]
    relative = np.abs(ours.scores / last.scale - theirs.scores).max() / np.abs(theirs.scores).max()
    assert relative < 1e-3


def test_pooling_bits_equals_pooling_y():
    rng = np.random.default_rng(3)
    model = random_model(rng, input_shape=(3, 11, 10), input_bits=3, layers=[
        dict(type="conv2d", out=8, m=2, kernel=(3, 3), stride=(1, 1), padding=(1, 1),
             pool=((3, 2), (2, 2))),
        dict(type="dense", out=4, m=1, n=2)])
    net = compile_model(model)
    params = net.layers[0]
    assert np.any(params.polarity < 0)
    fmap = rng.integers(0, 8, (50, 11, 10, 3))
    hardware_order = integer.conv_forward(params, fmap)
    model_order = integer.conv_forward(params, fmap, pool_first=True)
    assert np.array_equal(hardware_order, model_order)


def test_network_rejects_out_of_range_pixels():
    rng = np.random.default_rng(0)
    net = compile_model(_dense_model(rng))
    with pytest.raises(ValueError, match=r"\[0, 31\]"):
        integer.network_forward(net, np.full((1, 40), 32))
