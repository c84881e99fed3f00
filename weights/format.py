"""The exported ABC-Net model format (version 1): writer, loader and validator.

The format is documented in ``docs/model-format.md``. This module imports numpy and the
standard library only, so the compiler and the golden model can read models without
PyTorch.
"""

import json
import math
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "ModelFormatError",
    "InputSpec", "PoolSpec", "Layer", "Model",
    "load_model", "save_model", "pack_bits", "unpack_bits",
]

FORMAT_NAME = "abcnet-model"
FORMAT_VERSION = 1

_NAME_PATTERN = re.compile(r"[A-Za-z0-9_]+")
_MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]+")
_MAX_KERNEL = 7
_MAX_STRIDE = 3


class ModelFormatError(ValueError):
    """A model file that is missing, unreadable or violates the format."""


def pack_bits(bits):
    """Pack a {0, 1} array along its last axis, element k into bit k mod 8 of byte k div 8."""
    return np.packbits(np.asarray(bits, dtype=np.uint8), axis=-1, bitorder="little")


def unpack_bits(packed, count):
    """Unpack ``count`` elements from the last axis of a ``pack_bits`` array."""
    return np.unpackbits(packed, axis=-1, count=count, bitorder="little")


@dataclass(frozen=True)
class InputSpec:
    """The first layer's input: unsigned ``bits``-bit integers q, real value offset + scale·q."""
    shape: tuple
    bits: int
    scale: float
    offset: float

    @property
    def max_value(self):
        return (1 << self.bits) - 1


@dataclass(frozen=True)
class PoolSpec:
    """A max-pool window between a convolution and its batch norm (no padding, floor mode)."""
    kernel: tuple
    stride: tuple


@dataclass(frozen=True, eq=False)
class Layer:
    """One ABC-Net layer: M weight bases, its input encoding and its output.

    ``weight_bits`` is unpacked: shape (M, O, K), values {0, 1}, 1 meaning +1, K in
    PyTorch's ``weight.reshape(out, -1)`` order.
    """
    name: str
    type: str
    in_shape: tuple                 # (features,) or (channels, height, width)
    out_shape: tuple                # after the convolution and the pool, if any
    weight_shifts: tuple
    input_bases: int | None         # None: the first layer, fed with pixels
    output: str                     # "bases" or "scores"
    weight_bits: np.ndarray
    alpha: np.ndarray
    input_shift: np.ndarray | None = None
    input_scale: np.ndarray | None = None
    bn_weight: np.ndarray | None = None
    bn_bias: np.ndarray | None = None
    bn_mean: np.ndarray | None = None
    bn_var: np.ndarray | None = None
    bn_eps: float | None = None
    kernel: tuple | None = None     # conv2d only
    stride: tuple | None = None
    padding: tuple | None = None
    pool: PoolSpec | None = None

    @property
    def weight_bases(self):
        return self.weight_bits.shape[0]

    @property
    def out_features(self):
        """O: output channels of a convolution, outputs of a dense layer."""
        return self.weight_bits.shape[1]

    @property
    def fan_in(self):
        """K: the number of inputs of one output."""
        return self.weight_bits.shape[2]

    @property
    def in_channels(self):
        return self.in_shape[0]

    @property
    def conv_shape(self):
        """(channels, height, width) after the convolution and before the pool."""
        _, height, width = self.in_shape
        return (self.out_features,
                conv_output_size(height, self.kernel[0], self.stride[0], self.padding[0]),
                conv_output_size(width, self.kernel[1], self.stride[1], self.padding[1]))


@dataclass(frozen=True, eq=False)
class Model:
    name: str
    classes: int
    input: InputSpec
    layers: tuple
    description: str = ""
    training: dict = field(default_factory=dict)


