import dataclasses
import functools
import gc
import warnings
import zlib

import numpy as np
import pytest
from amaranth.hdl import UnusedElaboratable

from amaranth_streams import (Harness, get_stream, pack_elements, put_stream, run_simulation,
                              unpack_elements)
from hw.mvau import MatrixVectorUnit, offset_words, threshold_words, weight_words
from layer_factory import extreme_inputs, extreme_layer, random_inputs, random_layer, tie_scores
from sim import integer

CONFIGS = {
    # K = 100 is not a multiple of 8, 32 or 64; both folds > 1.
    "k100_pe2_simd25": dict(in_features=100, out_features=6, in_bits=2, m_bases=3, out_bits=2,
                            pe=2, simd=25),
    # PE = 1, SIMD = 1: II = K·O.
    "k75_pe1_simd1": dict(in_features=75, out_features=3, in_bits=3, m_bases=2, out_bits=1,
                          pe=1, simd=1),
    # PE = O, SIMD = K: the whole layer in one cycle, II = 1.
    "k64_pe8_simd64": dict(in_features=64, out_features=8, in_bits=1, m_bases=4, out_bits=3,
                           pe=8, simd=64),
    "scores_k40_pe5_simd8": dict(in_features=40, out_features=10, in_bits=2, m_bases=3,
                                 out_bits=None, pe=5, simd=8),
    "scores_k30_pe1_simd1": dict(in_features=30, out_features=4, in_bits=2, m_bases=2,
                                 out_bits=None, pe=1, simd=1),
    "scores_k32_pe10_simd32": dict(in_features=32, out_features=10, in_bits=3, m_bases=3,
                                   out_bits=None, pe=10, simd=32),
}
VECTORS = 8


def seed_for(name):
    return zlib.crc32(name.encode())


def make_layer(name):
    """The layer of CONFIGS[name] and the inputs its thresholds were placed for."""
    config = CONFIGS[name]
    rng = np.random.default_rng(seed_for(name))
    x = random_inputs(rng, VECTORS, config["in_features"], config["in_bits"])
    return random_layer(rng, inputs=x, name=name, **config), x


def decode_outputs(layer, received):
    """Stream payloads as the golden model's arrays: elements, or (scores, labels)."""
    payloads = [payload for payload, _ in received]
    if layer.output == "bases":
        return np.array([unpack_elements(p, layer.out_features, layer.out_bits)
                         for p in payloads], dtype=np.int64).reshape(-1, layer.out_features)
    scores = np.array([list(p.scores) for p in payloads], dtype=np.int64)
    labels = np.array([p.label for p in payloads], dtype=np.int64)
    return scores, labels


def run_layer(layer, x, *, seed=None, idle=0.0, busy=0.0, drain=0):
    """Stream ``x`` through the engine, with random valid and ready gaps when given a seed.

    After the last output the sink keeps ready high for ``drain`` more cycles and counts
    any further valid cycles as ``extra`` (duplicated outputs).
    """
    dut = MatrixVectorUnit(params=layer)
    harness = Harness(dut)
    source_rng = None if seed is None else np.random.default_rng([seed, 0])
    sink_rng = None if seed is None else np.random.default_rng([seed, 1])
    payloads = [pack_elements(row, layer.in_bits) for row in x]
    result = {"dut": dut}

    async def source(ctx):
        result["sent"] = await put_stream(ctx, dut.input, payloads, cycle=harness.cycle,
                                          rng=source_rng, idle=idle)

    async def sink(ctx):
        result["received"] = await get_stream(ctx, dut.output, len(payloads),
                                              cycle=harness.cycle, rng=sink_rng, busy=busy)
        ctx.set(dut.output.ready, 1)
        extra = 0
        for _ in range(drain):
            _, _, valid = await ctx.tick().sample(dut.output.valid)
            extra += valid
        result["extra"] = extra

    run_simulation(harness, [source, sink])
    return result


def assert_matches_golden(layer, x, received, seed):
    expected = integer.layer_forward(layer, x)
    got = decode_outputs(layer, received)
    if layer.output == "bases":
        np.testing.assert_array_equal(got, expected, err_msg=f"seed {seed}")
    else:
        np.testing.assert_array_equal(got[0], expected[0], err_msg=f"scores, seed {seed}")
        np.testing.assert_array_equal(got[1], expected[1], err_msg=f"labels, seed {seed}")


