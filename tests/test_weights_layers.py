"""The ABC-Net layer arithmetic in weights.layers: bases, α, straight-through gradients,
padding and the network container."""

import numpy as np
import pytest
import torch

from weights.format import InputSpec, PoolSpec
from weights.layers import (
    ABCConv2d, ABCDense, ABCNet, ActivationBases, ConvSpec, DenseSpec,
    approximate_weight, default_input_thresholds, default_weight_shifts, fit_alpha,
    weight_bases,
)


def numpy_bases(weight, shifts):
    centred = weight - weight.mean()
    return np.stack([np.where(centred + u * weight.std() >= 0, 1.0, -1.0) for u in shifts])


# --- shift sets --------------------------------------------------------------------------

def test_default_weight_shifts():
    assert default_weight_shifts(1) == (0.0,)
    assert default_weight_shifts(2) == (-1.0, 1.0)
    assert default_weight_shifts(3) == (-1.0, 0.0, 1.0)
    assert default_weight_shifts(5) == (-1.0, -0.5, 0.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="at least 1, got 0"):
        default_weight_shifts(0)


def test_default_input_thresholds():
    assert default_input_thresholds(1) == (0.0,)
    assert default_input_thresholds(3) == (-1.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="at least 1, got 0"):
        default_input_thresholds(0)


# --- weight bases and α ------------------------------------------------------------------

def test_weight_bases_match_formula():
    generator = np.random.default_rng(1)
    weight = generator.normal(size=(7, 5, 3, 3))
    shifts = (-1.0, -0.3, 0.0, 0.8)

    bases = weight_bases(torch.from_numpy(weight), shifts).numpy()

    assert bases.shape == (4, 7, 5, 3, 3)
    assert bases.dtype == np.float64
    np.testing.assert_array_equal(bases, numpy_bases(weight, shifts))


def test_weight_bases_sign_of_zero_is_plus_one():
    # mean 0 and population std 1 exactly, so W − mean + u·std is exactly 0 where W = −u.
    weight = torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=torch.float64)

    bases = weight_bases(weight, (-1.0, 0.0, 1.0))

    assert bases[0].tolist() == [-1.0, 1.0, -1.0, 1.0]
    assert bases[1].tolist() == [-1.0, 1.0, -1.0, 1.0]
    assert bases[2].tolist() == [1.0, 1.0, 1.0, 1.0]


def test_weight_bases_use_whole_tensor_statistics():
    # One output row far from the others: per-row statistics would binarise it differently.
    weight = torch.tensor([[0.1, 0.2, 0.3], [5.0, 5.1, 5.2]], dtype=torch.float64)

    bases = weight_bases(weight, (0.0,))

    assert bases[0].tolist() == [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]


def test_alpha_equals_least_squares_without_ridge():
    generator = np.random.default_rng(2)
    weight = generator.normal(size=(16, 24))
    shifts = default_weight_shifts(3)
    bases = numpy_bases(weight, shifts)

    alpha = fit_alpha(torch.from_numpy(weight), torch.from_numpy(bases), ridge=0.0).numpy()

    expected, *_ = np.linalg.lstsq(bases.reshape(3, -1).T, weight.reshape(-1), rcond=None)
    np.testing.assert_allclose(alpha, expected, rtol=1e-10)


def test_alpha_ridge_matches_closed_form():
    generator = np.random.default_rng(3)
    weight = generator.normal(size=(10, 12))
    bases = numpy_bases(weight, default_weight_shifts(5))
    ridge = 1e-4

    alpha = fit_alpha(torch.from_numpy(weight), torch.from_numpy(bases), ridge=ridge).numpy()

    matrix = bases.reshape(5, -1).T
    gram = matrix.T @ matrix + ridge * weight.size * np.eye(5)
    np.testing.assert_allclose(alpha, np.linalg.solve(gram, matrix.T @ weight.reshape(-1)),
                               rtol=1e-10)
    plain, *_ = np.linalg.lstsq(matrix, weight.reshape(-1), rcond=None)
    np.testing.assert_allclose(alpha, plain, rtol=1e-2)


