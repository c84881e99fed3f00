"""Export a trained ``ABCNet`` to the model format, and score pixels with it in float64.

The exported B_m and α_m are computed from the latent weights in float64, by the same
functions the forward pass uses. So ``score_pixels``, which runs the PyTorch network in
float64, and a numpy reference that reads the exported file compute the same scores up
to float rounding.
"""

import copy

import numpy as np
import torch

from weights.format import Layer, Model, PoolSpec, save_model
from weights.layers import ABCConv2d, ABCNet

__all__ = ["build_model", "export_model", "score_pixels"]


def build_model(network, name, *, description="", training=None):
    """Build the ``weights.format.Model`` of an ABC-mode ``network`` without writing it."""
    if not isinstance(network, ABCNet):
        raise TypeError(f"expected an ABCNet, got {type(network).__name__}")
    if network.full_precision:
        raise ValueError("the network is in full-precision mode, so it has no binary bases to "
                         "export. Call set_full_precision(False) and fine-tune it first")
    layers = []
    last = len(network.layers) - 1
    for index, layer in enumerate(network.layers):
        in_shape, out_shape = network.shapes[index]
        fields = _layer_fields(layer, index)
        if index < last:
            fields.update(_norm_fields(network.norms[index]))
        if isinstance(layer, ABCConv2d):
            fields.update(_conv_fields(layer, network.pools[index]))
        layers.append(Layer(
            type="conv2d" if isinstance(layer, ABCConv2d) else "dense",
            in_shape=tuple(in_shape), out_shape=tuple(out_shape),
            output="scores" if index == last else "bases", **fields))
    return Model(name=name, classes=network.classes, input=network.input_spec,
                 layers=tuple(layers), description=description, training=training or {})


def export_model(network, name, path, *, description="", training=None):
    """Write ``network`` to ``path`` in the model format (atomically) and return the Model.

    ``training`` is the free-form record stored as the metadata field ``training``.
    ``save_model`` validates the model before it writes anything.
    """
    model = build_model(network, name, description=description, training=training)
    save_model(model, path)
    return model


def score_pixels(network, pixels, batch_size=1024):
    """Return the scores of ``network`` for integer ``pixels`` as a float64 numpy array.

    A float64 copy of the network runs in evaluation mode, so the original keeps its
    dtype and training state.
    """
    reference = copy.deepcopy(network).double().eval()
    pixels = torch.as_tensor(np.asarray(pixels))
    scores = []
    with torch.no_grad():
        for start in range(0, len(pixels), batch_size):
            scores.append(reference(pixels[start:start + batch_size]).numpy())
    if not scores:
        return np.zeros((0, network.classes))
    return np.concatenate(scores)


def _layer_fields(layer, index):
    bases, alpha = layer.binarize(dtype=torch.float64)
    m_bases = layer.m_bases
    out_features = bases.shape[1]
    fields = dict(
        name=f"layer{index}",
        weight_shifts=layer.weight_shifts,
        input_bases=layer.input_bases,
        weight_bits=(bases > 0).to(torch.uint8).reshape(m_bases, out_features, -1).numpy(),
        alpha=alpha.numpy().astype(np.float64),
    )
    if layer.activation is not None:
        fields["input_shift"] = _float64(layer.activation.shift)
        fields["input_scale"] = _float64(layer.activation.scale)
    return fields


def _norm_fields(norm):
    if not norm.affine or not norm.track_running_stats:
        raise ValueError(f"{norm} needs affine parameters and running statistics to be exported")
    return dict(bn_weight=_float64(norm.weight), bn_bias=_float64(norm.bias),
                bn_mean=_float64(norm.running_mean), bn_var=_float64(norm.running_var),
                bn_eps=float(norm.eps))


def _conv_fields(layer, pool_module):
    pool = None
    if isinstance(pool_module, torch.nn.MaxPool2d):
        if pool_module.padding not in (0, (0, 0)) or pool_module.ceil_mode:
            raise ValueError(f"{pool_module}: the format allows only max-pools without "
                             f"padding, in floor mode")
        pool = PoolSpec(kernel=_pair(pool_module.kernel_size), stride=_pair(pool_module.stride))
    return dict(kernel=layer.kernel, stride=layer.stride, padding=layer.padding, pool=pool)


def _pair(value):
    return (value, value) if isinstance(value, int) else tuple(value)


def _float64(tensor):
    return tensor.detach().to(torch.float64).cpu().numpy().copy()
