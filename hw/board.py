"""The accelerator behind a UART, and the board top that connects it to a platform's pins.

:class:`UARTAccelerator` implements the protocol of ``docs/uart-protocol.md`` (defined in
``gen.uart_protocol``) around :class:`hw.network.Accelerator`, and uses no vendor
primitive, so it simulates and converts to Verilog on its own. :class:`BoardTop` only adds
what a platform provides: the default clock, the UART pins and, where the board has them,
LEDs that show the last label.
"""

from amaranth.build import ResourceError
from amaranth.hdl import (Array, Cat, Const, Elaboratable, Module, Mux, Signal, Value,
                          signed)
from amaranth.lib import io, wiring
from amaranth.lib.wiring import In, Out

from gen.params import NetworkParams
from gen.uart_protocol import (CLASSIFY_REQUEST, CLASSIFY_RESPONSE, INFO_REQUEST,
                               INFO_RESPONSE, INFO_RESPONSE_LENGTH, PROTOCOL_VERSION,
                               ProtocolError, device_info)

from .network import Accelerator
from .uart import UARTReceiver, UARTTransmitter, baud_divisor

__all__ = ["UARTAccelerator", "BoardTop", "DEFAULT_BAUD", "DEFAULT_REQUEST_TIMEOUT"]

DEFAULT_BAUD = 115200

# Seconds without a received byte after which the device discards an incomplete classify
# request, so that a host that stopped in the middle of a request can start over.
DEFAULT_REQUEST_TIMEOUT = 0.1


def _check_net(net):
    if not isinstance(net, NetworkParams):
        raise TypeError(f"net must be a NetworkParams, not {net!r}")
    try:
        return device_info(net)
    except ProtocolError as error:
        raise ValueError(str(error)) from None