def test_alpha_finite_for_identical_bases():
    # A constant tensor has std 0, so all M bases are identical and BᵀB is singular.
    weight = torch.full((4, 4), 0.5, dtype=torch.float64)
    bases = weight_bases(weight, default_weight_shifts(3))

    alpha = fit_alpha(weight, bases)

    assert torch.all(torch.isfinite(alpha))
    approximation = torch.tensordot(alpha, bases, dims=1)
    torch.testing.assert_close(approximation, weight, rtol=1e-3, atol=0.0)


def test_approximate_weight_value():
    generator = torch.Generator().manual_seed(4)
    weight = torch.randn(6, 9, generator=generator, dtype=torch.float64)
    shifts = default_weight_shifts(3)

    approximation = approximate_weight(weight, shifts)

    bases = weight_bases(weight, shifts)
    expected = torch.tensordot(fit_alpha(weight, bases), bases, dims=1)
    torch.testing.assert_close(approximation, expected, rtol=0.0, atol=0.0)


def test_weight_gradient_straight_through():
    torch.manual_seed(5)
    layer = ABCDense(9, 4, m_bases=3).double()
    inputs = torch.randn(5, 9, dtype=torch.float64)
    upstream = torch.randn(5, 4, dtype=torch.float64)

    (layer(inputs) * upstream).sum().backward()

    # ∂c/∂W = Σ_m α_m·∂c/∂Ŵ, and ∂c/∂Ŵ = upstreamᵀ·inputs for y = inputs·Ŵᵀ.
    _, alpha = layer.binarize()
    expected = alpha.sum() * (upstream.T @ inputs)
    torch.testing.assert_close(layer.weight.grad, expected)


def test_single_weight_base():
    torch.manual_seed(6)
    layer = ABCDense(8, 3, m_bases=1).double()

    bases, alpha = layer.binarize()

    assert layer.weight_shifts == (0.0,)
    assert bases.shape == (1, 3, 8)
    weight = layer.weight.detach()
    torch.testing.assert_close(bases[0], torch.where(weight - weight.mean() >= 0, 1.0, -1.0)
                               .double())
    # With one base, BᵀB = K, so the ridge fit is α = ⟨W, B⟩ / (K·(1 + ridge)).
    projection = (weight * bases[0]).sum() / weight.numel()
    torch.testing.assert_close(alpha[0], projection / (1 + 1e-4))
    layer(torch.randn(2, 8, dtype=torch.float64)).sum().backward()
    assert layer.weight.grad.abs().sum() > 0


def test_alpha_recomputed_each_forward():
    torch.manual_seed(7)
    layer = ABCDense(4, 2, m_bases=2).double().eval()
    inputs = torch.randn(3, 4, dtype=torch.float64)
    first = layer(inputs)

    torch.testing.assert_close(layer(inputs), first, rtol=0.0, atol=0.0)
    with torch.no_grad():
        layer.weight.mul_(2.0)
    torch.testing.assert_close(layer(inputs), 2.0 * first)


# --- activation bases --------------------------------------------------------------------

def test_activation_bases_initial_values():
    bases = ActivationBases(3)

    torch.testing.assert_close(bases.shift, torch.tensor([1.5, 0.5, -0.5]))
    torch.testing.assert_close(bases.scale, torch.full((3,), 1 / 3))


def test_activation_threshold_inclusive():
    bases = ActivationBases(1, thresholds=[0.25]).double()
    x = torch.tensor([0.25 - 1e-12, 0.25, 0.25 + 1e-12], dtype=torch.float64)

    assert bases.bases(x)[0].tolist() == [-1.0, 1.0, 1.0]


