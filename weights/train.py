"""Train an ABC-Net and export it: ``python -m weights.train --help``.

Training has two phases: a full-precision network is trained from scratch, then the
same architecture in ABC mode starts from its weights and batch norms and is fine-tuned.
Both phases use Adam with a cosine-annealed learning rate and cross-entropy on the
scores. A fixed seed gives the same model on the same PyTorch build and thread count.
"""

import argparse
import copy
import logging
import math
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from weights.data import dataset_names, load_dataset
from weights.export import export_model, score_pixels
from weights.format import PoolSpec
from weights.layers import DEFAULT_ALPHA_RIDGE, ABCNet, ConvSpec, DenseSpec

__all__ = ["TrainingConfig", "build_network", "train", "main", "ARCHITECTURES"]

log = logging.getLogger("weights.train")

ARCHITECTURES = ("mlp", "cnn", "cnn3", "cnn1d")


@dataclass(frozen=True)
class TrainingConfig:
    """Settings of one training run, which ``train`` stores in the model's metadata."""
    dataset: str = "digits"
    architecture: str = "mlp"
    weight_bases: int = 3
    input_bases: int = 3
    seed: int = 0
    full_precision_epochs: int = 60
    abc_epochs: int = 40
    batch_size: int = 64
    full_precision_lr: float = 3e-3
    abc_lr: float = 1e-3
    weight_decay: float = 0.0
    alpha_ridge: float = DEFAULT_ALPHA_RIDGE
    bn_eps: float = 1e-5


def build_network(architecture, dataset, weight_bases, input_bases, *,
                  alpha_ridge=DEFAULT_ALPHA_RIDGE, bn_eps=1e-5):
    """Build the preset network ``architecture`` for ``dataset``.

    mlp: dense layers features → 128 → 128 → classes.
    cnn: two 3×3 convolutions (16 and 32 channels, padding 1), each followed by a 2×2
    max-pool, then a dense layer to the classes. An image axis of length 1 gets kernel,
    padding and pool 1 on that axis.
    cnn3 and cnn1d: see ``_cnn3_specs`` and ``_cnn1d_specs``.
    """
    if architecture == "mlp":
        specs = [DenseSpec(128), DenseSpec(128), DenseSpec(dataset.classes)]
        input_spec = dataset.input_spec(flatten=True)
    elif architecture == "cnn":
        _, height, width = dataset.shape
        kernel = tuple(3 if size > 1 else 1 for size in (height, width))
        padding = tuple(1 if size > 1 else 0 for size in (height, width))
        pool = PoolSpec(kernel=tuple(2 if size > 1 else 1 for size in (height, width)),
                        stride=tuple(2 if size > 1 else 1 for size in (height, width)))
        specs = [ConvSpec(16, kernel=kernel, padding=padding, pool=pool),
                 ConvSpec(32, kernel=kernel, padding=padding, pool=pool),
                 DenseSpec(dataset.classes)]
        input_spec = dataset.input_spec(flatten=False)
    elif architecture == "cnn3":
        specs = _cnn3_specs(dataset)
        input_spec = dataset.input_spec(flatten=False)
    elif architecture == "cnn1d":
        specs = _cnn1d_specs(dataset)
        input_spec = dataset.input_spec(flatten=False)
    else:
        raise ValueError(f"unknown architecture {architecture!r}; expected one of "
                         f"{', '.join(ARCHITECTURES)}")
    return ABCNet(input_spec, specs, weight_bases, input_bases, alpha_ridge=alpha_ridge,
                  bn_eps=bn_eps)


def _cnn3_specs(dataset):
    """Return the layers of cnn3, a CNN for small images such as the 8×8 digits.

    Three 3×3 convolutions with padding 1 (16, 32 and 32 channels), the second and the
    third followed by a 2×2 max-pool, then a dense layer to the classes. An 8×8 image
    leaves 32 channels of 2×2, and the network has 15248 weights per base.
    """
    _, height, width = dataset.shape
    if height < 4 or width < 4:
        raise ValueError(f"cnn3 needs images of at least 4×4 because it pools twice by 2×2, "
                         f"but data set {dataset.name!r} has {height}×{width}; use cnn1d or mlp")
    pool = PoolSpec(kernel=(2, 2), stride=(2, 2))
    return [ConvSpec(16, kernel=(3, 3), padding=(1, 1)),
            ConvSpec(32, kernel=(3, 3), padding=(1, 1), pool=pool),
            ConvSpec(32, kernel=(3, 3), padding=(1, 1), pool=pool),
            DenseSpec(dataset.classes)]