def conv_output_size(size, kernel, stride, padding):
    """Output length of a convolution or pool along one axis (floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


# --- writing ---------------------------------------------------------------------------

def save_model(model, path):
    """Write ``model`` to ``path`` atomically: a temporary file in the same folder, then rename."""
    arrays = {"metadata": np.array(json.dumps(_metadata(model), indent=1))}
    for layer in model.layers:
        arrays[f"{layer.name}.weight_bits"] = pack_bits(layer.weight_bits)
        arrays[f"{layer.name}.alpha"] = np.asarray(layer.alpha, dtype=np.float64)
        if layer.input_bases is not None:
            arrays[f"{layer.name}.input_shift"] = np.asarray(layer.input_shift, dtype=np.float64)
            arrays[f"{layer.name}.input_scale"] = np.asarray(layer.input_scale, dtype=np.float64)
        if layer.output == "bases":
            for key in ("bn_weight", "bn_bias", "bn_mean", "bn_var"):
                arrays[f"{layer.name}.{key}"] = np.asarray(getattr(layer, key), dtype=np.float64)

    # Validate what is about to be written, so a bad model never reaches the disk.
    _parse(arrays, str(path))

    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
        # mkstemp creates the file with mode 0600; give it the mode open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _metadata(model):
    layers = []
    for layer in model.layers:
        entry = {
            "name": layer.name,
            "type": layer.type,
            "weight_bases": layer.weight_bases,
            "weight_shifts": [float(u) for u in layer.weight_shifts],
            "input_bases": layer.input_bases,
            "output": layer.output,
        }
        if layer.type == "dense":
            entry["in_features"] = layer.fan_in
            entry["out_features"] = layer.out_features
        else:
            entry["in_channels"] = layer.in_channels
            entry["out_channels"] = layer.out_features
            entry["kernel"] = list(layer.kernel)
            entry["stride"] = list(layer.stride)
            entry["padding"] = list(layer.padding)
            entry["pool"] = None if layer.pool is None else {
                "kernel": list(layer.pool.kernel), "stride": list(layer.pool.stride)}
        if layer.output == "bases":
            entry["bn_eps"] = float(layer.bn_eps)
        layers.append(entry)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "name": model.name,
        "description": model.description,
        "classes": model.classes,
        "input": {"shape": list(model.input.shape), "bits": model.input.bits,
                  "scale": float(model.input.scale), "offset": float(model.input.offset)},
        "bit_order": "little",
        "padding": "minus-one",
        "layers": layers,
        "training": model.training,
    }


# --- reading and validation ------------------------------------------------------------

def load_model(path):
    """Load and validate a model file; raise ``ModelFormatError`` naming the problem."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelFormatError(f"{path}: model file not found")
    # Checked first because np.load falls back to unpickling a file that is not a zip
    # archive, and returns a bare array for a .npy file.
    if not zipfile.is_zipfile(path):
        raise ModelFormatError(f"{path}: not a zip archive; a model file is an .npz archive "
                               f"written by numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {}
            for key in archive.files:
                try:
                    arrays[key] = archive[key]
                except ValueError as error:
                    # numpy raises ValueError for object arrays when pickles are disallowed.
                    raise ModelFormatError(
                        f"{path}: array {key!r} contains pickled objects ({error}); "
                        f"a model file may contain only numeric arrays and the JSON metadata"
                    ) from None
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise ModelFormatError(f"{path}: not a readable .npz archive ({error})") from None
    except ValueError as error:
        if isinstance(error, ModelFormatError):
            raise
        raise ModelFormatError(f"{path}: not a readable .npz archive ({error})") from None
    return _parse(arrays, path)


class _Checker:
    """Collects the context (file and field) that every error message names."""

    def __init__(self, path, arrays):
        self.path = path
        self.arrays = arrays
        self.used = {"metadata"}

    def fail(self, where, message):
        raise ModelFormatError(f"{self.path}: {where}: {message}")

    def field(self, mapping, key, where, kinds, *, optional=False):
        if key not in mapping:
            if optional:
                return None
            self.fail(f"{where}.{key}", "missing field")
        value = mapping[key]
        # bool is a subclass of int, but a bool where a number belongs is a mistake.
        if isinstance(value, bool) and bool not in kinds:
            self.fail(f"{where}.{key}", f"expected {_kind_names(kinds)}, found {value!r}")
        if not isinstance(value, kinds):
            self.fail(f"{where}.{key}", f"expected {_kind_names(kinds)}, found {value!r}")
        return value

    def integer(self, mapping, key, where, low, high=None):
        value = self.field(mapping, key, where, (int,))
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            self.fail(f"{where}.{key}", f"expected an integer {bound}, found {value}")
        return value

    def number(self, mapping, key, where, *, positive=False):
        value = self.field(mapping, key, where, (int, float))
        if not math.isfinite(value) or (positive and value <= 0):
            expected = "a finite number > 0" if positive else "a finite number"
            self.fail(f"{where}.{key}", f"expected {expected}, found {value!r}")
        return float(value)

    def pair(self, mapping, key, where, low, high):
        value = self.field(mapping, key, where, (list,))
        if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool)
                                      and low <= v <= high for v in value):
            self.fail(f"{where}.{key}",
                      f"expected two integers between {low} and {high}, found {value!r}")
        return tuple(value)

    def array(self, key, dtype, shape, *, finite=True):
        if key not in self.arrays:
            self.fail(f"array {key!r}", f"missing; expected {np.dtype(dtype).name} of shape {shape}")
        self.used.add(key)
        value = self.arrays[key]
        if value.dtype != np.dtype(dtype):
            self.fail(f"array {key!r}", f"expected dtype {np.dtype(dtype).name}, found {value.dtype}")
        if value.shape != tuple(shape):
            self.fail(f"array {key!r}", f"expected shape {tuple(shape)}, found {value.shape}")
        if finite and not np.all(np.isfinite(value)):
            bad = int(np.sum(~np.isfinite(value)))
            self.fail(f"array {key!r}", f"{bad} values are NaN or infinite; all must be finite")
        return value


