"""The MNIST-1D data set: generated locally, quantised to 8-bit pixels, deterministic."""

import random

import numpy as np
import pytest

from weights import mnist1d
from weights.data import load_dataset
from weights.mnist1d import MNIST1D_BITS, MNIST1D_OFFSET, MNIST1D_SCALE, quantize_signals


@pytest.fixture(scope="module")
def dataset():
    return load_dataset("mnist1d")


def test_mnist1d_shapes(dataset):
    assert dataset.name == "mnist1d"
    assert dataset.shape == (1, 1, 40)
    assert dataset.train_pixels.shape == (4000, 1, 1, 40)
    assert dataset.test_pixels.shape == (1000, 1, 1, 40)
    assert dataset.train_labels.shape == (4000,)
    assert dataset.test_labels.shape == (1000,)
    assert dataset.classes == 10


def test_mnist1d_pixel_range(dataset):
    assert dataset.bits == MNIST1D_BITS == 8
    assert dataset.train_pixels.dtype == np.uint8
    assert dataset.test_pixels.dtype == np.uint8
    # No sample reaches the ends of the 8-bit range, so no value was clipped.
    for pixels in (dataset.train_pixels, dataset.test_pixels):
        assert pixels.min() > 0
        assert pixels.max() < 255
    assert dataset.scale == MNIST1D_SCALE
    assert dataset.offset == MNIST1D_OFFSET


def test_mnist1d_input_spec(dataset):
    spec = dataset.input_spec(flatten=False)

    assert spec.shape == (1, 1, 40)
    assert spec.bits == 8
    assert dataset.input_spec(flatten=True).shape == (40,)


def test_mnist1d_quantisation_error(dataset):
    train_x, _, test_x, _, _ = mnist1d._generate()
    for values, pixels in ((train_x, dataset.train_pixels), (test_x, dataset.test_pixels)):
        restored = MNIST1D_OFFSET + MNIST1D_SCALE * pixels.reshape(values.shape)
        assert np.max(np.abs(restored - values)) <= MNIST1D_SCALE / 2 + 1e-12


def test_mnist1d_labels(dataset):
    assert dataset.train_labels.dtype == np.int64
    assert set(np.unique(dataset.train_labels)) == set(range(10))
    # The class counts of the test split identify the package's default data (seed 42).
    np.testing.assert_array_equal(np.bincount(dataset.test_labels),
                                  [102, 104, 89, 106, 106, 98, 99, 96, 98, 102])


def test_mnist1d_deterministic(dataset):
    mnist1d._generate.cache_clear()
    np.random.seed(123)

    again = load_dataset("mnist1d")

    np.testing.assert_array_equal(again.train_pixels, dataset.train_pixels)
    np.testing.assert_array_equal(again.test_pixels, dataset.test_pixels)
    np.testing.assert_array_equal(again.train_labels, dataset.train_labels)
    np.testing.assert_array_equal(again.test_labels, dataset.test_labels)


def test_mnist1d_keeps_global_random_state():
    mnist1d._generate.cache_clear()
    np.random.seed(7)
    random.seed(7)
    expected_numpy = np.random.random()
    expected_python = random.random()
    np.random.seed(7)
    random.seed(7)

    load_dataset("mnist1d")

    assert np.random.random() == expected_numpy
    assert random.random() == expected_python


def test_mnist1d_copies_cached_data():
    first = load_dataset("mnist1d")
    first.train_pixels[0] = 0
    first.train_labels[0] = (first.train_labels[0] + 1) % 10

    again = load_dataset("mnist1d")

    assert again.train_pixels[0].min() > 0
    train_y = mnist1d._generate()[1]
    assert again.train_labels[0] == train_y[0]


def test_quantize_signals_rounds_and_clips():
    values = [MNIST1D_OFFSET - 1.0, MNIST1D_OFFSET, 0.0, 0.024, 0.026, 100.0]

    pixels = quantize_signals(values)

    assert pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels, [0, 0, 128, 128, 129, 255])
