"""Export round trip: a trained ABCNet, written and loaded again, gives the same scores in a
numpy re-computation as the PyTorch network in float64. Also checks the shipped model."""

from pathlib import Path

import numpy as np
import pytest
import torch

from weights.data import load_dataset
from weights.export import build_model, export_model, score_pixels
from weights.format import load_model
from weights.layers import fit_alpha, weight_bases
from weights.train import TrainingConfig, build_network, train

SHIPPED_MODEL = Path(__file__).resolve().parent.parent / "weights" / "models" / "digits-mlp.npz"


# --- numpy re-computation of the format's arithmetic -------------------------------------

def windows(planes, kernel, stride):
    """Return (..., rows, columns, kh, kw) windows of the last two axes of ``planes``."""
    view = np.lib.stride_tricks.sliding_window_view(planes, kernel, axis=(-2, -1))
    return view[..., ::stride[0], ::stride[1], :, :]


def numpy_scores(model, pixels):
    """Compute y = Σ_m Σ_n α_m·β_n·(B_m · A_n) layer by layer, as docs/model-format.md states."""
    batch = len(pixels)
    x = pixels.reshape(batch, *model.input.shape).astype(np.float64)
    x = model.input.offset + model.input.scale * x
    for layer in model.layers:
        signs = 2.0 * layer.weight_bits.astype(np.float64) - 1.0          # (M, O, K)
        if layer.input_bases is None:
            planes = x[np.newaxis]                                       # one real plane
            plane_scales = np.ones(1)
            pad_value = model.input.offset
        else:
            shift = layer.input_shift.reshape(-1, *([1] * x.ndim))
            planes = np.where(x[np.newaxis] + shift >= 0.5, 1.0, -1.0)  # (N, batch, ...)
            plane_scales = layer.input_scale
            pad_value = -1.0

        if layer.type == "dense":
            columns = planes.reshape(len(planes), batch, 1, -1)          # (N, batch, 1, K)
            out_size = None
        else:
            ph, pw = layer.padding
            planes = np.pad(planes, [(0, 0)] * 3 + [(ph, ph), (pw, pw)],
                            constant_values=pad_value)
            view = windows(planes, layer.kernel, layer.stride)     # (N, b, C, R, S, kh, kw)
            out_size = view.shape[3:5]
            columns = view.transpose(0, 1, 3, 4, 2, 5, 6).reshape(
                len(planes), batch, out_size[0] * out_size[1], -1)       # (N, b, R·S, K)

        dots = np.einsum("mok,nbpk->mnbpo", signs, columns, optimize=True)
        y = np.einsum("m,n,mnbpo->bop", layer.alpha, plane_scales, dots, optimize=True)
        if out_size is not None:
            y = y.reshape(batch, -1, *out_size)
        else:
            y = y[..., 0]

        if layer.output == "scores":
            return y
        if layer.pool is not None:
            y = windows(y, layer.pool.kernel, layer.pool.stride).max(axis=(-2, -1))
        shape = (1, -1) + (1,) * (y.ndim - 2)
        x = (layer.bn_weight.reshape(shape) * (y - layer.bn_mean.reshape(shape))
             / np.sqrt(layer.bn_var.reshape(shape) + layer.bn_eps) + layer.bn_bias.reshape(shape))
    raise AssertionError("the model has no scores layer")


# --- trained networks --------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


@pytest.fixture(scope="module")
def trained_mlp():
    torch.set_num_threads(1)
    config = TrainingConfig(architecture="mlp", weight_bases=3, input_bases=2, seed=1,
                            full_precision_epochs=2, abc_epochs=2)
    return train(config)


@pytest.fixture(scope="module")
def trained_cnn():
    torch.set_num_threads(1)
    config = TrainingConfig(architecture="cnn", weight_bases=2, input_bases=3, seed=2,
                            full_precision_epochs=1, abc_epochs=1)
    return train(config)


@pytest.mark.parametrize("fixture", ["trained_mlp", "trained_cnn"])
def test_round_trip_scores_match(fixture, digits, tmp_path, request):
    network, record = request.getfixturevalue(fixture)
    path = tmp_path / "model.npz"

    export_model(network, "round-trip", path, training=record)
    model = load_model(path)

    expected = score_pixels(network, digits.test_pixels)
    actual = numpy_scores(model, digits.test_pixels)
    assert actual.shape == (len(digits.test_labels), 10)
    np.testing.assert_allclose(actual, expected, rtol=1e-9, atol=1e-9 * np.abs(expected).max())
    np.testing.assert_array_equal(actual.argmax(axis=1), expected.argmax(axis=1))


def test_round_trip_padding_matters(trained_cnn, digits, tmp_path):
    # Guards the test above: zero padding in place of −1 must change the scores.
    network, _ = trained_cnn
    path = tmp_path / "model.npz"
    export_model(network, "round-trip", path)
    model = load_model(path)
    expected = score_pixels(network, digits.test_pixels[:50])

    with pytest.MonkeyPatch.context() as patch:
        original_pad = np.pad
        patch.setattr(np, "pad", lambda array, width, constant_values: original_pad(
            array, width, constant_values=0.0))
        changed = numpy_scores(model, digits.test_pixels[:50])

    assert not np.allclose(changed, expected)


