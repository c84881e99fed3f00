"""The UART protocol's encoding, decoding, fingerprint and pixel order."""

import dataclasses

import numpy as np
import pytest

from gen import uart_protocol as protocol
from gen.compile import compile_model
from model_factory import random_model


def dense_model(input_bits=3, name="tiny"):
    rng = np.random.default_rng(0)
    return random_model(rng, input_shape=(16,), input_bits=input_bits, layers=[
        dict(type="dense", out=8, m=2), dict(type="dense", out=4, m=2, n=2)], name=name)


def conv_model():
    rng = np.random.default_rng(1)
    return random_model(rng, input_shape=(2, 4, 3), input_bits=4, layers=[
        dict(type="conv2d", out=4, m=2, kernel=(3, 3), stride=(1, 1), padding=(1, 1)),
        dict(type="dense", out=3, m=2, n=2)], name="tiny-cnn")


def test_device_info_fields():
    net = compile_model(dense_model())
    info = protocol.device_info(net)
    assert info.pixels == 16
    assert info.pixel_bits == 3
    assert info.classes == 4
    assert info.score_bytes == -(-net.layers[-1].score_width // 8)
    assert info.classify_response_length == 2 + 4 * info.score_bytes


def test_info_response_round_trip():
    info = protocol.device_info(compile_model(dense_model()))
    response = protocol.encode_info_response(info, protocol.STATUS_TIMEOUT)
    assert len(response) == protocol.INFO_RESPONSE_LENGTH
    assert response[0] == ord("i")
    assert protocol.decode_info(response) == (info, protocol.STATUS_TIMEOUT)


def test_classify_response_round_trip():
    info = protocol.DeviceInfo(pixels=4, pixel_bits=5, classes=3, score_bytes=3,
                               fingerprint=0x12345678)
    scores = (-(1 << 23), (1 << 23) - 1, -1)
    response = protocol.encode_classify_response(info, 1, scores)
    assert response[:2] == b"c\x01"
    assert response[2:5] == b"\x00\x00\x80"
    assert protocol.decode_classify(info, response) == protocol.ClassifyResult(1, scores)


def test_encode_classify_bytes():
    info = protocol.DeviceInfo(pixels=3, pixel_bits=5, classes=2, score_bytes=1,
                               fingerprint=0)
    assert protocol.encode_classify(info, np.array([0, 31, 7])) == b"C\x00\x1f\x07"


@pytest.mark.parametrize("image, message", [
    (np.array([0, 1]), "an image must have 3 pixels, not 2"),
    (np.array([0, 1, 32]), r"pixels must lie in \[0, 31\] for 5-bit input, found \[0, 32\]"),
    (np.array([0, -1, 2]), r"found \[-1, 2\]"),
    (np.array([0.0, 1.0, 2.0]), "pixels must be integers, not float64"),
])
def test_encode_classify_rejects(image, message):
    info = protocol.DeviceInfo(pixels=3, pixel_bits=5, classes=2, score_bytes=1,
                               fingerprint=0)
    with pytest.raises(protocol.ProtocolError, match=message):
        protocol.encode_classify(info, image)


def test_decode_rejects_wrong_first_byte():
    info = protocol.DeviceInfo(pixels=3, pixel_bits=5, classes=2, score_bytes=1,
                               fingerprint=0)
    with pytest.raises(protocol.ProtocolError, match=r"starts with 0x63 \('c'\), received 0x43"):
        protocol.decode_classify(info, b"C\x00\x01\x02")


def test_decode_rejects_label_out_of_range():
    info = protocol.DeviceInfo(pixels=3, pixel_bits=5, classes=2, score_bytes=1,
                               fingerprint=0)
    with pytest.raises(protocol.ProtocolError, match="label 2 is not one of the 2 classes"):
        protocol.decode_classify(info, b"c\x02\x01\x02")


def test_decode_rejects_other_version():
    info = protocol.device_info(compile_model(dense_model()))
    response = bytearray(protocol.encode_info_response(info))
    response[1] = 2
    with pytest.raises(protocol.ProtocolError, match="protocol version 2, this host version 1"):
        protocol.decode_info(bytes(response))


def test_fingerprint_ignores_folding():
    model = dense_model()
    folded = compile_model(model, folding={"layer0": (8, 16), "layer1": (1, 1)})
    unfolded = compile_model(model, folding={"layer0": (1, 1), "layer1": (4, 8)})
    assert protocol.model_fingerprint(folded) == protocol.model_fingerprint(unfolded)


def test_fingerprint_follows_coefficients():
    model = dense_model()
    eight = compile_model(model, coefficient_bits=8)
    five = compile_model(model, coefficient_bits=5)
    assert protocol.model_fingerprint(eight) != protocol.model_fingerprint(five)


def test_fingerprint_follows_weights():
    net = compile_model(dense_model())
    layer = net.layers[0]
    weights = layer.weights.copy()
    weights[0, 0, 0] ^= 1
    changed = dataclasses.replace(net, layers=(dataclasses.replace(layer, weights=weights),
                                               net.layers[1]))
    assert protocol.model_fingerprint(net) != protocol.model_fingerprint(changed)


def test_device_info_rejects_wide_pixels():
    net = compile_model(dense_model(input_bits=9))
    with pytest.raises(protocol.ProtocolError, match="pixels must have at most 8 bits, not 9"):
        protocol.device_info(net)


def test_protocol_pixels_dense_is_flat():
    net = compile_model(dense_model())
    pixels = np.arange(32).reshape(2, 16)
    np.testing.assert_array_equal(protocol.protocol_pixels(net, pixels), pixels)


def test_protocol_pixels_conv_is_position_major():
    net = compile_model(conv_model())
    pixels = np.arange(2 * 2 * 4 * 3).reshape(2, 2, 4, 3)      # (images, C, H, W)
    sent = protocol.protocol_pixels(net, pixels)
    assert sent.shape == (2, 24)
    # Position (row 1, column 2) is the sixth; its channel 1 is the twelfth byte.
    assert sent[0, 2 * (1 * 3 + 2) + 1] == pixels[0, 1, 1, 2]
    assert sent[1, 0] == pixels[1, 0, 0, 0]
    assert sent[1, 1] == pixels[1, 1, 0, 0]


def test_describe_status():
    assert protocol.describe_status(0) == "no errors"
    assert protocol.describe_status(protocol.STATUS_OVERRUN | protocol.STATUS_TIMEOUT) == (
        "receive overrun, incomplete request discarded after the timeout")
    assert protocol.describe_status(0x80) == "unknown bits 0x80"
