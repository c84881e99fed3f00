"""MNIST-1D as a data set of 8-bit integer signals: ``load_dataset("mnist1d")``.

MNIST-1D (Greydanus and Steinbach, the ``mnist1d`` package) turns ten 1-D digit
templates into 40-sample signals by padding, shear, translation and noise. The loader
generates the data locally with ``mnist1d.data.make_dataset`` and the package's default
arguments (5000 samples, seed 42). It never calls ``get_dataset``, which downloads a file
by default. Each signal becomes one 1×40 image with one channel.

make_dataset centres the signals and scales them to standard deviation 1. Their values
lie in about [−5.5, 4.6], so 8-bit pixels with ``offset + scale·q`` covering [−6.4, 6.35]
in steps of 0.05 hold them without clipping. The value 0 is exactly q = 128.
"""

import functools
import random

import numpy as np

from weights.data import Dataset, register_dataset

__all__ = ["MNIST1D_BITS", "MNIST1D_SCALE", "MNIST1D_OFFSET", "MNIST1D_SEED",
           "quantize_signals"]

MNIST1D_BITS = 8
MNIST1D_SCALE = 0.05
MNIST1D_OFFSET = -128 * MNIST1D_SCALE
# The default seed of mnist1d.data.get_dataset_args (package version 0.0.2.post1).
MNIST1D_SEED = 42


def quantize_signals(values):
    """Return the P-bit pixels q nearest to real ``values``: x ≈ offset + scale·q.

    Values outside [offset, offset + scale·(2^P − 1)] are clipped to the range ends.
    """
    levels = np.round((np.asarray(values, dtype=np.float64) - MNIST1D_OFFSET) / MNIST1D_SCALE)
    return np.clip(levels, 0, (1 << MNIST1D_BITS) - 1).astype(np.uint8)


@functools.cache
def _generate():
    """Generate the data once per process: (train x, train y, test x, test y, split)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = MNIST1D_SEED
    # make_dataset seeds the global generators of numpy and random. Restore them, because
    # loading data must not change the random numbers that the caller draws next.
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        data = make_dataset(args)
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)

    split = {"method": "mnist1d.data.make_dataset: the first train_split of the shuffled "
                       "samples train, the rest test",
             "num_samples": args.num_samples, "train_split": args.train_split,
             "seed": args.seed}
    return data["x"], data["y"], data["x_test"], data["y_test"], split


@register_dataset("mnist1d")
def _load_mnist1d():
    """MNIST-1D with the package's default arguments: 4000 training and 1000 test signals."""
    train_x, train_y, test_x, test_y, split = _generate()
    length = train_x.shape[1]
    return Dataset(
        name="mnist1d",
        train_pixels=quantize_signals(train_x).reshape(-1, 1, 1, length),
        train_labels=train_y.astype(np.int64),
        test_pixels=quantize_signals(test_x).reshape(-1, 1, 1, length),
        test_labels=test_y.astype(np.int64),
        shape=(1, 1, length), bits=MNIST1D_BITS, scale=MNIST1D_SCALE,
        offset=MNIST1D_OFFSET, classes=10, split=dict(split),
    )