def _cnn1d_specs(dataset):
    """Return the layers of cnn1d, a CNN for signals stored as 1×W images, such as MNIST-1D.

    Convolutions 1×5 (32 channels, no padding), 1×5 (32 channels, padding 2) and 1×3 (32
    channels, padding 1), the first two followed by a 1×2 max-pool, then a dense layer
    to the classes. The first convolution has no padding because the format pads the
    pixels with q = 0, whose real value is the data set's offset, and for a signal
    centred on 0 that is far outside the signal. A 1×40 signal leaves 32 channels of
    1×9, and the network has 11232 weights per base.
    """
    _, height, width = dataset.shape
    if height != 1 or width < 8:
        raise ValueError(f"cnn1d needs 1×W images with W ≥ 8, but data set "
                         f"{dataset.name!r} has {height}×{width}; use cnn or cnn3")
    pool = PoolSpec(kernel=(1, 2), stride=(1, 2))
    return [ConvSpec(32, kernel=(1, 5), pool=pool),
            ConvSpec(32, kernel=(1, 5), padding=(0, 2), pool=pool),
            ConvSpec(32, kernel=(1, 3), padding=(0, 1)),
            DenseSpec(dataset.classes)]


def accuracy(network, pixels, labels):
    """Return the fraction of ``pixels`` that ``network`` (in float64, eval mode) classifies
    correctly, with ties going to the lowest class index as in the hardware."""
    scores = score_pixels(network, pixels)
    return float(np.mean(np.argmax(scores, axis=1) == labels))


