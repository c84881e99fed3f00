"""Measure test accuracy over a grid of (M, N) and seeds: ``python -m weights.grid --help``.

Each study is one data set and one network preset of ``weights.train``. For every seed,
the grid trains the full-precision network once, then fine-tunes a copy of it as an
ABC-Net for each (M, N). The phases, optimiser and learning rates are those of
``weights.train``. The full-precision phase does not depend on M or N, so sharing it
saves repeating it for each configuration. The output folder receives
``accuracy-grid.json`` (every accuracy), ``accuracy-grid.md`` (a table of mean and
standard deviation over the seeds) and ``accuracy-grid.png`` (a plot of the same).
"""

import argparse
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from weights.data import dataset_names, load_dataset
from weights.train import ARCHITECTURES, TrainingConfig, accuracy, build_network
# NOTE: _run_phase is private to weights.train. The grid uses it so that both run the
# same training loop; the smoke test in tests/test_weights_grid.py fails if it changes.
from weights.train import _run_phase

__all__ = ["Study", "GridSettings", "run_grid", "write_results", "main",
           "DEFAULT_STUDIES", "DEFAULT_CONFIGURATIONS", "FULL_PRECISION"]

log = logging.getLogger("weights.grid")

FULL_PRECISION = "full precision"
RESULT_NAME = "accuracy-grid"


@dataclass(frozen=True)
class Study:
    """One data set trained with one network preset of ``weights.train``."""
    dataset: str
    architecture: str

    @property
    def label(self):
        return f"{self.dataset} {self.architecture}"


@dataclass(frozen=True)
class GridSettings:
    """Seeds and training settings shared by every run of the grid."""
    seeds: tuple = (0, 1, 2)
    # Fewer epochs than the trainer's defaults: with these, the default grid of 45
    # training runs took 17 minutes on one CPU thread (docs/accuracy.md).
    full_precision_epochs: int = 20
    abc_epochs: int = 30
    batch_size: int = TrainingConfig.batch_size
    full_precision_lr: float = TrainingConfig.full_precision_lr
    # Above the trainer's 1e-3: after 30 epochs, MNIST-1D cnn1d (seed 0) reached 88.2 %
    # at M=3 N=3 and 71.7 % at M=1 N=1 with 3e-3, against 85.2 % and 60.0 % with 1e-3.
    abc_lr: float = 3e-3
    weight_decay: float = TrainingConfig.weight_decay


DEFAULT_STUDIES = (Study("digits", "cnn3"), Study("mnist1d", "cnn1d"), Study("digits", "mlp"))
# (M, N): weight bases and activation bases of every layer.
DEFAULT_CONFIGURATIONS = ((1, 1), (3, 1), (3, 3), (5, 5))


def configuration_label(configuration):
    """Return "M=3 N=1" for (3, 1), and ``FULL_PRECISION`` for None."""
    if configuration is None:
        return FULL_PRECISION
    return f"M={configuration[0]} N={configuration[1]}"


# --- training --------------------------------------------------------------------------

def _load_pretrained(network, pretrained):
    """Copy the latent weights and batch norms of ``pretrained`` into ``network``.

    The activation bases (shifts and scales, one per input base) keep the initial values
    that ``network`` was built with, as in ``weights.train.train``.
    """
    state = {key: value for key, value in pretrained.state_dict().items()
             if ".activation." not in key}
    missing, unexpected = network.load_state_dict(state, strict=False)
    not_activation = [key for key in missing if ".activation." not in key]
    if not_activation or unexpected:
        raise RuntimeError(f"pretrained network does not match: missing {not_activation}, "
                           f"unexpected {unexpected}")


def _run_seed(study, dataset, seed, configurations, settings, progress):
    """Train one seed of ``study``; return {configuration label: test accuracy}."""
    config = TrainingConfig(
        dataset=study.dataset, architecture=study.architecture, seed=seed,
        full_precision_epochs=settings.full_precision_epochs,
        abc_epochs=settings.abc_epochs, batch_size=settings.batch_size,
        full_precision_lr=settings.full_precision_lr, abc_lr=settings.abc_lr,
        weight_decay=settings.weight_decay)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    # M and N change only the ABC arithmetic, so any (M, N) serves for pretraining.
    pretrained = build_network(study.architecture, dataset, 1, 1,
                               alpha_ridge=config.alpha_ridge, bn_eps=config.bn_eps)
    pretrained.set_full_precision(True)

    accuracies = {}
    with progress.run(study, seed, None):
        _run_phase(pretrained, dataset, config, "full-precision",
                   settings.full_precision_epochs, settings.full_precision_lr, generator)
        accuracies[FULL_PRECISION] = accuracy(pretrained, dataset.test_pixels,
                                              dataset.test_labels)
        progress.result(accuracies[FULL_PRECISION])
    generator_state = generator.get_state()

    for weight_bases, input_bases in configurations:
        label = configuration_label((weight_bases, input_bases))
        with progress.run(study, seed, (weight_bases, input_bases)):
            network = build_network(study.architecture, dataset, weight_bases, input_bases,
                                    alpha_ridge=config.alpha_ridge, bn_eps=config.bn_eps)
            _load_pretrained(network, pretrained)
            network.set_full_precision(False)
            # Every configuration gets the batch order that weights.train would give it.
            generator.set_state(generator_state)
            _run_phase(network, dataset, config, "abc", settings.abc_epochs,
                       settings.abc_lr, generator)
            accuracies[label] = accuracy(network, dataset.test_pixels, dataset.test_labels)
            progress.result(accuracies[label])
    return accuracies


