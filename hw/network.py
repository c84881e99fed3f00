"""The whole-network accelerator: one stage per layer, chained by streams."""

import math

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import connect, flipped

from gen.params import NetworkParams

from .conv import ConvolutionStage, Flatten
from .mvau import MatrixVectorUnit

__all__ = ["Accelerator"]


def _check_layer_order(params):
    layers = params.layers
    if not layers:
        raise ValueError(f"network {params.name}: there must be at least one layer")
    names = [layer.name for layer in layers]
    if len(set(names)) != len(names):
        raise ValueError(f"network {params.name}: layer names must be unique, not {names}")
    for layer in layers:
        if layer.type not in ("dense", "conv2d"):
            raise ValueError(f"network {params.name}: layer {layer.name} has type "
                             f"{layer.type!r}, but only \"dense\" and \"conv2d\" are supported")
    for before, after in zip(layers, layers[1:]):
        if before.type == "dense" and after.type == "conv2d":
            raise ValueError(f"network {params.name}: convolution {after.name} follows dense "
                             f"layer {before.name}, but convolutions must come first")
    for layer in layers[:-1]:
        if layer.output != "bases":
            raise ValueError(f"network {params.name}: layer {layer.name} must output \"bases\" "
                             f"because another layer follows it, not {layer.output!r}")
    last = layers[-1]
    if last.type != "dense" or last.output != "scores":
        raise ValueError(f"network {params.name}: the last layer {last.name} must be a dense "
                         f"layer that outputs \"scores\", not a {last.type!r} layer that "
                         f"outputs {last.output!r}")
    if last.out_features != params.classes:
        raise ValueError(f"network {params.name}: the last layer has {last.out_features} "
                         f"outputs, but the network has {params.classes} classes")


def _check_first_layer(params):
    first = params.layers[0]
    if first.in_bits != params.input_bits:
        raise ValueError(f"network {params.name}: layer {first.name} takes {first.in_bits}-bit "
                         f"elements, but the pixels have {params.input_bits} bits")
    if first.type == "conv2d":
        if tuple(first.in_shape) != tuple(params.input_shape):
            raise ValueError(f"network {params.name}: convolution {first.name} takes a "
                             f"{tuple(first.in_shape)} map, but the input shape is "
                             f"{tuple(params.input_shape)}")
        return
    features = math.prod(params.input_shape)
    if first.in_features != features:
        raise ValueError(f"network {params.name}: layer {first.name} takes {first.in_features} "
                         f"elements, but the input has {features} pixels")


def _check_link(params, before, after, before_shape):
    """Check that ``after`` takes what ``before`` outputs. ``before_shape`` is the
    (channels, height, width) after the pool of a convolution ``before``, else None."""
    if before.out_bits != after.in_bits:
        raise ValueError(f"network {params.name}: layer {before.name} outputs "
                         f"{before.out_bits}-bit elements, but layer {after.name} takes "
                         f"{after.in_bits}-bit elements")
    if after.type == "conv2d":
        if tuple(after.in_shape) != tuple(before_shape):
            raise ValueError(f"network {params.name}: convolution {before.name} outputs a "
                             f"{tuple(before_shape)} map, but convolution {after.name} takes "
                             f"{tuple(after.in_shape)}")
        return
    features = before.out_features if before_shape is None else math.prod(before_shape)
    if after.in_features != features:
        raise ValueError(f"network {params.name}: layer {before.name} outputs {features} "
                         f"elements, but layer {after.name} takes {after.in_features}")


def _build_stages(params):
    """Build the stream stages in order: a convolution stage per "conv2d" layer, a flatten
    stage after the last convolution, and an engine per dense layer.

    Returns a list of (submodule name, component).
    """
    _check_layer_order(params)
    _check_first_layer(params)
    stages = []
    map_shape = None            # (channels, height, width) after the previous convolution
    previous = None
    for layer in params.layers:
        if previous is not None:
            _check_link(params, previous, layer, map_shape)
        if layer.type == "conv2d":
            stage = ConvolutionStage(params=layer)
            stages.append((layer.name, stage))
            map_shape = stage.out_shape
        else:
            if map_shape is not None:
                channels, height, width = map_shape
                stages.append((f"{previous.name}_flatten", Flatten(
                    channels=channels, element_bits=previous.out_bits, height=height,
                    width=width)))
                map_shape = None
            stages.append((layer.name, MatrixVectorUnit(params=layer)))
        previous = layer
    return stages