@functools.cache
def unstalled_run(name):
    """One run of CONFIGS[name] with the input always valid and the output always ready."""
    layer, x = make_layer(name)
    return layer, x, run_layer(layer, x)


@pytest.mark.parametrize("name", CONFIGS)
def test_mvau_matches_golden(name):
    layer, x, result = unstalled_run(name)
    assert_matches_golden(layer, x, result["received"], seed_for(name))


@pytest.mark.parametrize("name", CONFIGS)
def test_mvau_initiation_interval(name):
    layer, _, result = unstalled_run(name)
    dut = result["dut"]
    input_gaps = np.diff(result["sent"])
    output_gaps = np.diff([at for _, at in result["received"]])
    assert dut.cycles_per_vector == layer.synapse_fold * layer.neuron_fold
    assert list(input_gaps) == [dut.cycles_per_vector] * (VECTORS - 1)
    assert list(output_gaps) == [dut.cycles_per_vector] * (VECTORS - 1)


@pytest.mark.parametrize("name", CONFIGS)
def test_mvau_latency(name):
    _, _, result = unstalled_run(name)
    dut = result["dut"]
    latencies = [out_at - in_at for (_, out_at), in_at in zip(result["received"], result["sent"])]
    assert dut.latency == dut.cycles_per_vector + 4
    assert latencies == [dut.latency] * VECTORS


@pytest.mark.parametrize("name", CONFIGS)
def test_mvau_random_stalls(name):
    layer, x = make_layer(name)
    seed = seed_for(name) + 1
    result = run_layer(layer, x, seed=seed, idle=0.3, busy=0.5,
                       drain=2 * layer.cycles_per_vector + 8)
    assert_matches_golden(layer, x, result["received"], seed)
    assert result["extra"] == 0, f"outputs after the last expected one, seed {seed}"


def test_mvau_keeps_computing_while_output_waits():
    """The engine stalls only once its write stage contains a result.

    With SF = 4, NF = 1 and the output not ready, the pipeline fills: vector 0 waits in the
    output register, the result of vector 1 in the write stage and vector 2 in the input
    register, so exactly three inputs are accepted before the output is released.
    """
    seed = seed_for("output_waits")
    rng = np.random.default_rng(seed)
    x = random_inputs(rng, 6, 32, 2)
    layer = random_layer(rng, in_features=32, out_features=3, in_bits=2, m_bases=2,
                         out_bits=2, pe=3, simd=8, inputs=x)
    dut = MatrixVectorUnit(params=layer)
    harness = Harness(dut)
    wait = 40
    result = {}

    async def source(ctx):
        result["sent"] = await put_stream(ctx, dut.input,
                                          [pack_elements(row, layer.in_bits) for row in x],
                                          cycle=harness.cycle)

    async def sink(ctx):
        await ctx.tick().repeat(wait)
        result["received"] = await get_stream(ctx, dut.output, len(x), cycle=harness.cycle)

    run_simulation(harness, [source, sink])
    accepted_while_waiting = sum(at < wait for at in result["sent"])
    assert accepted_while_waiting == 3
    assert_matches_golden(layer, x, result["received"], seed)


@pytest.mark.parametrize("output", ["bases", "scores"])
def test_mvau_extreme_widths(output):
    """K = 256 with maximal coefficients: popcounts reach K and y reaches ±y_bound."""
    seed = seed_for(f"extreme_{output}")
    rng = np.random.default_rng(seed)
    layer = extreme_layer(rng, in_features=256, out_features=4, in_bits=2, m_bases=3,
                          out_bits=2 if output == "bases" else None, pe=2, simd=64)
    x = np.concatenate([extreme_inputs(layer, channel) for channel in range(4)]
                       + [random_inputs(rng, 2, 256, 2)])
    y = integer.layer_y(layer, x)
    assert y.max() == layer.y_bound
    assert y.min() == -layer.y_bound
    result = run_layer(layer, x, seed=seed, idle=0.2, busy=0.3)
    assert_matches_golden(layer, x, result["received"], seed)


