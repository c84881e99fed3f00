"""The sliding-window generator that feeds a convolution's matrix-vector engine."""

import numbers

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["WindowGenerator", "window_geometry"]


def window_geometry(*, height, width, kernel, stride, padding):
    """Check a window geometry and return the output size (out_height, out_width).

    Output sizes follow floor mode: ``(size + 2·padding − kernel) // stride + 1``.
    Raises ``ValueError`` naming the offending value.
    """
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"{name} must be a positive integer, not {value!r}")
    for name, pair, low in (("kernel", kernel, 1), ("stride", stride, 1), ("padding", padding, 0)):
        if (not isinstance(pair, tuple) or len(pair) != 2
                or not all(isinstance(v, numbers.Integral) and v >= low for v in pair)):
            raise ValueError(f"{name} must be a pair of integers of at least {low}, "
                             f"not {pair!r}")
    for axis, size in ((0, height), (1, width)):
        if padding[axis] >= kernel[axis]:
            raise ValueError(f"padding {padding!r} must be smaller than the kernel {kernel!r} "
                             f"on each axis")
        if size + 2 * padding[axis] < kernel[axis]:
            raise ValueError(f"kernel {kernel!r} with padding {padding!r} does not fit the "
                             f"{height}x{width} input")
    return tuple((size + 2 * padding[axis] - kernel[axis]) // stride[axis] + 1
                 for axis, size in ((0, height), (1, width)))


