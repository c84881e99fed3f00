"""Compile an exported ABC-Net into integer hardware parameters.

The integer form of one layer, for coefficient width F bits (``coefficient_bits``):

- A layer fed by N activation bases computes y_real = Σ_m Σ_n α_m·β_n·d[m, n]. The
  compiler picks the scale S = (2^(F−1) − 1) / max|α_m·β_n| and the coefficients
  C[m, n] = round(α_m·β_n·S), so y = Σ C·d equals S·y_real with α_m·β_n replaced by
  C[m, n]/S.
- The first layer takes P-bit pixels q with real value offset + scale_in·q. Writing q in
  ±1 bit planes s_p gives Σ_k B_k·q_k = Σ_p 2^(p−1)·(B·s_p) + (2^P − 1)/2·Σ_k B_k,
  so the layer is P planes with exact scales 2^(p−1) plus a per-channel constant:
  C[m, p] = a_m·2^p with a_m = round(α_m·S), S = (2^(F−1) − 1)/max|α|, and
  y = (2·S/scale_in)·(y_real − const[c]).
- A threshold [y_real ≥ τ] becomes [y ≥ ceil(scale·(τ − const))], and [y_real ≤ τ]
  becomes [y ≤ floor(scale·(τ − const))]: both exact for integer y. Thresholds are then
  clipped to the range y can reach, which keeps every comparison and bounds the width.

So the integer model is the float model with α·β rounded to F-bit coefficients, and
nothing else; how much that changes the outputs is measured on the test split.
"""

import logging

import numpy as np

from .params import LayerParams, NetworkParams

__all__ = ["CompileError", "compile_model", "choose_folding", "DEFAULT_COEFFICIENT_BITS",
           "DEFAULT_TARGET_CYCLES"]

logger = logging.getLogger(__name__)

DEFAULT_COEFFICIENT_BITS = 12
DEFAULT_TARGET_CYCLES = 512


class CompileError(ValueError):
    """A model or an option that the hardware cannot be built from."""


def _divisors(value):
    return [d for d in range(1, value + 1) if value % d == 0]


