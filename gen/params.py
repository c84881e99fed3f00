"""The integer hardware parameters the compiler chooses for each layer.

These frozen records are the contract between the compiler (``gen.compile``), the
bit-exact golden model (``sim.integer``), the cycle model (``sim.cycles``) and the
Amaranth components (``hw``). They import numpy only.

Integer semantics of one layer, for one output channel c and one input vector
(after im2col for convolutions) of K elements, each ``in_bits`` bits wide:

    p[m, n] = popcount(XNOR(w[m, c, :], bit n of every input element))   in [0, K]
    d[m, n] = 2·p[m, n] − K                                              in [−K, K]
    y       = Σ_m Σ_n coefficients[m, n]·d[m, n]                         (exact integer)

A "bases" layer then outputs ``out_bits`` bits per channel:

    polarity[c] = +1:  bit n = [y ≥ thresholds[c, n]]
    polarity[c] = −1:  bit n = [y ≤ thresholds[c, n]]

A "scores" layer outputs ``y + score_offset[c]`` for every class and the index of the
largest, ties going to the lowest index.
"""

from dataclasses import dataclass

import numpy as np

__all__ = ["LayerParams", "NetworkParams", "signed_width", "unsigned_width"]


def unsigned_width(value):
    """Bits needed to hold the unsigned integers 0 to ``value``."""
    return max(1, int(value).bit_length())


def signed_width(low, high):
    """Bits needed to hold every signed integer from ``low`` to ``high`` in two's complement."""
    bits = 1
    while not (-(1 << (bits - 1)) <= low and high <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


@dataclass(frozen=True, eq=False)
class LayerParams:
    """Integer parameters and folding of one layer.

    ``weights`` has shape (M, O, K) with values {0, 1} (1 means +1), K in the order in
    which the hardware streams the input elements: for a dense layer after a convolution
    that is (row, column, channel), for a convolution (kernel row, kernel column, channel).
    """
    name: str
    type: str                       # "dense" or "conv2d"
    in_features: int                # K
    out_features: int               # O
    in_bits: int                    # bits per input element: P pixel bits or N bases
    m_bases: int                    # M
    weights: np.ndarray             # uint8 (M, O, K)
    coefficients: np.ndarray        # int64 (M, in_bits)
    scale: float                    # y ≈ scale·(float y − per-channel constant)
    output: str                     # "bases" or "scores"
    out_bits: int | None            # N of the next layer; None for "scores"
    thresholds: np.ndarray | None   # int64 (O, out_bits) for "bases"
    polarity: np.ndarray | None     # int8 (O,), +1 or −1, for "bases"
    score_offset: np.ndarray | None  # int64 (O,) for "scores"
    pe: int                         # output channels computed in parallel
    simd: int                       # input elements consumed per cycle
    # Convolution geometry (None for dense layers).
    in_shape: tuple | None = None   # (channels, height, width) of the layer's input
    kernel: tuple | None = None
    stride: tuple | None = None
    padding: tuple | None = None
    pool: tuple | None = None       # ((kh, kw), (sh, sw)) or None
    out_shape: tuple | None = None  # (channels, height, width) after the pool

    @property
    def synapse_fold(self):
        """Cycles to consume one input vector for one group of PE outputs: K / SIMD."""
        return self.in_features // self.simd

    @property
    def neuron_fold(self):
        """Groups of PE outputs per input vector: O / PE."""
        return self.out_features // self.pe

    @property
    def cycles_per_vector(self):
        """Initiation interval of the XNOR-popcount engine for one input vector."""
        return self.synapse_fold * self.neuron_fold

    @property
    def popcount_width(self):
        return unsigned_width(self.in_features)

    @property
    def y_bound(self):
        """Largest |y| any input can produce: K·Σ|C|."""
        return self.in_features * int(np.abs(self.coefficients).sum())

    @property
    def y_width(self):
        return signed_width(-self.y_bound, self.y_bound)

    @property
    def threshold_width(self):
        """Thresholds are clipped to [−y_bound − 1, y_bound + 1], which keeps every comparison."""
        return signed_width(-self.y_bound - 1, self.y_bound + 1)

    @property
    def score_width(self):
        offset = 0 if self.score_offset is None else int(np.abs(self.score_offset).max())
        return signed_width(-self.y_bound - offset, self.y_bound + offset)

    @property
    def coefficient_width(self):
        return signed_width(int(self.coefficients.min()), int(self.coefficients.max()))

    @property
    def weight_memory_bits(self):
        return self.m_bases * self.out_features * self.in_features

    @property
    def threshold_memory_bits(self):
        if self.output != "bases":
            return 0
        return self.out_features * (self.out_bits * self.threshold_width + 1)


@dataclass(frozen=True, eq=False)
class NetworkParams:
    """A compiled network: its layers in order and the pixel format of its input."""
    name: str
    input_shape: tuple              # (features,) or (channels, height, width)
    input_bits: int                 # P
    classes: int
    layers: tuple
    coefficient_bits: int

    @property
    def label_width(self):
        return unsigned_width(self.classes - 1)