class UARTAccelerator(wiring.Component):
    """The accelerator of ``net`` behind an 8N1 UART, serving info and classify requests.

    Requests and responses are described in ``docs/uart-protocol.md``. Received pixel
    bytes shift into a pixel register, the low ``input_bits`` bits of each, which goes to
    the accelerator when it holds one input transfer: the whole image for a dense first
    layer, or the channels of one pixel position for a convolution. A classify response is
    sent straight from the accelerator's output register, which is released after the
    last byte, so the accelerator holds one finished result while the next image arrives.
    A classify response goes out before a waiting info response.

    While the pixel register waits for the accelerator (its input not ready), pixel bytes
    are not taken, and the receiver drops bytes that arrive in that time (status bit
    "overrun"). A host that waits for each response before sending the next request never
    meets this case with a dense first layer, because the accelerator has taken the
    previous image by then.

    Parameters
    ----------
    net : :class:`gen.params.NetworkParams`
        The compiled network.
    divisor : int
        Clock cycles per bit on the serial line (see :func:`hw.uart.baud_divisor`).
    timeout_cycles : int
        Clock cycles without a received byte after which an incomplete classify request is
        discarded and the device waits for a new request.

    Members
    -------
    rx : ``In(1, init=1)``
        Serial input (host to device), asynchronous to the clock.
    tx : ``Out(1, init=1)``
        Serial output (device to host).
    label : ``Out(label_width)``
        Label of the last classify response, 0 after reset.
    """

    def __init__(self, net, *, divisor, timeout_cycles):
        self._info = info = _check_net(net)
        if not isinstance(timeout_cycles, int) or timeout_cycles < 1:
            raise ValueError(f"timeout_cycles must be a positive integer, not "
                             f"{timeout_cycles!r}")
        self._net = net
        self._divisor = divisor
        self._timeout_cycles = timeout_cycles
        # Pixels per input transfer of the accelerator.
        self._group = info.pixels if net.layers[0].type == "dense" else net.input_shape[0]
        # Built here so that a bad divisor or network fails at construction.
        self._receiver = UARTReceiver(divisor=divisor)
        self._transmitter = UARTTransmitter(divisor=divisor)
        super().__init__({
            "rx": In(1, init=1),
            "tx": Out(1, init=1),
            "label": Out(net.label_width),
        })

    @property
    def info(self):
        """The :class:`gen.uart_protocol.DeviceInfo` this device reports."""
        return self._info

    @property
    def divisor(self):
        """Clock cycles per bit on the serial line."""
        return self._divisor

    @property
    def timeout_cycles(self):
        """Clock cycles without a byte after which an incomplete request is discarded."""
        return self._timeout_cycles

    def elaborate(self, platform):
        m = Module()
        m.submodules.receiver = receiver = self._receiver
        m.submodules.transmitter = transmitter = self._transmitter
        m.submodules.accelerator = accelerator = Accelerator(self._net)
        m.d.comb += [receiver.rx.eq(self.rx), self.tx.eq(transmitter.tx)]

        info_request = Signal()
        aborted = Signal()
        self._elaborate_requests(m, receiver, accelerator, info_request, aborted)
        self._elaborate_responses(m, receiver, transmitter, accelerator, info_request, aborted)
        return m

    def _elaborate_requests(self, m, receiver, accelerator, info_request, aborted):
        """Command parser, pixel register and request timeout."""
        info = self._info
        bits = info.pixel_bits
        group = self._group
        requests = receiver.data

        # One input transfer: the whole image for a dense first layer, or the channels of
        # one pixel position for a convolution.
        pixels = Signal(group * bits)
        pixels_valid = Signal()
        pixel_index = Signal(range(info.pixels))
        group_index = Signal(range(group))
        idle_cycles = Signal(range(self._timeout_cycles))
        filling = Signal()

        m.d.comb += [
            accelerator.input.payload.eq(pixels),
            accelerator.input.valid.eq(pixels_valid),
        ]
        with m.If(accelerator.input.ready):
            m.d.sync += pixels_valid.eq(0)

        # Shift in one pixel: the received byte, or 0 while filling an aborted request.
        # Pixel k of a transfer ends at bits [k·P, (k + 1)·P) once the last one has
        # shifted in from the top.
        shift = Signal()
        with m.If(shift):
            m.d.sync += [
                pixels.eq(Cat(pixels[bits:], Mux(filling, 0, requests.payload[:bits]))),
                pixel_index.eq(pixel_index + 1),
                group_index.eq(Mux(group_index == group - 1, 0, group_index + 1)),
                idle_cycles.eq(0),
            ]
            with m.If(group_index == group - 1):
                m.d.sync += pixels_valid.eq(1)

        with m.FSM():
            with m.State("command"):
                m.d.comb += requests.ready.eq(1)
                with m.If(requests.valid):
                    with m.If(requests.payload == INFO_REQUEST):
                        m.d.comb += info_request.eq(1)
                    with m.Elif(requests.payload == CLASSIFY_REQUEST):
                        m.d.sync += [pixel_index.eq(0), group_index.eq(0), idle_cycles.eq(0)]
                        m.next = "pixels"
            with m.State("pixels"):
                m.d.comb += [
                    requests.ready.eq(~pixels_valid),
                    shift.eq(requests.valid & ~pixels_valid),
                ]
                with m.If(shift & (pixel_index == info.pixels - 1)):
                    m.next = "command"
                with m.Elif(~requests.valid):
                    m.d.sync += idle_cycles.eq(idle_cycles + 1)
                    with m.If(idle_cycles == self._timeout_cycles - 1):
                        m.d.comb += aborted.eq(1)
                        m.next = "fill"
            with m.State("fill"):
                # The accelerator may hold part of the image already, so the rest is sent
                # as zeros and the response to it is dropped.
                m.d.comb += [filling.eq(1), shift.eq(~pixels_valid)]
                with m.If(shift & (pixel_index == info.pixels - 1)):
                    m.next = "command"

    def _elaborate_responses(self, m, receiver, transmitter, accelerator, info_request,
                             aborted):
        """Response byte selection, the transmitter's input stream and the status bits."""
        info = self._info
        result = accelerator.output.payload
        label = Value.cast(result.label)

        # Sticky error bits, in the order of the STATUS_* constants of gen.uart_protocol.
        status = Signal(3)
        events = Cat(receiver.overrun, receiver.framing_error, aborted)

        classify_bytes = [Const(CLASSIFY_RESPONSE, 8), Cat(label, Const(0, 8 - len(label)))]
        for index in range(info.classes):
            score = Signal(signed(8 * info.score_bytes), name=f"score{index}")
            m.d.comb += score.eq(result.scores[index])
            classify_bytes += [score[8 * b:8 * (b + 1)] for b in range(info.score_bytes)]
        info_fields = Cat(
            Const(INFO_RESPONSE, 8),
            Const(PROTOCOL_VERSION, 8),
            Const(info.pixels, 16),
            Const(info.pixel_bits, 8),
            Const(info.classes, 8),
            Const(info.score_bytes, 8),
            Const(info.fingerprint, 32),
            status, Const(0, 5),
        )
        info_bytes = [info_fields[8 * b:8 * (b + 1)] for b in range(INFO_RESPONSE_LENGTH)]

        # A classify response is read straight from the accelerator's output register,
        # which stays valid until its last byte is sent.
        sending = Signal()
        sending_info = Signal()
        index = Signal(range(max(len(classify_bytes), len(info_bytes))))
        last_index = Mux(sending_info, len(info_bytes) - 1, len(classify_bytes) - 1)
        m.d.comb += [
            transmitter.data.valid.eq(sending),
            transmitter.data.payload.eq(Mux(sending_info, Array(info_bytes)[index],
                                            Array(classify_bytes)[index])),
        ]

        # Results of aborted requests still to be dropped. Results arrive in request order,
        # so the next results are theirs. The count stops at 7, more aborted requests than
        # can be in flight, because each one waits for the request timeout.
        discards = Signal(range(8))
        discard = Signal()
        m.d.comb += discard.eq(~sending & accelerator.output.valid & (discards != 0))
        with m.If(aborted & ~discard & (discards != 7)):
            m.d.sync += discards.eq(discards + 1)
        with m.Elif(discard & ~aborted):
            m.d.sync += discards.eq(discards - 1)

        done = Signal()
        m.d.comb += done.eq(transmitter.data.valid & transmitter.data.ready
                            & (index == last_index))
        info_pending = Signal()
        with m.If(~sending):
            with m.If(accelerator.output.valid & ~discard):
                m.d.sync += [sending.eq(1), sending_info.eq(0), index.eq(0)]
            with m.Elif(info_pending & ~accelerator.output.valid):
                m.d.sync += [sending.eq(1), sending_info.eq(1), index.eq(0), info_pending.eq(0)]
        with m.Elif(transmitter.data.ready):
            m.d.sync += index.eq(index + 1)
            with m.If(done):
                m.d.sync += sending.eq(0)

        m.d.comb += accelerator.output.ready.eq((done & ~sending_info) | discard)
        with m.If(done & ~sending_info):
            m.d.sync += self.label.eq(label)

        # Placed after the clear above, so a request in the cycle an info response starts
        # is kept.
        with m.If(info_request):
            m.d.sync += info_pending.eq(1)

        with m.If(done & sending_info):
            m.d.sync += status.eq(events)
        with m.Else():
            m.d.sync += status.eq(status | events)


