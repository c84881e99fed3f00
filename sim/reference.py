"""The float reference: what the trained PyTorch model computes in eval mode, in float64.

It reads an exported model (``weights.format.Model``) and follows the ABC-Net arithmetic
literally, with real α and β and batch norm, so it measures how far the compiler's
integer form departs from the trained model. Activations are returned in the layout of
``sim.integer`` (elements with bit n = base n; convolution maps as (batch, H, W, C)) so
the two can be compared bit for bit.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["FloatResult", "forward_float"]


@dataclass
class FloatResult:
    scores: np.ndarray          # (batch, classes) float64
    labels: np.ndarray          # (batch,) int64, ties to the lowest index
    activations: list           # per non-final layer: output elements, integer model layout


def _conv(values, bases, kernel, stride, padding, pad_value):
    """Cross-correlate a (batch, C, H, W) map with ±1 bases (M, O, C·kh·kw), PyTorch order."""
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, padding
    batch, channels, height, width = values.shape
    padded = np.full((batch, channels, height + 2 * ph, width + 2 * pw), pad_value)
    padded[:, :, ph:ph + height, pw:pw + width] = values
    out_h = (height + 2 * ph - kh) // sh + 1
    out_w = (width + 2 * pw - kw) // sw + 1
    rows = (np.arange(out_h) * sh)[:, None] + np.arange(kh)[None, :]
    cols = (np.arange(out_w) * sw)[:, None] + np.arange(kw)[None, :]
    windows = padded[:, :, rows[:, None, :, None], cols[None, :, None, :]]  # (B, C, oh, ow, kh, kw)
    windows = windows.transpose(0, 2, 3, 1, 4, 5).reshape(batch, out_h, out_w, -1)
    y = np.einsum("bhwk,mok->mbohw", windows, bases)
    return y                                                     # (M, B, O, oh, ow)


def _max_pool(y, kernel, stride):
    (kh, kw), (sh, sw) = kernel, stride
    _, _, height, width = y.shape
    out_h = (height - kh) // sh + 1
    out_w = (width - kw) // sw + 1
    rows = (np.arange(out_h) * sh)[:, None] + np.arange(kh)[None, :]
    cols = (np.arange(out_w) * sw)[:, None] + np.arange(kw)[None, :]
    return y[:, :, rows[:, None, :, None], cols[None, :, None, :]].max(axis=(4, 5))


def forward_float(model, pixels):
    """Run the exported model in float64 on integer pixels of shape (batch, *input.shape)."""
    pixels = np.asarray(pixels)
    spec = model.input
    values = spec.offset + spec.scale * pixels.astype(np.float64)
    pad_value = spec.offset
    activations = []
    for index, layer in enumerate(model.layers):
        bases = 2.0 * layer.weight_bits.astype(np.float64) - 1.0          # (M, O, K), ±1
        alpha = layer.alpha
        if layer.type == "conv2d":
            y = np.einsum("m,mbohw->bohw",
                          alpha, _conv(values, bases, layer.kernel, layer.stride,
                                       layer.padding, pad_value))
            if layer.pool is not None:
                y = _max_pool(y, layer.pool.kernel, layer.pool.stride)
        else:
            flat = values.reshape(values.shape[0], -1)
            y = np.einsum("m,bk,mok->bo", alpha, flat, bases)

        if layer.output == "scores":
            return FloatResult(scores=y, labels=np.argmax(y, axis=-1).astype(np.int64),
                               activations=activations)

        following = model.layers[index + 1]
        shape = (1, -1) + (1,) * (y.ndim - 2)
        normalised = (layer.bn_weight.reshape(shape) * (y - layer.bn_mean.reshape(shape))
                      / np.sqrt(layer.bn_var.reshape(shape) + layer.bn_eps)
                      + layer.bn_bias.reshape(shape))
        # A_n = +1 iff BN(y) + v_n ≥ 0.5, the step of clip(x + v_n, 0, 1) at one half.
        bits = normalised[..., None] + following.input_shift >= 0.5         # (..., N)
        signs = np.where(bits, 1.0, -1.0)
        values = np.einsum("...n,n->...", signs, following.input_scale)
        pad_value = -float(following.input_scale.sum())

        elements = (bits.astype(np.int64) << np.arange(bits.shape[-1])).sum(axis=-1)
        if layer.type == "conv2d":
            elements = elements.transpose(0, 2, 3, 1)
        activations.append(elements)
    raise ValueError(f"model {model.name}: the last layer must output scores")
