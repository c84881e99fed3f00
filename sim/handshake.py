"""Cycle-stepped models of the stream handshakes of each hardware component.

Each model keeps only the registers that decide when the component's ``valid`` and
``ready`` are high (counters, full flags, pipeline valid bits), never the data, and
updates them exactly as the Amaranth component does at each clock edge. ``sim.cycles``
chains them into a whole network and steps them together, one call per clock cycle.

Every model has the same interface:

- ``valid``: the output stream's ``valid`` in the current cycle (always a register).
- ``ready(out_ready)``: the input stream's ``ready`` in the current cycle, given the
  ``ready`` of the output stream (some components pass it through combinationally).
- ``step(accept, out_ready)``: the clock edge, given whether the input transferred in
  this cycle and the output stream's ``ready``.
- ``state()``: a tuple of the registers, to detect when a network repeats itself.
"""

__all__ = ["EngineModel", "WindowModel", "PoolModel", "FlattenModel"]


class EngineModel:
    """``hw.mvau.MatrixVectorUnit``: issue, accumulate, combine and write stages.

    The engine issues one (neuron fold, synapse fold) pair per cycle while its input
    register is full. A pair's result reaches the write stage three cycles after its issue,
    and the last neuron fold's write makes the output valid in the next cycle. The engine
    stalls (every stage freezes) in a cycle where the write stage holds a result while
    the output is valid and not ready. The input is ready while no vector is held, and in
    the cycle that issues the held vector's last pair without a stall.
    """

    def __init__(self, *, synapse_fold, neuron_fold):
        self.synapse_fold = synapse_fold
        self.neuron_fold = neuron_fold
        self.in_full = False
        self.sf = 0
        self.nf = 0
        # (valid, result of the last neuron fold) of the combine and write stages. The
        # accumulate stage also records whether the synapse fold was the last.
        self.accumulate = (False, False, False)
        self.combine = (False, False)
        self.write = (False, False)
        self.out_valid = False

    @property
    def valid(self):
        return self.out_valid

    def _stall(self, out_ready):
        return self.write[0] and self.out_valid and not out_ready

    def _issue_last(self, issue):
        return issue and self.sf == self.synapse_fold - 1 and self.nf == self.neuron_fold - 1

    def ready(self, out_ready):
        issue = self.in_full and not self._stall(out_ready)
        return not self.in_full or self._issue_last(issue)

    def step(self, accept, out_ready):
        stall = self._stall(out_ready)
        issue = self.in_full and not stall
        issue_last = self._issue_last(issue)
        writes = self.write[0] and not stall
        finishes = writes and self.write[1]

        if not stall:
            last_sf = self.sf == self.synapse_fold - 1
            last_nf = self.nf == self.neuron_fold - 1
            valid, was_last_sf, was_last_nf = self.accumulate
            self.write = self.combine
            self.combine = (valid and was_last_sf, was_last_nf)
            self.accumulate = (issue, last_sf, last_nf)
        if issue:
            if self.sf == self.synapse_fold - 1:
                self.sf = 0
                self.nf = 0 if self.nf == self.neuron_fold - 1 else self.nf + 1
            else:
                self.sf += 1
        if accept:
            self.in_full = True
        elif issue_last:
            self.in_full = False
        if finishes:
            self.out_valid = True
        elif out_ready:
            self.out_valid = False

    def state(self):
        return (self.in_full, self.sf, self.nf, self.accumulate, self.combine, self.write,
                self.out_valid)


