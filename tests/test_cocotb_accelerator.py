"""The generated Verilog under cocotb: bit-exact results and exact cycle counts.

Each simulation runs the two tests of ``sim.testbench.accelerator``. The first streams
every image with no stalls and checks every score, every label, the first result's
latency, every interval between results of a dense network, and the cycle of every
input transfer and every result against ``sim.integer`` and ``sim.cycles``. The second
streams the same images with random input gaps and output backpressure and checks the
results again.
"""

from pathlib import Path

import numpy as np
import pytest
from model_factory import random_model

from gen.compile import compile_model
from sim.cycles import network_schedule, network_timing
from sim.integer import network_forward
from sim.testbench.accelerator import (decode_result, input_payloads, load_job, pack_image,
                                       pack_positions)
from sim.testbench.runner import CocotbTestFailure, run_cocotb, write_job

REPOSITORY = Path(__file__).resolve().parent.parent
SHIPPED_MODEL = REPOSITORY / "weights" / "models" / "digits-mlp.npz"
SHIPPED_CNNS = {
    "digits-cnn": REPOSITORY / "weights" / "models" / "digits-cnn.npz",
    "mnist1d-cnn": REPOSITORY / "weights" / "models" / "mnist1d-cnn.npz",
}
# Test images per shipped CNN, streamed back to back.
SHIPPED_CNN_IMAGES = 200
COCOTB_TESTS = {"results_and_timing_without_stalls", "results_with_random_stalls"}

# Layer descriptions for tests/model_factory.py: three dense layers with 3-bit pixels.
SMALL_LAYERS = [
    {"type": "dense", "out": 12, "m": 2},
    {"type": "dense", "out": 8, "m": 2, "n": 2},
    {"type": "dense", "out": 5, "m": 1, "n": 3},
]
# (pe, simd) per layer. FIRST_LAYER_SLOWEST: II = 16, 12, 4, so the first layer sets the
# pace. LAST_LAYER_SLOWEST: II = 4, 6, 20, so results wait on the last layer and images
# queue inside the pipeline.
FIRST_LAYER_SLOWEST = {"layer0": (3, 6), "layer1": (2, 4), "layer2": (5, 2)}
LAST_LAYER_SLOWEST = {"layer0": (6, 12), "layer1": (4, 4), "layer2": (1, 2)}


# A 3×3 convolution with a 2×2 max-pool on a 2×11×9 image (map 4×5×4), a 3×3 convolution
# with stride 2 along rows (map 6×3×4), and a dense scores layer. CONV_FOLDING gives II 1,
# 54 and 45, so the first engine outruns the second, whose window generator then keeps
# its input ready low until a line buffer row is free.
CONV_LAYERS = [
    {"type": "conv2d", "out": 4, "m": 2, "kernel": (3, 3), "stride": (1, 1),
     "padding": (1, 1), "pool": ((2, 2), (2, 2))},
    {"type": "conv2d", "out": 6, "m": 2, "n": 2, "kernel": (3, 3), "stride": (2, 1),
     "padding": (1, 1)},
    {"type": "dense", "out": 5, "m": 2, "n": 2},
]
CONV_FOLDING = {"layer0": (4, 18), "layer1": (1, 4), "layer2": (1, 8)}


def small_network(folding, seed=1):
    rng = np.random.default_rng(seed)
    model = random_model(rng, input_shape=(24,), input_bits=3, layers=SMALL_LAYERS,
                         name="small")
    net = compile_model(model, folding=folding)
    pixels = rng.integers(0, 1 << net.input_bits, (40, 24))
    return net, pixels


def small_conv_network(seed=1):
    """The CONV_LAYERS network and 20 images (images, 2, 11, 9) of 2-bit pixels. Seed 1
    gives three different labels among them."""
    rng = np.random.default_rng(seed)
    model = random_model(rng, input_shape=(2, 11, 9), input_bits=2, layers=CONV_LAYERS,
                         name="small_conv")
    net = compile_model(model, folding=CONV_FOLDING)
    pixels = rng.integers(0, 1 << net.input_bits, (20, 2, 11, 9))
    return net, pixels


