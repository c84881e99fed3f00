"""weights.format.load_model rejects damaged model files with a message that names the file,
the field and the value found."""

import json
import os
import stat

import numpy as np
import pytest
import torch

from weights.export import export_model
from weights.format import (InputSpec, ModelFormatError, load_model, pack_bits, save_model,
                            unpack_bits)
from weights.layers import ABCNet, DenseSpec

from model_factory import random_model


@pytest.fixture
def valid_file(tmp_path):
    """Write a small valid model: dense 64 → 8 → 10, M = 2, N = 2, layers layer0 and layer1."""
    torch.manual_seed(0)
    network = ABCNet(InputSpec(shape=(64,), bits=5, scale=1 / 16, offset=0.0),
                     [DenseSpec(8), DenseSpec(10)], weight_bases=2, input_bases=2).eval()
    path = tmp_path / "valid.npz"
    export_model(network, "small", path)
    return path


def read_arrays(path):
    with np.load(path, allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


def write_arrays(path, arrays):
    with open(path, "wb") as file:
        np.savez(file, **arrays)


def edit_metadata(arrays, edit):
    metadata = json.loads(str(arrays["metadata"]))
    edit(metadata)
    arrays["metadata"] = np.array(json.dumps(metadata))


def rejection(path):
    with pytest.raises(ModelFormatError) as caught:
        load_model(path)
    return str(caught.value)


def test_valid_file_loads(valid_file):
    model = load_model(valid_file)

    assert model.name == "small"
    assert [layer.name for layer in model.layers] == ["layer0", "layer1"]


def test_saved_file_mode_follows_umask(valid_file):
    umask = os.umask(0)
    os.umask(umask)

    assert stat.S_IMODE(os.stat(valid_file).st_mode) == 0o666 & ~umask


def test_pack_bits_little_endian():
    bits = np.array([[1, 0, 0, 0, 0, 0, 0, 0, 0, 1]], dtype=np.uint8)

    packed = pack_bits(bits)

    assert packed.tolist() == [[1, 2]]
    np.testing.assert_array_equal(unpack_bits(packed, 10), bits)


def delete(key):
    def mutate(arrays):
        del arrays[key]
    return mutate


def replace(key, make):
    def mutate(arrays):
        arrays[key] = make(arrays[key])
    return mutate


def set_metadata(edit):
    def mutate(arrays):
        edit_metadata(arrays, edit)
    return mutate


def with_nan(values):
    values = values.copy()
    values[1] = np.nan
    return values


def set_layer_field(index, key, value):
    def edit(metadata):
        metadata["layers"][index][key] = value
    return edit


def set_field(key, value):
    def edit(metadata):
        metadata[key] = value
    return edit


def remove_field(key):
    def edit(metadata):
        del metadata[key]
    return edit


# (case, mutation, field named in the message, further texts the message must contain)
REJECTIONS = [
    ("missing array", delete("layer0.alpha"),
     "'layer0.alpha'", ["missing", "float64", "(2,)"]),
    ("wrong shape", replace("layer0.alpha", lambda alpha: np.zeros(3)),
     "'layer0.alpha'", ["expected shape (2,)", "found (3,)"]),
    ("wrong weight bits shape", replace("layer1.weight_bits", lambda bits: bits[:, :, :-1]),
     "'layer1.weight_bits'", ["expected shape (2, 10, 1)", "found (2, 10, 0)"]),
    ("wrong dtype", replace("layer0.alpha", lambda alpha: alpha.astype(np.float32)),
     "'layer0.alpha'", ["expected dtype float64", "found float32"]),
    ("NaN", replace("layer0.bn_mean", with_nan),
     "'layer0.bn_mean'", ["1 values are NaN or infinite"]),
    ("infinity", replace("layer1.input_shift", lambda shift: np.full_like(shift, np.inf)),
     "'layer1.input_shift'", ["2 values are NaN or infinite"]),
    ("negative variance", replace("layer0.bn_var", lambda var: var - 2.0),
     "'layer0.bn_var'", ["negative variance", "-1."]),
    ("M of 0", set_metadata(set_layer_field(0, "weight_bases", 0)),
     "weight_bases", ["between 1 and 64", "found 0"]),
    ("N of 0", set_metadata(set_layer_field(1, "input_bases", 0)),
     "input_bases", ["between 1 and 16", "found 0"]),
    ("first layer with N", set_metadata(set_layer_field(0, "input_bases", 2)),
     "input_bases", ["expected null", "found 2"]),
    ("unknown layer type", set_metadata(set_layer_field(0, "type", "lstm")),
     "metadata.layers[0] (layer0).type", ["unknown layer type 'lstm'"]),
    ("shift count", set_metadata(set_layer_field(0, "weight_shifts", [0.0])),
     "weight_shifts", ["expected 2 finite numbers", "[0.0]"]),
    ("wrong format version", set_metadata(set_field("version", 2)),
     "metadata.version", ["found 2", "version 1"]),
    ("wrong format name", set_metadata(set_field("format", "other")),
     "metadata.format", ["'other'"]),
    ("missing metadata field", set_metadata(remove_field("classes")),
     "metadata.classes", ["missing field"]),
    ("classes mismatch", set_metadata(set_field("classes", 9)),
     "metadata.classes", ["10 outputs", "classes is 9"]),
    ("wrong padding", set_metadata(set_field("padding", "zero")),
     "metadata.padding", ["'zero'"]),
    ("missing metadata", delete("metadata"),
     "'metadata'", ["missing"]),
    ("metadata not JSON", replace("metadata", lambda _: np.array("{not json")),
     "metadata", ["invalid JSON"]),
    ("extra array", lambda arrays: arrays.update({"layer9.alpha": np.zeros(2)}),
     "'layer9.alpha'", ["not part of any layer"]),
]


@pytest.mark.parametrize("mutation, field, texts",
                         [case[1:] for case in REJECTIONS], ids=[case[0] for case in REJECTIONS])
def test_load_rejects_damaged_file(valid_file, tmp_path, mutation, field, texts):
    arrays = read_arrays(valid_file)
    mutation(arrays)
    path = tmp_path / "damaged.npz"
    write_arrays(path, arrays)

    message = rejection(path)

    assert message.startswith(f"{path}: ")
    assert field in message
    for text in texts:
        assert text in message


def test_load_rejects_pickled_object(valid_file, tmp_path):
    arrays = read_arrays(valid_file)
    arrays["layer0.alpha"] = np.array([{"alpha": 1.0}, None], dtype=object)
    path = tmp_path / "pickled.npz"
    write_arrays(path, arrays)   # np.savez pickles object arrays

    message = rejection(path)

    assert message.startswith(f"{path}: ")
    assert "'layer0.alpha'" in message
    assert "pickled objects" in message


def test_load_rejects_non_zip(tmp_path):
    path = tmp_path / "text.npz"
    path.write_bytes(b"this is not a model\n")

    message = rejection(path)

    assert message.startswith(f"{path}: ")
    assert "not a zip archive" in message


def test_load_rejects_npy_file(tmp_path):
    path = tmp_path / "array.npz"
    with open(path, "wb") as file:
        np.save(file, np.zeros(3))

    message = rejection(path)

    assert "not a zip archive" in message


def test_load_rejects_truncated_file(valid_file, tmp_path):
    path = tmp_path / "truncated.npz"
    path.write_bytes(valid_file.read_bytes()[:200])

    message = rejection(path)

    assert message.startswith(f"{path}: ")


def test_load_rejects_missing_file(tmp_path):
    path = tmp_path / "absent.npz"

    message = rejection(path)

    assert message == f"{path}: model file not found"


def test_set_padding_bits_are_rejected(tmp_path):
    model = random_model(np.random.default_rng(0), input_shape=(12,), input_bits=2,
                         layers=[dict(type="dense", out=3, m=1)], name="padded")
    path = tmp_path / "padded.npz"
    save_model(model, path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = dict(archive)
    arrays["layer0.weight_bits"][0, 1, -1] |= 0x80
    np.savez(path, **arrays)
    with pytest.raises(ModelFormatError, match=r"layer0\.weight_bits.*bits past the 12 weights"):
        load_model(path)