class _Progress:
    """Logs one line per training run with the elapsed time and an estimate of the rest."""

    def __init__(self, total_runs):
        self.total_runs = total_runs
        self.done_runs = 0
        self.started = time.perf_counter()
        self._run_started = None
        self._prefix = ""

    def run(self, study, seed, configuration):
        self._prefix = (f"[{self.done_runs + 1}/{self.total_runs}] {study.label} seed {seed} "
                        f"{configuration_label(configuration)}")
        return self

    def __enter__(self):
        self._run_started = time.perf_counter()
        log.info("%s: training", self._prefix)
        return self

    def __exit__(self, *exc_info):
        self.done_runs += 1
        return False

    def result(self, test_accuracy):
        now = time.perf_counter()
        elapsed = now - self.started
        remaining = elapsed / (self.done_runs + 1) * (self.total_runs - self.done_runs - 1)
        log.info("%s: test %.2f %% in %.1f s; elapsed %s, estimated remaining %s",
                 self._prefix, 100 * test_accuracy, now - self._run_started,
                 _minutes(elapsed), _minutes(remaining))


def _minutes(seconds):
    return f"{int(seconds // 60)}:{int(seconds % 60):02d}"


def _summary(values):
    values = np.asarray(values, dtype=np.float64)
    return {
        "accuracies": values.tolist(),
        "mean": float(values.mean()),
        # Sample standard deviation over the seeds; undefined for a single seed.
        "std": float(values.std(ddof=1)) if len(values) > 1 else None,
        "min": float(values.min()),
        "max": float(values.max()),
    }


def run_grid(studies=DEFAULT_STUDIES, configurations=DEFAULT_CONFIGURATIONS,
             settings=GridSettings()):
    """Train every study, seed and configuration; return the results as a JSON-ready dict."""
    if not settings.seeds:
        raise ValueError("the grid needs at least one seed")
    total_runs = len(studies) * len(settings.seeds) * (1 + len(configurations))
    progress = _Progress(total_runs)
    labels = [FULL_PRECISION] + [configuration_label(c) for c in configurations]
    log.info("accuracy grid: %d studies, %d seeds, %d configurations, %d training runs",
             len(studies), len(settings.seeds), len(labels), total_runs)

    study_results = []
    for study in studies:
        dataset = load_dataset(study.dataset)
        started = time.perf_counter()
        per_seed = [_run_seed(study, dataset, seed, configurations, settings, progress)
                    for seed in settings.seeds]
        probe = build_network(study.architecture, dataset, 1, 1)
        results = []
        for configuration, label in zip([None, *configurations], labels):
            entry = {"configuration": label,
                     "weight_bases": None if configuration is None else configuration[0],
                     "input_bases": None if configuration is None else configuration[1]}
            entry.update(_summary([seed_result[label] for seed_result in per_seed]))
            results.append(entry)
        study_results.append({
            "dataset": study.dataset,
            "architecture": study.architecture,
            "train_samples": int(len(dataset.train_labels)),
            "test_samples": int(len(dataset.test_labels)),
            "weight_bits_per_base": int(sum(layer.weight.numel() for layer in probe.layers)),
            "results": results,
            "seconds": round(time.perf_counter() - started, 1),
        })

    return {
        "format": "abcnet-accuracy-grid",
        "version": 1,
        "configurations": labels,
        "settings": {
            "seeds": list(settings.seeds),
            "full_precision_epochs": settings.full_precision_epochs,
            "abc_epochs": settings.abc_epochs,
            "batch_size": settings.batch_size,
            "full_precision_lr": settings.full_precision_lr,
            "abc_lr": settings.abc_lr,
            "weight_decay": settings.weight_decay,
            "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(),
        },
        "studies": study_results,
        "seconds": round(time.perf_counter() - progress.started, 1),
    }