def load_shipped_cnn(name):
    """Compile a shipped CNN at the default folding and return it with its first
    SHIPPED_CNN_IMAGES test images (images, channels, height, width)."""
    from weights.data import load_dataset
    from weights.format import load_model

    model = load_model(SHIPPED_CNNS[name])
    net = compile_model(model)
    dataset = load_dataset(model.training["dataset"])
    pixels = dataset.test_pixels[:SHIPPED_CNN_IMAGES]
    pixels = pixels.reshape(len(pixels), *net.input_shape)
    return net, pixels


def assert_all_passed(run):
    outcomes = {test.name: test.outcome for test in run.tests}
    assert outcomes == {name: "passed" for name in COCOTB_TESTS}


def load_job_from(path):
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ABCNET_JOB", str(path))
        return load_job()


def test_pack_and_decode_payloads():
    assert pack_image([1, 0, 7, 2], 3) == 1 | (7 << 6) | (2 << 9)

    class Layout:
        classes, score_width, scores_offset, label_width, label_offset = 3, 6, 0, 2, 18

    payload = (5 & 63) | ((-32 & 63) << 6) | ((31 & 63) << 12) | (2 << 18)
    assert decode_result(payload, Layout) == ([5, -32, 31], 2)


def test_pack_positions_row_major():
    image = np.arange(2 * 2 * 3).reshape(2, 2, 3)     # channel c, row r, column k: 6c + 3r + k
    payloads = pack_positions(image, 4)

    assert len(payloads) == 6
    for position, payload in enumerate(payloads):
        row, column = divmod(position, 3)
        assert payload == (3 * row + column) | ((6 + 3 * row + column) << 4)


def test_job_file_round_trip(tmp_path):
    net, pixels = small_network(FIRST_LAYER_SLOWEST)
    path = write_job(tmp_path / "job.npz", net, pixels, scores_offset=0,
                     label_offset=net.classes * net.layers[-1].score_width,
                     source_stall=0.25, sink_stall=0.5, seed=9)
    job = load_job_from(path)
    expected = network_forward(net, pixels)
    timing = network_timing(net)

    assert np.array_equal(job.pixels, pixels)
    assert np.array_equal(job.expected_scores, expected.scores)
    assert np.array_equal(job.expected_labels, expected.labels)
    assert (job.cycles_per_image, job.latency) == (timing.cycles_per_image, timing.latency)
    assert (job.source_stall, job.sink_stall, job.stall_seed) == (0.25, 0.5, 9)


def test_conv_job_streams_positions(tmp_path):
    net, pixels = small_conv_network()
    path = write_job(tmp_path / "job.npz", net, pixels, scores_offset=0,
                     label_offset=net.classes * net.layers[-1].score_width)
    job = load_job_from(path)
    inputs, results = network_schedule(net, len(pixels))
    timing = network_timing(net)

    assert np.array_equal(job.pixels, pixels)
    assert job.transfers_per_image == 11 * 9
    payloads = input_payloads(job)
    assert len(payloads) == 20 * 11 * 9
    assert payloads[9 + 2] == pixels[0, 0, 1, 2] | (pixels[0, 1, 1, 2] << 2)
    assert payloads[99] == pixels[1, 0, 0, 0] | (pixels[1, 1, 0, 0] << 2)
    assert job.input_cycles.tolist() == [cycle - inputs[0] for cycle in inputs]
    assert job.result_cycles.tolist() == [cycle - inputs[0] for cycle in results]
    assert (job.cycles_per_image, job.latency) == (timing.cycles_per_image, timing.latency)
    assert len(set(job.expected_labels.tolist())) == 3


def test_conv_job_rejects_flat_pixels(tmp_path):
    net, pixels = small_conv_network()
    with pytest.raises(ValueError, match=r"must have shape \(images, 2, 11, 9\)"):
        write_job(tmp_path / "job.npz", net, pixels.reshape(len(pixels), -1),
                  scores_offset=0, label_offset=0)


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_small_network_matches_models(simulator, tmp_path):
    net, pixels = small_network(FIRST_LAYER_SLOWEST)
    run = run_cocotb(net, pixels, tmp_path, simulator=simulator, source_stall=0.5,
                     sink_stall=0.95, seed=3)
    assert_all_passed(run)


