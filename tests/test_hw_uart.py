"""The 8N1 UART: bit timing of the transmitter, sampling and error handling of the receiver."""

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.sim import Simulator

from hw.uart import UARTReceiver, UARTTransmitter, baud_divisor


def character_bits(byte, *, stop=1):
    """Line levels of one 8N1 character: start bit, data bits LSB first, stop bit."""
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def simulate(dut, testbench):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()


async def drive_line(ctx, line, levels, cycles_per_bit):
    """Hold each level on ``line`` for ``cycles_per_bit`` cycles.

    A fractional ``cycles_per_bit`` places each edge at the nearest cycle to its exact
    time, so rounding errors do not add up over a character.
    """
    position = 0.0
    for level in levels:
        ctx.set(line, level)
        start = round(position)
        position += cycles_per_bit
        await ctx.tick().repeat(round(position) - start)


class Loopback(Elaboratable):
    def __init__(self, divisor):
        self.transmitter = UARTTransmitter(divisor=divisor)
        self.receiver = UARTReceiver(divisor=divisor)

    def elaborate(self, platform):
        m = Module()
        m.submodules.transmitter = self.transmitter
        m.submodules.receiver = self.receiver
        m.d.comb += self.receiver.rx.eq(self.transmitter.tx)
        return m


@pytest.mark.parametrize("clk, baud, expected", [
    (12e6, 115200, 104), (25e6, 115200, 217), (12e6, 1.5e6, 8), (12e6, 3e6, 4)])
def test_baud_divisor_rounds(clk, baud, expected):
    assert baud_divisor(clk, baud) == expected


def test_baud_divisor_too_fast():
    with pytest.raises(ValueError, match="at least 4 clock cycles per bit, so at most "
                                         "3000000 baud"):
        baud_divisor(12e6, 4e6)


def test_baud_divisor_inexact():
    # 12 MHz / 2.4 Mbaud = 5, but 12 MHz / 2.2 Mbaud = 5.45 rounds to 5: 9 % fast.
    with pytest.raises(ValueError, match=r"nearest is 2400000 baud \(9\.1 % off"):
        baud_divisor(12e6, 2.2e6)


@pytest.mark.parametrize("divisor", [3, 4.5, "8"])
def test_divisor_rejected(divisor):
    with pytest.raises(ValueError, match="divisor must be an integer of at least 4"):
        UARTTransmitter(divisor=divisor)
    with pytest.raises(ValueError, match="divisor must be an integer of at least 4"):
        UARTReceiver(divisor=divisor)


@pytest.mark.parametrize("divisor", [4, 7, 16])
def test_transmitter_bit_timing(divisor):
    """Every bit lasts exactly ``divisor`` cycles and characters follow with no gap."""
    dut = UARTTransmitter(divisor=divisor)
    payloads = [0x00, 0xFF, 0xA5, 0x3C]
    levels = []

    async def testbench(ctx):
        assert ctx.get(dut.tx) == 1
        pending = list(payloads)
        ctx.set(dut.data.valid, 1)
        ctx.set(dut.data.payload, pending.pop(0))
        for _ in range(len(payloads) * 10 * divisor + 3 * divisor):
            _, _, ready, tx = await ctx.tick().sample(dut.data.ready, dut.tx)
            levels.append(tx)
            if ready and pending:
                ctx.set(dut.data.payload, pending.pop(0))
            elif ready:
                ctx.set(dut.data.valid, 0)

    simulate(dut, testbench)
    # levels[i] is tx in cycle i. The first byte transfers in cycle 0, so its start bit
    # begins in cycle 1.
    assert levels[0] == 1
    expected = [level for byte in payloads for level in character_bits(byte)
                for _ in range(divisor)]
    assert levels[1:1 + len(expected)] == expected
    assert set(levels[1 + len(expected):]) == {1}


@pytest.mark.parametrize("divisor", [4, 5, 8, 13])
def test_loopback(divisor):
    rng = np.random.default_rng(divisor)
    payloads = [int(b) for b in rng.integers(0, 256, 24)]
    dut = Loopback(divisor)
    received = []

    async def testbench(ctx):
        pending = list(payloads)
        ctx.set(dut.receiver.data.ready, 1)
        ctx.set(dut.transmitter.data.valid, 1)
        ctx.set(dut.transmitter.data.payload, pending.pop(0))
        for _ in range((len(payloads) + 2) * 10 * divisor):
            _, _, tx_ready, valid, payload, error, overrun = await ctx.tick().sample(
                dut.transmitter.data.ready, dut.receiver.data.valid, dut.receiver.data.payload,
                dut.receiver.framing_error, dut.receiver.overrun)
            assert not error
            assert not overrun
            if valid:
                received.append(payload)
            if tx_ready and pending:
                ctx.set(dut.transmitter.data.payload, pending.pop(0))
            elif tx_ready:
                ctx.set(dut.transmitter.data.valid, 0)

    simulate(dut, testbench)
    assert received == payloads


def run_receiver(levels, cycles_per_bit, *, divisor=16, ready=True):
    """Drive ``levels`` into a receiver; return received bytes and error pulse counts."""
    dut = UARTReceiver(divisor=divisor)
    result = {"bytes": [], "framing_errors": 0, "overruns": 0, "waiting": None}

    async def driver(ctx):
        await ctx.tick().repeat(5)
        await drive_line(ctx, dut.rx, levels + [1] * 3, cycles_per_bit)

    async def monitor(ctx):
        ctx.set(dut.data.ready, ready)
        sampled = ctx.tick().sample(dut.data.valid, dut.data.payload, dut.framing_error,
                                    dut.overrun)
        async for _, _, valid, payload, framing_error, overrun in sampled:
            if valid and ready:
                result["bytes"].append(payload)
            result["waiting"] = payload if valid and not ready else None
            result["framing_errors"] += framing_error
            result["overruns"] += overrun

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(driver)
    sim.add_testbench(monitor, background=True)
    sim.run()
    return result


@pytest.mark.parametrize("mismatch", [-0.02, 0.0, 0.02])
def test_receiver_tolerates_baud_mismatch(mismatch):
    """The sender's bit time differs by ±2 % from the receiver's 16 cycles."""
    payloads = [0x55, 0x00, 0xFF, 0x81, 0x7E]
    levels = [level for byte in payloads for level in character_bits(byte)]
    result = run_receiver(levels, 16 * (1 + mismatch))
    assert result["bytes"] == payloads
    assert result["framing_errors"] == 0


def test_receiver_ignores_glitch():
    """A low pulse shorter than half a bit is not a start bit."""
    # Each level lasts 4 cycles, so the glitch is a quarter of the receiver's 16-cycle bit.
    levels = [1, 0, 1, 1] + [level for level in character_bits(0x42) for _ in range(4)]
    result = run_receiver(levels, 4)
    assert result["bytes"] == [0x42]
    assert result["framing_errors"] == 0


def test_receiver_framing_error():
    """A character with stop bit 0 is dropped, and the next character is received."""
    levels = character_bits(0x99, stop=0) + [0] * 3 + [1, 1] + character_bits(0x24)
    result = run_receiver(levels, 16)
    assert result["framing_errors"] == 1
    assert result["bytes"] == [0x24]


def test_receiver_overrun():
    """With ready low, the first byte waits and the second is dropped with an overrun."""
    levels = character_bits(0x11) + character_bits(0x22)
    result = run_receiver(levels, 16, ready=False)
    assert result["overruns"] == 1
    assert result["waiting"] == 0x11
    assert result["framing_errors"] == 0