# --- output ----------------------------------------------------------------------------

def _cell(entry):
    if entry["std"] is None:
        return f"{100 * entry['mean']:.2f}"
    return f"{100 * entry['mean']:.2f} ± {100 * entry['std']:.2f}"


def markdown_table(grid):
    """Return the grid as a Markdown table: one row per configuration, one column per study."""
    studies = grid["studies"]
    header = "| configuration | " + " | ".join(
        f"{study['dataset']} {study['architecture']}" for study in studies) + " |"
    lines = [header, "|---|" + "---:|" * len(studies)]
    for index, label in enumerate(grid["configurations"]):
        cells = [_cell(study["results"][index]) for study in studies]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_report(grid):
    """Return the Markdown page of the grid: the table and the settings behind it."""
    settings = grid["settings"]
    seeds = settings["seeds"]
    lines = [
        "# Test accuracy by number of bases",
        "",
        f"Test accuracy in %, mean ± sample standard deviation over {len(seeds)} seeds "
        f"({', '.join(map(str, seeds))}). M is the number of weight bases and N the number "
        f"of activation bases of every layer.",
        "",
        markdown_table(grid),
        f"Training: {settings['full_precision_epochs']} full-precision epochs (Adam, "
        f"learning rate {settings['full_precision_lr']}), then "
        f"{settings['abc_epochs']} ABC epochs (Adam, learning rate {settings['abc_lr']}), "
        f"batch size {settings['batch_size']}, cosine-annealed learning rate per phase.",
        "",
        "| study | train samples | test samples | weight bits per base | seconds |",
        "|---|---:|---:|---:|---:|",
    ]
    for study in grid["studies"]:
        lines.append(f"| {study['dataset']} {study['architecture']} | "
                     f"{study['train_samples']} | {study['test_samples']} | "
                     f"{study['weight_bits_per_base']} | {study['seconds']} |")
    threads = settings["torch_threads"]
    lines += ["", f"Total time {grid['seconds']} s with PyTorch {settings['torch_version']} "
                  f"on {threads} CPU thread{'' if threads == 1 else 's'}.", ""]
    return "\n".join(lines)