def _kind_names(kinds):
    names = {int: "an integer", float: "a number", str: "a string", list: "a list",
             dict: "an object", bool: "true or false", type(None): "null"}
    return " or ".join(names[kind] for kind in kinds)


def _parse(arrays, path):
    check = _Checker(path, arrays)
    if "metadata" not in arrays:
        check.fail("array 'metadata'", "missing; expected the JSON metadata as a 0-d string array")
    raw = arrays["metadata"]
    if raw.shape != () or raw.dtype.kind != "U":
        check.fail("array 'metadata'", f"expected a 0-d string array, found dtype {raw.dtype} "
                                       f"shape {raw.shape}")
    try:
        meta = json.loads(str(raw))
    except json.JSONDecodeError as error:
        check.fail("metadata", f"invalid JSON ({error})")
    if not isinstance(meta, dict):
        check.fail("metadata", f"expected a JSON object, found {type(meta).__name__}")

    fmt = check.field(meta, "format", "metadata", (str,))
    if fmt != FORMAT_NAME:
        check.fail("metadata.format", f"expected {FORMAT_NAME!r}, found {fmt!r}")
    version = check.field(meta, "version", "metadata", (int,))
    if version != FORMAT_VERSION:
        check.fail("metadata.version", f"this loader reads version {FORMAT_VERSION}, found "
                                       f"{version!r}; re-export the model with this release")
    name = check.field(meta, "name", "metadata", (str,))
    if not _MODEL_NAME_PATTERN.fullmatch(name):
        check.fail("metadata.name", f"expected letters, digits, '_' or '-', found {name!r}")
    description = check.field(meta, "description", "metadata", (str,), optional=True) or ""
    classes = check.integer(meta, "classes", "metadata", 2)
    bit_order = check.field(meta, "bit_order", "metadata", (str,))
    if bit_order != "little":
        check.fail("metadata.bit_order", f"expected 'little', found {bit_order!r}")
    padding = check.field(meta, "padding", "metadata", (str,))
    if padding != "minus-one":
        check.fail("metadata.padding", f"expected 'minus-one', found {padding!r}")
    training = check.field(meta, "training", "metadata", (dict,), optional=True) or {}

    spec = check.field(meta, "input", "metadata", (dict,))
    shape = check.field(spec, "shape", "metadata.input", (list,))
    if len(shape) not in (1, 3) or not all(isinstance(v, int) and not isinstance(v, bool)
                                           and v >= 1 for v in shape):
        check.fail("metadata.input.shape", f"expected [features] or [channels, height, width] "
                                           f"of positive integers, found {shape!r}")
    input_spec = InputSpec(
        shape=tuple(shape),
        bits=check.integer(spec, "bits", "metadata.input", 1, 16),
        scale=check.number(spec, "scale", "metadata.input", positive=True),
        offset=check.number(spec, "offset", "metadata.input"),
    )

    entries = check.field(meta, "layers", "metadata", (list,))
    if not entries:
        check.fail("metadata.layers", "expected at least one layer, found an empty list")
    layers = []
    names = set()
    in_shape = input_spec.shape
    for index, entry in enumerate(entries):
        where = f"metadata.layers[{index}]"
        if not isinstance(entry, dict):
            check.fail(where, f"expected an object, found {entry!r}")
        layer = _parse_layer(check, entry, where, index, len(entries), in_shape, layers)
        if layer.name in names:
            check.fail(f"{where}.name", f"duplicate layer name {layer.name!r}")
        names.add(layer.name)
        layers.append(layer)
        in_shape = layer.out_shape

    if layers[-1].out_features != classes:
        check.fail("metadata.classes", f"the last layer has {layers[-1].out_features} outputs "
                                       f"but classes is {classes}")
    unused = sorted(set(arrays) - check.used)
    if unused:
        check.fail(f"array {unused[0]!r}", "not part of any layer; remove it or fix the layer name")
    return Model(name=name, classes=classes, input=input_spec, layers=tuple(layers),
                 description=description, training=training)


