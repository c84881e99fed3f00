"""cocotb tests of a converted accelerator against the golden model's results and timing.

The tests read a job file, an ``.npz`` written by :func:`sim.testbench.runner.write_job`,
whose path is in the environment variable ``ABCNET_JOB``. It contains the images, the
scores and labels that ``sim.integer.network_forward`` computed for them, the cycles per
image and latency from ``sim.cycles.network_timing``, the output payload layout and the
stall settings. Every test resets the design, streams all images into ``input``
back to back and compares every result from ``output`` with the job.
"""

import os
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from .streams import CycleClock, StreamSink, StreamSource

JOB_VARIABLE = "ABCNET_JOB"

# Cycles with reset high before streaming starts.
RESET_CYCLES = 2


@dataclass(frozen=True)
class Job:
    """Contents of a job file."""
    pixels: np.ndarray              # (images, features) unsigned pixels, model order
    input_bits: int
    expected_scores: np.ndarray     # (images, classes) int64
    expected_labels: np.ndarray     # (images,) int64
    score_width: int
    scores_offset: int              # bit offset of scores[0] in the output payload
    label_width: int
    label_offset: int
    cycles_per_image: int
    latency: int
    source_stall: float
    sink_stall: float
    stall_seed: int

    @property
    def images(self):
        return len(self.pixels)

    @property
    def classes(self):
        return self.expected_scores.shape[1]


def load_job():
    """Read the job file named by ``ABCNET_JOB``."""
    path = os.environ.get(JOB_VARIABLE)
    if not path:
        raise RuntimeError(f"environment variable {JOB_VARIABLE} is not set; run these tests "
                           f"through sim.testbench.runner.run_cocotb")
    with np.load(path, allow_pickle=False) as arrays:
        fields = {name: arrays[name] for name in arrays.files}
    scalars = {name: value.item() for name, value in fields.items() if value.ndim == 0}
    return Job(pixels=fields["pixels"], expected_scores=fields["expected_scores"],
               expected_labels=fields["expected_labels"],
               **{name: scalars[name] for name in (
                   "input_bits", "score_width", "scores_offset", "label_width",
                   "label_offset", "cycles_per_image", "latency", "source_stall",
                   "sink_stall", "stall_seed")})


def pack_image(pixels, bits):
    """Pack one image into an input payload: pixel k at bits [k·bits, (k + 1)·bits)."""
    payload = 0
    for index, pixel in enumerate(pixels):
        payload |= int(pixel) << (index * bits)
    return payload


def _signed_field(payload, offset, width):
    value = (payload >> offset) & ((1 << width) - 1)
    return value - (1 << width) if value >> (width - 1) else value


def decode_result(payload, job):
    """Split an output payload into (scores, label); class c's score is field c of ``scores``."""
    scores = [_signed_field(payload, job.scores_offset + c * job.score_width, job.score_width)
              for c in range(job.classes)]
    label = (payload >> job.label_offset) & ((1 << job.label_width) - 1)
    return scores, label


async def _reset(dut, clock):
    dut.rst.value = 1
    for _ in range(RESET_CYCLES):
        await RisingEdge(clock.signal)
    dut.rst.value = 0


def _cycle_budget(job, source_stall, sink_stall):
    """Cycles to wait for every result: 4× the stall-free time, stretched by the expected
    stalls, plus 1000."""
    stall_free = job.latency + job.images * job.cycles_per_image
    slowdown = 1.0 / ((1.0 - source_stall) * (1.0 - sink_stall))
    return int(4 * stall_free * slowdown) + 1000


