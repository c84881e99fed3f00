"""cocotb tests of the accelerator behind its UART, driven bit by bit on the serial line.

The design is ``hw.board.UARTAccelerator`` converted to Verilog, or its gate-level
netlist. The tests read a job file written by
:func:`sim.testbench.uart_runner.write_uart_job`, whose path is in the environment
variable ``ABCNET_UART_JOB``. It contains the images in the order they are sent, the
scores and labels of ``sim.integer.network_forward`` and the device information the
design must report. It also names the ports and gives the clock cycles per bit and the
request timeout.

Requests and responses follow ``docs/uart-protocol.md``; the encoding and decoding come
from ``gen.uart_protocol``, the module the host client uses as well.
"""

import json
import os
import select
import subprocess
import tty
from dataclasses import dataclass

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge, Timer

from gen import uart_protocol as protocol

JOB_VARIABLE = "ABCNET_UART_JOB"

# Clock period in simulator time steps, so that timing does not depend on the time unit
# the design was built with. It is a multiple of 4 for the quarter-period offset below.
CLOCK_PERIOD_STEPS = 8


@dataclass(frozen=True)
class UARTJob:
    pixels: np.ndarray              # (images, features), in the order they are sent
    expected_scores: np.ndarray     # (images, classes)
    expected_labels: np.ndarray     # (images,)
    info: protocol.DeviceInfo       # what the info response must contain
    cycles_per_image: int           # of the accelerator, from sim.cycles
    latency: int                    # cycles from an image's input transfer to its result
    divisor: int                    # clock cycles per bit
    timeout_cycles: int             # request timeout of the design
    clock_port: str
    reset_port: str                 # "" when the design resets itself
    rx_port: str
    tx_port: str
    startup_cycles: int             # cycles after reset before the first byte is sent
    lockstep_images: int            # images sent one at a time before the rest back to back
    host_command: tuple             # argv of the host client, "{port}" for the serial port
    host_timeout: float             # seconds of wall time the host client may take

    @property
    def images(self):
        return len(self.pixels)


def load_uart_job():
    """Read the job file named by ``ABCNET_UART_JOB``."""
    path = os.environ.get(JOB_VARIABLE)
    if not path:
        raise RuntimeError(f"environment variable {JOB_VARIABLE} is not set; run these tests "
                           f"through sim.testbench.uart_runner.run_uart_cocotb")
    with np.load(path, allow_pickle=False) as arrays:
        fields = {name: arrays[name] for name in arrays.files}
    value = {name: array.item() for name, array in fields.items() if array.ndim == 0}
    info = protocol.DeviceInfo(pixels=value["info_pixels"], pixel_bits=value["info_pixel_bits"],
                               classes=value["info_classes"],
                               score_bytes=value["info_score_bytes"],
                               fingerprint=value["info_fingerprint"])
    return UARTJob(pixels=fields["pixels"], expected_scores=fields["expected_scores"],
                   expected_labels=fields["expected_labels"], info=info,
                   cycles_per_image=value["cycles_per_image"], latency=value["latency"],
                   divisor=value["divisor"], timeout_cycles=value["timeout_cycles"],
                   clock_port=value["clock_port"], reset_port=value["reset_port"],
                   rx_port=value["rx_port"], tx_port=value["tx_port"],
                   startup_cycles=value["startup_cycles"],
                   lockstep_images=value["lockstep_images"],
                   host_command=tuple(json.loads(value["host_command"])),
                   host_timeout=value["host_timeout"])


