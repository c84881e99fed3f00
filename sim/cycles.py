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
"""

from dataclasses import dataclass

__all__ = ["ENGINE_DEPTH", "LayerTiming", "NetworkTiming", "layer_timing", "network_timing"]

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
    layers = tuple(layer_timing(params) for params in net.layers)
    return NetworkTiming(layers=layers,
                         cycles_per_image=max(layer.cycles_per_image for layer in layers),
                         latency=sum(layer.latency for layer in layers))
