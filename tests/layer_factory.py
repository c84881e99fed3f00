"""Random `LayerParams` and `NetworkParams` for hardware tests, drawn without a model.

Thresholds are drawn to hit the cases that break comparators. They include exact ties
with y values that the test inputs reach, and the extremes ±y_bound. They also include
"always" and "never" thresholds at ±(y_bound + 1), which the compiler emits for a
batch-norm γ of 0, and channels of polarity −1.
"""

import dataclasses

import numpy as np

from gen.params import LayerParams, NetworkParams
from sim import integer

__all__ = ["random_layer", "extreme_layer", "extreme_inputs", "tie_scores", "random_inputs",
           "random_network"]


def random_inputs(rng, count, in_features, in_bits):
    """``count`` input vectors of unsigned ``in_bits``-bit elements, as int64 (count, K)."""
    return rng.integers(0, 1 << in_bits, (count, in_features), dtype=np.int64)


def _layer(*, name, weights, coefficients, in_bits, out_bits, pe, simd, thresholds=None,
           polarity=None, score_offset=None):
    m_bases, out_features, in_features = weights.shape
    return LayerParams(
        name=name, type="dense", in_features=in_features, out_features=out_features,
        in_bits=in_bits, m_bases=m_bases, weights=weights.astype(np.uint8),
        coefficients=np.asarray(coefficients, dtype=np.int64), scale=1.0,
        output="bases" if out_bits else "scores", out_bits=out_bits,
        thresholds=None if thresholds is None else np.asarray(thresholds, dtype=np.int64),
        polarity=None if polarity is None else np.asarray(polarity, dtype=np.int8),
        score_offset=None if score_offset is None else np.asarray(score_offset, dtype=np.int64),
        pe=pe, simd=simd)


def _draw_thresholds(rng, layer, inputs):
    """Thresholds (O, out_bits) for ``layer`` mixing ties, always/never and random values.

    Ties copy y of a random row of ``inputs`` for the same channel, so those inputs land
    exactly on the threshold.
    """
    out_features, out_bits = layer.out_features, layer.out_bits
    bound = layer.y_bound
    y = integer.layer_y(layer, inputs)                          # (batch, O)
    spread = max(1, int(np.abs(y).max()))
    ties = y[rng.integers(0, len(y), (out_features, out_bits)), np.arange(out_features)[:, None]]
    choice = rng.choice(5, size=(out_features, out_bits), p=[0.4, 0.3, 0.1, 0.1, 0.1])
    thresholds = np.select(
        [choice == 0, choice == 1, choice == 2, choice == 3],
        [ties,
         rng.integers(-spread, spread + 1, (out_features, out_bits)),
         np.full((out_features, out_bits), -bound - 1),
         np.full((out_features, out_bits), bound + 1)],
        default=rng.choice([-bound, bound], (out_features, out_bits)))
    return thresholds