def test_export_bits_and_alpha_from_weights(trained_mlp, tmp_path):
    network, _ = trained_mlp
    path = tmp_path / "model.npz"

    export_model(network, "bits", path)
    model = load_model(path)

    for layer, exported in zip(network.layers, model.layers):
        weight = layer.weight.detach().double()
        bases = weight_bases(weight, layer.weight_shifts)
        signs = 2 * exported.weight_bits.astype(np.int64) - 1
        np.testing.assert_array_equal(signs, bases.numpy().astype(np.int64))
        np.testing.assert_array_equal(exported.alpha, fit_alpha(weight, bases).numpy())
        assert exported.weight_shifts == (-1.0, 0.0, 1.0)


def test_export_metadata_fields(trained_mlp, tmp_path):
    network, record = trained_mlp
    path = tmp_path / "model.npz"

    export_model(network, "digits-test", path, description="two epochs", training=record)
    model = load_model(path)

    assert model.name == "digits-test"
    assert model.description == "two epochs"
    assert model.classes == 10
    assert model.input.shape == (64,)
    assert model.input.bits == 5
    assert model.input.scale == 1 / 16
    assert model.input.offset == 0.0
    assert [layer.type for layer in model.layers] == ["dense", "dense", "dense"]
    assert [layer.input_bases for layer in model.layers] == [None, 2, 2]
    assert [layer.output for layer in model.layers] == ["bases", "bases", "scores"]
    assert [layer.weight_bits.shape for layer in model.layers] == [
        (3, 128, 64), (3, 128, 128), (3, 10, 128)]
    assert model.layers[0].bn_eps == network.norms[0].eps
    np.testing.assert_array_equal(model.layers[1].bn_var,
                                  network.norms[1].running_var.double().numpy())
    np.testing.assert_array_equal(model.layers[2].input_scale,
                                  network.layers[2].activation.scale.detach().double().numpy())
    assert model.training["test_accuracy"] == record["test_accuracy"]
    assert model.training["dataset"] == "digits"


def test_export_conv_fields(trained_cnn, tmp_path):
    network, _ = trained_cnn
    path = tmp_path / "model.npz"

    export_model(network, "cnn", path)
    model = load_model(path)

    first, second, last = model.layers
    assert model.input.shape == (1, 8, 8)
    assert first.type == "conv2d"
    assert first.kernel == (3, 3)
    assert first.padding == (1, 1)
    assert first.pool.kernel == (2, 2)
    assert first.out_shape == (16, 4, 4)
    assert second.out_shape == (32, 2, 2)
    assert last.type == "dense"
    assert last.fan_in == 128


def test_export_rejects_full_precision(digits, tmp_path):
    full_precision = build_network("mlp", digits, 3, 2).set_full_precision(True)
    path = tmp_path / "fp.npz"

    with pytest.raises(ValueError, match="full-precision mode"):
        export_model(full_precision, "fp", path)
    assert not path.exists()
    with pytest.raises(TypeError, match="expected an ABCNet, got Linear"):
        build_model(torch.nn.Linear(2, 2), "linear")


def test_score_pixels_keeps_network_state(trained_mlp, digits):
    network, _ = trained_mlp
    network.train()
    dtype = network.layers[0].weight.dtype

    scores = score_pixels(network, digits.test_pixels[:5])

    assert scores.dtype == np.float64
    assert network.training
    assert network.layers[0].weight.dtype == dtype
    network.eval()


def test_recorded_accuracy_matches_scores(trained_mlp, digits):
    network, record = trained_mlp

    predictions = score_pixels(network, digits.test_pixels).argmax(axis=1)

    assert record["test_accuracy"] == np.mean(predictions == digits.test_labels)


# --- the shipped model -------------------------------------------------------------------

def test_shipped_model_architecture():
    model = load_model(SHIPPED_MODEL)

    assert model.name == "digits-mlp"
    assert model.input.shape == (64,)
    assert [layer.weight_bits.shape for layer in model.layers] == [
        (3, 128, 64), (3, 128, 128), (3, 10, 128)]
    assert [layer.input_bases for layer in model.layers] == [None, 3, 3]
    weight_bits = sum(layer.weight_bits.size for layer in model.layers)
    assert weight_bits == 3 * (64 * 128 + 128 * 128 + 128 * 10)


def test_shipped_model_accuracy(digits):
    model = load_model(SHIPPED_MODEL)

    predictions = numpy_scores(model, digits.test_pixels).argmax(axis=1)
    accuracy = np.mean(predictions == digits.test_labels)

    assert accuracy == pytest.approx(model.training["test_accuracy"], abs=1e-12)
    assert accuracy >= 0.97