@pytest.mark.slow
def test_last_layer_bottleneck_matches_models(tmp_path):
    """Images queue in front of the slow last layer, so each waits longer than the one
    before until the queue is full. The cocotb test checks every result's cycle."""
    net, pixels = small_network(LAST_LAYER_SLOWEST, seed=2)
    timing = network_timing(net)
    inputs, results = network_schedule(net, len(pixels))
    latencies = np.subtract(results, inputs)
    assert timing.bottleneck == "layer2"
    assert latencies[0] == timing.latency
    assert latencies[-1] > latencies[0]
    assert np.all(np.diff(latencies) >= 0)
    run = run_cocotb(net, pixels, tmp_path, simulator="icarus", source_stall=0.3,
                     sink_stall=0.9, seed=4)
    assert_all_passed(run)


@pytest.mark.slow
def test_wrong_latency_is_reported(tmp_path):
    net, pixels = small_network(FIRST_LAYER_SLOWEST)
    timing = network_timing(net)

    class OffByOne:
        cycles_per_image = timing.cycles_per_image
        latency = timing.latency + 1

    with pytest.raises(CocotbTestFailure, match="the cycle model predicts"):
        run_cocotb(net, pixels, tmp_path, simulator="icarus", timing=OffByOne,
                   testcases=["results_and_timing_without_stalls"])


@pytest.mark.slow
@pytest.mark.parametrize("simulator", ["verilator", "icarus"])
def test_small_conv_network_matches_models(simulator, tmp_path):
    net, pixels = small_conv_network()
    run = run_cocotb(net, pixels, tmp_path, simulator=simulator, source_stall=0.5,
                     sink_stall=0.9, seed=6)
    assert_all_passed(run)


@pytest.mark.slow
def test_wrong_result_cycle_is_reported(tmp_path):
    net, pixels = small_conv_network()
    inputs, results = network_schedule(net, len(pixels))
    results[5] += 1

    with pytest.raises(CocotbTestFailure, match=r"1 of 20 result valid cycles differ"):
        run_cocotb(net, pixels, tmp_path, simulator="icarus", schedule=(inputs, results),
                   testcases=["results_and_timing_without_stalls"])


@pytest.mark.slow
def test_wrong_score_is_reported(tmp_path):
    net, pixels = small_network(FIRST_LAYER_SLOWEST)
    expected = network_forward(net, pixels)
    expected.scores[7, 2] += 1

    with pytest.raises(CocotbTestFailure, match="1 of 40 score vectors differ"):
        run_cocotb(net, pixels, tmp_path, simulator="icarus", expected=expected,
                   testcases=["results_with_random_stalls"])


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED_MODEL.exists(),
                    reason=f"{SHIPPED_MODEL.relative_to(REPOSITORY)} is not there yet; "
                           f"train and export it with the weights package")
def test_shipped_model_on_test_images(tmp_path):
    from weights.data import load_dataset
    from weights.format import load_model

    model = load_model(SHIPPED_MODEL)
    net = compile_model(model)
    dataset = load_dataset(model.training.get("dataset", "digits"))
    pixels = dataset.test_pixels.reshape(len(dataset.test_pixels), -1)
    assert len(pixels) >= 200

    run = run_cocotb(net, pixels, tmp_path, simulator="verilator", source_stall=0.5,
                     sink_stall=0.9, seed=5)
    assert_all_passed(run)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SHIPPED_CNNS))
def test_shipped_cnn_on_test_images(name, tmp_path):
    if not SHIPPED_CNNS[name].exists():
        pytest.skip(f"{SHIPPED_CNNS[name].relative_to(REPOSITORY)} is not there yet; train "
                    f"and export it with the weights package")
    net, pixels = load_shipped_cnn(name)
    assert net.layers[0].type == "conv2d"
    assert len(pixels) == SHIPPED_CNN_IMAGES

    run = run_cocotb(net, pixels, tmp_path, simulator="verilator", source_stall=0.3,
                     sink_stall=0.9, seed=7)
    assert_all_passed(run)
