"""Testbench helpers for `amaranth.lib.stream` interfaces, with cycle stamps.

Every helper is an async testbench building block for ``Simulator.add_testbench``. A
transfer is recorded with the value of the harness's free-running ``cycle`` counter in the
cycle where ``valid`` and ``ready`` were both high, so tests can measure initiation
intervals and latencies exactly.
"""

from amaranth.hdl import Elaboratable, Module, Signal
from amaranth.sim import Simulator

__all__ = ["Harness", "put_stream", "get_stream", "monitor_stream", "run_simulation",
           "pack_elements", "unpack_elements"]


class Harness(Elaboratable):
    """A device under test plus a 32-bit cycle counter that starts at 0."""

    def __init__(self, dut):
        self.dut = dut
        self.cycle = Signal(32)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        m.d.sync += self.cycle.eq(self.cycle + 1)
        return m


def run_simulation(harness, testbenches, *, background=(), vcd=None):
    """Simulate ``harness`` with a clock until every testbench in ``testbenches`` returns.

    ``background`` testbenches (such as monitors) run alongside and are dropped at the end.
    Pass a file name as ``vcd`` to write a waveform for debugging.
    """
    sim = Simulator(harness)
    sim.add_clock(1e-6)
    for testbench in testbenches:
        sim.add_testbench(testbench)
    for testbench in background:
        sim.add_testbench(testbench, background=True)
    if vcd is None:
        sim.run()
    else:
        with sim.write_vcd(vcd):
            sim.run()


async def put_stream(ctx, stream, payloads, *, cycle, rng=None, idle=0.0):
    """Send ``payloads`` in order, one per transfer, and return the cycle of each transfer.

    With an ``rng``, ``valid`` stays low for a geometric number of cycles (probability
    ``idle`` per cycle) before each payload, so the sink sees gaps.
    """
    sent = []
    for payload in payloads:
        if rng is not None:
            while rng.random() < idle:
                ctx.set(stream.valid, 0)
                await ctx.tick()
        ctx.set(stream.payload, payload)
        ctx.set(stream.valid, 1)
        (at,) = await ctx.tick().sample(cycle).until(stream.ready)
        sent.append(at)
    ctx.set(stream.valid, 0)
    return sent


async def get_stream(ctx, stream, count, *, cycle, rng=None, busy=0.0, timeout=100_000):
    """Receive ``count`` payloads and return a list of (payload, transfer cycle) pairs.

    With an ``rng``, ``ready`` is low with probability ``busy`` in each cycle. Raises
    ``TimeoutError`` when the payloads have not all arrived within ``timeout`` cycles.
    """
    received = []
    for _ in range(timeout):
        ready = rng is None or rng.random() >= busy
        ctx.set(stream.ready, ready)
        _, _, valid, payload, at = await ctx.tick().sample(stream.valid, stream.payload, cycle)
        if ready and valid:
            received.append((payload, at))
            if len(received) == count:
                ctx.set(stream.ready, 0)
                return received
    raise TimeoutError(f"received {len(received)} of {count} payloads in {timeout} cycles")


def monitor_stream(stream, cycle, transfers):
    """Make a background testbench that appends (payload, cycle) of every transfer."""
    async def monitor(ctx):
        sampled = ctx.tick().sample(stream.valid, stream.ready, stream.payload, cycle)
        async for _, _, valid, ready, payload, at in sampled:
            if valid and ready:
                transfers.append((payload, at))
    return monitor


def pack_elements(values, bits):
    """Pack unsigned elements into one payload integer, element e at bits
    [e·bits, (e + 1)·bits)."""
    packed = 0
    for index, value in enumerate(values):
        packed |= int(value) << (index * bits)
    return packed


def unpack_elements(payload, count, bits):
    """Split a payload integer into ``count`` unsigned ``bits``-bit elements."""
    mask = (1 << bits) - 1
    return [(int(payload) >> (index * bits)) & mask for index in range(count)]
