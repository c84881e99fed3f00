"""The bit-exact integer model: what the generated hardware computes, vectorised over a batch.

Every function takes the compiler's integer parameters (``gen.params``) and integer
inputs, and uses numpy integer arithmetic only: bit-packed XNOR popcounts with
``np.bitwise_count``, the M×N per-base sums, the integer combination, and the folded
thresholds with per-channel polarity. The layout of data inside the hardware (folding,
memory words) does not change any result, so it does not appear here.
"""

from dataclasses import dataclass

import numpy as np

__all__ = [
    "pack_planes", "popcounts", "layer_y", "threshold", "layer_forward",
    "argmax_lowest", "network_forward", "NetworkResult", "im2col", "max_pool",
    "pool_bits", "conv_forward",
]

_WORD = 64


def pack_planes(elements, bits):
    """Split integer elements into bit planes and pack each along the last axis.

    ``elements`` has shape (..., K) with values in [0, 2^bits). Returns uint64 of shape
    (..., bits, ceil(K/64)); element k is bit k mod 64 of word k div 64, and bits past K
    are 0.
    """
    elements = np.asarray(elements, dtype=np.int64)
    count = elements.shape[-1]
    planes = (elements[..., None, :] >> np.arange(bits)[:, None]) & 1
    padded = -(-count // _WORD) * _WORD
    planes = np.concatenate(
        [planes, np.zeros(planes.shape[:-1] + (padded - count,), dtype=np.int64)], axis=-1)
    planes = planes.reshape(planes.shape[:-1] + (padded // _WORD, _WORD)).astype(np.uint64)
    return np.bitwise_or.reduce(planes << np.arange(_WORD, dtype=np.uint64), axis=-1)


def popcounts(params, x):
    """p[b, c, m, n] = popcount(XNOR(weights[m, c], plane n of x[b])) over the K real inputs.

    XNOR counts agreements: K − popcount(w XOR a), where padding bits past K are 0 in
    both operands and so never count as disagreements.
    """
    x = np.asarray(x, dtype=np.int64)
    activations = pack_planes(x, params.in_bits)                  # (B, N, W)
    weights = pack_planes(params.weights, 1)[:, :, 0, :]          # (M, O, W)
    pairs = weights.transpose(1, 0, 2)[None, :, :, None, :] ^ activations[:, None, None, :, :]
    disagree = np.bitwise_count(pairs)                             # (B, O, M, N, W)
    return params.in_features - disagree.sum(axis=-1, dtype=np.int64)


def layer_y(params, x):
    """y[b, c] = Σ_m Σ_n C[m, n]·(2·p[b, c, m, n] − K), exactly, as int64."""
    d = 2 * popcounts(params, x) - params.in_features
    return np.einsum("bcmn,mn->bc", d, params.coefficients.astype(np.int64))


def threshold(params, y):
    """Output elements of a "bases" layer: bit n = [y ≥ T] for polarity +1, [y ≤ T] for −1."""
    t = params.thresholds[None, :, :]
    above = y[:, :, None] >= t
    below = y[:, :, None] <= t
    bits = np.where(params.polarity[None, :, None] > 0, above, below).astype(np.int64)
    return (bits << np.arange(params.out_bits)).sum(axis=-1)


def argmax_lowest(scores):
    """Index of the largest score in each row; ties go to the lowest index."""
    return np.argmax(scores, axis=-1).astype(np.int64)


def layer_forward(params, x):
    """Run one dense layer (or one window per row for a convolution) on a batch of vectors.

    ``x`` is (batch, K) input elements. Returns (batch, O) output elements for a "bases"
    layer, or ``(scores, labels)`` for a "scores" layer.
    """
    y = layer_y(params, x)
    if params.output == "bases":
        return threshold(params, y)
    scores = y + params.score_offset[None, :]
    return scores, argmax_lowest(scores)


# --- convolutions --------------------------------------------------------------------------

def im2col(feature_map, kernel, stride, padding):
    """Windows of a (batch, H, W, C) map of elements, padded with element 0 (every bit −1).

    Returns (batch, H_out, W_out, kh·kw·C) with each window in (kernel row, kernel column,
    channel) order, the order the hardware streams it.
    """
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    batch, height, width, channels = feature_map.shape
    padded = np.zeros((batch, height + 2 * ph, width + 2 * pw, channels), dtype=np.int64)
    padded[:, ph:ph + height, pw:pw + width, :] = feature_map
    out_h = (height + 2 * ph - kh) // sh + 1
    out_w = (width + 2 * pw - kw) // sw + 1
    rows = (np.arange(out_h) * sh)[:, None] + np.arange(kh)[None, :]      # (out_h, kh)
    cols = (np.arange(out_w) * sw)[:, None] + np.arange(kw)[None, :]      # (out_w, kw)
    windows = padded[:, rows[:, None, :, None], cols[None, :, None, :], :]  # (B, oh, ow, kh, kw, C)
    return windows.reshape(batch, out_h, out_w, kh * kw * channels)


def max_pool(values, kernel, stride):
    """Max-pool a (batch, H, W, C) array, no padding, floor mode."""
    (kh, kw), (sh, sw) = kernel, stride
    _, height, width, _ = values.shape
    out_h = (height - kh) // sh + 1
    out_w = (width - kw) // sw + 1
    rows = (np.arange(out_h) * sh)[:, None] + np.arange(kh)[None, :]
    cols = (np.arange(out_w) * sw)[:, None] + np.arange(kw)[None, :]
    windows = values[:, rows[:, None, :, None], cols[None, :, None, :], :]
    return windows.max(axis=(3, 4))


def pool_bits(params, bits):
    """Pool thresholded elements: OR of each bit for polarity +1 channels, AND for −1.

    Because the threshold is monotone in y, this equals thresholding the max-pooled y:
    max then [≥ T] is an OR of [≥ T], and max then [≤ T] is an AND of [≤ T].
    """
    (kh, kw), (sh, sw) = params.pool
    planes = (bits[..., None] >> np.arange(params.out_bits)) & 1          # (B, H, W, C, N)
    negative = params.polarity < 0
    # AND over a window is NOT of an OR over the inverted bits.
    flipped = np.where(negative[None, None, None, :, None], 1 - planes, planes)
    batch, height, width, channels, n = flipped.shape
    pooled = max_pool(flipped.reshape(batch, height, width, channels * n), (kh, kw), (sh, sw))
    pooled = pooled.reshape(pooled.shape[:3] + (channels, n))
    pooled = np.where(negative[None, None, None, :, None], 1 - pooled, pooled)
    return (pooled << np.arange(params.out_bits)).sum(axis=-1)


def conv_forward(params, feature_map, *, pool_first=False):
    """Run a convolution layer on a (batch, H, W, C) map of input elements.

    Returns (batch, H', W', O) output elements after the pool. ``pool_first`` pools y
    before thresholding (the model's order) instead of pooling the bits (the hardware's
    order); both give the same bits.
    """
    windows = im2col(feature_map, params.kernel, params.stride, params.padding)
    batch, out_h, out_w, fan_in = windows.shape
    flat = windows.reshape(-1, fan_in)
    if params.output == "scores":
        raise ValueError(f"layer {params.name}: a convolution cannot be the last layer")
    y = layer_y(params, flat).reshape(batch, out_h, out_w, -1)
    if params.pool is None:
        return threshold(params, y.reshape(-1, y.shape[-1])).reshape(y.shape)
    if pool_first:
        pooled = max_pool(y, *params.pool)
        return threshold(params, pooled.reshape(-1, y.shape[-1])).reshape(pooled.shape)
    bits = threshold(params, y.reshape(-1, y.shape[-1])).reshape(y.shape)
    return pool_bits(params, bits)


# --- networks ------------------------------------------------------------------------------

@dataclass
class NetworkResult:
    scores: np.ndarray          # (batch, classes) int64
    labels: np.ndarray          # (batch,) int64
    activations: list           # per "bases" layer: output elements, (batch, O) or (batch, H, W, O)


def network_forward(net, pixels):
    """Run the whole network on a batch of integer pixels.

    ``pixels`` is (batch, features) for a dense first layer or (batch, C, H, W) for a
    convolutional one, in the model's own order; values in [0, 2^input_bits).
    """
    pixels = np.asarray(pixels, dtype=np.int64)
    limit = (1 << net.input_bits) - 1
    if pixels.min(initial=0) < 0 or pixels.max(initial=0) > limit:
        raise ValueError(f"pixels must lie in [0, {limit}] for {net.input_bits}-bit input, "
                         f"found [{pixels.min()}, {pixels.max()}]")
    if net.layers[0].type == "conv2d":
        values = pixels.transpose(0, 2, 3, 1)      # hardware order: (row, column, channel)
    else:
        # A dense first layer takes the pixels in the model's flattening order.
        values = pixels.reshape(pixels.shape[0], -1)
    activations = []
    for params in net.layers:
        if params.type == "conv2d":
            values = conv_forward(params, values)
            activations.append(values)
            continue
        flat = values.reshape(values.shape[0], -1)
        if params.output == "scores":
            scores, labels = layer_forward(params, flat)
            return NetworkResult(scores=scores, labels=labels, activations=activations)
        values = layer_forward(params, flat)
        activations.append(values)
    raise ValueError(f"network {net.name}: the last layer must output scores")
