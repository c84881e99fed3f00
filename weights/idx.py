"""IDX files, and the data sets "mnist" and "fashion-mnist" read from local IDX files.

IDX is the file format of MNIST and Fashion-MNIST: two zero bytes, a dtype code, the
number of dimensions D, D big-endian uint32 sizes, then the elements in C order and
big-endian byte order. ``read_idx`` also reads gzip-compressed files, recognised by
their content, not by their name.

Nothing is downloaded. The data sets read the four standard files from the folder that
an environment variable names::

    ABCNET_MNIST_DIR=/data/mnist python -m weights.train --dataset mnist ...
    ABCNET_FASHION_MNIST_DIR=/data/fashion python -m weights.train --dataset fashion-mnist ...

The folder contains train-images-idx3-ubyte, train-labels-idx1-ubyte,
t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte, each optionally with the suffix .gz.
"""

import gzip
import os
import struct
import zlib

import numpy as np

from weights.data import Dataset, register_dataset

__all__ = ["IdxFormatError", "IDX_DTYPES", "read_idx", "write_idx", "IDX_FILE_NAMES",
           "find_idx_file", "load_idx_dataset"]

# The element types of IDX, by the code in the third byte, as big-endian numpy dtypes.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

_GZIP_MAGIC = b"\x1f\x8b"


class IdxFormatError(ValueError):
    """An IDX file that cannot be read, or whose contents are not what the caller expects."""


def read_idx(path):
    """Read the IDX file at ``path`` (plain or gzip) into a numpy array in native byte order.

    Raises ``IdxFormatError`` naming the file for a bad magic number, an unknown dtype
    code, a header or data shorter than the header promises, or bytes after the data.
    A missing file raises ``FileNotFoundError``.
    """
    path = os.fspath(path)
    with open(path, "rb") as file:
        content = file.read()
    if content[:2] == _GZIP_MAGIC:
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError, zlib.error) as error:
            raise IdxFormatError(f"{path}: invalid gzip data: {error}") from None
    return _parse_idx(content, path)


def _parse_idx(content, path):
    if len(content) < 4:
        raise IdxFormatError(f"{path}: truncated header: the file has {len(content)} bytes, "
                             f"an IDX header needs at least 4")
    zeros, code, ndim = content[:2], content[2], content[3]
    if zeros != b"\x00\x00":
        raise IdxFormatError(f"{path}: bad magic number 0x{content[:4].hex()}: an IDX file "
                             f"starts with two zero bytes")
    if code not in IDX_DTYPES:
        known = ", ".join(f"0x{known_code:02x}" for known_code in IDX_DTYPES)
        raise IdxFormatError(f"{path}: unknown dtype code 0x{code:02x} in the magic number; "
                             f"expected one of {known}")

    header_size = 4 + 4 * ndim
    if len(content) < header_size:
        raise IdxFormatError(f"{path}: truncated header: {ndim} dimensions need "
                             f"{header_size} header bytes, the file has {len(content)}")
    shape = struct.unpack(f">{ndim}I", content[4:header_size])
    dtype = IDX_DTYPES[code]
    data_size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    found = len(content) - header_size
    if found < data_size:
        raise IdxFormatError(f"{path}: truncated data: shape {shape} of {dtype.name} needs "
                             f"{data_size} bytes after the header, the file has {found}")
    if found > data_size:
        raise IdxFormatError(f"{path}: {found - data_size} unexpected bytes after the data "
                             f"of shape {shape}")

    array = np.frombuffer(content, dtype=dtype, count=data_size // dtype.itemsize,
                          offset=header_size)
    return array.reshape(shape).astype(dtype.newbyteorder("="))


