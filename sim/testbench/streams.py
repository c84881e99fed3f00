"""cocotb driver and monitor for ``amaranth.lib.stream`` ports of converted Verilog.

Amaranth names the Verilog ports of a stream member ``<name>__payload``,
``<name>__valid`` and ``<name>__ready``. A transfer happens in a clock cycle in which
valid and ready are both high. Cycle n runs from rising edge n to rising edge n + 1,
counting from the edge on which :meth:`CycleClock.start` returns. The receiver
registers a transfer of cycle n on edge n + 1.

Both agents write their outputs just after a rising edge and sample their inputs in the
read-only phase of the same time step, after every combinational path has settled.
"""

import random
from collections import deque
from dataclasses import dataclass

import cocotb
from cocotb.clock import Clock
from cocotb.simtime import convert, get_sim_time
from cocotb.triggers import Event, ReadOnly, RisingEdge, SimTimeoutError, with_timeout

__all__ = ["CycleClock", "Transfer", "StreamSource", "StreamSink"]


class CycleClock:
    """A clock on ``signal`` with a period of ``period_ns``, and the index of the current cycle.

    The index is computed from simulation time, so every coroutine that reads it in the
    same time step gets the same number.
    """

    def __init__(self, signal, *, period_ns=10):
        self.signal = signal
        self.period_ns = period_ns
        self.period_steps = None
        self._origin = None

    async def start(self):
        """Start the clock and return on its first rising edge, which begins cycle 0."""
        clock = Clock(self.signal, self.period_ns, unit="ns")
        self.period_steps = int(convert(self.period_ns, "ns", to="step"))
        clock.start()
        await RisingEdge(self.signal)
        self._origin = get_sim_time("step")

    @property
    def cycle(self):
        """Index of the cycle the simulation is in: 0 from the edge where start() returned."""
        if self._origin is None:
            raise RuntimeError("CycleClock.cycle read before start() returned")
        return (get_sim_time("step") - self._origin) // self.period_steps


@dataclass(frozen=True)
class Transfer:
    """One payload that crossed a stream."""
    index: int          # position in the stream, from 0
    payload: int        # the payload bits as an unsigned integer
    cycle: int          # cycle in which valid and ready were both high
    valid_cycle: int    # first cycle in which valid was high for this payload


def _stream_ports(dut, name):
    try:
        return (getattr(dut, f"{name}__payload"), getattr(dut, f"{name}__valid"),
                getattr(dut, f"{name}__ready"))
    except AttributeError as error:
        raise AttributeError(f"stream {name!r} not found on {dut._name}: expected ports "
                             f"{name}__payload, {name}__valid and {name}__ready") from error


def _check_probability(name, value):
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), not {value!r}")
    return float(value)


class StreamSource:
    """Drive payloads into the receiver side of stream ``name`` of ``dut``.

    Payloads queued with :meth:`send` go out in order. Before presenting each payload
    the source waits, with probability ``stall_probability`` per cycle, one more cycle
    with valid low. Once valid is high it stays high with the payload unchanged until
    the transfer, as Amaranth's stream rules require, so stalls only fall between
    payloads. With probability 0 the payloads go back to back.
    """

    def __init__(self, dut, name, clock, *, stall_probability=0.0, seed=0):
        self.payload, self.valid, self.ready = _stream_ports(dut, name)
        self.name = name
        self.clock = clock
        self.stall_probability = _check_probability("stall_probability", stall_probability)
        self._random = random.Random(seed)
        self._queue = deque()
        self.transfers = []
        # Cycles in which valid was high and the receiver held ready low.
        self.blocked_cycles = 0
        self.valid.value = 0

    def send(self, payloads):
        """Queue unsigned integer payloads for transfer."""
        self._queue.extend(int(payload) for payload in payloads)

    def start(self):
        """Start driving in a background task; call at the beginning of a cycle.

        The task ends, with valid low, once every queued payload has been transferred.
        """
        return cocotb.start_soon(self._drive())

    async def _drive(self):
        presented = None
        while presented is not None or self._queue:
            if presented is None:
                if self._random.random() >= self.stall_probability:
                    presented = (self.clock.cycle, self._queue.popleft())
                    self.payload.value = presented[1]
            self.valid.value = int(presented is not None)

            await ReadOnly()
            if presented is not None and self.ready.value != 1:
                self.blocked_cycles += 1
            elif presented is not None:
                valid_cycle, payload = presented
                self.transfers.append(Transfer(index=len(self.transfers), payload=payload,
                                               cycle=self.clock.cycle,
                                               valid_cycle=valid_cycle))
                presented = None
            await RisingEdge(self.clock.signal)
        self.valid.value = 0