def test_activation_sum_of_scaled_bases():
    bases = ActivationBases(3, thresholds=[-1.0, 0.0, 1.0], scales=[0.5, -0.25, 2.0]).double()
    x = torch.tensor([-2.0, -0.5, 0.5, 3.0], dtype=torch.float64)

    output = bases(x)

    expected = [-0.5 + 0.25 - 2.0, 0.5 + 0.25 - 2.0, 0.5 - 0.25 - 2.0, 0.5 - 0.25 + 2.0]
    assert output.tolist() == expected


def test_activation_gradient_straight_through():
    bases = ActivationBases(1, thresholds=[0.0], scales=[0.75]).double()
    # v = 0.5, so the gradient passes for x + 0.5 in [0, 1], x in [−0.5, 0.5], ends included.
    x = torch.tensor([-0.6, -0.5, -0.1, 0.0, 0.5, 0.6], dtype=torch.float64, requires_grad=True)
    upstream = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], dtype=torch.float64)

    (bases(x) * upstream).sum().backward()

    assert x.grad.tolist() == [0.0, 0.75 * 2.0, 0.75 * 3.0, 0.75 * 4.0, 0.75 * 5.0, 0.0]
    assert bases.shift.grad.tolist() == [0.75 * (2.0 + 3.0 + 4.0 + 5.0)]
    a_values = [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    assert bases.scale.grad.tolist() == [sum(a * g for a, g in zip(a_values, upstream.tolist()))]


def test_identical_activation_bases():
    bases = ActivationBases(3, thresholds=[0.0, 0.0, 0.0], scales=[0.1, 0.2, 0.3]).double()
    x = torch.tensor([-1.0, 0.25, 2.0], dtype=torch.float64, requires_grad=True)

    output = bases(x)
    output.sum().backward()

    torch.testing.assert_close(output, torch.tensor([-0.6, 0.6, 0.6], dtype=torch.float64))
    torch.testing.assert_close(x.grad, torch.tensor([0.0, 0.6, 0.0], dtype=torch.float64))


def test_activation_bases_reject_count_mismatch():
    with pytest.raises(ValueError, match="expected 2 thresholds and 2 scales"):
        ActivationBases(2, thresholds=[0.0])


# --- padding -----------------------------------------------------------------------------

def constant_conv(input_bases, input_offset=0.0):
    """A 1→1 channel 3×3 convolution with padding 1 whose weights are all 0.5."""
    layer = ABCConv2d(1, 1, 3, 1, 1, m_bases=1, input_bases=input_bases,
                      input_offset=input_offset).double()
    with torch.no_grad():
        layer.weight.fill_(0.5)
    return layer


def test_conv_pads_bases_with_minus_one():
    layer = constant_conv(input_bases=2)
    with torch.no_grad():
        layer.activation.scale.copy_(torch.tensor([0.25, 0.5]))
    # Every input far above both thresholds: all bases +1, so R = Σβ = 0.75 inside.
    x = torch.full((1, 1, 4, 4), 10.0, dtype=torch.float64)

    output = layer(x)

    _, alpha = layer.binarize()
    # A corner window covers 4 inputs and 5 padded positions of value −Σβ.
    torch.testing.assert_close(output[0, 0, 0, 0], alpha[0] * (4 * 0.75 - 5 * 0.75))
    torch.testing.assert_close(output[0, 0, 0, 1], alpha[0] * (6 * 0.75 - 3 * 0.75))
    torch.testing.assert_close(output[0, 0, 1, 1], alpha[0] * 9 * 0.75)


def test_conv_pads_first_layer_with_offset():
    layer = constant_conv(input_bases=None, input_offset=-0.25)
    x = torch.ones((1, 1, 4, 4), dtype=torch.float64)

    output = layer(x)

    _, alpha = layer.binarize()
    torch.testing.assert_close(output[0, 0, 0, 0], alpha[0] * (4 * 1.0 + 5 * -0.25))
    torch.testing.assert_close(output[0, 0, 1, 1], alpha[0] * 9.0)


def test_conv_padding_gradient_reaches_scale():
    layer = constant_conv(input_bases=1)
    x = torch.full((1, 1, 3, 3), 10.0, dtype=torch.float64)

    layer(x)[0, 0, 0, 0].backward()

    # Corner output = α·β·(4·(+1) + 5·(−1)), so its derivative by β is −α.
    _, alpha = layer.binarize()
    torch.testing.assert_close(layer.activation.scale.grad, -alpha)


def test_full_precision_conv_pads_with_minus_one():
    layer = constant_conv(input_bases=1)
    layer.full_precision = True
    x = torch.full((1, 1, 3, 3), 0.5, dtype=torch.float64)

    output = layer(x)

    torch.testing.assert_close(output[0, 0, 0, 0], torch.tensor(0.5 * (4 * 0.5 - 5.0),
                                                                dtype=torch.float64))


# --- network -----------------------------------------------------------------------------

def small_cnn(weight_bases=2, input_bases=2):
    spec = InputSpec(shape=(1, 6, 6), bits=4, scale=0.1, offset=-0.5)
    layers = [ConvSpec(3, kernel=(3, 3), padding=(1, 1), pool=PoolSpec((2, 2), (2, 2))),
              ConvSpec(4, kernel=(2, 2), stride=(1, 1)),
              DenseSpec(5)]
    return ABCNet(spec, layers, weight_bases, input_bases)


def test_network_structure_and_shapes():
    torch.manual_seed(8)
    network = small_cnn(weight_bases=[1, 2, 3], input_bases=[2, 1])

    assert network.shapes == [((1, 6, 6), (3, 3, 3)), ((3, 3, 3), (4, 2, 2)), ((4, 2, 2), (5,))]
    assert network.classes == 5
    assert [layer.m_bases for layer in network.layers] == [1, 2, 3]
    assert [layer.input_bases for layer in network.layers] == [None, 2, 1]
    assert len(network.norms) == 2
    assert isinstance(network.pools[0], torch.nn.MaxPool2d)
    assert isinstance(network.pools[1], torch.nn.Identity)
    assert network.layers[0].input_offset == -0.5


def test_network_forward_matches_manual_chain():
    torch.manual_seed(9)
    network = small_cnn().double().eval()
    pixels = torch.randint(0, 16, (3, 36))

    scores = network(pixels)

    x = -0.5 + 0.1 * pixels.double().reshape(3, 1, 6, 6)
    x = network.norms[0](network.pools[0](network.layers[0](x)))
    x = network.norms[1](network.layers[1](x))
    torch.testing.assert_close(scores, network.layers[2](x), rtol=0.0, atol=0.0)


def test_network_full_precision_switch():
    torch.manual_seed(10)
    network = small_cnn()

    assert network.set_full_precision(True) is network
    assert network.full_precision
    assert all(layer.full_precision for layer in network.layers)
    torch.testing.assert_close(network.layers[1].effective_weight(), network.layers[1].weight)
    network.set_full_precision(False)
    assert not network.full_precision
    assert not torch.equal(network.layers[1].effective_weight(), network.layers[1].weight)


def test_network_rejects_bad_descriptions():
    spec = InputSpec(shape=(64,), bits=5, scale=1 / 16, offset=0.0)
    with pytest.raises(ValueError, match="at least one layer"):
        ABCNet(spec, [])
    with pytest.raises(ValueError, match="put convolutions before dense layers"):
        ABCNet(spec, [ConvSpec(4), DenseSpec(10)])
    with pytest.raises(ValueError, match="one value per layer"):
        ABCNet(spec, [DenseSpec(8), DenseSpec(10)], weight_bases=[1, 2, 3])
    with pytest.raises(ValueError, match="expected 2 weight shifts"):
        ABCNet(spec, [DenseSpec(8), DenseSpec(10)], weight_bases=2, weight_shifts=[0.0])
    image = InputSpec(shape=(1, 8, 8), bits=5, scale=1 / 16, offset=0.0)
    with pytest.raises(ValueError, match="cannot pool"):
        ABCNet(image, [ConvSpec(4, pool=PoolSpec((2, 2), (2, 2)))])