async def stream_images(dut, job, *, source_stall, sink_stall, seed):
    """Reset ``dut``, stream every image of ``job`` and return (source, sink) when done."""
    clock = CycleClock(dut.clk)
    source = StreamSource(dut, "input", clock, stall_probability=source_stall, seed=seed)
    sink = StreamSink(dut, "output", clock, stall_probability=sink_stall, seed=seed + 1)
    await clock.start()
    await _reset(dut, clock)

    source.send(pack_image(image, job.input_bits) for image in job.pixels)
    source.start()
    sink.start()
    budget = _cycle_budget(job, source_stall, sink_stall)
    await sink.wait_for_transfers(job.images, timeout_cycles=budget)
    # A result the design was given no image for would arrive one interval later.
    await ClockCycles(clock.signal, int(job.cycles_per_image) + 1)

    dut._log.info("%d images in, %d results out by cycle %d (source stall %.2f, sink stall "
                  "%.2f, seed %d); input waited for ready %d cycles, output %d cycles",
                  len(source.transfers), len(sink.transfers), clock.cycle, source_stall,
                  sink_stall, seed, source.blocked_cycles, sink.blocked_cycles)
    assert len(source.transfers) == job.images, (
        f"the accelerator accepted {len(source.transfers)} of {job.images} images within "
        f"{budget} cycles")
    assert len(sink.transfers) == job.images, (
        f"the accelerator returned {len(sink.transfers)} results for {job.images} images "
        f"within {budget} cycles")
    assert not sink.violations, "output stream rule broken: " + "; ".join(sink.violations[:5])
    return source, sink


def _describe_mismatches(rows, limit=5):
    return "; ".join(f"image {index}: expected {expected}, got {got}"
                     for index, expected, got in rows[:limit])


def check_results(job, sink):
    """Assert that every label, then every score, equals the golden model's."""
    decoded = [decode_result(transfer.payload, job) for transfer in sink.transfers]
    labels = [label for _, label in decoded]
    wrong_labels = [(index, int(job.expected_labels[index]), label)
                    for index, label in enumerate(labels) if label != job.expected_labels[index]]
    assert not wrong_labels, (
        f"{len(wrong_labels)} of {job.images} labels differ from the golden model: "
        + _describe_mismatches(wrong_labels))

    wrong_scores = [(index, job.expected_scores[index].tolist(), scores)
                    for index, (scores, _) in enumerate(decoded)
                    if scores != job.expected_scores[index].tolist()]
    assert not wrong_scores, (
        f"{len(wrong_scores)} of {job.images} score vectors differ from the golden model: "
        + _describe_mismatches(wrong_scores))


@cocotb.test()
async def results_and_timing_without_stalls(dut):
    """Stream every image with no stalls: exact results, latency and cycles per image.

    Latency counts from the cycle of the first image's input transfer to the first cycle
    its result is valid. Every interval between consecutive output transfers must equal
    the cycle model's cycles per image.
    """
    job = load_job()
    source, sink = await stream_images(dut, job, source_stall=0.0, sink_stall=0.0,
                                       seed=job.stall_seed)
    check_results(job, sink)

    latency = sink.transfers[0].valid_cycle - source.transfers[0].cycle
    intervals = np.diff([transfer.cycle for transfer in sink.transfers])
    dut._log.info("latency %d cycles (model %d), intervals between results %s (model %d)",
                  latency, job.latency, sorted(set(intervals.tolist())),
                  job.cycles_per_image)
    assert latency == job.latency, (
        f"first result valid {latency} cycles after its input transfer, the cycle model "
        f"predicts {job.latency}")
    wrong = [(index, int(interval)) for index, interval in enumerate(intervals, start=1)
             if interval != job.cycles_per_image]
    assert not wrong, (
        f"{len(wrong)} of {len(intervals)} intervals between results differ from the cycle "
        f"model's {job.cycles_per_image} cycles per image; first (result, interval): "
        f"{wrong[:5]}")


@cocotb.test()
async def results_with_random_stalls(dut):
    """Stream every image with random input gaps and output backpressure: exact results.

    The job file sets the probability of a gap before each input image, the probability
    of ready being low in each output cycle, and the seed of both.
    """
    job = load_job()
    _, sink = await stream_images(dut, job, source_stall=job.source_stall,
                                  sink_stall=job.sink_stall, seed=job.stall_seed)
    check_results(job, sink)
