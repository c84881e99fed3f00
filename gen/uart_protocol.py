"""The byte protocol between a host and an accelerator behind a UART.

``docs/uart-protocol.md`` describes it for users. This module is its definition in
Python: the board top (``hw.board``) takes its constants from here, and the host client
(``gen.host``) its encoding and decoding. It imports numpy and the standard library only.

Requests and responses, all integers little-endian:

    info request      'I'
    info response     'i', version, pixels (2 bytes), pixel_bits, classes, score_bytes,
                      fingerprint (4 bytes), status
    classify request  'C', one byte per pixel (pixels bytes)
    classify response 'c', label, classes × score_bytes two's complement scores
"""

import hashlib
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PROTOCOL_VERSION", "INFO_REQUEST", "INFO_RESPONSE", "CLASSIFY_REQUEST",
    "CLASSIFY_RESPONSE", "INFO_RESPONSE_LENGTH", "STATUS_OVERRUN", "STATUS_FRAMING_ERROR",
    "STATUS_TIMEOUT", "ProtocolError", "DeviceInfo", "ClassifyResult", "device_info",
    "model_fingerprint", "score_bytes", "protocol_pixels", "image_bytes", "encode_classify",
    "encode_info_response", "encode_classify_response", "decode_info",
    "decode_classify", "describe_status",
]

PROTOCOL_VERSION = 1

INFO_REQUEST = ord("I")
INFO_RESPONSE = ord("i")
CLASSIFY_REQUEST = ord("C")
CLASSIFY_RESPONSE = ord("c")

INFO_RESPONSE_LENGTH = 12

# Bits of the info response's status byte. Each is set by an event since the previous info
# response and cleared when an info response is sent.
STATUS_OVERRUN = 0x01           # a received byte was dropped because the device was busy
STATUS_FRAMING_ERROR = 0x02     # a character had a stop bit of 0
STATUS_TIMEOUT = 0x04           # an incomplete classify request was discarded

_STATUS_NAMES = {
    STATUS_OVERRUN: "receive overrun",
    STATUS_FRAMING_ERROR: "framing error",
    STATUS_TIMEOUT: "incomplete request discarded after the timeout",
}


class ProtocolError(Exception):
    """A response that does not follow the protocol, or a request that cannot be encoded."""


@dataclass(frozen=True)
class DeviceInfo:
    """What a host needs to talk to one accelerator: the fields of the info response."""
    pixels: int             # pixel bytes in a classify request
    pixel_bits: int         # P: the device uses the low P bits of each pixel byte
    classes: int
    score_bytes: int        # bytes per score in a classify response
    fingerprint: int        # model_fingerprint of the compiled network
    version: int = PROTOCOL_VERSION

    @property
    def classify_response_length(self):
        """Bytes in a classify response: the response byte, the label and the scores."""
        return 2 + self.classes * self.score_bytes


@dataclass(frozen=True)
class ClassifyResult:
    """One decoded classify response."""
    label: int
    scores: tuple           # one signed integer per class, class 0 first