def _parse_layer(check, entry, where, index, count, in_shape, previous):
    name = check.field(entry, "name", where, (str,))
    if not _NAME_PATTERN.fullmatch(name):
        check.fail(f"{where}.name", f"expected letters, digits or '_', found {name!r}")
    where = f"{where} ({name})"
    kind = check.field(entry, "type", where, (str,))
    if kind not in ("dense", "conv2d"):
        check.fail(f"{where}.type", f"unknown layer type {kind!r}; expected 'dense' or 'conv2d'")

    m_bases = check.integer(entry, "weight_bases", where, 1, 64)
    shifts = check.field(entry, "weight_shifts", where, (list,))
    if len(shifts) != m_bases or not all(isinstance(u, (int, float)) and not isinstance(u, bool)
                                         and math.isfinite(u) for u in shifts):
        check.fail(f"{where}.weight_shifts",
                   f"expected {m_bases} finite numbers (one per weight base), found {shifts!r}")

    input_bases = check.field(entry, "input_bases", where, (int, type(None)))
    if index == 0 and input_bases is not None:
        check.fail(f"{where}.input_bases", f"the first layer takes pixels, so expected null, "
                                           f"found {input_bases!r}")
    if index > 0:
        if input_bases is None or not 1 <= input_bases <= 16:
            check.fail(f"{where}.input_bases", f"expected an integer between 1 and 16 for a layer "
                                               f"fed by activation bases, found {input_bases!r}")

    output = check.field(entry, "output", where, (str,))
    expected_output = "scores" if index == count - 1 else "bases"
    if output != expected_output:
        check.fail(f"{where}.output", f"expected {expected_output!r} (only the last layer outputs "
                                      f"scores), found {output!r}")

    extra = {}
    if kind == "dense":
        in_features = check.integer(entry, "in_features", where, 1)
        out_features = check.integer(entry, "out_features", where, 1)
        flat = math.prod(in_shape)
        if in_features != flat:
            check.fail(f"{where}.in_features", f"the previous stage outputs {flat} values "
                                               f"(shape {list(in_shape)}), found {in_features}")
        fan_in = in_features
        out_shape = (out_features,)
    else:
        if len(in_shape) != 3:
            check.fail(f"{where}.type", f"a conv2d layer needs a [channels, height, width] input, "
                                        f"but its input has shape {list(in_shape)}")
        in_channels = check.integer(entry, "in_channels", where, 1)
        if in_channels != in_shape[0]:
            check.fail(f"{where}.in_channels",
                       f"the input has {in_shape[0]} channels, found {in_channels}")
        out_features = check.integer(entry, "out_channels", where, 1)
        kernel = check.pair(entry, "kernel", where, 1, _MAX_KERNEL)
        stride = check.pair(entry, "stride", where, 1, _MAX_STRIDE)
        padding = check.pair(entry, "padding", where, 0, _MAX_KERNEL - 1)
        for axis in (0, 1):
            if padding[axis] >= kernel[axis]:
                check.fail(f"{where}.padding", f"padding {list(padding)} must be smaller than "
                                               f"the kernel {list(kernel)} on each axis")
        height, width = (conv_output_size(in_shape[1 + a], kernel[a], stride[a], padding[a])
                         for a in (0, 1))
        if height < 1 or width < 1:
            check.fail(f"{where}.kernel", f"kernel {list(kernel)} with padding {list(padding)} "
                                          f"does not fit the {in_shape[1]}x{in_shape[2]} input")
        pool = None
        pool_entry = check.field(entry, "pool", where, (dict, type(None)))
        if pool_entry is not None:
            pool = PoolSpec(kernel=check.pair(pool_entry, "kernel", f"{where}.pool", 1, 64),
                            stride=check.pair(pool_entry, "stride", f"{where}.pool", 1, 64))
            if output == "scores":
                check.fail(f"{where}.pool", "the last layer outputs scores and cannot pool; "
                                            "set pool to null")
            height = conv_output_size(height, pool.kernel[0], pool.stride[0], 0)
            width = conv_output_size(width, pool.kernel[1], pool.stride[1], 0)
            if height < 1 or width < 1:
                check.fail(f"{where}.pool", f"pool window {list(pool.kernel)} is larger than "
                                            f"the convolution output")
        fan_in = in_channels * kernel[0] * kernel[1]
        out_shape = (out_features, height, width)
        extra = dict(kernel=kernel, stride=stride, padding=padding, pool=pool)

    packed = check.array(f"{name}.weight_bits", np.uint8,
                         (m_bases, out_features, -(-fan_in // 8)))
    if fan_in % 8 and np.any(packed[..., -1] >> (fan_in % 8)):
        check.fail(f"array '{name}.weight_bits'",
                   f"bits past the {fan_in} weights of a row are set; the last byte of each "
                   f"row must have bits {fan_in % 8} to 7 cleared")
    weight_bits = unpack_bits(packed, fan_in)
    alpha = check.array(f"{name}.alpha", np.float64, (m_bases,))

    if input_bases is not None:
        extra["input_shift"] = check.array(f"{name}.input_shift", np.float64, (input_bases,))
        extra["input_scale"] = check.array(f"{name}.input_scale", np.float64, (input_bases,))
    if output == "bases":
        extra["bn_eps"] = check.number(entry, "bn_eps", where, positive=True)
        for key in ("bn_weight", "bn_bias", "bn_mean", "bn_var"):
            extra[key] = check.array(f"{name}.{key}", np.float64, (out_features,))
        if np.any(extra["bn_var"] < 0):
            check.fail(f"array '{name}.bn_var'", f"found negative variance "
                                                 f"{float(extra['bn_var'].min())}; expected >= 0")
    elif "bn_eps" in entry:
        check.fail(f"{where}.bn_eps", "the last layer has no batch norm; remove bn_eps")

    return Layer(name=name, type=kind, in_shape=tuple(in_shape), out_shape=out_shape,
                 weight_shifts=tuple(float(u) for u in shifts), input_bases=input_bases,
                 output=output, weight_bits=weight_bits, alpha=alpha, **extra)
