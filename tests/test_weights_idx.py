"""The IDX reader and writer, and the MNIST and Fashion-MNIST data sets read from IDX files.

Every file here is written by the test itself, most of them byte by byte with struct,
so the reader is checked against the format and not only against ``write_idx``.
"""

import gzip
import struct

import numpy as np
import pytest

from weights.data import load_dataset
from weights.idx import IdxFormatError, read_idx, write_idx


def idx_bytes(code, shape, payload):
    """Return an IDX file's bytes: magic number, big-endian sizes, then ``payload``."""
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def write_bytes(path, content):
    path.write_bytes(content)
    return path


# --- reading good files ----------------------------------------------------------------

def test_read_idx_uint8_images(tmp_path):
    values = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_bytes(tmp_path / "images", idx_bytes(0x08, (2, 3, 4), values.tobytes()))

    array = read_idx(path)

    assert array.dtype == np.uint8
    assert array.shape == (2, 3, 4)
    np.testing.assert_array_equal(array, values)


@pytest.mark.parametrize("code, big_endian", [
    (0x09, ">i1"), (0x0B, ">i2"), (0x0C, ">i4"), (0x0D, ">f4"), (0x0E, ">f8"),
])
def test_read_idx_big_endian_types(tmp_path, code, big_endian):
    values = np.array([[-3, 0, 7], [100, -100, 1]], dtype=big_endian)
    path = write_bytes(tmp_path / "values", idx_bytes(code, (2, 3), values.tobytes()))

    array = read_idx(path)

    assert array.dtype == np.dtype(big_endian).newbyteorder("=")
    assert array.dtype.isnative
    np.testing.assert_array_equal(array, values.astype(array.dtype))


def test_read_idx_gzip_by_content(tmp_path):
    values = np.array([5, 0, 9], dtype=np.uint8)
    content = gzip.compress(idx_bytes(0x08, (3,), values.tobytes()))
    # The name has no .gz: the reader recognises gzip by its first bytes.
    path = write_bytes(tmp_path / "labels", content)

    np.testing.assert_array_equal(read_idx(path), values)


def test_read_idx_zero_dimensions(tmp_path):
    path = write_bytes(tmp_path / "scalar", idx_bytes(0x0C, (), struct.pack(">i", -7)))

    array = read_idx(path)

    assert array.shape == ()
    assert int(array) == -7


def test_read_idx_empty_axis(tmp_path):
    path = write_bytes(tmp_path / "empty", idx_bytes(0x08, (0, 28, 28), b""))

    assert read_idx(path).shape == (0, 28, 28)


@pytest.mark.parametrize("dtype", ["u1", "i1", "<i2", ">i4", "f4", "<f8"])
@pytest.mark.parametrize("name", ["plain", "packed.gz"])
def test_write_idx_round_trip(tmp_path, dtype, name):
    values = np.arange(-6, 6).reshape(3, 2, 2)
    if dtype == "u1":
        values = values + 6
    values = values.astype(dtype)
    path = tmp_path / name

    write_idx(path, values)

    assert path.read_bytes()[:2] == (b"\x1f\x8b" if name.endswith(".gz") else b"\x00\x00")
    np.testing.assert_array_equal(read_idx(path), values)


def test_write_idx_header_bytes(tmp_path):
    path = tmp_path / "labels"

    write_idx(path, np.array([1, 2], dtype=np.int16))

    assert path.read_bytes() == bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0, 1, 0, 2])


def test_write_idx_rejects_int64(tmp_path):
    with pytest.raises(ValueError, match="no dtype code for int64"):
        write_idx(tmp_path / "labels", np.array([1, 2], dtype=np.int64))


# --- reading bad files ----------------------------------------------------------------

def test_read_idx_bad_magic(tmp_path):
    path = write_bytes(tmp_path / "images", b"\x01\x00\x08\x01" + struct.pack(">I", 1) + b"x")

    with pytest.raises(IdxFormatError, match="bad magic number 0x01000801") as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_unknown_dtype_code(tmp_path):
    path = write_bytes(tmp_path / "images", idx_bytes(0x0A, (1,), b"\x00"))

    with pytest.raises(IdxFormatError, match="unknown dtype code 0x0a"):
        read_idx(path)


def test_read_idx_short_header(tmp_path):
    path = write_bytes(tmp_path / "images", b"\x00\x00")

    with pytest.raises(IdxFormatError, match="truncated header: the file has 2 bytes"):
        read_idx(path)


def test_read_idx_truncated_sizes(tmp_path):
    # Three dimensions need 12 bytes of sizes, and the file stops after 5.
    path = write_bytes(tmp_path / "images", bytes([0, 0, 0x08, 3]) + b"\x00" * 5)

    with pytest.raises(IdxFormatError, match="3 dimensions need 16 header bytes"):
        read_idx(path)


def test_read_idx_truncated_data(tmp_path):
    path = write_bytes(tmp_path / "images", idx_bytes(0x08, (2, 28, 28), b"\x00" * 1000))

    with pytest.raises(IdxFormatError, match="truncated data") as error:
        read_idx(path)
    assert "needs 1568 bytes" in str(error.value)
    assert "has 1000" in str(error.value)
    assert str(path) in str(error.value)


def test_read_idx_truncated_wide_elements(tmp_path):
    # Three int32 elements need 12 bytes, and 11 are there.
    path = write_bytes(tmp_path / "values", idx_bytes(0x0C, (3,), b"\x00" * 11))

    with pytest.raises(IdxFormatError, match="needs 12 bytes after the header, the file has 11"):
        read_idx(path)


