"""cocotb tests of a converted accelerator against the golden model's results and timing.

The tests read a job file, an ``.npz`` written by :func:`sim.testbench.runner.write_job`,
whose path is in the environment variable ``ABCNET_JOB``. It contains the images, the
scores and labels that ``sim.integer.network_forward`` computed for them, the cycles per
image and latency from ``sim.cycles.network_timing``, the cycle of every input transfer
and every result from ``sim.cycles.network_schedule``, the output payload layout and the
stall settings. Every test resets the design, streams all images into ``input``
back to back and compares every result from ``output`` with the job.

A network with a dense first layer takes one image per input transfer. A network that
starts with a convolution takes one pixel position per transfer, all channels, positions
row-major, so each image is height·width transfers.

The stream agents are event-driven (:mod:`sim.testbench.event_streams`), so a long run
costs Python time per transfer and per stalled cycle, not per clock cycle.
"""

import math
import os
from dataclasses import dataclass
from fractions import Fraction

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, RisingEdge

from .event_streams import EventDrivenSink, EventDrivenSource, GpiCycleClock

JOB_VARIABLE = "ABCNET_JOB"

# Cycles with reset high before streaming starts.
RESET_CYCLES = 2


@dataclass(frozen=True)
class Job:
    """Contents of a job file."""
    # Unsigned pixels: (images, features) in the model's order for a dense first layer,
    # (images, channels, height, width) for a convolution first.
    pixels: np.ndarray
    input_bits: int
    expected_scores: np.ndarray     # (images, classes) int64
    expected_labels: np.ndarray     # (images,) int64
    score_width: int
    scores_offset: int              # bit offset of scores[0] in the output payload
    label_width: int
    label_offset: int
    cycles_per_image: int | Fraction    # steady state, with no stalls
    latency: int
    # Cycles of every input transfer and every result with no stalls, counted from the
    # first input transfer.
    input_cycles: np.ndarray
    result_cycles: np.ndarray
    source_stall: float
    sink_stall: float
    stall_seed: int

    @property
    def images(self):
        return len(self.pixels)

    @property
    def classes(self):
        return self.expected_scores.shape[1]

    @property
    def starts_with_convolution(self):
        return self.pixels.ndim == 4

    @property
    def transfers_per_image(self):
        """Input transfers per image: height·width positions for a convolution first, else 1."""
        return int(np.prod(self.pixels.shape[2:])) if self.starts_with_convolution else 1


def load_job():
    """Read the job file named by ``ABCNET_JOB``."""
    path = os.environ.get(JOB_VARIABLE)
    if not path:
        raise RuntimeError(f"environment variable {JOB_VARIABLE} is not set; run these tests "
                           f"through sim.testbench.runner.run_cocotb")
    with np.load(path, allow_pickle=False) as arrays:
        fields = {name: arrays[name] for name in arrays.files}
    scalars = {name: value.item() for name, value in fields.items() if value.ndim == 0}
    cycles_per_image = Fraction(scalars["period_cycles"], scalars["period_images"])
    if cycles_per_image.denominator == 1:
        cycles_per_image = int(cycles_per_image)
    return Job(pixels=fields["pixels"], expected_scores=fields["expected_scores"],
               expected_labels=fields["expected_labels"], cycles_per_image=cycles_per_image,
               input_cycles=fields["input_cycles"], result_cycles=fields["result_cycles"],
               **{name: scalars[name] for name in (
                   "input_bits", "score_width", "scores_offset", "label_width",
                   "label_offset", "latency", "source_stall", "sink_stall", "stall_seed")})


def pack_image(pixels, bits):
    """Pack one image into an input payload: pixel k at bits [k·bits, (k + 1)·bits)."""
    payload = 0
    for index, pixel in enumerate(pixels):
        payload |= int(pixel) << (index * bits)
    return payload


def pack_positions(image, bits):
    """Pack a (channels, height, width) image into one payload per position, row-major,
    with channel c at bits [c·bits, (c + 1)·bits)."""
    channels = image.shape[0]
    return [pack_image(position, bits) for position in image.reshape(channels, -1).T]