class Accelerator(wiring.Component):
    """Accelerator for a compiled network: the layers' stream stages, each stage's output
    stream driving the next stage's input stream.

    A dense layer is a :class:`~hw.mvau.MatrixVectorUnit`. A convolution is a
    :class:`~hw.conv.ConvolutionStage` (window generator, engine and optional max-pool),
    and a :class:`~hw.conv.Flatten` gathers the last convolution's output positions into
    one vector for the first dense layer.

    For a network of dense layers only, throughput is one image per ``cycles_per_image``
    = max over layers of (K / SIMD)·(O / PE) cycles. An image that enters an idle
    accelerator has its result valid ``latency`` = Σ over layers of (II + 4) cycles after
    its input transfer, when the output is always ready. Later images can wait longer in
    front of a slower layer. For a network with convolutions both numbers come from the
    cycle-stepped model in ``sim.cycles``.

    Parameters
    ----------
    params : :class:`gen.params.NetworkParams`
        The compiled network: convolutions (if any) first, then dense layers. Every layer
        but the last outputs "bases" and the last, a dense layer, outputs "scores".

    Members
    -------
    input : ``In(stream.Signature(...))``
        With a dense first layer, one image per transfer: ``unsigned(features·input_bits)``
        with pixel k, an unsigned ``input_bits`` integer, at bits
        ``[k·input_bits, (k + 1)·input_bits)``. With a convolution first, one pixel
        position per transfer in row-major order: ``unsigned(channels·input_bits)`` with
        channel c at bits ``[c·input_bits, (c + 1)·input_bits)``.
    output : ``Out(stream.Signature(StructLayout(...)))``
        One result per image: ``scores`` (``classes`` signed integers, class 0 first) and
        ``label`` (the index of the largest score, ties to the lowest index).
    """

    def __init__(self, params):
        if not isinstance(params, NetworkParams):
            raise TypeError(f"params must be a NetworkParams, not {params!r}")
        self._params = params
        self._stages = _build_stages(params)
        super().__init__({
            "input": self._stages[0][1].signature.members["input"],
            "output": self._stages[-1][1].signature.members["output"],
        })

    @property
    def params(self):
        """Network parameters the accelerator was built from."""
        return self._params

    @property
    def stages(self):
        """Stream stages in order, one per layer plus the flatten stage, if any."""
        return tuple(stage for _, stage in self._stages)

    @property
    def engines(self):
        """Matrix-vector engines, one per layer, in order."""
        return tuple(stage.engine if isinstance(stage, ConvolutionStage) else stage
                     for stage in self.stages if not isinstance(stage, Flatten))

    @property
    def _dense_only(self):
        return all(layer.type == "dense" for layer in self._params.layers)

    @property
    def cycles_per_image(self):
        """Cycles between images in steady state: the largest initiation interval of a
        dense-only network, or the cycle model's result with convolutions."""
        if self._dense_only:
            return max(engine.cycles_per_vector for engine in self.engines)
        return self._stepped_timing().cycles_per_image

    @property
    def latency(self):
        """Cycles from the input transfer of an image that enters an idle accelerator to its
        output becoming valid, with the output always ready. With convolutions, it counts
        from the image's first input transfer and comes from the cycle model."""
        if self._dense_only:
            return sum(engine.latency for engine in self.engines)
        return self._stepped_timing().latency

    def _stepped_timing(self):
        # Imported here so that the gateware does not depend on the simulation package
        # unless a convolution needs the stepped cycle model.
        from sim.cycles import network_timing
        return network_timing(self._params)

    def elaborate(self, platform):
        m = Module()
        for name, stage in self._stages:
            m.submodules[name] = stage
        components = self.stages
        connect(m, flipped(self.input), components[0].input)
        for before, after in zip(components, components[1:]):
            connect(m, before.output, after.input)
        connect(m, components[-1].output, flipped(self.output))
        return m
