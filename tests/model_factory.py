"""Random but valid exported models, for tests that need a model without training one."""

import numpy as np

from weights.format import InputSpec, Layer, Model, PoolSpec, conv_output_size


def _shifts(count):
    if count == 1:
        return (0.0,)
    return tuple(float(u) for u in np.linspace(-1.0, 1.0, count))


def random_model(rng, *, input_shape, input_bits, layers, name="random"):
    """Build a Model from a list of layer descriptions.

    Each description is a dict with ``type`` ("dense" or "conv2d"), ``out`` (outputs or
    channels), ``m`` and, for layers after the first, ``n`` (input bases); conv2d adds
    ``kernel``, ``stride``, ``padding`` and optionally ``pool`` ((kh, kw), (sh, sw)).
    Batch-norm γ is drawn with some exact zeros and negatives.
    """
    built = []
    in_shape = tuple(input_shape)
    for index, spec in enumerate(layers):
        last = index == len(layers) - 1
        out = spec["out"]
        m_bases = spec["m"]
        extra = {}
        if spec["type"] == "dense":
            fan_in = int(np.prod(in_shape))
            out_shape = (out,)
        else:
            channels, height, width = in_shape
            kernel, stride, padding = spec["kernel"], spec["stride"], spec["padding"]
            fan_in = channels * kernel[0] * kernel[1]
            height = conv_output_size(height, kernel[0], stride[0], padding[0])
            width = conv_output_size(width, kernel[1], stride[1], padding[1])
            pool = None
            if spec.get("pool"):
                pool = PoolSpec(kernel=tuple(spec["pool"][0]), stride=tuple(spec["pool"][1]))
                height = conv_output_size(height, pool.kernel[0], pool.stride[0], 0)
                width = conv_output_size(width, pool.kernel[1], pool.stride[1], 0)
            out_shape = (out, height, width)
            extra = dict(kernel=tuple(kernel), stride=tuple(stride), padding=tuple(padding),
                         pool=pool)
        input_bases = None if index == 0 else spec["n"]
        if input_bases is not None:
            extra["input_shift"] = rng.uniform(-0.5, 1.5, input_bases)
            extra["input_scale"] = rng.normal(0.3, 0.3, input_bases)
        if not last:
            gamma = rng.normal(0.0, 1.0, out)
            gamma[rng.random(out) < 0.1] = 0.0
            # The batch-norm mean sits near the middle of the reachable pre-activation range.
            extra.update(bn_weight=gamma, bn_bias=rng.normal(0.0, 0.5, out),
                         bn_mean=rng.normal(0.0, 0.2 * np.sqrt(fan_in), out),
                         bn_var=rng.uniform(0.05, 2.0, out) * fan_in / 4, bn_eps=1e-5)
        built.append(Layer(
            name=f"layer{index}", type=spec["type"], in_shape=in_shape, out_shape=out_shape,
            weight_shifts=_shifts(m_bases), input_bases=input_bases,
            output="scores" if last else "bases",
            weight_bits=rng.integers(0, 2, (m_bases, out, fan_in), dtype=np.uint8),
            alpha=np.abs(rng.normal(0.5, 0.3, m_bases)) + 0.01, **extra))
        in_shape = out_shape
    spec = InputSpec(shape=tuple(input_shape), bits=input_bits, scale=1.0 / ((1 << input_bits) - 1),
                     offset=0.0)
    return Model(name=name, classes=built[-1].out_features, input=spec, layers=tuple(built))