def input_payloads(job):
    """Return the payloads of the input stream in order: every image's transfers in turn."""
    if job.starts_with_convolution:
        return [payload for image in job.pixels
                for payload in pack_positions(image, job.input_bits)]
    return [pack_image(image, job.input_bits) for image in job.pixels]


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
    clock = GpiCycleClock(dut.clk)
    source = EventDrivenSource(dut, "input", clock, stall_probability=source_stall, seed=seed)
    sink = EventDrivenSink(dut, "output", clock, stall_probability=sink_stall, seed=seed + 1)
    await clock.start()
    await _reset(dut, clock)

    source.send(input_payloads(job))
    source.start()
    sink.start()
    budget = _cycle_budget(job, source_stall, sink_stall)
    await sink.wait_for_transfers(job.images, timeout_cycles=budget)
    # A result the design was given no image for would arrive one interval later.
    await ClockCycles(clock.signal, math.ceil(job.cycles_per_image) + 1)

    transfers = job.images * job.transfers_per_image
    dut._log.info("%d of %d input transfers, %d results out by cycle %d (source stall "
                  "%.2f, sink stall %.2f, seed %d); input waited for ready %d cycles, output "
                  "%d cycles", len(source.transfers), transfers, len(sink.transfers),
                  clock.cycle, source_stall, sink_stall, seed, source.blocked_cycles,
                  sink.blocked_cycles)
    assert len(source.transfers) == transfers, (
        f"the accelerator accepted {len(source.transfers)} of {transfers} input transfers "
        f"({job.transfers_per_image} per image) within {budget} cycles")
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


def _first_differences(name, expected, measured, limit=5):
    """Describe the first (index, expected, measured) rows where two cycle lists differ."""
    rows = [(index, int(want), int(got))
            for index, (want, got) in enumerate(zip(expected, measured)) if want != got]
    return (f"{len(rows)} of {len(expected)} {name} differ from the cycle model; first "
            f"(index, model, measured): {rows[:limit]}")


def check_schedule(job, source, sink):
    """Assert that every input transfer and every result happened in the cycle that
    ``sim.cycles.network_schedule`` gives, counted from the first input transfer."""
    origin = source.transfers[0].cycle
    inputs = [transfer.cycle - origin for transfer in source.transfers]
    results = [transfer.valid_cycle - origin for transfer in sink.transfers]
    assert len(job.input_cycles) == len(inputs), (
        f"the job has {len(job.input_cycles)} input transfer cycles for {len(inputs)} "
        f"input transfers")
    assert len(job.result_cycles) == len(results), (
        f"the job has {len(job.result_cycles)} result cycles for {len(results)} results")
    assert inputs == job.input_cycles.tolist(), _first_differences(
        "input transfer cycles", job.input_cycles, inputs)
    assert results == job.result_cycles.tolist(), _first_differences(
        "result valid cycles", job.result_cycles, results)


@cocotb.test()
async def results_and_timing_without_stalls(dut):
    """Stream every image with no stalls: exact results, latency and cycles per image.

    Latency counts from the cycle of the first input transfer of image 0 to the first
    cycle its result is valid. For a network of dense layers, every interval between
    consecutive output transfers must equal the cycle model's cycles per image. With
    convolutions, the intervals can differ before the pipeline becomes periodic. For
    both, the cycle of every input transfer and every result must equal the job's
    schedule, which also covers images whose latency grows in front of a slower layer.
    """
    job = load_job()
    source, sink = await stream_images(dut, job, source_stall=0.0, sink_stall=0.0,
                                       seed=job.stall_seed)
    check_results(job, sink)

    latency = sink.transfers[0].valid_cycle - source.transfers[0].cycle
    intervals = np.diff([transfer.cycle for transfer in sink.transfers])
    dut._log.info("latency %d cycles (model %d), intervals between results %s (model %s "
                  "cycles per image), last result valid in cycle %d after the first input "
                  "transfer", latency, job.latency, sorted(set(intervals.tolist())),
                  job.cycles_per_image,
                  sink.transfers[-1].valid_cycle - source.transfers[0].cycle)
    assert latency == job.latency, (
        f"first result valid {latency} cycles after its input transfer, the cycle model "
        f"predicts {job.latency}")
    if not job.starts_with_convolution:
        wrong = [(index, int(interval)) for index, interval in enumerate(intervals, start=1)
                 if interval != job.cycles_per_image]
        assert not wrong, (
            f"{len(wrong)} of {len(intervals)} intervals between results differ from the "
            f"cycle model's {job.cycles_per_image} cycles per image; first (result, "
            f"interval): {wrong[:5]}")
    check_schedule(job, source, sink)


@cocotb.test()
async def results_with_random_stalls(dut):
    """Stream every image with random input gaps and output backpressure: exact results.

    The job file sets the probability of a gap before each input transfer (an image, or
    a pixel position with a convolution first), the probability of ready being low in
    each output cycle, and the seed of both.
    """
    job = load_job()
    _, sink = await stream_images(dut, job, source_stall=job.source_stall,
                                  sink_stall=job.sink_stall, seed=job.stall_seed)
    check_results(job, sink)