def random_layer(rng, *, in_features, out_features, in_bits, m_bases, out_bits, pe, simd,
                 inputs, coefficient_bits=8, name="layer"):
    """A dense layer with random weights, coefficients and thresholds or score offsets.

    ``out_bits=None`` makes a "scores" layer. ``inputs`` are the vectors the test will
    feed, used to place thresholds exactly on y values that they reach.
    """
    weights = rng.integers(0, 2, (m_bases, out_features, in_features), dtype=np.uint8)
    limit = 1 << (coefficient_bits - 1)
    coefficients = rng.integers(-limit, limit, (m_bases, in_bits))
    common = dict(name=name, weights=weights, coefficients=coefficients, in_bits=in_bits,
                  pe=pe, simd=simd)
    if out_bits is None:
        layer = _layer(out_bits=None, score_offset=np.zeros(out_features), **common)
        bound = layer.y_bound
        return dataclasses.replace(
            layer, score_offset=rng.integers(-bound // 4, bound // 4 + 1, out_features))
    placeholder = _layer(out_bits=out_bits, thresholds=np.zeros((out_features, out_bits)),
                         polarity=np.ones(out_features), **common)
    polarity = rng.choice([1, -1], out_features, p=[0.6, 0.4])
    polarity[0] = -1
    return dataclasses.replace(placeholder, thresholds=_draw_thresholds(rng, placeholder, inputs),
                               polarity=polarity)


def extreme_layer(rng, *, in_features, out_features, in_bits, m_bases, out_bits, pe, simd,
                  coefficient_bits=8, name="extreme"):
    """A layer whose y reaches ±y_bound, so every width in the datapath is used in full.

    All coefficients have the largest magnitude of ``coefficient_bits`` (−2^(b−1) for even
    input bits, 2^(b−1) − 1 for odd), and every base of a channel has the same weights, so
    :func:`extreme_inputs` can make all M·in_bits dot products ±K at once. Thresholds sit at
    ±y_bound and ±(y_bound + 1); score offsets at ±(y_bound // 2).
    """
    row = rng.integers(0, 2, (1, out_features, in_features), dtype=np.uint8)
    weights = np.repeat(row, m_bases, axis=0)
    limit = 1 << (coefficient_bits - 1)
    column = np.where(np.arange(in_bits) % 2 == 0, -limit, limit - 1)
    coefficients = np.tile(column, (m_bases, 1))
    common = dict(name=name, weights=weights, coefficients=coefficients, in_bits=in_bits,
                  pe=pe, simd=simd)
    if out_bits is None:
        layer = _layer(out_bits=None, score_offset=np.zeros(out_features), **common)
        half = layer.y_bound // 2
        offsets = np.where(np.arange(out_features) % 2 == 0, half, -half)
        return dataclasses.replace(layer, score_offset=offsets)
    layer = _layer(out_bits=out_bits, thresholds=np.zeros((out_features, out_bits)),
                   polarity=np.ones(out_features), **common)
    bound = layer.y_bound
    candidates = np.array([-bound - 1, -bound, bound, bound + 1])
    thresholds = rng.choice(candidates, (out_features, out_bits))
    polarity = np.where(np.arange(out_features) % 2 == 0, 1, -1)
    return dataclasses.replace(layer, thresholds=thresholds, polarity=polarity)


def extreme_inputs(layer, channel):
    """Two input vectors that drive y of ``channel`` of an :func:`extreme_layer` to
    +y_bound and −y_bound: every product C[m, n]·d[m, n] is +|C|·K, then −|C|·K."""
    weights = layer.weights[0, channel].astype(np.int64)            # same for every base
    positive = layer.coefficients[0] > 0                           # sign per input bit
    bits = np.where(positive[:, None], weights[None, :], 1 - weights[None, :])  # (N, K)
    top = (bits << np.arange(layer.in_bits)[:, None]).sum(axis=0)
    bottom = (1 << layer.in_bits) - 1 - top
    return np.stack([top, bottom])


def tie_scores(layer, channels):
    """A copy of a "scores" layer in which ``channels`` share the weights and offset of
    ``channels[0]``, so their scores are equal for every input. That offset is raised to
    y_bound, which makes their score the largest."""
    weights = layer.weights.copy()
    offsets = layer.score_offset.copy()
    offsets[channels[0]] = layer.y_bound
    for channel in channels[1:]:
        weights[:, channel] = weights[:, channels[0]]
        offsets[channel] = offsets[channels[0]]
    return dataclasses.replace(layer, weights=weights, score_offset=offsets)


def random_network(rng, *, in_features, input_bits, layers, inputs, name="random"):
    """A chain of dense layers described by dicts of ``out``, ``m``, ``pe``, ``simd`` and,
    except for the last ("scores") layer, ``out_bits``.

    ``inputs`` are the pixels the test will feed. Each layer's thresholds are placed on y
    values that these pixels reach through the layers before it.
    """
    built = []
    features, bits, values = in_features, input_bits, inputs
    for index, spec in enumerate(layers):
        last = index == len(layers) - 1
        out_bits = None if last else spec["out_bits"]
        layer = random_layer(rng, in_features=features, out_features=spec["out"], in_bits=bits,
                             m_bases=spec["m"], out_bits=out_bits, pe=spec["pe"],
                             simd=spec["simd"], inputs=values, name=f"dense{index}")
        built.append(layer)
        if not last:
            values = integer.layer_forward(layer, values)
            features, bits = spec["out"], out_bits
    return NetworkParams(name=name, input_shape=(in_features,), input_bits=input_bits,
                         classes=layers[-1]["out"], layers=tuple(built), coefficient_bits=8)
