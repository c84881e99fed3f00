"""The convolutional presets cnn3 and cnn1d, and the shipped CNN models trained with them."""

from pathlib import Path

import numpy as np
import pytest

from sim.reference import forward_float
from weights.data import load_dataset
from weights.export import build_model
from weights.format import load_model, save_model
from weights.train import build_network

MODELS = Path(__file__).resolve().parent.parent / "weights" / "models"


@pytest.mark.parametrize("dataset_name, architecture, shapes, weights_per_base", [
    ("digits", "cnn3",
     [(16, 8, 8), (32, 4, 4), (32, 2, 2), (10,)], 15248),
    ("mnist1d", "cnn1d",
     [(32, 1, 18), (32, 1, 9), (32, 1, 9), (10,)], 11232),
])
def test_preset_layer_shapes(dataset_name, architecture, shapes, weights_per_base):
    network = build_network(architecture, load_dataset(dataset_name), 3, 3)

    assert [out_shape for _, out_shape in network.shapes] == shapes
    assert sum(layer.weight.numel() for layer in network.layers) == weights_per_base


@pytest.mark.parametrize("dataset_name, architecture", [
    ("digits", "cnn3"),
    ("mnist1d", "cnn1d"),
])
def test_preset_exports_valid_model(tmp_path, dataset_name, architecture):
    dataset = load_dataset(dataset_name)
    network = build_network(architecture, dataset, 3, 3)
    path = tmp_path / "model.npz"

    save_model(build_model(network.eval(), "preset"), path)
    model = load_model(path)

    assert [layer.type for layer in model.layers] == ["conv2d"] * 3 + ["dense"]
    assert tuple(model.input.shape) == dataset.shape
    for layer in model.layers[:3]:
        assert all(1 <= size <= 7 for size in layer.kernel)
        assert all(pad < size for pad, size in zip(layer.padding, layer.kernel))


@pytest.mark.parametrize("dataset_name, architecture", [
    ("digits", "cnn1d"),
    ("mnist1d", "cnn3"),
])
def test_preset_rejects_image_shape(dataset_name, architecture):
    with pytest.raises(ValueError, match=f"{architecture} needs"):
        build_network(architecture, load_dataset(dataset_name), 3, 3)


@pytest.mark.parametrize("file_name, dataset_name, architecture", [
    ("digits-cnn.npz", "digits", "cnn3"),
    ("mnist1d-cnn.npz", "mnist1d", "cnn1d"),
])
def test_shipped_cnn_records_accuracy(file_name, dataset_name, architecture):
    model = load_model(MODELS / file_name)
    training = model.training

    assert training["dataset"] == dataset_name
    assert training["architecture"] == architecture
    assert (training["weight_bases"], training["input_bases"]) == (3, 3)
    assert all(layer.weight_bases == 3 for layer in model.layers)
    assert 0.0 < training["test_accuracy"] <= 1.0
    assert 0.0 < training["full_precision_test_accuracy"] <= 1.0


@pytest.mark.parametrize("file_name, dataset_name", [
    ("digits-cnn.npz", "digits"),
    ("mnist1d-cnn.npz", "mnist1d"),
])
def test_shipped_cnn_reproduces_accuracy(file_name, dataset_name):
    model = load_model(MODELS / file_name)
    dataset = load_dataset(dataset_name)

    result = forward_float(model, dataset.test_pixels)
    accuracy = float(np.mean(result.labels == dataset.test_labels))

    # numpy and PyTorch sum in float64 in different orders, so a sample at a decision
    # boundary may flip.
    assert accuracy == pytest.approx(model.training["test_accuracy"], abs=0.005)
