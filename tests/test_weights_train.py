"""Data sets, the trainer and its command line in weights.data and weights.train."""

import hashlib
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from weights import data
from weights.data import Dataset, dataset_names, load_dataset, register_dataset
from weights.format import load_model
from weights.train import TrainingConfig, build_network, main, train

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --- data sets ---------------------------------------------------------------------------

def test_digits_split():
    digits = load_dataset("digits")

    assert digits.train_pixels.shape == (1437, 1, 8, 8)
    assert digits.test_pixels.shape == (360, 1, 8, 8)
    assert digits.train_pixels.dtype == np.uint8
    assert digits.train_labels.dtype == np.int64
    assert int(digits.train_pixels.max()) == 16
    assert digits.bits == 5
    assert digits.scale == 1 / 16
    assert digits.offset == 0.0
    # Stratified: every class has 35 to 37 of the 360 test images.
    counts = np.bincount(digits.test_labels, minlength=10)
    assert counts.min() >= 35
    assert counts.max() <= 37


def test_digits_split_is_fixed():
    first = load_dataset("digits")
    second = load_dataset("digits")

    np.testing.assert_array_equal(first.test_pixels, second.test_pixels)
    np.testing.assert_array_equal(first.train_labels, second.train_labels)
    # The shipped model's recorded accuracy refers to this test set (scikit-learn 1.9.1).
    assert first.test_labels[:12].tolist() == [7, 6, 3, 7, 7, 3, 2, 8, 9, 3, 2, 6]
    assert hashlib.sha256(first.test_pixels.tobytes()).hexdigest()[:16] == "3cc232bd25364446"
    assert first.split == {"method": "sklearn.model_selection.train_test_split, stratified",
                           "test_fraction": 0.2, "seed": 0}


def test_dataset_input_spec():
    digits = load_dataset("digits")

    assert digits.input_spec(flatten=True).shape == (64,)
    assert digits.input_spec(flatten=False).shape == (1, 8, 8)
    assert digits.input_spec(flatten=True).bits == 5


def test_unknown_dataset_lists_names():
    with pytest.raises(KeyError, match="unknown data set 'nope'; expected one of .*digits"):
        load_dataset("nope")


def test_register_dataset_rejects_duplicate():
    with pytest.raises(ValueError, match="'digits' is already registered"):
        register_dataset("digits")(lambda: None)


def test_load_dataset_validates_pixels(monkeypatch):
    pixels = np.full((2, 1, 2, 2), 40, dtype=np.uint8)
    labels = np.zeros(2, dtype=np.int64)
    bad = Dataset(name="bad", train_pixels=pixels, train_labels=labels, test_pixels=pixels,
                  test_labels=labels, shape=(1, 2, 2), bits=5, scale=1.0, offset=0.0,
                  classes=2)
    monkeypatch.setitem(data._LOADERS, "bad", lambda: bad)

    with pytest.raises(ValueError, match="train pixel value 40 does not fit in 5 bits"):
        load_dataset("bad")
    assert "bad" in dataset_names()


# --- training ----------------------------------------------------------------------------

def tiny_config(**changes):
    settings = dict(full_precision_epochs=1, abc_epochs=1, seed=3)
    settings.update(changes)
    return TrainingConfig(**settings)


def test_training_is_reproducible():
    first, first_record = train(tiny_config())
    second, second_record = train(tiny_config())

    for (name, value), other in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(value, other), name
    assert first_record["test_accuracy"] == second_record["test_accuracy"]


def test_training_seed_changes_result():
    first, _ = train(tiny_config(seed=3))
    second, _ = train(tiny_config(seed=4))

    assert not torch.equal(first.layers[0].weight, second.layers[0].weight)