class BoardTop(Elaboratable):
    """The :class:`UARTAccelerator` of ``net`` on a board, clocked by its default clock.

    The baud divisor and the request timeout come from the platform's default clock
    frequency. The design requests ``uart`` 0 and, to show the low bits of the last label,
    as many ``led`` resources (0, 1, ...) as the board has, up to the label's width.

    Parameters
    ----------
    net : :class:`gen.params.NetworkParams`
        The compiled network.
    baud : int
        Serial bit rate; ``hw.uart.baud_divisor`` rejects one the clock cannot generate
        within 2 %.
    request_timeout : float
        Seconds without a received byte after which an incomplete request is discarded.
    """

    def __init__(self, net, *, baud=DEFAULT_BAUD, request_timeout=DEFAULT_REQUEST_TIMEOUT):
        _check_net(net)
        if request_timeout <= 0:
            raise ValueError(f"request_timeout must be positive, not {request_timeout!r} s")
        self._net = net
        self._baud = baud
        self._request_timeout = request_timeout

    def elaborate(self, platform):
        if platform is None or platform.default_clk is None:
            raise TypeError("BoardTop needs a platform with a default clock; simulate "
                            "UARTAccelerator instead")
        frequency = platform.default_clk_frequency
        m = Module()
        m.submodules.core = core = UARTAccelerator(
            self._net, divisor=baud_divisor(frequency, self._baud),
            timeout_cycles=max(1, round(self._request_timeout * frequency)))

        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx_buffer = rx_buffer = io.Buffer("i", uart.rx)
        m.submodules.tx_buffer = tx_buffer = io.Buffer("o", uart.tx)
        m.d.comb += [core.rx.eq(rx_buffer.i), tx_buffer.o.eq(core.tx)]

        for index in range(len(core.label)):
            try:
                led = platform.request("led", index, dir="-")
            except ResourceError:
                break
            m.submodules[f"led{index}_buffer"] = led_buffer = io.Buffer("o", led)
            m.d.comb += led_buffer.o.eq(core.label[index])
        return m
