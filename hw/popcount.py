"""Combinational population count."""

from amaranth.hdl import Const, Value

__all__ = ["popcount", "popcount_width"]


def popcount_width(bits):
    """Width of the population count of a ``bits``-bit value: enough to hold ``bits``."""
    return max(1, int(bits).bit_length())


def popcount(value):
    """Count the bits of ``value`` that are 1, with a balanced tree of adders.

    The tree has depth ceil(log2(len(value))). Every intermediate sum is truncated to the
    width of its largest possible count, so the result is ``unsigned(popcount_width(n))``
    for an ``n``-bit ``value``, and an empty value counts as ``Const(0, 1)``.
    """
    value = Value.cast(value)
    bits = [value[i] for i in range(len(value))]
    if not bits:
        return Const(0, 1)
    return _sum_bits(bits)


def _sum_bits(bits):
    if len(bits) == 1:
        return bits[0]
    half = len(bits) // 2
    total = _sum_bits(bits[:half]) + _sum_bits(bits[half:])
    return total[:popcount_width(len(bits))]
