import numpy as np
import pytest
from amaranth.hdl import Module, Signal
from amaranth.sim import Simulator

from gen.params import unsigned_width
from hw.popcount import popcount

SEED = 20171204


def simulate_popcount(width, values):
    """Drive ``values`` through a ``width``-bit popcount; return (result width, outputs)."""
    operand = Signal(width)
    count = popcount(operand)
    result = Signal.like(count)
    m = Module()
    m.d.comb += result.eq(count)
    outputs = []

    async def testbench(ctx):
        for value in values:
            ctx.set(operand, value)
            outputs.append(ctx.get(result))

    sim = Simulator(m)
    sim.add_testbench(testbench)
    sim.run()
    return len(count), outputs


@pytest.mark.parametrize("width", [1, 2, 3, 7, 8, 31, 64, 100])
def test_popcount_matches_bit_count(width):
    rng = np.random.default_rng(SEED + width)
    ones = (1 << width) - 1
    values = [0, ones, 1, 1 << (width - 1)] + [
        int.from_bytes(rng.bytes((width + 7) // 8), "little") & ones for _ in range(40)]
    result_width, outputs = simulate_popcount(width, values)
    expected = [value.bit_count() for value in values]
    assert result_width == unsigned_width(width)
    assert outputs == expected, f"seed {SEED + width}"


def test_popcount_of_empty_value_is_zero():
    assert popcount(Signal(0)).value == 0