class SerialLine:
    """The host's end of the serial line: sends characters on rx, decodes them from tx.

    Bits last ``divisor`` clock periods, timed with timers rather than clock edges, and
    the line changes a quarter period after a rising edge, as an asynchronous line may.
    The receiver waits for a falling edge, samples the middle of each bit and appends
    each byte to :attr:`received`. A stop bit of 0 adds a message to :attr:`errors`.
    """

    def __init__(self, dut, job):
        self.rx = getattr(dut, job.rx_port)
        self.tx = getattr(dut, job.tx_port)
        self.bit_steps = job.divisor * CLOCK_PERIOD_STEPS
        self.received = bytearray()
        self.errors = []
        self.rx.value = 1

    def start(self):
        return cocotb.start_soon(self._receive())

    async def send(self, data, *, stop_bit=1):
        """Send ``data`` as 8N1 characters with no gap between them."""
        for byte in bytes(data):
            levels = [0] + [(byte >> i) & 1 for i in range(8)] + [stop_bit]
            for level in levels:
                self.rx.value = level
                await Timer(self.bit_steps, unit="step")
        self.rx.value = 1

    async def idle(self, bits):
        self.rx.value = 1
        await Timer(bits * self.bit_steps, unit="step")

    async def _receive(self):
        while True:
            await FallingEdge(self.tx)
            await Timer(self.bit_steps // 2, unit="step")
            if self.tx.value != 0:
                self.errors.append(f"start bit shorter than half a bit after byte "
                                   f"{len(self.received)}")
                continue
            byte = 0
            for bit in range(8):
                await Timer(self.bit_steps, unit="step")
                byte |= int(self.tx.value) << bit
            await Timer(self.bit_steps, unit="step")
            if self.tx.value != 1:
                self.errors.append(f"stop bit 0 in byte {len(self.received)} ({byte:#04x})")
            self.received.append(byte)

    async def read(self, count, *, timeout_bits):
        """Wait for ``count`` more bytes and return them; fail after ``timeout_bits``."""
        start = len(self.received)
        waited = 0
        while len(self.received) < start + count:
            if waited >= timeout_bits:
                raise AssertionError(
                    f"received {len(self.received) - start} of {count} response bytes within "
                    f"{timeout_bits} bit times: "
                    f"{bytes(self.received[start:]).hex(' ') or 'nothing'}")
            await Timer(self.bit_steps, unit="step")
            waited += 1
        return bytes(self.received[start:start + count])


async def start_design(dut, job):
    """Start the clock, reset the design and return the serial line, a quarter clock period
    after a rising edge."""
    clock = getattr(dut, job.clock_port)
    line = SerialLine(dut, job)
    if job.reset_port:
        getattr(dut, job.reset_port).value = 1
    Clock(clock, CLOCK_PERIOD_STEPS, unit="step").start()
    await RisingEdge(clock)
    if job.reset_port:
        for _ in range(2):
            await RisingEdge(clock)
        getattr(dut, job.reset_port).value = 0
    for _ in range(job.startup_cycles):
        await RisingEdge(clock)
    await Timer(CLOCK_PERIOD_STEPS // 4, unit="step")
    line.start()
    return line


def _response_budget(job, request_bytes, images=1):
    """Bit times to wait for the responses to ``images`` requests: four times the
    request and responses on the line plus the accelerator's computation."""
    response = max(job.info.classify_response_length, protocol.INFO_RESPONSE_LENGTH)
    compute = job.latency + images * job.cycles_per_image
    return 4 * (10 * images * (request_bytes + response) + compute // job.divisor) + 200


async def request_info(line, job):
    await line.send([protocol.INFO_REQUEST])
    response = await line.read(protocol.INFO_RESPONSE_LENGTH,
                               timeout_bits=_response_budget(job, 1))
    return protocol.decode_info(response)


def check_classification(job, index, result):
    expected_scores = job.expected_scores[index].tolist()
    expected_label = int(job.expected_labels[index])
    assert result.label == expected_label, (
        f"image {index}: label {result.label}, the golden model's is {expected_label}")
    assert list(result.scores) == expected_scores, (
        f"image {index}: scores {list(result.scores)}, the golden model's are "
        f"{expected_scores}")


@cocotb.test()
async def info_response(dut):
    """Check the info response: the network's shape, score width and fingerprint."""
    job = load_uart_job()
    line = await start_design(dut, job)
    info, status = await request_info(line, job)
    assert info == job.info, f"info response {info}, expected {job.info}"
    assert status == 0, f"status {status:#04x} ({protocol.describe_status(status)}) after reset"
    assert not line.errors, "; ".join(line.errors)


@cocotb.test()
async def classify_images(dut):
    """Check that every image's label and scores equal the golden model's.

    The first ``lockstep_images`` images are sent one at a time, each after the previous
    response. If the accelerator needs fewer cycles per image than a request takes on the
    line, the rest are sent back to back without waiting, so requests overlap the
    computation and the responses. Otherwise they are sent one at a time too, because the
    device then drops bytes by design. An info request at the end must report no errors.
    """
    job = load_uart_job()
    line = await start_design(dut, job)
    length = job.info.classify_response_length
    request_bytes = 1 + job.info.pixels

    keeps_up = job.cycles_per_image < 10 * job.divisor * request_bytes
    lockstep = min(job.lockstep_images, job.images) if keeps_up else job.images
    if not keeps_up:
        dut._log.info("%d cycles per image exceed the %d cycles of a request: no pipelining",
                      job.cycles_per_image, 10 * job.divisor * request_bytes)
    for index in range(lockstep):
        await line.send(protocol.encode_classify(job.info, job.pixels[index]))
        response = await line.read(length, timeout_bits=_response_budget(job, request_bytes))
        check_classification(job, index, protocol.decode_classify(job.info, response))
        dut._log.info("image %d: label %d", index, job.expected_labels[index])

    pipelined = job.images - lockstep
    if pipelined:
        first = len(line.received)
        sender = cocotb.start_soon(line.send(b"".join(
            protocol.encode_classify(job.info, image) for image in job.pixels[lockstep:])))
        await sender
        remaining = first + pipelined * length - len(line.received)
        await line.read(remaining, timeout_bits=_response_budget(job, request_bytes,
                                                                  images=pipelined))
        data = bytes(line.received[first:first + pipelined * length])
        for offset in range(pipelined):
            index = lockstep + offset
            response = data[offset * length:(offset + 1) * length]
            check_classification(job, index, protocol.decode_classify(job.info, response))
        dut._log.info("%d images sent back to back, all equal to the golden model", pipelined)

    _, status = await request_info(line, job)
    assert status == 0, f"status {status:#04x} ({protocol.describe_status(status)})"
    assert not line.errors, "; ".join(line.errors)


@cocotb.test()
async def errors_and_recovery(dut):
    """Check error handling. Unknown bytes are ignored. A framing error and an abandoned
    request each set a status bit, which the next info response reports and clears. A
    classify request then gets the right result."""
    job = load_uart_job()
    line = await start_design(dut, job)

    await line.send(b"\x00\xffxyz")
    await line.send([0x00], stop_bit=0)
    await line.idle(2)
    _, status = await request_info(line, job)
    assert status == protocol.STATUS_FRAMING_ERROR, (
        f"status {status:#04x} ({protocol.describe_status(status)}) after a framing error, "
        f"expected only the framing error bit")

    # Half an image, then silence for longer than the timeout.
    request = protocol.encode_classify(job.info, job.pixels[0])
    await line.send(request[:1 + job.info.pixels // 2])
    await line.idle(job.timeout_cycles // job.divisor + 20)
    _, status = await request_info(line, job)
    assert status == protocol.STATUS_TIMEOUT, (
        f"status {status:#04x} ({protocol.describe_status(status)}) after an abandoned "
        f"request, expected only the timeout bit")
    _, status = await request_info(line, job)
    assert status == 0, f"status {status:#04x} not cleared by the previous info response"

    await line.send(request)
    response = await line.read(job.info.classify_response_length,
                               timeout_bits=_response_budget(job, len(request)))
    check_classification(job, 0, protocol.decode_classify(job.info, response))
    assert not line.errors, "; ".join(line.errors)


@cocotb.test()
async def host_client_over_pty(dut):
    """Run the host client, a separate process, against the simulated design through a
    pseudo terminal. Bytes it writes go onto rx bit by bit, and bytes from tx go back.

    The client compares every result with the golden model itself. The test requires its
    exit status 0, one JSON line per image, and the job's results for the images that the
    job also contains. The host command selects its images from image 0 of the same data.
    """
    job = load_uart_job()
    if not job.host_command:
        raise RuntimeError("the job has no host command; pass host_command to write_uart_job")
    line = await start_design(dut, job)

    controller, terminal = os.openpty()
    tty.setraw(terminal)
    os.set_blocking(controller, False)
    port = os.ttyname(terminal)
    command = [part.replace("{port}", port) for part in job.host_command]
    dut._log.info("host client: %s", " ".join(command))
    client = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    forwarded = 0
    try:
        while client.poll() is None:
            readable, _, _ = select.select([controller], [], [], 0)
            if readable:
                try:
                    data = os.read(controller, 4096)
                except OSError:
                    data = b""
                if data:
                    await line.send(data)
                    continue
            if len(line.received) > forwarded:
                os.write(controller, bytes(line.received[forwarded:]))
                forwarded = len(line.received)
            await Timer(line.bit_steps, unit="step")
        stdout, stderr = client.communicate(timeout=job.host_timeout)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
        os.close(controller)
        os.close(terminal)

    dut._log.info("host client output:\n%s%s", stdout, stderr)
    assert client.returncode == 0, (f"host client exited with status {client.returncode}: "
                                    f"{stderr.strip()}")
    answers = [json.loads(text) for text in stdout.splitlines() if text.startswith("{")]
    images = [answer for answer in answers if "image" in answer]
    summary = answers[-1]
    assert images and len(images) == summary["images"], f"answers: {answers}"
    for answer in images:
        assert answer["matches_golden"], f"the host client's golden model differs: {answer}"
        # The job's images are the host's when both start at the same test image.
        index = answer["image"]
        if index < job.images:
            assert answer["label"] == int(job.expected_labels[index]), f"{answer}"
            assert answer["scores"] == job.expected_scores[index].tolist(), f"{answer}"