def score_bytes(score_width):
    """Bytes per score on the wire: the signed ``score_width``-bit score, sign-extended."""
    return -(-int(score_width) // 8)


def model_fingerprint(net):
    """Return a 32-bit hash of everything that decides a compiled network's outputs.

    The hash covers shapes, bit widths, weights, coefficients, thresholds, polarities and
    score offsets, but not the folding, because folding does not change any result. It is
    the first 4 bytes of a SHA-256, read as a little-endian integer.
    """
    digest = hashlib.sha256()

    def add(value):
        digest.update(repr(value).encode())
        digest.update(b";")

    def add_array(array):
        if array is None:
            add(None)
            return
        array = np.ascontiguousarray(np.asarray(array, dtype=np.int64))
        add(array.shape)
        digest.update(array.astype("<i8").tobytes())

    add((tuple(net.input_shape), net.input_bits, net.classes))
    for layer in net.layers:
        add((layer.type, layer.in_features, layer.out_features, layer.in_bits, layer.m_bases,
             layer.output, layer.out_bits, layer.in_shape, layer.kernel, layer.stride,
             layer.padding, layer.pool, layer.out_shape))
        add_array(layer.weights)
        add_array(layer.coefficients)
        add_array(layer.thresholds)
        add_array(layer.polarity)
        add_array(layer.score_offset)
    return int.from_bytes(digest.digest()[:4], "little")


def device_info(net):
    """Return the ``DeviceInfo`` a device built from ``net`` reports.

    Raises ``ProtocolError`` for a network the protocol cannot carry: pixels wider than a
    byte, more than 65535 pixels, or more than 256 classes.
    """
    pixels = int(np.prod(net.input_shape))
    if net.input_bits > 8:
        raise ProtocolError(f"network {net.name}: the UART protocol sends one byte per pixel, "
                            f"so pixels must have at most 8 bits, not {net.input_bits}")
    if pixels > 0xFFFF:
        raise ProtocolError(f"network {net.name}: the UART protocol carries at most 65535 "
                            f"pixels per image, not {pixels}")
    if net.classes > 256:
        raise ProtocolError(f"network {net.name}: the UART protocol sends the label as one "
                            f"byte, so at most 256 classes, not {net.classes}")
    return DeviceInfo(pixels=pixels, pixel_bits=net.input_bits, classes=net.classes,
                      score_bytes=score_bytes(net.layers[-1].score_width),
                      fingerprint=model_fingerprint(net))


def protocol_pixels(net, pixels):
    """Reorder a batch of images from the model's order into the order they are sent.

    ``pixels`` is (images, features) or (images, *input_shape) for a network whose first
    layer is dense, which takes the model's flattening order, and (images, channels,
    height, width) for one that starts with a convolution, which takes pixel positions in
    row-major order with the channels of each position together. Returns (images,
    features).
    """
    pixels = np.asarray(pixels)
    count = len(pixels)
    if net.layers[0].type == "conv2d":
        pixels = pixels.reshape((count,) + tuple(net.input_shape)).transpose(0, 2, 3, 1)
    return pixels.reshape(count, -1)


def image_bytes(info, image):
    """Return the pixel bytes of one image; raises ``ProtocolError`` on a wrong size or value.

    ``image`` holds the pixels in the order they are sent (see :func:`protocol_pixels`).
    """
    pixels = np.asarray(image).reshape(-1)
    if pixels.size != info.pixels:
        raise ProtocolError(f"an image must have {info.pixels} pixels, not {pixels.size}")
    if pixels.dtype.kind not in "iu":
        raise ProtocolError(f"pixels must be integers, not {pixels.dtype}")
    limit = (1 << info.pixel_bits) - 1
    if pixels.size and (pixels.min() < 0 or pixels.max() > limit):
        raise ProtocolError(f"pixels must lie in [0, {limit}] for {info.pixel_bits}-bit input, "
                            f"found [{pixels.min()}, {pixels.max()}]")
    return pixels.astype(np.uint8).tobytes()


def encode_classify(info, image):
    """Return the classify request for one image."""
    return bytes([CLASSIFY_REQUEST]) + image_bytes(info, image)


def encode_info_response(info, status=0):
    """Return the info response a device described by ``info`` sends."""
    return (bytes([INFO_RESPONSE, info.version]) + info.pixels.to_bytes(2, "little")
            + bytes([info.pixel_bits, info.classes, info.score_bytes])
            + info.fingerprint.to_bytes(4, "little") + bytes([status]))


def encode_classify_response(info, label, scores):
    """Return the classify response for ``label`` and one score per class."""
    if len(scores) != info.classes:
        raise ProtocolError(f"a classify response has {info.classes} scores, not {len(scores)}")
    return bytes([CLASSIFY_RESPONSE, int(label)]) + b"".join(
        int(score).to_bytes(info.score_bytes, "little", signed=True) for score in scores)


def decode_info(response):
    """Decode an info response into ``(DeviceInfo, status)``."""
    response = bytes(response)
    if len(response) != INFO_RESPONSE_LENGTH:
        raise ProtocolError(f"an info response has {INFO_RESPONSE_LENGTH} bytes, "
                            f"received {len(response)}: {response.hex(' ')}")
    if response[0] != INFO_RESPONSE:
        raise ProtocolError(f"an info response starts with {INFO_RESPONSE:#04x} ('i'), "
                            f"received {response[0]:#04x}")
    version = response[1]
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"the device speaks protocol version {version}, this host "
                            f"version {PROTOCOL_VERSION}")
    info = DeviceInfo(pixels=int.from_bytes(response[2:4], "little"),
                      pixel_bits=response[4], classes=response[5], score_bytes=response[6],
                      fingerprint=int.from_bytes(response[7:11], "little"), version=version)
    return info, response[11]


def decode_classify(info, response):
    """Decode a classify response of the device described by ``info``."""
    response = bytes(response)
    if len(response) != info.classify_response_length:
        raise ProtocolError(f"a classify response has {info.classify_response_length} bytes, "
                            f"received {len(response)}: {response.hex(' ')}")
    if response[0] != CLASSIFY_RESPONSE:
        raise ProtocolError(f"a classify response starts with {CLASSIFY_RESPONSE:#04x} ('c'), "
                            f"received {response[0]:#04x}")
    label = response[1]
    if label >= info.classes:
        raise ProtocolError(f"label {label} is not one of the {info.classes} classes")
    width = info.score_bytes
    scores = tuple(int.from_bytes(response[2 + c * width:2 + (c + 1) * width], "little",
                                  signed=True)
                   for c in range(info.classes))
    return ClassifyResult(label=label, scores=scores)


def describe_status(status):
    """Return the names of the status bits set in ``status``, or "no errors"."""
    names = [name for bit, name in _STATUS_NAMES.items() if status & bit]
    unknown = status & ~sum(_STATUS_NAMES)
    if unknown:
        names.append(f"unknown bits {unknown:#04x}")
    return ", ".join(names) if names else "no errors"
