"""Event-driven variants of the stream agents in :mod:`sim.testbench.streams`, for long runs.

The agents of ``streams`` wake up in every clock cycle. The agents here follow the same
cycle numbering, stall model and stream rules, and record the same transfers, but they
sleep through cycles in which nothing can happen. A source waits for a rising edge of
``ready`` while its payload is blocked, and a sink waits for a rising edge of ``valid``
while no payload is pending. Together with :class:`GpiCycleClock`, Python then runs on
transfers, idle cycles of the source and pending payloads, not on every cycle. This
matters for networks that start with a convolution, whose input is blocked for most of
the cycles of an image.

The edge waits assume that ``valid`` and ``ready`` change only in the time step of a
rising clock edge, as they do for a synchronous design whose other inputs the agents
drive in that time step.
"""

from cocotb.clock import Clock
from cocotb.simtime import convert, get_sim_time
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from .streams import StreamSink, StreamSource, Transfer

__all__ = ["GpiCycleClock", "EventDrivenSource", "EventDrivenSink"]


class GpiCycleClock:
    """A clock on ``signal`` with the interface of :class:`sim.testbench.streams.CycleClock`,
    toggled by cocotb's C++ clock (``Clock(impl="gpi")``) instead of a Python coroutine,
    so a cycle in which no agent wakes runs no Python code.

    Cycle n runs from rising edge n to rising edge n + 1, counting from the edge on which
    :meth:`start` returns. The C++ clock writes the clock signal at once, and the agents
    write their signals after the edge's callbacks, so the design samples them at the
    next edge, as with ``CycleClock``.
    """

    def __init__(self, signal, *, period_ns=10):
        self.signal = signal
        self.period_ns = period_ns
        self.period_steps = None
        self._origin = None

    async def start(self):
        """Start the clock and return on its first rising edge, which begins cycle 0."""
        self.period_steps = int(convert(self.period_ns, "ns", to="step"))
        Clock(self.signal, self.period_ns, unit="ns", impl="gpi").start()
        await RisingEdge(self.signal)
        self._origin = get_sim_time("step")

    @property
    def cycle(self):
        """Index of the cycle the simulation is in: 0 from the edge where start() returned."""
        if self._origin is None:
            raise RuntimeError("GpiCycleClock.cycle read before start() returned")
        return (get_sim_time("step") - self._origin) // self.period_steps


class EventDrivenSource(StreamSource):
    """A :class:`~sim.testbench.streams.StreamSource` that sleeps while its payload is
    blocked.

    Before each payload it draws the idle cycles the same way, one draw per cycle with
    probability ``stall_probability``, and waits them out with valid low. It then keeps
    valid high and the payload unchanged until a cycle in which ready is high.
    """

    def _idle_cycles(self):
        cycles = 0
        while self._random.random() < self.stall_probability:
            cycles += 1
        return cycles

    async def _drive(self):
        while self._queue:
            idle = self._idle_cycles()
            if idle:
                self.valid.value = 0
                await ClockCycles(self.clock.signal, idle)
            valid_cycle = self.clock.cycle
            payload = self._queue.popleft()
            self.payload.value = payload
            self.valid.value = 1

            await ReadOnly()
            while self.ready.value != 1:
                await RisingEdge(self.ready)
                await ReadOnly()
            cycle = self.clock.cycle
            self.blocked_cycles += cycle - valid_cycle
            self.transfers.append(Transfer(index=len(self.transfers), payload=payload,
                                           cycle=cycle, valid_cycle=valid_cycle))
            await RisingEdge(self.clock.signal)
        self.valid.value = 0


class EventDrivenSink(StreamSink):
    """A :class:`~sim.testbench.streams.StreamSink` that sleeps while no payload is
    pending.

    It draws ready for each cycle in which it is awake. While valid is low and no payload
    is pending, it keeps the last ready value until valid rises, then draws ready for
    that cycle. So ready is still low in some cycles with valid low when
    ``stall_probability`` is above 0. A pending payload is checked in every cycle
    against the stream rules, as in ``StreamSink``.
    """

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

            if waiting is None and not valid:
                # Wakes in the time step of the edge that raises valid, so the next draw
                # sets ready for that cycle.
                await RisingEdge(self.valid)
            else:
                await RisingEdge(self.clock.signal)