def choose_folding(in_features, out_features, target_cycles):
    """Pick the cheapest (pe, simd) whose K/SIMD · O/PE is at most ``target_cycles``.

    Cost is PE·SIMD, the number of XNOR lanes per base pair; among equal costs the
    larger SIMD wins, which keeps weight memories wide and shallow.
    """
    best = None
    for pe in _divisors(out_features):
        for simd in _divisors(in_features):
            cycles = (in_features // simd) * (out_features // pe)
            if cycles > target_cycles:
                continue
            key = (pe * simd, -simd)
            if best is None or key < best[0]:
                best = (key, pe, simd)
    if best is None:
        return out_features, in_features
    return best[1], best[2]


def _check_folding(layer, fan_in, pe, simd):
    """Reject a folding that does not divide the layer, naming one that would."""
    problems = []
    if pe < 1 or layer.out_features % pe:
        problems.append(f"pe={pe} does not divide the {layer.out_features} output channels")
    if simd < 1 or fan_in % simd:
        problems.append(f"simd={simd} does not divide the {fan_in} inputs per output (K)")
    if problems:
        near_pe = min(_divisors(layer.out_features), key=lambda d: (abs(d - pe), d))
        near_simd = min(_divisors(fan_in), key=lambda d: (abs(d - simd), d))
        raise CompileError(
            f"layer {layer.name}: " + " and ".join(problems)
            + f"; use a divisor, for example --fold {layer.name}={near_pe},{near_simd} "
              f"(pe divides {layer.out_features}, simd divides {fan_in})")


def _hardware_order(layer, previous_shape):
    """Permute the K axis of the weight bases from PyTorch's order to the streamed order."""
    bits = layer.weight_bits
    m_bases, outputs, _ = bits.shape
    if layer.type == "conv2d":
        channels = layer.in_channels
        kh, kw = layer.kernel
        return bits.reshape(m_bases, outputs, channels, kh, kw).transpose(0, 1, 3, 4, 2) \
                   .reshape(m_bases, outputs, -1)
    if previous_shape is not None and len(previous_shape) == 3:
        # A dense layer after a convolution: PyTorch flattens (channel, row, column), the
        # hardware streams (row, column, channel).
        channels, height, width = previous_shape
        return bits.reshape(m_bases, outputs, channels, height, width).transpose(0, 1, 3, 4, 2) \
                   .reshape(m_bases, outputs, -1)
    return bits


def _coefficients(model, layer, coefficient_bits):
    """Return (C, scale, const): y = Σ C·d = scale·(y_real − const[c])."""
    largest = (1 << (coefficient_bits - 1)) - 1
    alpha = layer.alpha
    if layer.input_bases is None:
        bits = model.input.bits
        if not np.any(alpha):
            raise CompileError(f"layer {layer.name}: every alpha is 0, so the layer's output "
                               f"does not depend on its input; retrain or remove the layer")
        alpha_scale = largest / np.abs(alpha).max()
        quantised = np.round(alpha * alpha_scale).astype(np.int64)
        coefficients = quantised[:, None] * (np.int64(1) << np.arange(bits))[None, :]
        scale = 2.0 * alpha_scale / model.input.scale
        # Σ_k B_k is 2·popcount(b) − K per channel and base; padding positions count as q = 0.
        base_sums = 2 * layer.weight_bits.sum(axis=2, dtype=np.int64) - layer.fan_in   # (M, O)
        pixel_mid = model.input.offset + model.input.scale * ((1 << bits) - 1) / 2
        const = (quantised / alpha_scale) @ base_sums * pixel_mid
        return coefficients, scale, const

    products = np.outer(alpha, layer.input_scale)
    if not np.any(products):
        raise CompileError(f"layer {layer.name}: every alpha·beta product is 0, so the layer's "
                           f"output does not depend on its input; retrain or remove the layer")
    scale = largest / np.abs(products).max()
    coefficients = np.round(products * scale).astype(np.int64)
    return coefficients, scale, np.zeros(layer.out_features)


def _thresholds(layer, following, scale, const, y_bound):
    """Fold batch norm and the next layer's shifts into integer thresholds and polarities."""
    gamma = layer.bn_weight
    deviation = np.sqrt(layer.bn_var + layer.bn_eps)
    shifts = following.input_shift
    polarity = np.where(gamma < 0, -1, 1).astype(np.int8)
    thresholds = np.empty((layer.out_features, len(shifts)), dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tau = layer.bn_mean[:, None] + (0.5 - shifts[None, :] - layer.bn_bias[:, None]) \
            * (deviation / gamma)[:, None]
        target = scale * (tau - const[:, None])
    positive = gamma > 0
    negative = gamma < 0
    # Clip before converting so that huge or infinite targets stay representable.
    low, high = -y_bound - 1, y_bound + 1
    rising = np.ceil(np.clip(target, low, high))
    falling = np.floor(np.clip(target, low, high))
    thresholds[positive] = rising[positive].astype(np.int64)
    thresholds[negative] = falling[negative].astype(np.int64)
    # γ = 0: the batch norm outputs b, so bit n is the constant [b + v_n ≥ 0.5].
    constant = layer.bn_bias[:, None] + shifts[None, :] >= 0.5
    zero = gamma == 0
    thresholds[zero] = np.where(constant[zero], -y_bound, y_bound + 1)
    # Keep each threshold inside the range where it still decides: for polarity +1 any
    # T ≤ −y_bound is "always" and T > y_bound is "never"; mirrored for −1.
    thresholds[polarity > 0] = np.clip(thresholds[polarity > 0], -y_bound, y_bound + 1)
    thresholds[polarity < 0] = np.clip(thresholds[polarity < 0], -y_bound - 1, y_bound)
    return thresholds, polarity


def compile_model(model, *, folding=None, target_cycles=DEFAULT_TARGET_CYCLES,
                  coefficient_bits=DEFAULT_COEFFICIENT_BITS):
    """Turn a loaded ``weights.format.Model`` into ``NetworkParams``.

    ``folding`` maps layer names to (pe, simd); layers not in it get the cheapest folding
    whose engine cycles per image (cycles per vector times output positions) are at most
    ``target_cycles``, or the fastest folding when none is.
    """
    folding = dict(folding or {})
    unknown = sorted(set(folding) - {layer.name for layer in model.layers})
    if unknown:
        names = ", ".join(layer.name for layer in model.layers)
        raise CompileError(f"folding names unknown layer {unknown[0]!r}; the layers are {names}")
    if not 2 <= coefficient_bits <= 24:
        raise CompileError(f"coefficient_bits must be between 2 and 24, found {coefficient_bits}")
    if target_cycles < 1:
        raise CompileError(f"target_cycles must be at least 1, found {target_cycles}")

    last = model.layers[-1]
    if last.type == "conv2d":
        raise CompileError(f"layer {last.name}: the last layer is a convolution, but the "
                           f"hardware emits scores only from a dense layer; end the network "
                           f"with a dense layer over the flattened map")

    layers = []
    previous_shape = model.input.shape
    for index, layer in enumerate(model.layers):
        fan_in = layer.fan_in
        if layer.name in folding:
            pe, simd = folding[layer.name]
            _check_folding(layer, fan_in, pe, simd)
        else:
            # A convolution runs its engine once per output position, so its share of
            # the per-image budget is divided among the positions.
            positions = 1
            if layer.type == "conv2d":
                positions = layer.conv_shape[1] * layer.conv_shape[2]
            pe, simd = choose_folding(fan_in, layer.out_features,
                                      max(1, target_cycles // positions))

        coefficients, scale, const = _coefficients(model, layer, coefficient_bits)
        in_bits = model.input.bits if layer.input_bases is None else layer.input_bases
        y_bound = fan_in * int(np.abs(coefficients).sum())

        thresholds = polarity = score_offset = out_bits = None
        if layer.output == "bases":
            following = model.layers[index + 1]
            out_bits = following.input_bases
            thresholds, polarity = _thresholds(layer, following, scale, const, y_bound)
        else:
            # NOTE: only a first layer that is also the last has a nonzero constant. Its
            # offset is rounded to an integer, so near-ties may rank differently than in
            # the float model.
            score_offset = np.round(scale * const).astype(np.int64)

        geometry = {}
        if layer.type == "conv2d":
            pool = None if layer.pool is None else (layer.pool.kernel, layer.pool.stride)
            geometry = dict(in_shape=layer.in_shape, kernel=layer.kernel, stride=layer.stride,
                            padding=layer.padding, pool=pool, out_shape=layer.out_shape)

        params = LayerParams(
            name=layer.name, type=layer.type, in_features=fan_in,
            out_features=layer.out_features, in_bits=in_bits, m_bases=layer.weight_bases,
            # A dense first layer takes the image in the model's own flattening order, so
            # only layers fed by a convolution are permuted.
            weights=_hardware_order(layer, previous_shape if index else None).astype(np.uint8),
            coefficients=coefficients, scale=float(scale), output=layer.output,
            out_bits=out_bits, thresholds=thresholds, polarity=polarity,
            score_offset=score_offset, pe=pe, simd=simd, **geometry)
        logger.info("layer %s: K=%d O=%d M=%d bits=%d pe=%d simd=%d II=%d y_width=%d",
                    layer.name, fan_in, layer.out_features, layer.weight_bases, in_bits,
                    pe, simd, params.cycles_per_vector, params.y_width)
        layers.append(params)
        previous_shape = layer.out_shape

    return NetworkParams(name=model.name, input_shape=model.input.shape,
                         input_bits=model.input.bits, classes=model.classes,
                         layers=tuple(layers), coefficient_bits=coefficient_bits)

