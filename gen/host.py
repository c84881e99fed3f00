"""The host side of the UART protocol: ``abcnet uart-client`` sends images to a board.

The client opens a serial port with pyserial's ``serial_for_url`` (a device such as
``/dev/ttyUSB1``, or a URL such as ``loop://``), checks with an info request that the
device runs the given model, sends the images one request at a time and compares every
response with the golden model (``sim.integer``). Its exit status is 0 when every result
equals the golden model's, 1 when one differs and 2 on an error.
"""

import json
import sys
import time
from dataclasses import dataclass

import numpy as np

from . import uart_protocol as protocol

__all__ = ["UARTClient", "DeviceTimeout", "load_images", "add_host_commands"]

DEFAULT_IMAGES = 20
DEFAULT_RESPONSE_TIMEOUT = 2.0


class DeviceTimeout(protocol.ProtocolError):
    """The device did not send a complete response in time."""


class UARTClient:
    """Requests and responses over an open pyserial port.

    ``port`` is anything with pyserial's ``write``, ``read(count)`` and
    ``reset_input_buffer``; its read timeout bounds each read.
    """

    def __init__(self, port):
        self.port = port

    def _read(self, count, response_name):
        data = self.port.read(count)
        if len(data) != count:
            name = getattr(self.port, "name", None) or getattr(self.port, "port", "the port")
            received = data.hex(" ") if data else "nothing"
            raise DeviceTimeout(
                f"no complete {response_name} from {name}: received {len(data)} of {count} bytes "
                f"({received}) within the timeout; check the port, the baud rate (--baud) "
                f"and that the board runs an abcnet bitstream")
        return data

    def _check_first_byte(self, data, expected, response_name):
        if data[0] == expected:
            return
        if data[0] in (protocol.INFO_REQUEST, protocol.CLASSIFY_REQUEST):
            hint = "; the port echoes what is sent, so it is looped back, not a board"
        else:
            hint = ""
        raise protocol.ProtocolError(f"expected the first byte of the {response_name} "
                                     f"({expected:#04x}), received {data[0]:#04x}{hint}")

    def info(self):
        """Send an info request; return (DeviceInfo, status)."""
        self.port.reset_input_buffer()
        self.port.write(bytes([protocol.INFO_REQUEST]))
        first = self._read(1, "info response")
        self._check_first_byte(first, protocol.INFO_RESPONSE, "info response")
        rest = self._read(protocol.INFO_RESPONSE_LENGTH - 1, "info response")
        return protocol.decode_info(first + rest)

    def classify(self, info, image):
        """Send one image (in protocol order); return its ``ClassifyResult``."""
        self.port.write(protocol.encode_classify(info, image))
        first = self._read(1, "classify response")
        self._check_first_byte(first, protocol.CLASSIFY_RESPONSE, "classify response")
        rest = self._read(info.classify_response_length - 1, "classify response")
        return protocol.decode_classify(info, first + rest)


@dataclass(frozen=True)
class Images:
    pixels: np.ndarray          # (images, ...) in the model's order
    labels: np.ndarray | None   # true labels, when known
    source: str


def load_images(path, *, dataset, model, start, count):
    """Images from an ``.npy``/``.npz`` file, or else from the test split of ``dataset``.

    An ``.npz`` contains ``pixels`` and optionally ``labels``, an ``.npy`` pixels only.
    Pixels are (images, *input_shape) or (images, features) in the model's order.
    """
    from .cli import UsageError

    if path:
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise UsageError(f"--images {path}: cannot read it as .npy or .npz ({error})")
        if isinstance(loaded, np.ndarray):
            pixels, labels = loaded, None
        else:
            with loaded:
                if "pixels" not in loaded.files:
                    raise UsageError(f"--images {path}: the archive has no 'pixels' array, "
                                     f"only {', '.join(loaded.files) or 'nothing'}")
                pixels = loaded["pixels"]
                labels = loaded["labels"] if "labels" in loaded.files else None
        source = str(path)
    else:
        from weights.data import load_dataset

        name = dataset or model.training.get("dataset")
        if not name:
            raise UsageError("the model does not record its data set; pass --dataset or "
                             "--images")
        try:
            data = load_dataset(name)
        except KeyError as error:
            raise UsageError(f"--dataset: {error.args[0]}") from None
        pixels, labels = data.test_pixels, data.test_labels
        source = f"the {name} test split"

    features = int(np.prod(model.input.shape))
    if pixels.ndim < 2 or int(np.prod(pixels.shape[1:])) != features:
        raise UsageError(f"{source}: images of shape {pixels.shape[1:]} do not have the "
                         f"model's {features} pixels")
    if start < 0 or start >= len(pixels):
        raise UsageError(f"--start {start}: {source} has images 0 to {len(pixels) - 1}")
    stop = len(pixels) if count is None else min(len(pixels), start + count)
    pixels = pixels[start:stop].reshape((-1,) + tuple(model.input.shape))
    labels = None if labels is None else np.asarray(labels[start:stop], dtype=np.int64)
    return Images(pixels=pixels.astype(np.int64), labels=labels, source=source)


