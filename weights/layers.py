"""PyTorch layers and networks for ABC-Net with M weight bases and N activation bases.

ABC-Net (Lin, Zhao and Pan, "Towards Accurate Binary Convolutional Neural Network",
NIPS 2017, as ``docs/model-format.md`` restates it) approximates a layer's whole weight tensor W and its input activations R by
sums of binary tensors::

    W ≈ Σ_m α_m·B_m,   B_m = sign(W − mean(W) + u_m·std(W)) ∈ {−1, +1}
    R = Σ_n β_n·A_n,   A_n = +1 if x + v_n ≥ 0.5 else −1      (x: the batch-norm output)
    y = Σ_m α_m·(B_m ⊛ R)

``ABCNet`` in evaluation mode computes exactly the arithmetic of the export format in
``docs/model-format.md``, so a numpy reference built from an exported file reproduces
its scores. The same network has a full-precision mode for pretraining.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from weights.format import PoolSpec, conv_output_size

__all__ = [
    "DEFAULT_ALPHA_RIDGE", "default_weight_shifts", "default_input_thresholds",
    "weight_bases", "fit_alpha", "approximate_weight",
    "ActivationBases", "ABCDense", "ABCConv2d",
    "DenseSpec", "ConvSpec", "ABCNet",
]

# Ridge term of the α fit, relative to the diagonal of BᵀB (which equals numel(W)). Bases
# with shifts close together are nearly collinear, and identical bases (std(W) = 0) make
# plain least squares singular. For well-conditioned bases, 1e-4 shrinks α by about 1e-4
# of its value.
DEFAULT_ALPHA_RIDGE = 1e-4


def default_weight_shifts(m_bases):
    """Return the shifts u_m = −1 + (m−1)·2/(M−1), spread over [−1, 1], or (0,) for M = 1."""
    if m_bases < 1:
        raise ValueError(f"the number of weight bases must be at least 1, got {m_bases}")
    if m_bases == 1:
        return (0.0,)
    return tuple(-1.0 + index * 2.0 / (m_bases - 1) for index in range(m_bases))


def default_input_thresholds(n_bases):
    """Return the initial thresholds t = linspace(−1, 1, N), or (0,) for N = 1.

    Base n starts as A_n = +1 iff x ≥ t_n, that is with the shift v_n = 0.5 − t_n.
    """
    if n_bases < 1:
        raise ValueError(f"the number of input bases must be at least 1, got {n_bases}")
    if n_bases == 1:
        return (0.0,)
    return tuple(-1.0 + index * 2.0 / (n_bases - 1) for index in range(n_bases))


# --- weights -------------------------------------------------------------------------

def weight_bases(weight, shifts):
    """Return the M binary bases of ``weight``, shape (M, *weight.shape), values ±1.

    B_m = sign(W − mean(W) + u_m·std(W)) with sign(0) = +1. The mean and the standard
    deviation run over the whole tensor, and the standard deviation is the population
    one (no Bessel correction).
    """
    weight = weight.detach()
    shifts = torch.as_tensor(shifts, dtype=weight.dtype, device=weight.device)
    centred = weight - weight.mean()
    deviation = weight.std(correction=0)
    shifted = centred.unsqueeze(0) + shifts.view(-1, *([1] * weight.dim())) * deviation
    return torch.where(shifted >= 0, 1.0, -1.0).to(weight.dtype)


def fit_alpha(weight, bases, ridge=DEFAULT_ALPHA_RIDGE):
    """Return α = argmin ‖vec W − [vec B_1 … vec B_M]·α‖² + λ‖α‖², with λ = ridge·numel(W).

    The fit runs in the dtype of ``weight`` and carries no gradient.
    """
    weight = weight.detach()
    count = weight.numel()
    matrix = bases.detach().reshape(bases.shape[0], count)
    gram = matrix @ matrix.T
    gram = gram + ridge * count * torch.eye(len(gram), dtype=gram.dtype, device=gram.device)
    return torch.linalg.solve(gram, matrix @ weight.reshape(count))


class _WeightApproximation(torch.autograd.Function):
    """Σ_m α_m·B_m forward, straight-through estimator backward.

    Each B_m passes the gradient unchanged to W, so ∂c/∂W = Σ_m α_m·∂c/∂Ŵ, where Ŵ is the
    approximation the layer computes with. α gets no gradient term from W.
    """

    @staticmethod
    def forward(ctx, weight, shifts, ridge):
        bases = weight_bases(weight, shifts)
        alpha = fit_alpha(weight, bases, ridge)
        ctx.save_for_backward(alpha)
        return torch.tensordot(alpha, bases, dims=1)

    @staticmethod
    def backward(ctx, grad_output):
        (alpha,) = ctx.saved_tensors
        return grad_output * alpha.sum(), None, None


def approximate_weight(weight, shifts, ridge=DEFAULT_ALPHA_RIDGE):
    """Return Σ_m α_m·B_m for ``weight``, with the straight-through gradient to ``weight``."""
    return _WeightApproximation.apply(weight, tuple(float(u) for u in shifts), ridge)


# --- activations ---------------------------------------------------------------------

class _ActivationSign(torch.autograd.Function):
    """A = +1 where z ≥ 0.5 else −1, for z = x + v. The gradient passes where 0 ≤ z ≤ 1."""

    @staticmethod
    def forward(ctx, shifted):
        ctx.save_for_backward(shifted)
        return torch.where(shifted >= 0.5, 1.0, -1.0).to(shifted.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (shifted,) = ctx.saved_tensors
        inside = (shifted >= 0) & (shifted <= 1)
        return grad_output * inside.to(grad_output.dtype)


class ActivationBases(nn.Module):
    """The N binary bases A_n of a layer's input and their scales: R = Σ_n β_n·A_n.

    ``shift`` (v) and ``scale`` (β) are trained like batch-norm parameters. The default
    start is v = 0.5 − t with t = ``default_input_thresholds(N)`` and β = 1/N. Bases may
    share a shift. β is unconstrained and may become negative.
    """

    def __init__(self, n_bases, thresholds=None, scales=None):
        super().__init__()
        if thresholds is None:
            thresholds = default_input_thresholds(n_bases)
        if scales is None:
            scales = [1.0 / n_bases] * n_bases
        if n_bases < 1 or len(thresholds) != n_bases or len(scales) != n_bases:
            raise ValueError(f"expected {n_bases} thresholds and {n_bases} scales for "
                             f"{n_bases} input bases, got {list(thresholds)} and {list(scales)}")
        thresholds = torch.tensor([float(t) for t in thresholds])
        self.shift = nn.Parameter(0.5 - thresholds)
        self.scale = nn.Parameter(torch.tensor([float(b) for b in scales]))

    @property
    def n_bases(self):
        return len(self.shift)

    def bases(self, x):
        """Return the bases A_n of ``x`` stacked on a new first axis: shape (N, *x.shape)."""
        shift = self.shift.view(-1, *([1] * x.dim()))
        return _ActivationSign.apply(x.unsqueeze(0) + shift)

    def combine(self, bases):
        """Return Σ_n β_n·A_n for bases stacked as ``bases()`` returns them."""
        scale = self.scale.view(-1, *([1] * (bases.dim() - 1)))
        return (scale * bases).sum(0)

    def forward(self, x):
        return self.combine(self.bases(x))


# --- layers --------------------------------------------------------------------------

class _ABCLayer(nn.Module):
    """Shared parts of the dense and convolution layers.

    ``input_bases`` is N for a layer fed by a batch norm, or None for the first layer,
    whose input is the real pixel value ``offset + scale·q`` and is never binarised.
    With ``full_precision`` set, the layer uses its latent weight directly, and a layer
    with input bases applies hardtanh (clamp to [−1, 1]) in place of the bases. With the
    default thresholds, Σ_n β_n·A_n is a staircase approximation of hardtanh.
    """

    def __init__(self, weight_shape, m_bases, input_bases, weight_shifts, input_thresholds,
                 alpha_ridge):
        super().__init__()
        if weight_shifts is None:
            weight_shifts = default_weight_shifts(m_bases)
        if m_bases < 1 or len(weight_shifts) != m_bases:
            raise ValueError(f"expected {m_bases} weight shifts for {m_bases} weight bases, "
                             f"got {list(weight_shifts)}")
        if alpha_ridge < 0:
            raise ValueError(f"alpha_ridge must be at least 0, got {alpha_ridge}")
        self.weight = nn.Parameter(torch.empty(weight_shape))
        # The same initialisation as nn.Linear and nn.Conv2d.
        nn.init.kaiming_uniform_(self.weight, a=5 ** 0.5)
        self.weight_shifts = tuple(float(u) for u in weight_shifts)
        self.alpha_ridge = float(alpha_ridge)
        self.activation = None
        if input_bases is not None:
            self.activation = ActivationBases(input_bases, thresholds=input_thresholds)
        self.full_precision = False

    @property
    def m_bases(self):
        return len(self.weight_shifts)

    @property
    def input_bases(self):
        return None if self.activation is None else self.activation.n_bases

    def binarize(self, dtype=None):
        """Return (B, α) for the current weight: B of shape (M, *weight.shape), α of shape (M,).

        With ``dtype`` the computation runs in that dtype, as the forward pass of a network
        converted to it does.
        """
        with torch.no_grad():
            weight = self.weight.detach() if dtype is None else self.weight.detach().to(dtype)
            bases = weight_bases(weight, self.weight_shifts)
            return bases, fit_alpha(weight, bases, self.alpha_ridge)

    def effective_weight(self):
        """Return the weight the layer computes with: W itself, or Σ_m α_m·B_m."""
        if self.full_precision:
            return self.weight
        return approximate_weight(self.weight, self.weight_shifts, self.alpha_ridge)

    def extra_repr(self):
        return (f"weight_shape={tuple(self.weight.shape)}, m_bases={self.m_bases}, "
                f"input_bases={self.input_bases}, full_precision={self.full_precision}")


class ABCDense(_ABCLayer):
    """y = Σ_m α_m·B_m·R, with no bias. An input with more than two axes is flattened first."""

    def __init__(self, in_features, out_features, m_bases, input_bases=None, *,
                 weight_shifts=None, input_thresholds=None, alpha_ridge=DEFAULT_ALPHA_RIDGE):
        super().__init__((out_features, in_features), m_bases, input_bases, weight_shifts,
                         input_thresholds, alpha_ridge)
        self.in_features = in_features
        self.out_features = out_features

    def forward(self, x):
        x = x.flatten(1)
        if self.activation is None:
            inputs = x
        elif self.full_precision:
            inputs = F.hardtanh(x)
        else:
            inputs = self.activation(x)
        return F.linear(inputs, self.effective_weight())


class ABCConv2d(_ABCLayer):
    """y = Σ_m α_m·(B_m ⊛ R), with no bias and "minus-one" padding.

    Every binary input plane A_n is padded with −1, so R is padded with −Σ_n β_n. The
    first layer (``input_bases=None``) pads its real input with ``input_offset``, the
    real value of the pixel q = 0.
    """

    def __init__(self, in_channels, out_channels, kernel, stride, padding, m_bases,
                 input_bases=None, *, input_offset=0.0, weight_shifts=None,
                 input_thresholds=None, alpha_ridge=DEFAULT_ALPHA_RIDGE):
        kernel, stride, padding = _pair(kernel), _pair(stride), _pair(padding)
        super().__init__((out_channels, in_channels, *kernel), m_bases, input_bases,
                         weight_shifts, input_thresholds, alpha_ridge)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel = kernel
        self.stride = stride
        self.padding = padding
        self.input_offset = float(input_offset)

    def forward(self, x):
        # F.pad lists the last axis first: (left, right, top, bottom).
        pads = (self.padding[1], self.padding[1], self.padding[0], self.padding[0])
        if self.activation is None:
            inputs = F.pad(x, pads, value=self.input_offset)
        elif self.full_precision:
            inputs = F.pad(F.hardtanh(x), pads, value=-1.0)
        else:
            # Padding the stacked bases (N, batch, C, H, W) keeps the gradient to β exact.
            bases = F.pad(self.activation.bases(x), pads, value=-1.0)
            inputs = self.activation.combine(bases)
        return F.conv2d(inputs, self.effective_weight(), stride=self.stride)


def _pair(value):
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) for v in value)


# --- networks ------------------------------------------------------------------------

@dataclass(frozen=True)
class DenseSpec:
    """A dense layer of a network description."""
    out_features: int


@dataclass(frozen=True)
class ConvSpec:
    """A convolution of a network description, with an optional max-pool after it."""
    out_channels: int
    kernel: tuple = (3, 3)
    stride: tuple = (1, 1)
    padding: tuple = (0, 0)
    pool: PoolSpec | None = None


class ABCNet(nn.Module):
    """A chain of ABC layers that maps one to one onto the export format.

    Layer i (dense or conv2d) is followed, unless it is the last, by ``pools[i]`` (a
    max-pool for a convolution that has one, else identity), ``norms[i]`` (batch norm)
    and the activation bases that layer i+1 owns. The last layer outputs raw scores with
    no batch norm or bias, so training applies cross-entropy to them directly.

    The input is unsigned integer pixels q of shape (batch, *input_spec.shape), or any
    shape with the same number of elements per sample, which is reshaped in C order.
    The network computes with x = offset + scale·q.

    ``input_spec`` is a ``weights.format.InputSpec``. ``weight_bases`` is M for every
    layer or a sequence with one M per layer. ``input_bases`` is N for every layer after
    the first or a sequence with one N per layer after the first. ``weight_shifts``,
    when given, is the shift set of every layer, so every layer needs that many bases.
    """

    def __init__(self, input_spec, layer_specs, weight_bases=3, input_bases=3, *,
                 weight_shifts=None, alpha_ridge=DEFAULT_ALPHA_RIDGE, bn_eps=1e-5,
                 bn_momentum=0.1):
        super().__init__()
        layer_specs = tuple(layer_specs)
        if not layer_specs:
            raise ValueError("a network needs at least one layer")
        if isinstance(layer_specs[-1], ConvSpec) and layer_specs[-1].pool is not None:
            raise ValueError("the last layer outputs scores and cannot pool; set its pool to None")
        m_per_layer = _per_layer(weight_bases, len(layer_specs), "weight_bases")
        n_per_layer = (None,) + _per_layer(input_bases, len(layer_specs) - 1, "input_bases")
        self.input_spec = input_spec

        self.layers = nn.ModuleList()
        self.pools = nn.ModuleList()
        self.norms = nn.ModuleList()
        self.shapes = []
        shape = tuple(input_spec.shape)
        for index, spec in enumerate(layer_specs):
            is_last = index == len(layer_specs) - 1
            layer, pool, out_shape = _build_layer(spec, shape, m_per_layer[index],
                                                  n_per_layer[index], input_spec.offset,
                                                  weight_shifts, alpha_ridge)
            self.layers.append(layer)
            self.shapes.append((shape, out_shape))
            if not is_last:
                self.pools.append(pool)
                norm_type = nn.BatchNorm2d if len(out_shape) == 3 else nn.BatchNorm1d
                self.norms.append(norm_type(out_shape[0], eps=bn_eps, momentum=bn_momentum))
            shape = out_shape
        self.classes = shape[0]

    @property
    def full_precision(self):
        return self.layers[0].full_precision

    def set_full_precision(self, enabled):
        """Switch every layer between full-precision and ABC arithmetic and return the network."""
        for layer in self.layers:
            layer.full_precision = bool(enabled)
        return self

    def forward(self, pixels):
        x = pixels.reshape(len(pixels), *self.input_spec.shape).to(self.layers[0].weight.dtype)
        x = self.input_spec.offset + self.input_spec.scale * x
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < len(self.norms):
                x = self.norms[index](self.pools[index](x))
        return x


def _per_layer(value, count, name):
    if isinstance(value, int):
        return (value,) * count
    value = tuple(value)
    if len(value) != count:
        raise ValueError(f"{name} needs one value per layer ({count}), got {list(value)}")
    return value


def _build_layer(spec, in_shape, m_bases, input_bases, input_offset, weight_shifts,
                 alpha_ridge):
    """Return (layer, pool module, output shape) for one layer description."""
    if isinstance(spec, DenseSpec):
        in_features = 1
        for size in in_shape:
            in_features *= size
        layer = ABCDense(in_features, spec.out_features, m_bases, input_bases,
                         weight_shifts=weight_shifts, alpha_ridge=alpha_ridge)
        return layer, nn.Identity(), (spec.out_features,)

    if not isinstance(spec, ConvSpec):
        raise TypeError(f"expected a DenseSpec or ConvSpec, got {spec!r}")
    if len(in_shape) != 3:
        raise ValueError(f"a convolution needs a (channels, height, width) input, but its "
                         f"input has shape {in_shape}; put convolutions before dense layers")
    channels, height, width = in_shape
    kernel, stride, padding = _pair(spec.kernel), _pair(spec.stride), _pair(spec.padding)
    layer = ABCConv2d(channels, spec.out_channels, kernel, stride, padding, m_bases,
                      input_bases, input_offset=input_offset, weight_shifts=weight_shifts,
                      alpha_ridge=alpha_ridge)
    height = conv_output_size(height, kernel[0], stride[0], padding[0])
    width = conv_output_size(width, kernel[1], stride[1], padding[1])
    pool = nn.Identity()
    if spec.pool is not None:
        pool_kernel, pool_stride = _pair(spec.pool.kernel), _pair(spec.pool.stride)
        pool = nn.MaxPool2d(pool_kernel, pool_stride)
        height = conv_output_size(height, pool_kernel[0], pool_stride[0], 0)
        width = conv_output_size(width, pool_kernel[1], pool_stride[1], 0)
    if height < 1 or width < 1:
        raise ValueError(f"{spec} does not fit its {in_shape[1]}x{in_shape[2]} input")
    return layer, pool, (spec.out_channels, height, width)
