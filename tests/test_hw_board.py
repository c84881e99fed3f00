"""The UART front end of the accelerator, in Amaranth's simulator.

These tests use small random networks, so they run in seconds. The cocotb tests in
``test_cocotb_uart.py`` run the shipped model through converted Verilog and a gate-level
netlist.
"""

import re

import numpy as np
import pytest
from amaranth.sim import Simulator

from gen import uart_protocol as protocol
from gen.compile import compile_model
from hw.board import BoardTop, UARTAccelerator
from model_factory import random_model
from sim.integer import network_forward

DIVISOR = 4

# Components whose constructor raises still warn that they were never elaborated.
pytestmark = pytest.mark.filterwarnings("ignore:.*created but never used")


def dense_net(input_bits=3):
    rng = np.random.default_rng(11)
    model = random_model(rng, input_shape=(16,), input_bits=input_bits, layers=[
        dict(type="dense", out=8, m=2), dict(type="dense", out=4, m=2, n=2)], name="tiny")
    return compile_model(model, target_cycles=8)


def conv_net():
    rng = np.random.default_rng(3)
    model = random_model(rng, input_shape=(2, 4, 4), input_bits=3, layers=[
        dict(type="conv2d", out=4, m=2, kernel=(3, 3), stride=(1, 1), padding=(1, 1),
             pool=((2, 2), (2, 2))),
        dict(type="dense", out=3, m=2, n=2)], name="tiny-cnn")
    return compile_model(model, target_cycles=16)


def character_levels(byte):
    return [0] + [(byte >> i) & 1 for i in range(8)] + [1]