class WindowGenerator(wiring.Component):
    """Sliding-window generator with line buffers.

    Takes a feature map one position per transfer, in row-major order, and outputs one
    window per output position, also in row-major order. Images follow each other with
    no gap. Positions outside the image (padding) are element 0, which is every bit 0,
    that is every base −1. Output sizes follow floor mode, so trailing rows and columns
    that no window reaches are consumed and dropped.

    Line buffer: ``buffer_rows`` = kh + sh row slots, so the writer can fill the sh rows
    of the next window row while the reader still needs the kh rows of the current one.
    Each slot is split into ``min(kw, width)`` column banks (column c in bank c mod kw at
    address c div kw), each a memory with one write and one synchronous read port. A
    window covers kw consecutive columns, one per bank, so every window is read in a
    single cycle.

    .. note::
        The banks are shallow (ceil(width / kw) words) and one position wide. Synthesis
        maps each to whole block RAMs, or to flip-flops when tiny, so the line buffer can
        take far more block RAM than the bits it stores. The R:1 slot and kw:1 bank
        multiplexers in front of every window element also cost logic.

    Timing (handshake rules that ``sim.cycles`` models cycle by cycle):

    - ``input.ready`` is high in a cycle unless the next position starts a row and all
      ``buffer_rows`` slots are occupied. The writer claims a slot at the first position
      of a row. In the cycle that reads the last window of a window row, the reader
      releases the rows that no later window needs, and their slots are free from the
      next cycle.
    - The last position that window (i, j) needs is at row min(i·sh − ph + kh − 1,
      height − 1) and column min(j·sw − pw + kw − 1, width − 1). The reader reads the
      window in a cycle after the one that wrote that position, when the output register
      is empty or transfers in this cycle. ``output.valid`` is high from the next cycle
      until the transfer.
    - So a window is valid from two cycles after the cycle that writes its last needed
      position, or from the cycle after the previous window's transfer if that is later.

    Parameters
    ----------
    channels : int
        C, elements per position.
    element_bits : int
        b, bits per element.
    height, width : int
        Size of the input feature map.
    kernel, stride, padding : (int, int)
        (rows, columns) of the window, its step, and the padding on each side. Padding
        must be smaller than the kernel on each axis.

    Members
    -------
    input : ``In(stream.Signature(unsigned(C·b)))``
        One position per transfer: element c at bits ``[c·b, (c + 1)·b)``.
    output : ``Out(stream.Signature(unsigned(kh·kw·C·b)))``
        One window per transfer, elements in (kernel row, kernel column, channel) order:
        element ``(r·kw + s)·C + c`` is channel c of the position at kernel row r and
        kernel column s, at bits ``[e·b, (e + 1)·b)`` for element e.
    """

    def __init__(self, *, channels, element_bits, height, width, kernel, stride, padding):
        for name, value in (("channels", channels), ("element_bits", element_bits)):
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        kernel, stride, padding = tuple(kernel), tuple(stride), tuple(padding)
        self._out_size = window_geometry(height=height, width=width, kernel=kernel,
                                         stride=stride, padding=padding)
        channels, element_bits, height, width = map(int, (channels, element_bits, height, width))
        self._channels = channels
        self._element_bits = element_bits
        self._height = height
        self._width = width
        self._kernel = tuple(map(int, kernel))
        self._stride = tuple(map(int, stride))
        self._padding = tuple(map(int, padding))
        position = channels * element_bits
        super().__init__({
            "input": In(stream.Signature(unsigned(position))),
            "output": Out(stream.Signature(unsigned(kernel[0] * kernel[1] * position))),
        })

    @property
    def out_height(self):
        return self._out_size[0]

    @property
    def out_width(self):
        return self._out_size[1]

    @property
    def buffer_rows(self):
        """Row slots of the line buffer: kh + sh."""
        return self._kernel[0] + self._stride[0]

    @property
    def buffer_bits(self):
        """Bits of line-buffer memory: ``buffer_rows`` rows of ``width`` positions."""
        return self.buffer_rows * self._width * self._channels * self._element_bits

    def elaborate(self, platform):
        m = Module()
        height, width, rows = self._height, self._width, self.buffer_rows
        banks = self._elaborate_memories(m)

        # Occupied row slots: rows claimed by the writer minus rows released by the reader.
        # The reader may release rows that a stride larger than the kernel skips before
        # they are written, so the count can go negative.
        occupied = Signal(range(-height - self._stride[0], rows + 1))
        # Positions written, counted from the first position of the reader's image. It is
        # negative after the reader finished an image whose unused bottom rows (floor mode)
        # are still to be written.
        written = Signal(range(-height * width, (height + rows) * width + 1))

        accept, claim = self._elaborate_writer(m, banks, occupied)
        end_of_image, release = self._elaborate_reader(m, banks, written)
        m.d.sync += [
            occupied.eq(occupied + claim - release),
            written.eq(written + accept - Mux(end_of_image, height * width, 0)),
        ]
        return m

    def _bank_depth(self, bank):
        """Columns bank, bank + kw, … that lie inside the image."""
        return -(-(self._width - bank) // self._kernel[1])

    def _elaborate_memories(self, m):
        """Create one memory per (row slot, column bank), except for banks at or past
        ``width``, which would stay empty."""
        position = self._channels * self._element_bits
        banks = []
        for slot in range(self.buffer_rows):
            row = []
            for bank in range(min(self._kernel[1], self._width)):
                memory = Memory(shape=unsigned(position), depth=self._bank_depth(bank), init=[])
                m.submodules[f"line_s{slot}_b{bank}"] = memory
                row.append((memory.write_port(), memory.read_port(transparent_for=())))
            banks.append(row)
        return banks

    def _elaborate_writer(self, m, banks, occupied):
        """Write each input position into its slot and bank; returns (accept, claim).

        ``claim`` is high in a cycle that writes the first position of a row, which takes
        a new row slot.
        """
        width, kw = self._width, self._kernel[1]
        rows = self.buffer_rows

        column = Signal(range(width))
        bank = Signal(range(kw))
        address = Signal(range(-(-width // kw)))
        slot = Signal(range(rows))

        accept = Signal()
        claim = Signal()
        m.d.comb += [
            self.input.ready.eq((column != 0) | (occupied < rows)),
            accept.eq(self.input.valid & self.input.ready),
            claim.eq(accept & (column == 0)),
        ]
        for slot_index, row in enumerate(banks):
            for bank_index, (write_port, _) in enumerate(row):
                m.d.comb += [
                    write_port.addr.eq(address),
                    write_port.data.eq(self.input.payload),
                    write_port.en.eq(accept & (slot == slot_index) & (bank == bank_index)),
                ]

        with m.If(accept):
            with m.If(column == width - 1):
                m.d.sync += [
                    column.eq(0), bank.eq(0), address.eq(0),
                    slot.eq(Mux(slot == rows - 1, 0, slot + 1)),
                ]
            with m.Else():
                m.d.sync += column.eq(column + 1)
                with m.If(bank == kw - 1):
                    m.d.sync += [bank.eq(0), address.eq(address + 1)]
                with m.Else():
                    m.d.sync += bank.eq(bank + 1)
        return accept, claim

    def _elaborate_reader(self, m, banks, written):
        """Read one window per cycle once its data is written and the output is free.

        Returns (end_of_image, release): high in the cycle that reads an image's last
        window, and the number of rows whose slots that cycle frees.
        """
        height, width = self._height, self._width
        (kh, kw), (sh, sw), (ph, pw) = self._kernel, self._stride, self._padding
        out_height, out_width = self._out_size
        rows = self.buffer_rows

        window_row = Signal(range(out_height))
        window_column = Signal(range(out_width))
        # First image row and column of the current window; negative inside the padding.
        top = Signal(range(-ph, (out_height - 1) * sh - ph + 1), init=-ph)
        left = Signal(range(-pw, (out_width - 1) * sw - pw + 1), init=-pw)
        # left = left_address·kw + left_bank with 0 ≤ left_bank < kw (floor division).
        first_address, first_bank = divmod(-pw, kw)
        left_address = Signal(range(first_address, (out_width - 1) * sw // kw + 1),
                              init=first_address)
        left_bank = Signal(range(kw), init=first_bank)
        top_slot = Signal(range(rows), init=(-ph) % rows)
        # Rows of the reader's image whose slots are already released.
        released = Signal(range(height + 1))

        last_needed_row = Mux(top + kh - 1 > height - 1, height - 1, top + kh - 1)
        last_needed_column = Mux(left + kw - 1 > width - 1, width - 1, left + kw - 1)
        needed = Signal(range(height * width + 1))
        m.d.comb += needed.eq(last_needed_row * width + last_needed_column + 1)

        out_valid = Signal()
        read = Signal()
        m.d.comb += [
            read.eq((written >= needed) & (~out_valid | self.output.ready)),
            self.output.valid.eq(out_valid),
        ]
        with m.If(read):
            m.d.sync += out_valid.eq(1)
        with m.Elif(self.output.ready):
            m.d.sync += out_valid.eq(0)

        self._elaborate_read_ports(m, banks, read, left_address, left_bank)
        self._elaborate_output(m, banks, read, top, left, top_slot, left_bank)

        last_column = window_column == out_width - 1
        last_row = window_row == out_height - 1
        end_of_image = Signal()
        release = Signal(range(height + 1))
        # No later window needs the rows above the next window row's top, (i + 1)·sh − ph.
        # After the last window row, every row of the image is free.
        next_top = top + sh
        clamped = Mux(next_top < 0, 0, Mux(next_top > height, height, next_top))
        m.d.comb += end_of_image.eq(read & last_column & last_row)
        with m.If(read & last_column):
            m.d.comb += release.eq(Mux(last_row, height, clamped) - released)

        with m.If(read):
            with m.If(last_column):
                m.d.sync += [
                    window_column.eq(0), left.eq(-pw),
                    left_address.eq(first_address), left_bank.eq(first_bank),
                ]
                with m.If(last_row):
                    # Row −ph of the next image lies height − (OH − 1)·sh rows below the
                    # top row of the last window row.
                    step = (height - (out_height - 1) * sh) % rows
                    m.d.sync += [
                        window_row.eq(0), top.eq(-ph), released.eq(0),
                        top_slot.eq(Mux(top_slot + step >= rows, top_slot + step - rows,
                                        top_slot + step)),
                    ]
                with m.Else():
                    m.d.sync += [
                        window_row.eq(window_row + 1), top.eq(next_top), released.eq(clamped),
                        top_slot.eq(Mux(top_slot + sh >= rows, top_slot + sh - rows,
                                        top_slot + sh)),
                    ]
            with m.Else():
                m.d.sync += [window_column.eq(window_column + 1), left.eq(left + sw)]
                # Advance (left_address, left_bank) by sw columns without a divider.
                with m.Switch(left_bank):
                    for value in range(kw):
                        with m.Case(value):
                            m.d.sync += [
                                left_bank.eq((value + sw) % kw),
                                left_address.eq(left_address + (value + sw) // kw),
                            ]
        return end_of_image, release

    def _elaborate_read_ports(self, m, banks, read, left_address, left_bank):
        """Address every bank at the window's column in that bank."""
        for row in banks:
            for bank_index, (_, read_port) in enumerate(row):
                depth = self._bank_depth(bank_index)
                # Banks below left_bank hold the window's columns of the next address.
                address = Mux(bank_index < left_bank, left_address + 1, left_address)
                # Columns outside the image are masked later; keep the address in range.
                in_range = (address >= 0) & (address < depth)
                m.d.comb += [
                    read_port.addr.eq(Mux(in_range, address, 0)),
                    read_port.en.eq(read),
                ]

    def _elaborate_output(self, m, banks, read, top, left, top_slot, left_bank):
        """Register the slot, bank and padding of each window element; mux the read data."""
        height, width = self._height, self._width
        (kh, kw) = self._kernel
        rows = self.buffer_rows
        position = self._channels * self._element_bits

        row_slots = [Signal(range(rows), name=f"row_slot{r}") for r in range(kh)]
        row_inside = [Signal(name=f"row_inside{r}") for r in range(kh)]
        column_banks = [Signal(range(kw), name=f"column_bank{s}") for s in range(kw)]
        column_inside = [Signal(name=f"column_inside{s}") for s in range(kw)]
        with m.If(read):
            for r in range(kh):
                slot = top_slot + r
                m.d.sync += [
                    row_slots[r].eq(Mux(slot >= rows, slot - rows, slot)),
                    row_inside[r].eq((top + r >= 0) & (top + r < height)),
                ]
            for s in range(kw):
                bank = left_bank + s
                m.d.sync += [
                    column_banks[s].eq(Mux(bank >= kw, bank - kw, bank)),
                    column_inside[s].eq((left + s >= 0) & (left + s < width)),
                ]

        zero = Const(0, position)
        data = Array(
            Array([read_port.data for _, read_port in row] + [zero] * (kw - len(row)))
            for row in banks)
        elements = []
        for r in range(kh):
            for s in range(kw):
                inside = row_inside[r] & column_inside[s]
                elements.append(Mux(inside, data[row_slots[r]][column_banks[s]], zero))
        m.d.comb += self.output.payload.eq(Cat(*elements))