def _run_phase(network, dataset, config, phase, epochs, lr, generator):
    """Train ``network`` for ``epochs`` epochs and log one line per epoch."""
    optimizer = torch.optim.Adam(network.parameters(), lr=lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(dataset.train_labels) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer,
                                                           max(1, epochs * steps_per_epoch))
    pixels = torch.from_numpy(dataset.train_pixels.astype(np.float32))
    labels = torch.from_numpy(dataset.train_labels)
    for epoch in range(1, epochs + 1):
        network.train()
        order = torch.randperm(len(labels), generator=generator)
        total_loss = 0.0
        for start in range(0, len(order), config.batch_size):
            batch = order[start:start + config.batch_size]
            loss = F.cross_entropy(network(pixels[batch]), labels[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss.item() * len(batch)
        train_accuracy = accuracy(network, dataset.train_pixels, dataset.train_labels)
        test_accuracy = accuracy(network, dataset.test_pixels, dataset.test_labels)
        log.info("%s epoch %3d/%d  loss %.4f  train %.2f %%  test %.2f %%", phase, epoch,
                 epochs, total_loss / len(order), 100 * train_accuracy, 100 * test_accuracy)


def train(config):
    """Train a network as ``config`` sets and return (ABC network, training record).

    The record contains the settings, the float test accuracies of both phases and the
    training time, measured with ``score_pixels`` (float64, evaluation mode).
    """
    dataset = load_dataset(config.dataset)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    network = build_network(config.architecture, dataset, config.weight_bases,
                            config.input_bases, alpha_ridge=config.alpha_ridge,
                            bn_eps=config.bn_eps)
    started = time.perf_counter()

    network.set_full_precision(True)
    _run_phase(network, dataset, config, "full-precision", config.full_precision_epochs,
               config.full_precision_lr, generator)
    full_precision_test = accuracy(network, dataset.test_pixels, dataset.test_labels)

    network = copy.deepcopy(network).set_full_precision(False)
    _run_phase(network, dataset, config, "abc", config.abc_epochs, config.abc_lr, generator)
    network.eval()
    seconds = time.perf_counter() - started

    record = {
        "dataset": dataset.name,
        "split": dataset.split,
        "train_samples": int(len(dataset.train_labels)),
        "test_samples": int(len(dataset.test_labels)),
        "architecture": config.architecture,
        "weight_bases": config.weight_bases,
        "input_bases": config.input_bases,
        "weight_shifts": list(network.layers[0].weight_shifts),
        "seed": config.seed,
        "full_precision_epochs": config.full_precision_epochs,
        "abc_epochs": config.abc_epochs,
        "batch_size": config.batch_size,
        "optimizer": "Adam with cosine-annealed learning rate, per phase",
        "full_precision_lr": config.full_precision_lr,
        "abc_lr": config.abc_lr,
        "weight_decay": config.weight_decay,
        "alpha_ridge": config.alpha_ridge,
        "full_precision_activation": "hardtanh",
        "full_precision_test_accuracy": full_precision_test,
        "train_accuracy": accuracy(network, dataset.train_pixels, dataset.train_labels),
        "test_accuracy": accuracy(network, dataset.test_pixels, dataset.test_labels),
        "training_seconds": round(seconds, 1),
        "torch_version": torch.__version__,
        "torch_threads": torch.get_num_threads(),
    }
    return network, record


def _parse_arguments(argv):
    defaults = TrainingConfig()
    parser = argparse.ArgumentParser(
        prog="python -m weights.train",
        description="Train a full-precision network, fine-tune it as an ABC-Net and export "
                    "the result in the model format (docs/model-format.md).")
    parser.add_argument("--dataset", choices=dataset_names(), default=defaults.dataset,
                        help="data set (default: %(default)s)")
    parser.add_argument("--arch", choices=ARCHITECTURES, default=defaults.architecture,
                        help="network preset: mlp is features → 128 → 128 → classes, cnn is "
                             "two 3×3 convolutions with 2×2 max-pools and a dense layer, "
                             "cnn3 is three 3×3 convolutions with two 2×2 max-pools and a "
                             "dense layer, cnn1d is three 1×k convolutions with two 1×2 "
                             "max-pools and a dense layer, for 1×W signals "
                             "(default: %(default)s)")
    parser.add_argument("-M", "--weight-bases", type=int, default=defaults.weight_bases,
                        help="binary weight bases M per layer (default: %(default)s)")
    parser.add_argument("-N", "--input-bases", type=int, default=defaults.input_bases,
                        help="binary activation bases N per layer input (default: %(default)s)")

    parser.add_argument("--seed", type=int, default=defaults.seed,
                        help="seed of the initialisation and the batch order, not of the "
                             "train/test split, which is fixed (default: %(default)s)")
    parser.add_argument("--fp-epochs", type=int, default=defaults.full_precision_epochs,
                        help="epochs of full-precision pretraining (default: %(default)s)")
    parser.add_argument("--abc-epochs", type=int, default=defaults.abc_epochs,
                        help="epochs of ABC fine-tuning (default: %(default)s)")

    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help="samples per batch (default: %(default)s)")
    parser.add_argument("--fp-lr", type=float, default=defaults.full_precision_lr,
                        help="initial Adam learning rate of pretraining (default: %(default)s)")
    parser.add_argument("--abc-lr", type=float, default=defaults.abc_lr,
                        help="initial Adam learning rate of fine-tuning (default: %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=defaults.weight_decay,
                        help="Adam weight decay in both phases (default: %(default)s)")

    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch CPU threads (default: %(default)s)")
    parser.add_argument("--name", help="model name in the file's metadata, letters, digits, "
                                       "'_' or '-' (default: DATASET-ARCH)")
    parser.add_argument("--description", default="", help="free-text model description")
    parser.add_argument("-o", "--output", required=True,
                        help="path of the .npz model file to write")

    arguments = parser.parse_args(argv)
    for option in ("weight_bases", "input_bases", "batch_size", "threads"):
        if getattr(arguments, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1, "
                         f"got {getattr(arguments, option)}")
    for option in ("fp_epochs", "abc_epochs"):
        if getattr(arguments, option) < 0:
            parser.error(f"--{option.replace('_', '-')} must be at least 0, "
                         f"got {getattr(arguments, option)}")
    return arguments


def main(argv=None):
    arguments = _parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.set_num_threads(arguments.threads)
    config = TrainingConfig(
        dataset=arguments.dataset, architecture=arguments.arch,
        weight_bases=arguments.weight_bases, input_bases=arguments.input_bases,
        seed=arguments.seed, full_precision_epochs=arguments.fp_epochs,
        abc_epochs=arguments.abc_epochs, batch_size=arguments.batch_size,
        full_precision_lr=arguments.fp_lr, abc_lr=arguments.abc_lr,
        weight_decay=arguments.weight_decay)
    name = arguments.name or f"{arguments.dataset}-{arguments.arch}"
    log.info("training %s: M=%d N=%d seed %d", name, config.weight_bases, config.input_bases,
             config.seed)
    network, record = train(config)
    export_model(network, name, arguments.output, description=arguments.description,
                 training=record)
    log.info("wrote %s: full-precision test %.2f %%, ABC test %.2f %%, %.1f s",
             arguments.output, 100 * record["full_precision_test_accuracy"],
             100 * record["test_accuracy"], record["training_seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