def _open_port(args):
    import serial

    from .cli import UsageError

    try:
        return serial.serial_for_url(args.port, baudrate=args.baud, timeout=args.timeout)
    except (serial.SerialException, ValueError) as error:
        raise UsageError(f"--port {args.port}: cannot open it ({error})") from None


def _print_result(args, record):
    if args.json:
        print(json.dumps(record), flush=True)
        return
    true_label = "" if record["true_label"] is None else f", true {record['true_label']}"
    verdict = "" if record["matches_golden"] else "  DIFFERS from the golden model"
    print(f"image {record['image']}: label {record['label']}{true_label}; scores "
          f"{' '.join(map(str, record['scores']))}{verdict}", flush=True)


def command_uart_client(args):
    from sim.integer import network_forward
    from weights.format import load_model

    from .cli import UsageError, parse_fold
    from .compile import DEFAULT_COEFFICIENT_BITS, compile_model
    from .synth import BOARDS, board_compile_options

    if args.timeout <= 0:
        raise UsageError(f"--timeout {args.timeout}: must be a positive number of seconds")
    model = load_model(args.model)
    folding = dict(parse_fold(text) for text in args.fold)
    coefficient_bits = args.coef_bits
    if args.board:
        folding, coefficient_bits = board_compile_options(BOARDS[args.board], model.name,
                                                          folding, coefficient_bits)
    elif coefficient_bits is None:
        coefficient_bits = DEFAULT_COEFFICIENT_BITS
    net = compile_model(model, folding=folding, target_cycles=args.target_cycles,
                        coefficient_bits=coefficient_bits)
    expected_info = protocol.device_info(net)
    images = load_images(args.images, dataset=args.dataset, model=model, start=args.start,
                         count=args.count)
    golden = network_forward(net, images.pixels)
    sent = protocol.protocol_pixels(net, images.pixels)

    with _open_port(args) as port:
        client = UARTClient(port)
        try:
            info, status = client.info()
            if info != expected_info:
                print(f"abcnet: error: the device reports {info}, but {net.name} compiled "
                      f"with these options gives {expected_info}; build the bitstream with "
                      f"the same model and --coef-bits (or pass the --board it was built "
                      f"for)", file=sys.stderr)
                return 2
            if status:
                print(f"abcnet: the device reported {protocol.describe_status(status)} "
                      f"before this session", file=sys.stderr)
            started = time.monotonic()
            correct = matches = 0
            for index, image in enumerate(sent):
                result = client.classify(info, image)
                true_label = None if images.labels is None else int(images.labels[index])
                same = (result.label == golden.labels[index]
                        and list(result.scores) == golden.scores[index].tolist())
                correct += true_label is not None and result.label == true_label
                matches += same
                _print_result(args, {
                    "image": args.start + index, "label": result.label,
                    "scores": list(result.scores), "true_label": true_label,
                    "golden_label": int(golden.labels[index]), "matches_golden": bool(same)})
            seconds = time.monotonic() - started
        except protocol.ProtocolError as error:
            print(f"abcnet: error: {error}", file=sys.stderr)
            return 2

    count = len(sent)
    summary = {"images": count, "source": images.source, "matches_golden": matches,
               "correct": None if images.labels is None else correct,
               "seconds": round(seconds, 3)}
    if args.json:
        print(json.dumps(summary))
    else:
        accuracy = ("" if images.labels is None
                    else f", {correct} correct ({100 * correct / count:.1f} %)")
        print(f"{count} images from {images.source} in {seconds:.2f} s{accuracy}; "
              f"{matches} of {count} answers equal the golden model")
    return 0 if matches == count else 1


def add_host_commands(commands):
    """Register ``uart-client`` on the ``abcnet`` subcommand parser."""
    from hw.board import DEFAULT_BAUD

    from .cli import add_compile_options
    from .synth import BOARDS, use_board_presets

    parser = commands.add_parser(
        "uart-client", help="send test images to a board over a serial port and compare the "
                            "answers with the golden model")
    add_compile_options(parser)
    use_board_presets(parser)
    parser.add_argument("--port", required=True,
                        help="serial port: a device such as /dev/ttyUSB1 or a pyserial URL "
                             "such as loop://")
    parser.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                        help=f"bit rate in bits per second (default {DEFAULT_BAUD})")
    parser.add_argument("--board", choices=sorted(BOARDS),
                        help="compile the model with this board's preset, as abcnet synth "
                             "does, so that its fingerprint matches the bitstream's")
    parser.add_argument("--images", metavar="FILE",
                        help=".npy of pixels or .npz with 'pixels' and optional 'labels', in "
                             "the model's order (default: the test split of the model's data "
                             "set)")
    parser.add_argument("--dataset", help="data set whose test split to send (default: the "
                                          "one the model records)")
    parser.add_argument("--start", type=int, default=0, help="index of the first image")
    parser.add_argument("--count", type=int, default=DEFAULT_IMAGES,
                        help=f"number of images to send (default {DEFAULT_IMAGES})")
    parser.add_argument("--timeout", type=float, default=DEFAULT_RESPONSE_TIMEOUT,
                        metavar="SECONDS",
                        help="time to wait for each part of a response (default "
                             f"{DEFAULT_RESPONSE_TIMEOUT:g} s)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object per image and a summary object")
    parser.set_defaults(handler=command_uart_client)