@pytest.mark.parametrize("pe", [1, 5, 10])
def test_mvau_argmax_ties_to_lowest(pe):
    """Channels 3, 6 and 9 always tie for the largest score, so the label must be 3."""
    seed = seed_for(f"ties_{pe}")
    rng = np.random.default_rng(seed)
    x = random_inputs(rng, 4, 20, 2)
    layer = random_layer(rng, in_features=20, out_features=10, in_bits=2, m_bases=2,
                         out_bits=None, pe=pe, simd=10, inputs=x)
    layer = tie_scores(layer, [9, 6, 3])
    scores, labels = integer.layer_forward(layer, x)
    assert (scores[:, 3] == scores.max(axis=1)).all()
    assert (scores[:, 6] == scores[:, 3]).all()
    assert (scores[:, 9] == scores[:, 3]).all()
    result = run_layer(layer, x)
    got_scores, got_labels = decode_outputs(layer, result["received"])
    np.testing.assert_array_equal(got_scores, scores, err_msg=f"seed {seed}")
    np.testing.assert_array_equal(got_labels, labels, err_msg=f"seed {seed}")


def test_weight_words_layout():
    layer, _ = make_layer("k100_pe2_simd25")
    words = weight_words(layer)
    m_bases, pe, simd = layer.m_bases, layer.pe, layer.simd
    assert len(words) == layer.neuron_fold * layer.synapse_fold
    for nf in range(layer.neuron_fold):
        for sf in range(layer.synapse_fold):
            word = words[nf * layer.synapse_fold + sf]
            for lane in range(pe):
                for base in range(m_bases):
                    for s in range(simd):
                        bit = (word >> ((lane * m_bases + base) * simd + s)) & 1
                        assert bit == layer.weights[base, nf * pe + lane, sf * simd + s]


def test_threshold_words_layout():
    layer, _ = make_layer("k100_pe2_simd25")
    words = threshold_words(layer)
    width, out_bits = layer.threshold_width, layer.out_bits
    field_width = out_bits * width + 1
    for channel in range(layer.out_features):
        nf, lane = divmod(channel, layer.pe)
        field = words[nf] >> (lane * field_width)
        for bit in range(out_bits):
            raw = (field >> (bit * width)) & ((1 << width) - 1)
            value = raw - (1 << width) if raw >> (width - 1) else raw
            assert value == layer.thresholds[channel, bit]
        negative = (field >> (out_bits * width)) & 1
        assert negative == (layer.polarity[channel] < 0)


def test_offset_words_layout():
    layer, _ = make_layer("scores_k40_pe5_simd8")
    words = offset_words(layer)
    width = layer.score_width
    for channel in range(layer.out_features):
        nf, lane = divmod(channel, layer.pe)
        raw = (words[nf] >> (lane * width)) & ((1 << width) - 1)
        value = raw - (1 << width) if raw >> (width - 1) else raw
        assert value == layer.score_offset[channel]


def assert_rejected(params, error, match):
    """Check that the constructor raises ``error``. The half-built engine's warning about
    never being elaborated is expected and silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(error, match=match):
            MatrixVectorUnit(params=params)
        gc.collect()


def test_mvau_rejects_uneven_synapse_fold():
    layer, _ = make_layer("k100_pe2_simd25")
    assert_rejected(dataclasses.replace(layer, simd=30), ValueError,
                    r"in_features \(100\) must be a multiple of simd \(30\)")


def test_mvau_rejects_uneven_neuron_fold():
    layer, _ = make_layer("k100_pe2_simd25")
    assert_rejected(dataclasses.replace(layer, pe=4), ValueError,
                    r"out_features \(6\) must be a multiple of pe \(4\)")


def test_mvau_rejects_threshold_out_of_range():
    layer, _ = make_layer("k100_pe2_simd25")
    thresholds = layer.thresholds.copy()
    thresholds[0, 0] = layer.y_bound + 2
    assert_rejected(dataclasses.replace(layer, thresholds=thresholds), ValueError,
                    "thresholds must lie in")


def test_mvau_rejects_non_params():
    assert_rejected({"in_features": 4}, TypeError, "params must be a LayerParams")