def test_read_idx_extra_bytes(tmp_path):
    path = write_bytes(tmp_path / "labels", idx_bytes(0x08, (3,), b"\x01\x02\x03\x04"))

    with pytest.raises(IdxFormatError, match="1 unexpected bytes after the data"):
        read_idx(path)


def test_read_idx_truncated_gzip(tmp_path):
    content = gzip.compress(idx_bytes(0x08, (100,), bytes(range(100))))
    path = write_bytes(tmp_path / "labels.gz", content[:len(content) // 2])

    with pytest.raises(IdxFormatError, match="invalid gzip data") as error:
        read_idx(path)
    assert str(path) in str(error.value)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_idx(tmp_path / "missing")


# --- data sets ------------------------------------------------------------------------

def write_mnist_folder(folder, train_count=6, test_count=4, gzipped=False,
                       image_shape=(28, 28), train_label_count=None):
    """Write the four standard files of a tiny MNIST-like data set; return its arrays."""
    rng = np.random.default_rng(1)
    suffix = ".gz" if gzipped else ""
    arrays = {
        "train_images": rng.integers(0, 256, (train_count, *image_shape), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, train_label_count or train_count, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (test_count, *image_shape), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, test_count, dtype=np.uint8),
    }
    arrays["train_images"][0, 0, 0] = 255
    names = {
        "train_images": "train-images-idx3-ubyte",
        "train_labels": "train-labels-idx1-ubyte",
        "test_images": "t10k-images-idx3-ubyte",
        "test_labels": "t10k-labels-idx1-ubyte",
    }
    folder.mkdir(parents=True, exist_ok=True)
    for part, array in arrays.items():
        write_idx(folder / (names[part] + suffix), array)
    return arrays


@pytest.mark.parametrize("name, variable", [
    ("mnist", "ABCNET_MNIST_DIR"),
    ("fashion-mnist", "ABCNET_FASHION_MNIST_DIR"),
])
@pytest.mark.parametrize("gzipped", [False, True])
def test_idx_dataset_loads_folder(tmp_path, monkeypatch, name, variable, gzipped):
    arrays = write_mnist_folder(tmp_path, gzipped=gzipped)
    monkeypatch.setenv(variable, str(tmp_path))

    dataset = load_dataset(name)

    assert dataset.name == name
    assert dataset.shape == (1, 28, 28)
    assert dataset.bits == 8
    assert dataset.scale == pytest.approx(1 / 255)
    assert dataset.offset == 0.0
    assert dataset.classes == 10
    assert dataset.train_pixels.dtype == np.uint8
    assert dataset.train_pixels.shape == (6, 1, 28, 28)
    assert dataset.test_pixels.shape == (4, 1, 28, 28)
    np.testing.assert_array_equal(dataset.train_pixels[:, 0], arrays["train_images"])
    np.testing.assert_array_equal(dataset.test_pixels[:, 0], arrays["test_images"])
    assert dataset.train_labels.dtype == np.int64
    np.testing.assert_array_equal(dataset.train_labels, arrays["train_labels"])
    np.testing.assert_array_equal(dataset.test_labels, arrays["test_labels"])


def test_idx_dataset_unset_variable(monkeypatch):
    monkeypatch.delenv("ABCNET_MNIST_DIR", raising=False)

    with pytest.raises(FileNotFoundError, match="set ABCNET_MNIST_DIR") as error:
        load_dataset("mnist")
    assert "nothing is downloaded" in str(error.value)


def test_idx_dataset_folder_missing(tmp_path, monkeypatch):
    monkeypatch.setenv("ABCNET_MNIST_DIR", str(tmp_path / "absent"))

    with pytest.raises(FileNotFoundError, match="is not a folder"):
        load_dataset("mnist")


def test_idx_dataset_file_missing(tmp_path, monkeypatch):
    write_mnist_folder(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    monkeypatch.setenv("ABCNET_MNIST_DIR", str(tmp_path))

    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte not found"):
        load_dataset("mnist")


def test_idx_dataset_wrong_image_size(tmp_path, monkeypatch):
    write_mnist_folder(tmp_path, image_shape=(27, 28))
    monkeypatch.setenv("ABCNET_MNIST_DIR", str(tmp_path))

    with pytest.raises(IdxFormatError, match=r"shape \(6, 27, 28\), expected \(count, 28, 28\)"):
        load_dataset("mnist")


def test_idx_dataset_label_count_mismatch(tmp_path, monkeypatch):
    write_mnist_folder(tmp_path, train_label_count=5)
    monkeypatch.setenv("ABCNET_MNIST_DIR", str(tmp_path))

    with pytest.raises(IdxFormatError, match="5 labels for 6 images") as error:
        load_dataset("mnist")
    assert "train-labels-idx1-ubyte" in str(error.value)


def test_idx_dataset_label_out_of_range(tmp_path, monkeypatch):
    write_mnist_folder(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.array([0, 1, 10, 2], dtype=np.uint8))
    monkeypatch.setenv("ABCNET_MNIST_DIR", str(tmp_path))

    with pytest.raises(IdxFormatError, match="label 10 is out of range"):
        load_dataset("mnist")


def test_idx_dataset_images_not_uint8(tmp_path, monkeypatch):
    write_mnist_folder(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 28, 28), dtype=np.float32))
    monkeypatch.setenv("ABCNET_MNIST_DIR", str(tmp_path))

    with pytest.raises(IdxFormatError, match="images have dtype float32, expected uint8"):
        load_dataset("mnist")
