"""A Python model of a board that speaks the UART protocol on a pseudo terminal.

It answers info and classify requests with ``gen.uart_protocol`` and the golden model, so
host-side tests run in milliseconds; ``sim.testbench.uart`` runs the host client against
the real design instead.
"""

import os
import select
import threading
import tty

import numpy as np

from gen import uart_protocol as protocol
from sim.integer import network_forward


class DeviceModel:
    """Serve the protocol for ``net`` on a new pty pair until :meth:`close`.

    ``port`` is the terminal's path for the client. ``status`` is the status byte of the
    first info response. With ``fingerprint``, the device reports that fingerprint instead
    of the network's; with ``silent``, it never answers.
    """

    def __init__(self, net, *, status=0, fingerprint=None, silent=False):
        self.net = net
        self.info = protocol.device_info(net)
        if fingerprint is not None:
            self.info = protocol.DeviceInfo(**{**self.info.__dict__, "fingerprint": fingerprint})
        self.status = status
        self.silent = silent
        self.requests = []
        self._controller, self._terminal = os.openpty()
        tty.setraw(self._terminal)
        self.port = os.ttyname(self._terminal)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def close(self):
        self._stop.set()
        self._thread.join()
        os.close(self._controller)
        os.close(self._terminal)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _bytes(self):
        while not self._stop.is_set():
            readable, _, _ = select.select([self._controller], [], [], 0.02)
            if readable:
                yield from os.read(self._controller, 4096)

    def _serve(self):
        received = self._bytes()
        for byte in received:
            if byte == protocol.INFO_REQUEST:
                self.requests.append("info")
                response = protocol.encode_info_response(self.info, self.status)
                self.status = 0
            elif byte == protocol.CLASSIFY_REQUEST:
                pixels = [next(received) for _ in range(self.info.pixels)]
                self.requests.append("classify")
                result = network_forward(self.net, self._model_order(pixels))
                response = protocol.encode_classify_response(
                    self.info, result.labels[0], result.scores[0].tolist())
            else:
                continue
            if not self.silent:
                os.write(self._controller, response)

    def _model_order(self, pixels):
        pixels = np.asarray(pixels, dtype=np.int64)[None, :]
        if self.net.layers[0].type == "conv2d":
            channels, height, width = self.net.input_shape
            return pixels.reshape(1, height, width, channels).transpose(0, 3, 1, 2)
        return pixels
