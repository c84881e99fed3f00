"""Combinational population count."""

from amaranth.hdl import Const, Value

__all__ = ["popcount", "popcount_width"]


def popcount_width(bits):
    """Width of the population count of a ``bits``-bit value: enough to hold ``bits``."""
    return max(1, int(bits).bit_length())


def popcount(value):
    """Count the bits of ``value`` that are 1, with a balanced tree of adders.

    The tree has depth ceil(log2(len(value))). The result is
    ``unsigned(popcount_width(n))`` for an ``n``-bit ``value``, and an empty value counts as
    ``Const(0, 1)``.

    Pass a signal rather than a larger expression: the tree slices ``value`` once per bit,
    and Amaranth's Python simulator evaluates a sliced expression anew for every slice.
    """
    value = Value.cast(value)
    if len(value) == 0:
        return Const(0, 1)
    return _sum_bits(value)[:popcount_width(len(value))]


def _sum_bits(bits):
    # Each sum widens by one bit, which is at most one bit more than its count needs, so
    # only the final result is truncated.
    if len(bits) == 1:
        return bits
    half = len(bits) // 2
    return _sum_bits(bits[:half]) + _sum_bits(bits[half:])