def write_idx(path, array, *, compress=None):
    """Write ``array`` to ``path`` as an IDX file.

    The dtype must be one of ``IDX_DTYPES`` in any byte order, and every dimension must
    fit in a uint32. ``compress=True`` gzips the file. By default, a path that ends in
    ``.gz`` is compressed.
    """
    array = np.asarray(array)
    codes = {dtype.newbyteorder("="): code for code, dtype in IDX_DTYPES.items()}
    native = array.dtype.newbyteorder("=")
    if native not in codes:
        raise ValueError(f"IDX has no dtype code for {array.dtype}; expected one of "
                         f"{', '.join(str(dtype) for dtype in codes)}")
    if array.ndim > 255 or any(size >= 1 << 32 for size in array.shape):
        raise ValueError(f"shape {array.shape} does not fit an IDX header (at most 255 "
                         f"dimensions, each below 2^32)")
    path = os.fspath(path)
    header = bytes([0, 0, codes[native], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    content = header + np.ascontiguousarray(array, dtype=IDX_DTYPES[codes[native]]).tobytes()
    if compress is None:
        compress = path.endswith(".gz")
    if compress:
        content = gzip.compress(content)
    with open(path, "wb") as file:
        file.write(content)


# --- data sets -----------------------------------------------------------------------

IDX_FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

# Environment variable that names the folder of each data set's files.
_FOLDER_VARIABLES = {
    "mnist": "ABCNET_MNIST_DIR",
    "fashion-mnist": "ABCNET_FASHION_MNIST_DIR",
}


def find_idx_file(folder, name):
    """Return the path of ``name`` or ``name.gz`` in ``folder``, preferring the plain file."""
    candidates = [os.path.join(folder, name), os.path.join(folder, name + ".gz")]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"{name} not found in {folder}: expected {candidates[0]} "
                            f"or {candidates[1]}")


def _read_images(path, image_shape):
    images = read_idx(path)
    image_shape = tuple(image_shape)
    if images.dtype != np.uint8:
        raise IdxFormatError(f"{path}: images have dtype {images.dtype}, expected uint8 "
                             f"(dtype code 0x08)")
    if images.shape[1:] != image_shape:
        expected = "×".join(map(str, image_shape))
        raise IdxFormatError(f"{path}: images have shape {images.shape}, expected "
                             f"(count, {', '.join(map(str, image_shape))}) for {expected} images")
    return images


def _read_labels(path, count, classes):
    labels = read_idx(path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise IdxFormatError(f"{path}: labels have dtype {labels.dtype} and shape "
                             f"{labels.shape}, expected uint8 of shape ({count},)")
    if len(labels) != count:
        raise IdxFormatError(f"{path}: {len(labels)} labels for {count} images")
    if labels.size and labels.max() >= classes:
        raise IdxFormatError(f"{path}: label {int(labels.max())} is out of range; expected "
                             f"0 to {classes - 1}")
    return labels.astype(np.int64)


def load_idx_dataset(name, folder, image_shape=(28, 28), classes=10):
    """Load the four standard IDX files in ``folder`` as the 8-bit ``Dataset`` ``name``.

    Pixels keep their values 0 to 255, and the network computes with q/255. The test set
    is the t10k files.
    """
    paths = {part: find_idx_file(folder, file_name)
             for part, file_name in IDX_FILE_NAMES.items()}
    train_pixels = _read_images(paths["train_images"], image_shape)
    test_pixels = _read_images(paths["test_images"], image_shape)
    train_labels = _read_labels(paths["train_labels"], len(train_pixels), classes)
    test_labels = _read_labels(paths["test_labels"], len(test_pixels), classes)
    return Dataset(
        name=name,
        train_pixels=train_pixels.reshape(-1, 1, *image_shape),
        train_labels=train_labels,
        test_pixels=test_pixels.reshape(-1, 1, *image_shape),
        test_labels=test_labels,
        shape=(1, *image_shape), bits=8, scale=1 / 255, offset=0.0, classes=classes,
        split={"method": "the standard train and t10k IDX files",
               "files": {part: os.path.basename(path) for part, path in paths.items()}},
    )


def _dataset_folder(name):
    variable = _FOLDER_VARIABLES[name]
    folder = os.environ.get(variable)
    if not folder:
        raise FileNotFoundError(
            f"data set {name!r} is read from local IDX files and nothing is downloaded: set "
            f"{variable} to the folder that contains {', '.join(IDX_FILE_NAMES.values())} "
            f"(each optionally gzipped, .gz)")
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{variable}={folder} is not a folder; set it to the folder "
                                f"of the {name} IDX files")
    return folder


@register_dataset("mnist")
def _load_mnist():
    """MNIST: 60000 training and 10000 test images of handwritten digits, 28×28, 8 bits."""
    return load_idx_dataset("mnist", _dataset_folder("mnist"))


@register_dataset("fashion-mnist")
def _load_fashion_mnist():
    """Fashion-MNIST: 60000 training and 10000 test images of clothing, 28×28, 8 bits."""
    return load_idx_dataset("fashion-mnist", _dataset_folder("fashion-mnist"))
