import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from amaranth_streams import unpack_elements
from conv_factory import (assert_rejected, geometries, model_transfers, position_payloads,
                          stream_through)
from hw.pool import MaxPool
from sim import integer
from sim.handshake import PoolModel

IMAGES = 2


def check_pool(*, channels, bits, height, width, kernel, stride, polarity, seed):
    """Stream IMAGES random bit maps through a max-pool, without and with stalls.

    Every output must equal ``sim.integer.pool_bits``; without stalls, every transfer
    cycle must equal the ``sim.handshake.PoolModel`` prediction.
    """
    rng = np.random.default_rng(seed)
    maps = rng.integers(0, 1 << bits, (IMAGES, height, width, channels))
    params = types.SimpleNamespace(pool=(kernel, stride), out_bits=bits,
                                   polarity=np.asarray(polarity))
    expected = integer.pool_bits(params, maps).reshape(-1, channels)
    payloads = position_payloads(maps, bits)
    geometry = dict(height=height, width=width, kernel=kernel, stride=stride)

    def pooled(received):
        return np.array([unpack_elements(payload, channels, bits) for payload, _ in received])

    dut = MaxPool(channels=channels, element_bits=bits, polarity=polarity, **geometry)
    sent, received = stream_through(dut, payloads, len(expected))
    np.testing.assert_array_equal(pooled(received), expected, err_msg=f"seed {seed}")
    model_sent, model_received = model_transfers(PoolModel(**geometry), len(payloads),
                                                 len(expected))
    assert sent == model_sent, f"input transfer cycles, seed {seed}"
    assert [at for _, at in received] == model_received, f"output transfer cycles, seed {seed}"

    dut = MaxPool(channels=channels, element_bits=bits, polarity=polarity, **geometry)
    _, received = stream_through(dut, payloads, len(expected), seed=seed, idle=0.3, busy=0.5)
    np.testing.assert_array_equal(pooled(received), expected, err_msg=f"stalls, seed {seed}")


@st.composite
def pools(draw):
    geometry = draw(geometries(max_kernel=4, max_stride=4, max_extra=5, padding=False))
    del geometry["padding"]
    channels = draw(st.integers(1, 3))
    polarity = draw(st.lists(st.sampled_from([1, -1]), min_size=channels, max_size=channels))
    return dict(channels=channels, polarity=polarity, **geometry)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(pool=pools(), bits=st.integers(1, 3), seed=st.integers(0, 2**32 - 1))
def test_pool_random_geometry(pool, bits, seed):
    check_pool(bits=bits, seed=seed, **pool)


@pytest.mark.parametrize("geometry", [
    # Overlapping windows on both axes: an input belongs to up to four windows.
    dict(height=7, width=6, kernel=(3, 3), stride=(2, 1)),
    # Stride larger than the kernel, and floor mode drops the last rows and columns.
    dict(height=8, width=9, kernel=(2, 1), stride=(3, 4)),
    # A 1×L map.
    dict(height=1, width=9, kernel=(1, 3), stride=(1, 2)),
    # The window covers the whole map: a global pool.
    dict(height=5, width=3, kernel=(5, 3), stride=(1, 1)),
], ids=["overlap", "stride_gt_kernel", "1xL", "global"])
def test_pool_edge_cases(geometry):
    check_pool(channels=3, bits=2, polarity=[1, -1, -1], seed=geometry["width"], **geometry)


def test_pool_and_for_negative_polarity():
    """A polarity −1 channel outputs a 1 bit only where every input bit is 1."""
    maps = np.array([[[[1, 0], [1, 0]], [[1, 0], [0, 1]]]])     # (batch, H, W, C)
    params = types.SimpleNamespace(pool=((2, 2), (2, 2)), out_bits=1,
                                   polarity=np.array([-1, 1]))
    dut = MaxPool(channels=2, element_bits=1, height=2, width=2, kernel=(2, 2),
                  stride=(2, 2), polarity=[-1, 1])
    _, received = stream_through(dut, position_payloads(maps, 1), 1)
    expected = integer.pool_bits(params, maps).reshape(-1).tolist()
    assert expected == [0, 1]
    assert unpack_elements(received[0][0], 2, 1) == expected


def make_pool(**changes):
    geometry = dict(channels=2, element_bits=1, height=4, width=4, kernel=(2, 2),
                    stride=(2, 2), polarity=[1, -1])
    geometry.update(changes)
    return lambda: MaxPool(**geometry)


def test_pool_rejects_bad_polarity():
    assert_rejected(make_pool(polarity=[1, 0]), r"polarity must be 2 values of \+1 or -1")


def test_pool_rejects_window_larger_than_map():
    assert_rejected(make_pool(height=2, width=5, kernel=(3, 3), stride=(1, 1)),
                    r"kernel \(3, 3\) with padding \(0, 0\) does not fit the 2x5 input")