def run_serial(dut, script, *, cycles):
    """Run ``script`` (a list of bytes objects, or ints meaning idle bit times) on ``rx``
    and return every byte decoded from ``tx`` within ``cycles`` clock cycles."""
    received = bytearray()

    async def host(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(4)
        for step in script:
            if isinstance(step, int):
                await ctx.tick().repeat(step * DIVISOR)
                continue
            for byte in step:
                for level in character_levels(byte):
                    ctx.set(dut.rx, level)
                    await ctx.tick().repeat(DIVISOR)
        await ctx.tick().repeat(cycles)

    async def listener(ctx):
        # Decode tx one cycle at a time: a falling edge starts a character, then sample
        # the middle of each bit.
        countdown, bits = None, []
        async for _, _, tx in ctx.tick().sample(dut.tx):
            if countdown is None:
                if not tx:
                    countdown, bits = DIVISOR // 2, []
                continue
            countdown -= 1
            if countdown == 0:
                bits.append(tx)
                countdown = DIVISOR
                if len(bits) == 10:
                    assert bits[0] == 0, f"start bit {bits}"
                    assert bits[9] == 1, f"stop bit {bits}"
                    received.append(sum(bit << i for i, bit in enumerate(bits[1:9])))
                    countdown = None

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(listener, background=True)
    sim.run()
    return bytes(received)


def split_responses(info, data, kinds):
    """Split ``data`` into responses of the given kinds ("info" or "classify")."""
    responses = []
    for kind in kinds:
        length = (protocol.INFO_RESPONSE_LENGTH if kind == "info"
                  else info.classify_response_length)
        responses.append(data[:length])
        data = data[length:]
    assert data == b"", f"{len(data)} unexpected bytes: {data.hex(' ')}"
    return responses


def check_results(info, responses, expected, indices):
    for response, index in zip(responses, indices):
        result = protocol.decode_classify(info, response)
        assert result.label == expected.labels[index], f"image {index}"
        assert list(result.scores) == expected.scores[index].tolist(), f"image {index}"


def test_dense_info_and_pipelined_images():
    net = dense_net()
    info = protocol.device_info(net)
    images = np.random.default_rng(5).integers(0, 8, (3, 16))
    expected = network_forward(net, images)
    dut = UARTAccelerator(net, divisor=DIVISOR, timeout_cycles=500)
    requests = [bytes([protocol.INFO_REQUEST])]
    requests += [protocol.encode_classify(info, image) for image in images]
    data = run_serial(dut, requests, cycles=3000)

    responses = split_responses(info, data, ["info", "classify", "classify", "classify"])
    assert protocol.decode_info(responses[0]) == (info, 0)
    check_results(info, responses[1:], expected, [0, 1, 2])


def test_conv_first_network():
    """A convolution takes one pixel position per transfer, with its channels together."""
    net = conv_net()
    info = protocol.device_info(net)
    images = np.random.default_rng(6).integers(0, 8, (2, 2, 4, 4))
    expected = network_forward(net, images)
    sent = protocol.protocol_pixels(net, images)
    dut = UARTAccelerator(net, divisor=DIVISOR, timeout_cycles=500)
    data = run_serial(dut, [protocol.encode_classify(info, image) for image in sent],
                      cycles=4000)
    check_results(info, split_responses(info, data, ["classify", "classify"]), expected,
                  [0, 1])


def test_conv_first_abort_fills_and_drops():
    """An abandoned request leaves part of an image in the convolution's line buffers. The
    device completes it with zeros and drops that response, so the next image is right."""
    net = conv_net()
    info = protocol.device_info(net)
    images = np.random.default_rng(7).integers(0, 8, (2, 2, 4, 4))
    expected = network_forward(net, images)
    sent = protocol.protocol_pixels(net, images)
    timeout = 200
    dut = UARTAccelerator(net, divisor=DIVISOR, timeout_cycles=timeout)
    partial = protocol.encode_classify(info, sent[0])[:1 + 13]
    script = [partial, timeout // DIVISOR + 20, protocol.encode_classify(info, sent[1]), 300,
              bytes([protocol.INFO_REQUEST])]
    data = run_serial(dut, script, cycles=2000)
    classify, status = split_responses(info, data, ["classify", "info"])
    check_results(info, [classify], expected, [1])
    assert protocol.decode_info(status)[1] == protocol.STATUS_TIMEOUT


def test_label_output_follows_last_response():
    net = dense_net()
    info = protocol.device_info(net)
    images = np.random.default_rng(8).integers(0, 8, (1, 16))
    expected = network_forward(net, images)
    dut = UARTAccelerator(net, divisor=DIVISOR, timeout_cycles=500)
    labels = []

    async def watch(ctx):
        async for _, _, label in ctx.tick().sample(dut.label):
            labels.append(label)

    sim = Simulator(dut)
    sim.add_clock(1e-6)

    async def host(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(4)
        for byte in protocol.encode_classify(info, images[0]):
            for level in character_levels(byte):
                ctx.set(dut.rx, level)
                await ctx.tick().repeat(DIVISOR)
        await ctx.tick().repeat(2000)

    sim.add_testbench(host)
    sim.add_testbench(watch, background=True)
    sim.run()
    assert labels[0] == 0
    assert labels[-1] == expected.labels[0]


@pytest.mark.parametrize("keywords, message", [
    (dict(divisor=3, timeout_cycles=100), "divisor must be an integer of at least 4"),
    (dict(divisor=8, timeout_cycles=0), "timeout_cycles must be a positive integer, not 0"),
])
def test_rejects_parameters(keywords, message):
    with pytest.raises(ValueError, match=message):
        UARTAccelerator(dense_net(), **keywords)


def test_rejects_wide_pixels():
    with pytest.raises(ValueError, match="pixels must have at most 8 bits, not 9"):
        UARTAccelerator(dense_net(input_bits=9), divisor=8, timeout_cycles=100)


def test_rejects_non_network():
    with pytest.raises(TypeError, match="net must be a NetworkParams"):
        UARTAccelerator("digits-mlp", divisor=8, timeout_cycles=100)


def test_board_top_needs_platform():
    with pytest.raises(TypeError, match="BoardTop needs a platform with a default clock"):
        BoardTop(dense_net()).elaborate(None)


@pytest.mark.parametrize("board, expected", [
    ("icebreaker", {"clk12_0__io", "uart_0__rx__io", "uart_0__tx__io", "led_0__io",
                    "led_1__io"}),
    ("ulx3s-85f", {"clk25_0__io", "uart_0__rx__io", "uart_0__tx__io", "led_0__io",
                   "led_1__io"}),
])
def test_board_top_requests_only_clock_uart_leds(board, expected):
    """The board top requests the clock, the UART and as many LEDs as the label has bits
    (2 for 4 classes), where the board has them."""
    from gen.synth import BOARDS

    plan = BOARDS[board].platform().prepare(BoardTop(dense_net()), name="top")
    constraints = plan.files["top.pcf" if board == "icebreaker" else "top.lpf"]
    # iCE40: "set_io PORT PIN"; ECP5: 'LOCATE COMP "PORT" SITE "PIN";'.
    ports = set(re.findall(r'^\s*(?:set_io|LOCATE COMP) "?(\w+)', constraints, re.MULTILINE))
    assert ports == expected
