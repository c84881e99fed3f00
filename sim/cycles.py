"""The cycle model: cycles per image and latency of the generated pipeline, from its folding.

Each layer engine issues one (neuron fold, synapse fold) pair per cycle, so it needs
II = (K / SIMD)·(O / PE) cycles per input vector, and loads its next input vector in the
cycle of its last issue, with no bubble. Its result reaches the output register
``ENGINE_DEPTH`` cycles after the last issue, and the next layer takes it one cycle later.

With the input always valid and the output always ready, the slowest layer sets the pace
and every other layer waits for it, so

    cycles per image = max over layers of II
    latency          = Σ over layers of (II + ENGINE_DEPTH + 1)

where latency counts from the cycle the image is transferred into the accelerator to the
first cycle its result is valid at the output.

A network that starts with convolutions streams one pixel position per transfer, and its
stages (window generator, engine, pool, flatten) pass positions in bursts that depend on
the geometry, so no closed form is exact. For such a network ``network_timing`` steps
the handshake rules of every component (``sim.handshake``) cycle by cycle from reset,
with the input always valid and the output always ready. It stops when the state of the
whole pipeline at the first input transfer of an image repeats an earlier one. From then
on the pipeline is periodic, so

    cycles per image = (cycles between the two repeating image starts) / (images between)
    latency          = first cycle the first result is valid − cycle of the first input
                       transfer

are exact. The cost is one Python step per component and cycle until the repeat,
usually after a few images. Each layer's ``LayerTiming`` then holds, as
``cycles_per_image``, the lower bound max(II·output positions, input transfers per image),
and as ``latency`` the cycles from the layer's first input transfer to the first cycle
its output is valid.
"""

from dataclasses import dataclass
from fractions import Fraction

from .handshake import EngineModel, FlattenModel, PoolModel, WindowModel

__all__ = ["ENGINE_DEPTH", "LayerTiming", "NetworkTiming", "layer_timing", "network_timing",
           "network_schedule"]

# Pipeline registers between an issue and the output register: accumulate, combine, compare.
ENGINE_DEPTH = 3


@dataclass(frozen=True)
class LayerTiming:
    name: str
    cycles_per_vector: int      # II of the engine
    vectors_per_image: int      # 1 for a dense layer
    cycles_per_image: int
    latency: int                # input transfer to output valid, for the first image


@dataclass(frozen=True)
class NetworkTiming:
    layers: tuple
    cycles_per_image: int
    latency: int

    @property
    def bottleneck(self):
        return max(self.layers, key=lambda layer: layer.cycles_per_image).name


def layer_timing(params):
    ii = params.cycles_per_vector
    if params.type != "dense":
        raise NotImplementedError(f"layer {params.name}: no cycle model for {params.type} layers")
    return LayerTiming(name=params.name, cycles_per_vector=ii, vectors_per_image=1,
                       cycles_per_image=ii, latency=ii + ENGINE_DEPTH + 1)


def network_timing(net):
    if any(params.type == "conv2d" for params in net.layers):
        return _stepped_network_timing(net)
    layers = tuple(layer_timing(params) for params in net.layers)
    return NetworkTiming(layers=layers,
                         cycles_per_image=max(layer.cycles_per_image for layer in layers),
                         latency=sum(layer.latency for layer in layers))


# --- networks with convolutions: the cycle-stepped model -------------------------------

# Images streamed before the model gives up finding a repeating pipeline state.
MAX_IMAGES = 1024


def _stages(net):
    """Return the network's components in stream order as (layer name, handshake model)."""
    stages = []
    after_conv = None
    for params in net.layers:
        if params.type == "conv2d":
            _, height, width = params.in_shape
            window = WindowModel(height=height, width=width, kernel=tuple(params.kernel),
                                 stride=tuple(params.stride), padding=tuple(params.padding))
            stages.append((params.name, window))
            stages.append((params.name, EngineModel(synapse_fold=params.synapse_fold,
                                                    neuron_fold=params.neuron_fold)))
            if params.pool is not None:
                kernel, stride = params.pool
                stages.append((params.name, PoolModel(
                    height=window.out_height, width=window.out_width,
                    kernel=tuple(kernel), stride=tuple(stride))))
            after_conv = params.out_shape
            continue
        if after_conv is not None:
            _, height, width = after_conv
            stages.append((params.name, FlattenModel(positions=height * width)))
            after_conv = None
        stages.append((params.name, EngineModel(synapse_fold=params.synapse_fold,
                                                neuron_fold=params.neuron_fold)))
    return stages


