"""An 8N1 UART: a receiver and a transmitter with byte streams, and the baud divisor.

The line idles high. A character is a start bit (0), eight data bits with the least
significant first, and one stop bit (1), each lasting ``divisor`` clock cycles.
"""

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTReceiver", "UARTTransmitter", "baud_divisor", "MIN_DIVISOR",
           "MAX_BAUD_ERROR"]

# The receiver samples the middle of each bit, found from the start bit's falling edge
# seen through a two-stage synchronizer; 4 cycles per bit keep that sample inside the bit.
MIN_DIVISOR = 4

# Largest relative difference between the requested and the generated baud rate. An 8N1
# character tolerates about 5 % of total mismatch between both ends, so each end gets 2 %.
MAX_BAUD_ERROR = 0.02


def baud_divisor(clk_frequency, baud):
    """Return the clock cycles per bit, ``round(clk_frequency / baud)``.

    Raises ``ValueError`` when the divisor is below ``MIN_DIVISOR`` or the rounded divisor
    misses ``baud`` by more than ``MAX_BAUD_ERROR``.
    """
    if clk_frequency <= 0 or baud <= 0:
        raise ValueError(f"clock frequency ({clk_frequency!r} Hz) and baud rate ({baud!r}) "
                         f"must be positive")
    divisor = round(clk_frequency / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"baud rate {baud} is too fast for a {clk_frequency / 1e6:g} MHz "
                         f"clock: the UART needs at least {MIN_DIVISOR} clock cycles per bit, "
                         f"so at most {clk_frequency / MIN_DIVISOR:.0f} baud")
    actual = clk_frequency / divisor
    error = abs(actual - baud) / baud
    if error > MAX_BAUD_ERROR:
        raise ValueError(f"baud rate {baud} cannot be generated from a "
                         f"{clk_frequency / 1e6:g} MHz clock: the nearest is {actual:.0f} baud "
                         f"({100 * error:.1f} % off, at most {100 * MAX_BAUD_ERROR:g} % "
                         f"allowed); choose a baud rate near clock / N for an integer N")
    return divisor


def _check_divisor(divisor):
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(f"divisor must be an integer of at least {MIN_DIVISOR} clock cycles "
                         f"per bit, not {divisor!r}")


class UARTReceiver(wiring.Component):
    """Receive 8N1 characters from ``rx`` and output their bytes as a stream.

    The receiver waits for a falling edge, checks half a bit later that the line is still
    low (a shorter pulse is ignored as a glitch), samples the eight data bits in their
    middles, and checks the stop bit in its middle. A byte enters the output register one
    cycle after its stop bit is sampled, 9.5 bit times and 3 clock cycles after the falling
    edge reaches ``rx`` (for an even ``divisor``).

    A stop bit sampled low is a framing error: the byte is dropped, ``framing_error`` is
    high for the next cycle, and the receiver waits for the line to return high before it looks
    for the next start bit. A byte that completes while the previous one is still waiting
    in the output register (valid and not ready) is dropped and ``overrun`` is high for the
    next cycle; the waiting byte stays unchanged, as the stream rules require.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least ``MIN_DIVISOR``; see :func:`baud_divisor`.

    Members
    -------
    rx : ``In(1, init=1)``
        The serial line, asynchronous to the clock; it passes a two-stage synchronizer.
    data : ``Out(stream.Signature(8))``
        Received bytes.
    framing_error : ``Out(1)``
        High for one cycle after a character's stop bit was sampled as 0.
    overrun : ``Out(1)``
        High for one cycle after a received byte was dropped because ``data`` was full.
    """

    def __init__(self, *, divisor):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "data": Out(stream.Signature(8)),
            "framing_error": Out(1),
            "overrun": Out(1),
        })

    @property
    def divisor(self):
        """Clock cycles per bit."""
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor

        line = Signal(init=1)
        m.submodules.synchronizer = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(divisor))
        bit_index = Signal(range(8))
        shift = Signal(8)
        expired = timer == 0

        with m.If(~expired):
            m.d.sync += timer.eq(timer - 1)

        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        # The error outputs are registered, so they have a defined value from the first
        # cycle on, also in simulators that do not evaluate combinational logic at time 0.
        m.d.sync += [self.framing_error.eq(0), self.overrun.eq(0)]

        with m.FSM():
            with m.State("idle"):
                with m.If(~line):
                    # The falling edge is this cycle; the middle of the start bit is half a
                    # bit later.
                    m.d.sync += timer.eq(divisor // 2 - 1)
                    m.next = "start"
            with m.State("start"):
                with m.If(expired):
                    with m.If(line):
                        m.next = "idle"
                    with m.Else():
                        m.d.sync += [timer.eq(divisor - 1), bit_index.eq(0)]
                        m.next = "data"
            with m.State("data"):
                with m.If(expired):
                    m.d.sync += [
                        shift.eq(Cat(shift[1:], line)),
                        timer.eq(divisor - 1),
                        bit_index.eq(bit_index + 1),
                    ]
                    with m.If(bit_index == 7):
                        m.next = "stop"
            with m.State("stop"):
                with m.If(expired):
                    with m.If(line):
                        # The line is high from here to the next start bit, so the receiver
                        # can look for the next falling edge half a bit early.
                        with m.If(self.data.valid & ~self.data.ready):
                            m.d.sync += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1)]
                        m.next = "idle"
                    with m.Else():
                        m.d.sync += self.framing_error.eq(1)
                        m.next = "break"
            with m.State("break"):
                with m.If(line):
                    m.next = "idle"
        return m


class UARTTransmitter(wiring.Component):
    """Send the bytes of a stream as 8N1 characters on ``tx``.

    ``data.ready`` is high while the transmitter is idle and in the last cycle of a stop
    bit. A transfer starts the start bit in the next cycle, so back-to-back bytes leave with
    no idle time between characters.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least ``MIN_DIVISOR``; see :func:`baud_divisor`.

    Members
    -------
    data : ``In(stream.Signature(8))``
        Bytes to send.
    tx : ``Out(1, init=1)``
        The serial line, driven from a register, high when idle.
    """

    def __init__(self, *, divisor):
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__({
            "data": In(stream.Signature(8)),
            "tx": Out(1, init=1),
        })

    @property
    def divisor(self):
        """Clock cycles per bit."""
        return self._divisor

    def elaborate(self, platform):
        m = Module()
        divisor = self._divisor

        timer = Signal(range(divisor))
        # The bits still to send after the one on the line: the data bits, then the stop bit.
        pending = Signal(9)
        pending_count = Signal(range(10))
        busy = Signal()
        finishing = Signal()

        m.d.comb += [
            finishing.eq(busy & (timer == 0) & (pending_count == 0)),
            self.data.ready.eq(~busy | finishing),
        ]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [
                self.tx.eq(0),
                pending.eq(Cat(self.data.payload, 1)),
                pending_count.eq(9),
                timer.eq(divisor - 1),
                busy.eq(1),
            ]
        with m.Elif(busy):
            with m.If(timer != 0):
                m.d.sync += timer.eq(timer - 1)
            with m.Elif(pending_count != 0):
                m.d.sync += [
                    self.tx.eq(pending[0]),
                    pending.eq(pending[1:]),
                    pending_count.eq(pending_count - 1),
                    timer.eq(divisor - 1),
                ]
            with m.Else():
                m.d.sync += busy.eq(0)
        return m
