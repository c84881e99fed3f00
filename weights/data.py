"""Data sets as unsigned integer pixels plus labels, with fixed train/test splits.

A network computes with the real values ``offset + scale·q`` of the pixels q (see
``input`` in ``docs/model-format.md``). Every split uses a fixed seed, independent of
the training seed, so all models trained on one data set share the same test set.

To add a data set, write a function that returns a ``Dataset`` and decorate it with
``@register_dataset("name")``. A loader in another module of this package also needs
that module's name in ``_LOADER_MODULES``, which ``load_dataset`` and ``dataset_names``
import first. ``load_dataset`` validates what the loader returns.
"""

import importlib

from dataclasses import dataclass, field

import numpy as np

from weights.format import InputSpec

__all__ = ["Dataset", "register_dataset", "load_dataset", "dataset_names", "SPLIT_SEED"]

# Seed of every train/test split. Changing it changes the test sets that recorded
# accuracies refer to.
SPLIT_SEED = 0


@dataclass(frozen=True, eq=False)
class Dataset:
    """One data set: integer pixels of shape (samples, *shape) and int64 labels."""
    name: str
    train_pixels: np.ndarray
    train_labels: np.ndarray
    test_pixels: np.ndarray
    test_labels: np.ndarray
    shape: tuple                # (channels, height, width) of one sample
    bits: int                   # P: pixels are in [0, 2^P − 1]
    scale: float
    offset: float
    classes: int
    split: dict = field(default_factory=dict)   # how the test set was chosen, for records

    def input_spec(self, flatten):
        """Return the ``InputSpec`` of a network that starts with a dense layer
        (``flatten=True``, shape [features]) or with a convolution (shape [C, H, W])."""
        shape = (int(np.prod(self.shape)),) if flatten else tuple(self.shape)
        return InputSpec(shape=shape, bits=self.bits, scale=self.scale, offset=self.offset)


_LOADERS = {}

# Modules whose import registers more data sets. They import this module, so they are
# imported on first use, not at the top of this file.
_LOADER_MODULES = ("weights.mnist1d", "weights.idx")


def register_dataset(name):
    """Register the decorated function as the loader of data set ``name``."""
    def decorator(loader):
        if name in _LOADERS:
            raise ValueError(f"data set {name!r} is already registered")
        _LOADERS[name] = loader
        return loader
    return decorator


def _import_loader_modules():
    for module in _LOADER_MODULES:
        importlib.import_module(module)


def dataset_names():
    """Return the names of all registered data sets, sorted."""
    _import_loader_modules()
    return sorted(_LOADERS)


def load_dataset(name):
    """Load data set ``name`` and check its pixels, labels and shapes."""
    _import_loader_modules()
    if name not in _LOADERS:
        raise KeyError(f"unknown data set {name!r}; expected one of {', '.join(dataset_names())}")
    dataset = _LOADERS[name]()
    _validate(dataset)
    return dataset


def _validate(dataset):
    where = f"data set {dataset.name!r}"
    for part in ("train", "test"):
        pixels = getattr(dataset, f"{part}_pixels")
        labels = getattr(dataset, f"{part}_labels")
        if pixels.dtype.kind != "u":
            raise ValueError(f"{where}: {part} pixels have dtype {pixels.dtype}, "
                             f"expected an unsigned integer dtype")
        if pixels.shape[1:] != tuple(dataset.shape) or len(pixels) != len(labels):
            raise ValueError(f"{where}: {part} pixels have shape {pixels.shape} for "
                             f"{len(labels)} labels, expected ({len(labels)}, "
                             f"{', '.join(map(str, dataset.shape))})")
        if pixels.size and int(pixels.max()) > (1 << dataset.bits) - 1:
            raise ValueError(f"{where}: {part} pixel value {int(pixels.max())} does not fit "
                             f"in {dataset.bits} bits")
        if labels.dtype != np.int64 or labels.min() < 0 or labels.max() >= dataset.classes:
            raise ValueError(f"{where}: {part} labels must be int64 in [0, {dataset.classes}), "
                             f"found dtype {labels.dtype}, range [{labels.min()}, {labels.max()}]")


@register_dataset("digits")
def _load_digits():
    """scikit-learn's 8×8 handwritten digits (1797 images, values 0 to 16), 20 % held out.

    The data ship inside scikit-learn, so loading needs no network. The value 16 needs
    5 bits, and scale 1/16 maps the pixels onto [0, 1].
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    values = digits.data
    if np.any(values != np.round(values)) or values.min() < 0 or values.max() > 16:
        raise ValueError("scikit-learn's digits are expected to be integers 0 to 16")
    pixels = values.astype(np.uint8).reshape(-1, 1, 8, 8)
    labels = digits.target.astype(np.int64)
    test_fraction = 0.2
    train_pixels, test_pixels, train_labels, test_labels = train_test_split(
        pixels, labels, test_size=test_fraction, stratify=labels, random_state=SPLIT_SEED)
    return Dataset(
        name="digits",
        train_pixels=train_pixels, train_labels=train_labels,
        test_pixels=test_pixels, test_labels=test_labels,
        shape=(1, 8, 8), bits=5, scale=1 / 16, offset=0.0, classes=10,
        split={"method": "sklearn.model_selection.train_test_split, stratified",
               "test_fraction": test_fraction, "seed": SPLIT_SEED},
    )