def test_training_single_bases_learns():
    network, record = train(tiny_config(weight_bases=1, input_bases=1, full_precision_epochs=3,
                                        abc_epochs=3))

    assert not network.full_precision
    assert [layer.m_bases for layer in network.layers] == [1, 1, 1]
    assert [layer.input_bases for layer in network.layers] == [None, 1, 1]
    # With ten classes, chance is 10 %, and three epochs of each phase reach far more.
    assert record["test_accuracy"] > 0.6
    assert record["full_precision_test_accuracy"] > 0.6


def test_training_record_contents():
    _, record = train(tiny_config())

    assert record["dataset"] == "digits"
    assert record["architecture"] == "mlp"
    assert record["weight_bases"] == 3
    assert record["input_bases"] == 3
    assert record["weight_shifts"] == [-1.0, 0.0, 1.0]
    assert record["seed"] == 3
    assert record["abc_epochs"] == 1
    assert 0.0 <= record["test_accuracy"] <= 1.0
    assert record["training_seconds"] >= 0


def test_full_precision_weights_start_abc_phase():
    # Zero ABC epochs: the exported network is the pretrained one in ABC mode.
    network, _ = train(tiny_config(abc_epochs=0))

    assert not network.full_precision
    assert not network.training


def test_build_network_presets():
    digits = load_dataset("digits")

    mlp = build_network("mlp", digits, 3, 3)
    cnn = build_network("cnn", digits, 2, 2)

    assert [tuple(layer.weight.shape) for layer in mlp.layers] == [(128, 64), (128, 128),
                                                                   (10, 128)]
    assert cnn.shapes == [((1, 8, 8), (16, 4, 4)), ((16, 4, 4), (32, 2, 2)), ((32, 2, 2), (10,))]
    with pytest.raises(ValueError, match="unknown architecture 'rnn'"):
        build_network("rnn", digits, 1, 1)


def test_cnn_preset_for_one_row_images():
    row = Dataset(name="row", train_pixels=np.zeros((1, 1, 1, 40), np.uint8),
                  train_labels=np.zeros(1, np.int64), test_pixels=np.zeros((1, 1, 1, 40), np.uint8),
                  test_labels=np.zeros(1, np.int64), shape=(1, 1, 40), bits=8, scale=1.0,
                  offset=0.0, classes=10)

    network = build_network("cnn", row, 1, 1)

    assert network.layers[0].kernel == (1, 3)
    assert network.shapes[1] == ((16, 1, 20), (32, 1, 10))


# --- command line ------------------------------------------------------------------------

def test_cli_writes_model(tmp_path, caplog):
    path = tmp_path / "cli.npz"
    caplog.set_level(logging.INFO, logger="weights.train")

    status = main(["--fp-epochs", "1", "--abc-epochs", "1", "-M", "2", "-N", "1",
                   "--seed", "5", "--name", "cli-test", "-o", str(path)])

    assert status == 0
    model = load_model(path)
    assert model.name == "cli-test"
    assert [layer.weight_bases for layer in model.layers] == [2, 2, 2]
    assert [layer.input_bases for layer in model.layers] == [None, 1, 1]
    assert model.training["seed"] == 5
    assert "abc epoch   1/1" in caplog.text
    assert f"wrote {path}" in caplog.text


@pytest.mark.parametrize("arguments, message", [
    (["-M", "0"], "--weight-bases must be at least 1, got 0"),
    (["--abc-epochs", "-1"], "--abc-epochs must be at least 0, got -1"),
    (["--arch", "rnn"], "invalid choice: 'rnn'"),
    ([], "the following arguments are required: -o/--output"),
])
def test_cli_rejects_bad_options(arguments, message, tmp_path, capsys):
    if arguments:
        arguments = arguments + ["-o", str(tmp_path / "x.npz")]

    with pytest.raises(SystemExit) as caught:
        main(arguments)

    assert caught.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_cli_help_runs_as_module():
    result = subprocess.run([sys.executable, "-m", "weights.train", "--help"], cwd=REPOSITORY,
                            capture_output=True, text=True, timeout=60, check=False)

    assert result.returncode == 0, result.stderr
    assert "--weight-bases" in result.stdout
    assert "--output" in result.stdout
