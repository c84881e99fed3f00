import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amaranth_streams import unpack_elements
from conv_factory import (assert_rejected, geometries, model_transfers, position_payloads,
                          stream_through)
from hw.window import WindowGenerator
from sim import integer
from sim.handshake import WindowModel

IMAGES = 2


def check_windows(*, channels, bits, height, width, kernel, stride, padding, seed):
    """Stream IMAGES random maps through a window generator, without and with stalls.

    Every window must equal ``sim.integer.im2col``; without stalls, every transfer cycle
    must equal the ``sim.handshake.WindowModel`` prediction.
    """
    rng = np.random.default_rng(seed)
    maps = rng.integers(0, 1 << bits, (IMAGES, height, width, channels))
    expected = integer.im2col(maps, kernel, stride, padding)
    expected = expected.reshape(-1, expected.shape[-1])
    elements = kernel[0] * kernel[1] * channels
    geometry = dict(height=height, width=width, kernel=kernel, stride=stride, padding=padding)
    payloads = position_payloads(maps, bits)

    def windows(received):
        return np.array([unpack_elements(payload, elements, bits) for payload, _ in received])

    dut = WindowGenerator(channels=channels, element_bits=bits, **geometry)
    sent, received = stream_through(dut, payloads, len(expected))
    np.testing.assert_array_equal(windows(received), expected, err_msg=f"seed {seed}")
    model_sent, model_received = model_transfers(WindowModel(**geometry), len(payloads),
                                                 len(expected))
    assert sent == model_sent, f"input transfer cycles, seed {seed}"
    assert [at for _, at in received] == model_received, f"output transfer cycles, seed {seed}"

    dut = WindowGenerator(channels=channels, element_bits=bits, **geometry)
    _, received = stream_through(dut, payloads, len(expected), seed=seed, idle=0.3, busy=0.4)
    np.testing.assert_array_equal(windows(received), expected, err_msg=f"stalls, seed {seed}")


@settings(max_examples=30, deadline=None, derandomize=True)
@given(geometry=geometries(), channels=st.integers(1, 3), bits=st.integers(1, 3),
       seed=st.integers(0, 2**32 - 1))
def test_window_random_geometry(geometry, channels, bits, seed):
    check_windows(channels=channels, bits=bits, seed=seed, **geometry)


@pytest.mark.parametrize("geometry", [
    # A 1×L image with a 1×3 kernel, padding on the columns only.
    dict(height=1, width=11, kernel=(1, 3), stride=(1, 2), padding=(0, 1)),
    # Stride larger than the kernel: rows and columns between windows are never read.
    dict(height=9, width=8, kernel=(2, 1), stride=(3, 3), padding=(1, 0)),
    # A 7×7 kernel with padding 6 on a 2×3 image: most window elements are padding.
    dict(height=2, width=3, kernel=(7, 7), stride=(1, 1), padding=(6, 6)),
    # Odd size that the stride does not divide; floor mode drops the last row and column.
    dict(height=7, width=7, kernel=(3, 3), stride=(2, 3), padding=(0, 0)),
    # The kernel covers the whole image: one window per image.
    dict(height=4, width=5, kernel=(4, 5), stride=(1, 1), padding=(0, 0)),
    # 1×1 kernel: the output equals the input.
    dict(height=3, width=4, kernel=(1, 1), stride=(1, 1), padding=(0, 0)),
], ids=["1xL", "stride_gt_kernel", "k7_pad6", "odd_floor", "whole_image", "k1"])
def test_window_edge_cases(geometry):
    check_windows(channels=2, bits=2, seed=sum(geometry["kernel"]) + geometry["width"],
                  **geometry)


def test_window_buffer_rows():
    dut = WindowGenerator(channels=4, element_bits=2, height=28, width=28, kernel=(5, 3),
                          stride=(2, 1), padding=(2, 1))
    assert dut.buffer_rows == 5 + 2
    assert dut.buffer_bits == 7 * 28 * 4 * 2
    assert (dut.out_height, dut.out_width) == (14, 28)


def make_window(**changes):
    geometry = dict(channels=1, element_bits=1, height=5, width=5, kernel=(3, 3),
                    stride=(1, 1), padding=(0, 0))
    geometry.update(changes)
    return lambda: WindowGenerator(**geometry)


def test_window_rejects_padding_not_below_kernel():
    assert_rejected(make_window(padding=(1, 3)),
                    r"padding \(1, 3\) must be smaller than the kernel \(3, 3\)")


def test_window_rejects_kernel_larger_than_image():
    assert_rejected(make_window(height=2, width=4, kernel=(5, 1), padding=(1, 0)),
                    r"kernel \(5, 1\) with padding \(1, 0\) does not fit the 2x4 input")


def test_window_rejects_zero_stride():
    assert_rejected(make_window(stride=(0, 1)),
                    r"stride must be a pair of integers of at least 1")
