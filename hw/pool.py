"""Streaming max-pool on thresholded activation bits."""

import numbers

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from .window import window_geometry

__all__ = ["MaxPool"]


class MaxPool(wiring.Component):
    """Max-pool of a thresholded feature map, no padding, floor mode.

    Thresholding is monotone in y, so pooling the bits equals thresholding the pooled y:
    for a polarity +1 channel (bit = [y ≥ T]) the max-pool of y becomes the OR of each
    bit over the window, and for a polarity −1 channel (bit = [y ≤ T]) the AND. The
    engine inverts the bits of polarity −1 channels, ORs, and inverts back.

    Every output position (i, j) has an accumulator register. Output rows that are open
    at the same time (at most ceil(kh / sh)) use different lines of accumulators, so
    there are ``ceil(kh / sh)·out_width`` of them. An input position initialises or ORs
    into every window that contains it; positions that no window contains (floor mode)
    are consumed and dropped.

    Timing: ``input.ready`` is high unless the next position completes a window (it is
    the window's bottom-right position) while the output register is full and not
    transferring. The pooled position is valid from the cycle after its last input
    position transfers until it transfers.

    .. note::
        The accumulators are registers, ``ceil(kh / sh)·out_width·C·b`` bits, which
        suits the small feature maps this project targets. A wide map would be cheaper
        with one line memory per open output row.

    Parameters
    ----------
    channels : int
        C, elements per position.
    element_bits : int
        b, bits per element.
    height, width : int
        Size of the input feature map.
    kernel, stride : (int, int)
        (rows, columns) of the pool window and its step.
    polarity : sequence of int
        +1 or −1 for each channel: the comparison direction of its thresholds.

    Members
    -------
    input : ``In(stream.Signature(unsigned(C·b)))``
        One position per transfer, row-major: element c at bits ``[c·b, (c + 1)·b)``.
    output : ``Out(stream.Signature(unsigned(C·b)))``
        One pooled position per transfer, row-major, same layout.
    """

    def __init__(self, *, channels, element_bits, height, width, kernel, stride, polarity):
        for name, value in (("channels", channels), ("element_bits", element_bits)):
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        kernel, stride = tuple(kernel), tuple(stride)
        self._out_size = window_geometry(height=height, width=width, kernel=kernel,
                                         stride=stride, padding=(0, 0))
        polarity = np.asarray(polarity)
        if polarity.shape != (channels,) or not np.isin(polarity, (-1, 1)).all():
            raise ValueError(f"polarity must be {channels} values of +1 or -1, "
                             f"not {polarity.tolist()!r}")
        self._channels = int(channels)
        self._element_bits = int(element_bits)
        self._height = int(height)
        self._width = int(width)
        self._kernel = tuple(map(int, kernel))
        self._stride = tuple(map(int, stride))
        self._polarity = polarity
        position = channels * element_bits
        super().__init__({
            "input": In(stream.Signature(unsigned(position))),
            "output": Out(stream.Signature(unsigned(position))),
        })

    @property
    def out_height(self):
        return self._out_size[0]

    @property
    def out_width(self):
        return self._out_size[1]

    @property
    def lines(self):
        """Lines of accumulators: output rows that one input row can belong to, ceil(kh / sh)."""
        return -(-self._kernel[0] // self._stride[0])

    def elaborate(self, platform):
        m = Module()
        (kh, kw), (sh, sw) = self._kernel, self._stride
        out_height, out_width = self._out_size
        b = self._element_bits
        position = self._channels * b

        row = Signal(range(self._height))
        column = Signal(range(self._width))

        # Position of the current input inside each line's window row and each window
        # column: inside, first (initialise) and last (complete).
        line_inside = [[] for _ in range(self.lines)]
        line_first = [[] for _ in range(self.lines)]
        line_last = [[] for _ in range(self.lines)]
        for i in range(out_height):
            line = i % self.lines
            line_inside[line].append((row >= i * sh) & (row <= i * sh + kh - 1))
            line_first[line].append(row == i * sh)
            line_last[line].append(row == i * sh + kh - 1)
        row_inside = [_any(terms) for terms in line_inside]
        row_first = [_any(terms) for terms in line_first]
        row_last = [_any(terms) for terms in line_last]
        column_inside = [(column >= j * sw) & (column <= j * sw + kw - 1)
                         for j in range(out_width)]
        column_first = [column == j * sw for j in range(out_width)]
        column_last = [column == j * sw + kw - 1 for j in range(out_width)]

        # Polarity −1 channels are inverted on the way in and out: AND = NOT OR NOT.
        invert = Const(_inversion_mask(self._polarity, b), position)
        value = Signal(position)
        m.d.comb += value.eq(self.input.payload ^ invert)

        out_valid = Signal()
        out_payload = Signal(position)
        completes = Signal()
        accept = Signal()
        pooled = []
        complete_terms = []
        for line in range(self.lines):
            for j in range(out_width):
                acc = Signal(position, name=f"acc_l{line}_c{j}")
                inside = row_inside[line] & column_inside[j]
                first = row_first[line] & column_first[j]
                last = row_last[line] & column_last[j]
                merged = Mux(first, 0, acc) | value
                with m.If(accept & inside):
                    m.d.sync += acc.eq(merged)
                complete_terms.append(last)
                pooled.append(Mux(last, merged, 0))
        m.d.comb += [
            completes.eq(_any(complete_terms)),
            self.input.ready.eq(~completes | ~out_valid | self.output.ready),
            accept.eq(self.input.valid & self.input.ready),
            self.output.valid.eq(out_valid),
            self.output.payload.eq(out_payload),
        ]

        # At most one window completes per input position, so OR-ing the candidates
        # selects it.
        with m.If(accept & completes):
            m.d.sync += [out_valid.eq(1), out_payload.eq(_or_all(pooled) ^ invert)]
        with m.Elif(self.output.ready):
            m.d.sync += out_valid.eq(0)

        with m.If(accept):
            with m.If(column == self._width - 1):
                m.d.sync += [column.eq(0),
                             row.eq(Mux(row == self._height - 1, 0, row + 1))]
            with m.Else():
                m.d.sync += column.eq(column + 1)
        return m


def _inversion_mask(polarity, element_bits):
    """Return a mask with every bit of each polarity −1 channel set."""
    mask = 0
    full = (1 << element_bits) - 1
    for channel, sign in enumerate(polarity):
        if sign < 0:
            mask |= full << (channel * element_bits)
    return mask


def _any(terms):
    return Cat(*terms).any() if terms else Const(0, 1)


def _or_all(values):
    result = values[0]
    for value in values[1:]:
        result = result | value
    return result