def plot_grid(grid, path):
    """Plot accuracy against configuration, one panel per study, and save it as a PNG.

    ABC configurations are points with error bars of one standard deviation and each
    seed's accuracy as a small dot. Full precision is a dashed line with a band of one
    standard deviation.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    studies = grid["studies"]
    figure, axes = plt.subplots(1, len(studies), figsize=(4.2 * len(studies), 3.8),
                                squeeze=False)
    for axis, study in zip(axes[0], studies):
        full, *abc = study["results"]
        positions = np.arange(len(abc))
        means = np.array([100 * entry["mean"] for entry in abc])
        spreads = np.array([100 * (entry["std"] or 0.0) for entry in abc])

        full_mean, full_std = 100 * full["mean"], 100 * (full["std"] or 0.0)
        axis.axhline(full_mean, color="0.3", linestyle="--", linewidth=1,
                     label=f"full precision {full_mean:.1f} % (band: ± std)")
        axis.axhspan(full_mean - full_std, full_mean + full_std, color="0.85", zorder=0)
        for position, entry in zip(positions, abc):
            axis.plot([position] * len(entry["accuracies"]),
                      100 * np.asarray(entry["accuracies"]), ".", color="tab:blue",
                      alpha=0.35, markersize=5)
        axis.errorbar(positions, means, yerr=spreads, marker="o", color="tab:blue",
                      capsize=4, label="ABC-Net, mean ± std")

        axis.set_xticks(positions)
        axis.set_xticklabels([f"M={e['weight_bases']}\nN={e['input_bases']}" for e in abc])
        axis.set_title(f"{study['dataset']}, {study['architecture']} "
                       f"({study['test_samples']} test samples)", fontsize=10)
        axis.set_ylabel("test accuracy (%)")
        axis.grid(axis="y", alpha=0.3)
        axis.legend(loc="lower right", fontsize=8)
    seeds = len(grid["settings"]["seeds"])
    figure.suptitle(f"ABC-Net test accuracy by number of bases ({seeds} seeds)", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_results(grid, folder):
    """Write accuracy-grid.json, .md and .png into ``folder``; return their paths."""
    os.makedirs(folder, exist_ok=True)
    base = os.path.join(folder, RESULT_NAME)
    paths = {"json": base + ".json", "markdown": base + ".md", "plot": base + ".png"}
    with open(paths["json"], "w", encoding="utf-8") as file:
        json.dump(grid, file, indent=2)
        file.write("\n")
    with open(paths["markdown"], "w", encoding="utf-8") as file:
        file.write(markdown_report(grid))
    plot_grid(grid, paths["plot"])
    return paths


# --- command line ----------------------------------------------------------------------

def _parse_study(text):
    dataset, separator, architecture = text.partition(":")
    if not separator or dataset not in dataset_names() or architecture not in ARCHITECTURES:
        raise argparse.ArgumentTypeError(
            f"invalid study {text!r}: expected DATASET:ARCH with DATASET one of "
            f"{', '.join(dataset_names())} and ARCH one of {', '.join(ARCHITECTURES)}")
    return Study(dataset, architecture)


def _parse_configuration(text):
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(part.isdigit() and int(part) >= 1 for part in parts):
        raise argparse.ArgumentTypeError(f"invalid configuration {text!r}: expected MxN with "
                                         f"positive integers, for example 3x1")
    return int(parts[0]), int(parts[1])


def _parse_arguments(argv):
    defaults = GridSettings()
    parser = argparse.ArgumentParser(
        prog="python -m weights.grid",
        description="Train full-precision and ABC-Net models over several seeds and (M, N) "
                    "configurations and write the test accuracies as JSON, a Markdown table "
                    "and a plot.")
    parser.add_argument("-o", "--output", default="results",
                        help="folder for accuracy-grid.json, .md and .png "
                             "(default: %(default)s)")

    parser.add_argument("--study", dest="studies", type=_parse_study, action="append",
                        metavar="DATASET:ARCH",
                        help="data set and network preset to train, repeatable (default: "
                             + ", ".join(f"{s.dataset}:{s.architecture}"
                                         for s in DEFAULT_STUDIES) + ")")
    parser.add_argument("--config", dest="configurations", type=_parse_configuration,
                        action="append", metavar="MxN",
                        help="M weight bases and N activation bases, repeatable (default: "
                             + ", ".join(f"{m}x{n}" for m, n in DEFAULT_CONFIGURATIONS)
                             + "); full precision is always included")

    parser.add_argument("--seeds", type=int, default=len(defaults.seeds),
                        help="number of seeds, 0 to SEEDS−1 (default: %(default)s)")
    parser.add_argument("--fp-epochs", type=int, default=defaults.full_precision_epochs,
                        help="epochs of full-precision training (default: %(default)s)")
    parser.add_argument("--abc-epochs", type=int, default=defaults.abc_epochs,
                        help="epochs of ABC fine-tuning per configuration "
                             "(default: %(default)s)")
    parser.add_argument("--fp-lr", type=float, default=defaults.full_precision_lr,
                        help="initial Adam learning rate of full-precision training "
                             "(default: %(default)s)")
    parser.add_argument("--abc-lr", type=float, default=defaults.abc_lr,
                        help="initial Adam learning rate of ABC fine-tuning "
                             "(default: %(default)s)")

    parser.add_argument("--threads", type=int, default=1,
                        help="PyTorch CPU threads (default: %(default)s)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also log every training epoch")
    arguments = parser.parse_args(argv)

    for option in ("seeds", "threads"):
        if getattr(arguments, option) < 1:
            parser.error(f"--{option} must be at least 1, got {getattr(arguments, option)}")
    for option in ("fp_epochs", "abc_epochs"):
        if getattr(arguments, option) < 0:
            parser.error(f"--{option.replace('_', '-')} must be at least 0, "
                         f"got {getattr(arguments, option)}")
    for option in ("fp_lr", "abc_lr"):
        if not getattr(arguments, option) > 0:
            parser.error(f"--{option.replace('_', '-')} must be positive, "
                         f"got {getattr(arguments, option)}")
    return arguments


def main(argv=None):
    arguments = _parse_arguments(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if not arguments.verbose:
        logging.getLogger("weights.train").setLevel(logging.WARNING)
    torch.set_num_threads(arguments.threads)
    settings = GridSettings(seeds=tuple(range(arguments.seeds)),
                            full_precision_epochs=arguments.fp_epochs,
                            abc_epochs=arguments.abc_epochs,
                            full_precision_lr=arguments.fp_lr, abc_lr=arguments.abc_lr)
    grid = run_grid(tuple(arguments.studies or DEFAULT_STUDIES),
                    tuple(arguments.configurations or DEFAULT_CONFIGURATIONS), settings)
    paths = write_results(grid, arguments.output)
    print(markdown_table(grid), end="")
    log.info("wrote %s in %.1f s", ", ".join(paths.values()), grid["seconds"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
