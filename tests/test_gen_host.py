"""``abcnet uart-client`` against a Python model of a board on a pseudo terminal.

``test_cocotb_uart.py`` runs the same client against the simulated design.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from gen.cli import main
from gen.compile import compile_model
from model_factory import random_model
from uart_device import DeviceModel
from weights.format import load_model, save_model

MODELS = Path(__file__).resolve().parent.parent / "weights" / "models"
SHIPPED_MODEL = str(MODELS / "digits-mlp.npz")


@pytest.fixture(scope="module")
def shipped_net():
    return compile_model(load_model(SHIPPED_MODEL))


def run_client(capsys, *arguments):
    status = main(["uart-client", *map(str, arguments)])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_client_results_equal_golden(shipped_net, capsys):
    with DeviceModel(shipped_net) as device:
        status, out, err = run_client(capsys, SHIPPED_MODEL, "--port", device.port,
                                      "--count", 6, "--start", 10, "--json")
    assert status == 0, err
    records = [json.loads(line) for line in out.splitlines()]
    images, summary = records[:-1], records[-1]
    assert [record["image"] for record in images] == list(range(10, 16))
    assert all(record["matches_golden"] for record in images)
    assert summary["images"] == 6
    assert summary["matches_golden"] == 6
    assert summary["source"] == "the digits test split"
    assert device.requests == ["info"] + ["classify"] * 6


def test_client_text_summary(shipped_net, capsys):
    with DeviceModel(shipped_net, status=0x02) as device:
        status, out, err = run_client(capsys, SHIPPED_MODEL, "--port", device.port,
                                      "--count", 3)
    assert status == 0
    assert "the device reported framing error before this session" in err
    assert out.splitlines()[0].startswith("image 0: label ")
    assert "3 of 3 answers equal the golden model" in out.splitlines()[-1]


def test_client_fingerprint_mismatch(shipped_net, capsys):
    with DeviceModel(shipped_net, fingerprint=0x1234) as device:
        status, _, err = run_client(capsys, SHIPPED_MODEL, "--port", device.port)
    assert status == 2
    assert "build the bitstream with the same model and --coef-bits" in err


def test_client_coefficient_bits_must_match(shipped_net, capsys):
    """A board built with 5-bit coefficients reports another fingerprint."""
    five = compile_model(load_model(SHIPPED_MODEL), coefficient_bits=5)
    with DeviceModel(five) as device:
        status, _, _ = run_client(capsys, SHIPPED_MODEL, "--port", device.port, "--count", 1)
        assert status == 2
        status, _, err = run_client(capsys, SHIPPED_MODEL, "--port", device.port,
                                    "--count", 1, "--coef-bits", 5)
        assert status == 0, err


def test_client_silent_device_times_out(shipped_net, capsys):
    with DeviceModel(shipped_net, silent=True) as device:
        status, _, err = run_client(capsys, SHIPPED_MODEL, "--port", device.port,
                                    "--timeout", 0.2)
    assert status == 2
    assert "no complete info response" in err
    assert "received 0 of 1 bytes (nothing)" in err


def test_client_loopback_port(capsys):
    status, _, err = run_client(capsys, SHIPPED_MODEL, "--port", "loop://", "--timeout", 0.2)
    assert status == 2
    assert "received 0x49; the port echoes what is sent, so it is looped back" in err


def test_client_images_file(tmp_path, capsys):
    rng = np.random.default_rng(4)
    model = random_model(rng, input_shape=(12,), input_bits=4, layers=[
        dict(type="dense", out=6, m=2), dict(type="dense", out=3, m=2, n=2)], name="small")
    path = tmp_path / "small.npz"
    save_model(model, path)
    images = tmp_path / "images.npz"
    np.savez(images, pixels=rng.integers(0, 16, (4, 12)).astype(np.uint8),
             labels=np.array([0, 1, 2, 0]))
    with DeviceModel(compile_model(model)) as device:
        status, out, err = run_client(capsys, path, "--port", device.port, "--images",
                                      images, "--json")
    assert status == 0, err
    summary = json.loads(out.splitlines()[-1])
    assert summary["images"] == 4
    assert summary["source"] == str(images)
    assert summary["matches_golden"] == 4


@pytest.mark.parametrize("arguments, message", [
    (["--start", 400], "--start 400: the digits test split has images 0 to 359"),
    (["--timeout", 0], "--timeout 0.0: must be a positive number of seconds"),
    (["--images", "absent.npy"], "--images absent.npy: cannot read it as .npy or .npz"),
])
def test_client_usage_errors(capsys, arguments, message):
    status, _, err = run_client(capsys, SHIPPED_MODEL, "--port", "loop://", *arguments)
    assert status == 2
    assert message in err


def test_client_unopenable_port(capsys):
    status, _, err = run_client(capsys, SHIPPED_MODEL, "--port", "/dev/abcnet-absent")
    assert status == 2
    assert "--port /dev/abcnet-absent: cannot open it" in err


def test_client_convolutional_model(capsys):
    """A network that starts with a convolution: the client sends pixel positions in
    row-major order with their channels together."""
    model_path = str(MODELS / "digits-cnn.npz")
    net = compile_model(load_model(model_path))
    with DeviceModel(net) as device:
        status, out, err = run_client(capsys, model_path, "--port", device.port, "--count", 3,
                                      "--json")
    assert status == 0, err
    assert json.loads(out.splitlines()[-1])["matches_golden"] == 3