def _vectors_per_image(params):
    """Return the input vectors the layer's engine processes per image, one per output
    position before the pool."""
    if params.type != "conv2d":
        return 1
    _, height, width = params.in_shape
    (kh, kw), (sh, sw), (ph, pw) = params.kernel, params.stride, params.padding
    return ((height + 2 * ph - kh) // sh + 1) * ((width + 2 * pw - kw) // sw + 1)


def _input_transfers(params, previous):
    """Return the transfers into the layer per image: the positions of its input map, or
    one vector."""
    shape = params.in_shape if params.type == "conv2d" else previous
    if shape is None or len(shape) != 3:
        return 1
    return shape[1] * shape[2]


class _Pipeline:
    """The network's handshake models, stepped together with an always-valid input and an
    always-ready output."""

    def __init__(self, net):
        self.stages = _stages(net)
        self.models = [model for _, model in self.stages]
        self.last_stage = {name: index for index, (name, _) in enumerate(self.stages)}
        self.per_image = _input_transfers(net.layers[0], None)
        self.cycle = 0
        self.sent = 0
        self.first_input = {}     # layer name -> cycle of its first input transfer
        self.first_valid = {}     # layer name -> first cycle its output is valid

    def handshakes(self):
        """(accept, out_ready) of every stage in the current cycle."""
        count = len(self.models)
        # ready can depend on the output's ready, so evaluate it from the output backwards.
        out_ready = [True] * count
        ready = [False] * count
        for index in reversed(range(count)):
            ready[index] = self.models[index].ready(out_ready[index])
            if index:
                out_ready[index - 1] = ready[index]
        accept = [ready[0]] + [self.models[index - 1].valid and ready[index]
                               for index in range(1, count)]
        return accept, out_ready

    def state(self):
        return tuple(model.state() for model in self.models)

    def step(self, accept, out_ready):
        """Record this cycle's events and advance every model to the next cycle."""
        for index, (name, model) in enumerate(self.stages):
            if accept[index]:
                self.first_input.setdefault(name, self.cycle)
            if model.valid and index == self.last_stage[name]:
                self.first_valid.setdefault(name, self.cycle)
        self.sent += accept[0]
        for index, model in enumerate(self.models):
            model.step(accept[index], out_ready[index])
        self.cycle += 1


def network_schedule(net, images):
    """Transfer cycles of ``images`` images streamed back to back into a reset accelerator
    with an always-ready output, from the cycle-stepped model.

    Returns (input, output): the cycle of every input transfer (one per pixel position
    for a convolutional first layer, one per image otherwise) and of every result, with
    cycle 0 the first cycle after reset.
    """
    pipeline = _Pipeline(net)
    inputs, outputs = [], []
    total = images * pipeline.per_image
    while len(outputs) < images:
        accept, out_ready = pipeline.handshakes()
        accept[0] = accept[0] and pipeline.sent < total
        if accept[0]:
            inputs.append(pipeline.cycle)
        if pipeline.models[-1].valid:
            outputs.append(pipeline.cycle)
        pipeline.step(accept, out_ready)
    return inputs, outputs


def _stepped_network_timing(net):
    pipeline = _Pipeline(net)
    starts = []         # cycle of the first input transfer of each image
    seen = {}           # pipeline state at an image start -> index of that image
    period = None
    first_result = None
    while period is None or first_result is None:
        accept, out_ready = pipeline.handshakes()
        if accept[0] and pipeline.sent % pipeline.per_image == 0 and period is None:
            state = pipeline.state()
            if state in seen:
                earlier = seen[state]
                period = Fraction(pipeline.cycle - starts[earlier], len(starts) - earlier)
            elif len(starts) == MAX_IMAGES:
                raise RuntimeError(f"network {net.name}: the pipeline state did not repeat "
                                   f"within {MAX_IMAGES} images, so the cycle model has no "
                                   f"steady state to report")
            else:
                seen[state] = len(starts)
                starts.append(pipeline.cycle)
        if first_result is None and pipeline.models[-1].valid:
            first_result = pipeline.cycle
        pipeline.step(accept, out_ready)

    layers = []
    previous = net.input_shape
    for params in net.layers:
        vectors = _vectors_per_image(params)
        # The layer cannot be faster than its engine's work or one input transfer per cycle.
        work = max(params.cycles_per_vector * vectors, _input_transfers(params, previous))
        latency = pipeline.first_valid[params.name] - pipeline.first_input[params.name]
        layers.append(LayerTiming(
            name=params.name, cycles_per_vector=params.cycles_per_vector,
            vectors_per_image=vectors, cycles_per_image=work, latency=latency))
        previous = params.out_shape if params.type == "conv2d" else (params.out_features,)
    cycles_per_image = int(period) if period.denominator == 1 else period
    return NetworkTiming(layers=tuple(layers), cycles_per_image=cycles_per_image,
                         latency=first_result - starts[0])
