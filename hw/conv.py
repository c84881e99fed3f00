"""Convolution stages: window generator, matrix-vector engine and max-pool; and the flatten
stage between the last convolution and a dense layer."""

import numbers

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from gen.params import LayerParams

from .mvau import MatrixVectorUnit
from .pool import MaxPool
from .window import WindowGenerator

__all__ = ["ConvolutionStage", "Flatten"]


def _check_conv_params(params):
    if not isinstance(params, LayerParams):
        raise TypeError(f"params must be a LayerParams, not {params!r}")
    if params.type != "conv2d":
        raise ValueError(f"layer {params.name}: a convolution stage needs a conv2d layer, "
                         f"not {params.type!r}")
    if params.output != "bases":
        raise ValueError(f"layer {params.name}: a convolution must output bases; a network "
                         f"ends with a dense layer that outputs the scores")
    channels, _, _ = params.in_shape
    kh, kw = params.kernel
    if params.in_features != kh * kw * channels:
        raise ValueError(f"layer {params.name}: in_features ({params.in_features}) must equal "
                         f"kernel rows × kernel columns × input channels "
                         f"({kh}·{kw}·{channels} = {kh * kw * channels})")


class ConvolutionStage(wiring.Component):
    """One convolution layer: window generator → matrix-vector engine → optional max-pool.

    The window generator (:class:`hw.window.WindowGenerator`) turns the input position
    stream into one window of K = kh·kw·C elements per output position, in the (kernel
    row, kernel column, channel) order of the layer's weights. The matrix-vector engine
    (:class:`hw.mvau.MatrixVectorUnit`) thresholds each window into O output elements.
    When the layer pools, :class:`hw.pool.MaxPool` pools those bits, which gives the same
    bits as pooling y before the threshold.

    Throughput is bounded by the engine, ``cycles_per_vector`` cycles per window, and by
    the input, one position per cycle; ``sim.cycles`` gives the exact timing.

    Parameters
    ----------
    params : :class:`gen.params.LayerParams`
        A "conv2d" layer that outputs "bases", with its geometry (``in_shape``,
        ``kernel``, ``stride``, ``padding``, ``pool``, ``out_shape``).

    Members
    -------
    input : ``In(stream.Signature(unsigned(C·in_bits)))``
        One input position per transfer, row-major: element c at bits
        ``[c·in_bits, (c + 1)·in_bits)``.
    output : ``Out(stream.Signature(unsigned(O·out_bits)))``
        One output position (after the pool) per transfer, row-major: channel o at bits
        ``[o·out_bits, (o + 1)·out_bits)``.
    """

    def __init__(self, *, params):
        _check_conv_params(params)
        self._params = params
        channels, height, width = params.in_shape
        self.window = WindowGenerator(
            channels=channels, element_bits=params.in_bits, height=height, width=width,
            kernel=tuple(params.kernel), stride=tuple(params.stride),
            padding=tuple(params.padding))
        self.engine = MatrixVectorUnit(params=params)
        self.pool = None
        if params.pool is not None:
            pool_kernel, pool_stride = params.pool
            self.pool = MaxPool(
                channels=params.out_features, element_bits=params.out_bits,
                height=self.window.out_height, width=self.window.out_width,
                kernel=tuple(pool_kernel), stride=tuple(pool_stride),
                polarity=params.polarity)
            pooled = (params.out_features, self.pool.out_height, self.pool.out_width)
        else:
            pooled = (params.out_features, self.window.out_height, self.window.out_width)
        if params.out_shape is not None and tuple(params.out_shape) != pooled:
            raise ValueError(f"layer {params.name}: out_shape {tuple(params.out_shape)} does "
                             f"not match the geometry, which gives {pooled}")
        self._out_shape = pooled
        super().__init__({
            "input": In(stream.Signature(unsigned(channels * params.in_bits))),
            "output": Out(stream.Signature(unsigned(params.out_features * params.out_bits))),
        })

    @property
    def params(self):
        return self._params

    @property
    def out_shape(self):
        """(channels, height, width) of the output feature map, after the pool."""
        return self._out_shape

    def elaborate(self, platform):
        m = Module()
        m.submodules.window = self.window
        m.submodules.engine = self.engine
        wiring.connect(m, wiring.flipped(self.input), self.window.input)
        wiring.connect(m, self.window.output, self.engine.input)
        if self.pool is None:
            wiring.connect(m, self.engine.output, wiring.flipped(self.output))
        else:
            m.submodules.pool = self.pool
            wiring.connect(m, self.engine.output, self.pool.input)
            wiring.connect(m, self.pool.output, wiring.flipped(self.output))
        return m


class Flatten(wiring.Component):
    """Gather the positions of a feature map into one vector for a dense layer.

    Output element ``(r·width + c)·C + ch`` is channel ch of position (r, c): the
    (row, column, channel) order in which the compiler lays out a dense layer's weights
    after a convolution.

    Timing: ``input.ready`` is high unless a complete vector waits in the register and
    the output is not ready, so with a ready output the stage takes one position per
    cycle. The vector is valid from the cycle after its last position transfers.

    Parameters
    ----------
    channels : int
        C, elements per position.
    element_bits : int
        b, bits per element.
    height, width : int
        Size of the feature map.

    Members
    -------
    input : ``In(stream.Signature(unsigned(C·b)))``
        One position per transfer, row-major.
    output : ``Out(stream.Signature(unsigned(height·width·C·b)))``
        The whole feature map: position p = r·width + c at bits
        ``[p·C·b, (p + 1)·C·b)``.
    """

    def __init__(self, *, channels, element_bits, height, width):
        for name, value in (("channels", channels), ("element_bits", element_bits),
                            ("height", height), ("width", width)):
            if not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        self._positions = int(height * width)
        self._position_width = int(channels * element_bits)
        super().__init__({
            "input": In(stream.Signature(unsigned(self._position_width))),
            "output": Out(stream.Signature(unsigned(self._positions * self._position_width))),
        })

    def elaborate(self, platform):
        m = Module()
        positions, width = self._positions, self._position_width
        vector = Signal(positions * width)
        count = Signal(range(positions))
        full = Signal()
        accept = Signal()
        m.d.comb += [
            self.input.ready.eq(~full | self.output.ready),
            accept.eq(self.input.valid & self.input.ready),
            self.output.valid.eq(full),
            self.output.payload.eq(vector),
        ]
        # Positions shift in from the top, so after the last one position 0 is at bit 0.
        # A transfer out reads the register before the shift, so a new image may start
        # in the same cycle.
        with m.If(accept):
            m.d.sync += [
                vector.eq(Cat(vector[width:], self.input.payload)),
                count.eq(Mux(count == positions - 1, 0, count + 1)),
            ]
        with m.If(accept & (count == positions - 1)):
            m.d.sync += full.eq(1)
        with m.Elif(self.output.ready):
            m.d.sync += full.eq(0)
        return m