class WindowModel:
    """``hw.window.WindowGenerator``: line-buffer writer and window reader.

    The writer takes one position per cycle unless the position starts a row and all
    kh + sh row slots are occupied. The reader reads window (i, j) in a cycle where the
    last position it needs was written in an earlier cycle and the output is empty or
    transfers. Reading the last window of a window row releases the rows that no later
    window needs.
    """

    def __init__(self, *, height, width, kernel, stride, padding):
        self.height, self.width = height, width
        (self.kh, self.kw), (self.sh, self.sw), (self.ph, self.pw) = kernel, stride, padding
        self.out_height = (height + 2 * self.ph - self.kh) // self.sh + 1
        self.out_width = (width + 2 * self.pw - self.kw) // self.sw + 1
        self.rows = self.kh + self.sh
        self.column = 0
        self.occupied = 0
        self.written = 0
        self.window_row = 0
        self.window_column = 0
        self.released = 0
        self.out_valid = False

    @property
    def valid(self):
        return self.out_valid

    def ready(self, out_ready):
        return self.column != 0 or self.occupied < self.rows

    def _needed(self):
        """Positions of the reader's image that must be written before the window is read."""
        top = self.window_row * self.sh - self.ph
        left = self.window_column * self.sw - self.pw
        row = min(top + self.kh - 1, self.height - 1)
        column = min(left + self.kw - 1, self.width - 1)
        return row * self.width + column + 1

    def step(self, accept, out_ready):
        read = self.written >= self._needed() and (not self.out_valid or out_ready)
        claim = accept and self.column == 0
        release = 0
        end_of_image = False
        if read:
            last_row = self.window_row == self.out_height - 1
            if self.window_column == self.out_width - 1:
                if last_row:
                    release = self.height - self.released
                    end_of_image = True
                    self.window_row = 0
                    self.released = 0
                else:
                    next_top = (self.window_row + 1) * self.sh - self.ph
                    released = min(max(next_top, 0), self.height)
                    release = released - self.released
                    self.window_row += 1
                    self.released = released
                self.window_column = 0
            else:
                self.window_column += 1
            self.out_valid = True
        elif out_ready:
            self.out_valid = False

        self.occupied += claim - release
        self.written += accept - (self.height * self.width if end_of_image else 0)
        if accept:
            self.column = 0 if self.column == self.width - 1 else self.column + 1

    def state(self):
        return (self.column, self.occupied, self.written, self.window_row, self.window_column,
                self.released, self.out_valid)


class PoolModel:
    """``hw.pool.MaxPool``: one position per cycle unless the position completes a window
    while the output register is full and not transferring."""

    def __init__(self, *, height, width, kernel, stride):
        self.height, self.width = height, width
        (kh, kw), (sh, sw) = kernel, stride
        out_height = (height - kh) // sh + 1
        out_width = (width - kw) // sw + 1
        self.last_rows = frozenset(i * sh + kh - 1 for i in range(out_height))
        self.last_columns = frozenset(j * sw + kw - 1 for j in range(out_width))
        self.row = 0
        self.column = 0
        self.out_valid = False

    @property
    def valid(self):
        return self.out_valid

    def _completes(self):
        return self.row in self.last_rows and self.column in self.last_columns

    def ready(self, out_ready):
        return not self._completes() or not self.out_valid or out_ready

    def step(self, accept, out_ready):
        if accept and self._completes():
            self.out_valid = True
        elif out_ready:
            self.out_valid = False
        if accept:
            if self.column == self.width - 1:
                self.column = 0
                self.row = 0 if self.row == self.height - 1 else self.row + 1
            else:
                self.column += 1

    def state(self):
        return (self.row, self.column, self.out_valid)


class FlattenModel:
    """``hw.conv.Flatten``: one position per cycle unless a complete vector waits for a
    ready output."""

    def __init__(self, *, positions):
        self.positions = positions
        self.count = 0
        self.full = False

    @property
    def valid(self):
        return self.full

    def ready(self, out_ready):
        return not self.full or out_ready

    def step(self, accept, out_ready):
        completes = accept and self.count == self.positions - 1
        if accept:
            self.count = 0 if completes else self.count + 1
        if completes:
            self.full = True
        elif out_ready:
            self.full = False

    def state(self):
        return (self.count, self.full)