class StreamSink:
    """Accept payloads from the transmitter side of stream ``name`` of ``dut``.

    In each cycle ready is low with probability ``stall_probability``, independently of
    valid. The sink also checks the transmitter against Amaranth's stream rules: once
    valid is high, valid and the payload must hold until the transfer. Each breach is
    appended to :attr:`violations` as a message.
    """

    def __init__(self, dut, name, clock, *, stall_probability=0.0, seed=0):
        self.payload, self.valid, self.ready = _stream_ports(dut, name)
        self.name = name
        self.clock = clock
        self.stall_probability = _check_probability("stall_probability", stall_probability)
        self._random = random.Random(seed)
        self.transfers = []
        self.violations = []
        # Cycles in which valid was high and this sink held ready low.
        self.blocked_cycles = 0
        self._expected_transfers = None
        self._all_transferred = Event()
        self.ready.value = 0

    def start(self):
        """Start monitoring in a background task; call at the beginning of a cycle."""
        return cocotb.start_soon(self._monitor())

    async def wait_for_transfers(self, count, *, timeout_cycles):
        """Wait until ``count`` payloads have been accepted or ``timeout_cycles`` have passed.

        Returns whether ``count`` was reached.
        """
        if len(self.transfers) >= count:
            return True
        self._expected_transfers = count
        self._all_transferred.clear()
        try:
            await with_timeout(self._all_transferred.wait(),
                               timeout_cycles * self.clock.period_steps, "step")
        except SimTimeoutError:
            return False
        return True

    async def _monitor(self):
        # (first valid cycle, payload) of a payload that is valid but not yet accepted.
        waiting = None
        while True:
            ready = self._random.random() >= self.stall_probability
            self.ready.value = int(ready)

            await ReadOnly()
            cycle = self.clock.cycle
            valid = self.valid.value == 1
            if waiting is not None and not valid:
                self.violations.append(
                    f"{self.name}: valid fell in cycle {cycle} before payload "
                    f"{len(self.transfers)}, valid since cycle {waiting[0]}, was transferred")
                waiting = None
            if valid:
                payload = self._read_payload(cycle)
                if waiting is None:
                    waiting = (cycle, payload)
                elif payload != waiting[1]:
                    self.violations.append(
                        f"{self.name}: payload {len(self.transfers)} changed in cycle {cycle} "
                        f"from {waiting[1]:#x} to {payload:#x} before its transfer")
                    waiting = (waiting[0], payload)
                if not ready:
                    self.blocked_cycles += 1
                else:
                    self.transfers.append(Transfer(index=len(self.transfers), payload=payload,
                                                   cycle=cycle, valid_cycle=waiting[0]))
                    waiting = None
                    if self._expected_transfers == len(self.transfers):
                        self._all_transferred.set()
            await RisingEdge(self.clock.signal)

    def _read_payload(self, cycle):
        value = self.payload.value
        if not value.is_resolvable:
            raise AssertionError(f"{self.name}__payload is {value} (not 0/1 everywhere) in "
                                 f"cycle {cycle} while {self.name}__valid is high")
        return value.to_unsigned()
