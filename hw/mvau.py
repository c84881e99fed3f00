"""The XNOR-popcount matrix-vector engine of one layer."""

import numpy as np
from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from gen.params import LayerParams, unsigned_width

from .popcount import popcount

__all__ = ["MatrixVectorUnit", "weight_words", "threshold_words", "offset_words"]

# Pipeline registers between an issue and the output register: accumulate, combine, compare.
PIPELINE_DEPTH = 3


def _pack_rows(bits):
    """Pack each row of a {0, 1} matrix into an integer, column j at bit j."""
    packed = np.packbits(np.asarray(bits, dtype=np.uint8), axis=1, bitorder="little")
    return [int.from_bytes(row.tobytes(), "little") for row in packed]


def _twos_complement(values, width):
    """Bits of signed integers in ``width``-bit two's complement, least significant first."""
    values = np.asarray(values, dtype=np.int64) & ((1 << width) - 1)
    return (values[..., None] >> np.arange(width)) & 1


def weight_words(params):
    """Contents of the weight memory: NF·SF words of PE·M·SIMD bits.

    Word ``nf·SF + sf`` holds, at bit ``(pe·M + m)·SIMD + s``, the weight of base m that
    connects output channel ``nf·PE + pe`` to input element ``sf·SIMD + s`` (1 means +1).
    """
    m_bases, simd, pe = params.m_bases, params.simd, params.pe
    weights = np.asarray(params.weights, dtype=np.uint8).reshape(
        m_bases, params.neuron_fold, pe, params.synapse_fold, simd)
    words = weights.transpose(1, 3, 2, 0, 4)            # (NF, SF, PE, M, SIMD)
    return _pack_rows(words.reshape(params.cycles_per_vector, pe * m_bases * simd))


def threshold_words(params):
    """Contents of the threshold memory of a "bases" layer: NF words, one field per PE.

    Field pe of word nf describes channel ``nf·PE + pe`` and is ``out_bits·T + 1`` bits
    wide (T = ``threshold_width``): threshold n in two's complement at bits
    ``[n·T, (n + 1)·T)``, then one polarity bit that is 1 for polarity −1 (y ≤ threshold)
    and 0 for +1 (y ≥ threshold).
    """
    width = params.threshold_width
    thresholds = _twos_complement(params.thresholds, width).reshape(params.out_features, -1)
    negative = (np.asarray(params.polarity) < 0).astype(np.int64)[:, None]
    fields = np.concatenate([thresholds, negative], axis=1)   # (O, out_bits·T + 1)
    return _pack_rows(fields.reshape(params.neuron_fold, -1))


def offset_words(params):
    """Contents of the score offset memory of a "scores" layer: NF words, one field per PE.

    Field pe of word nf is ``score_offset[nf·PE + pe]`` in ``score_width``-bit two's
    complement.
    """
    offsets = _twos_complement(params.score_offset, params.score_width)
    return _pack_rows(offsets.reshape(params.neuron_fold, -1))


def _check_params(params):
    if not isinstance(params, LayerParams):
        raise TypeError(f"params must be a LayerParams, not {params!r}")
    name = params.name
    k, o, m_bases, in_bits = (params.in_features, params.out_features, params.m_bases,
                              params.in_bits)
    for field in ("in_features", "out_features", "in_bits", "m_bases", "pe", "simd"):
        value = getattr(params, field)
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"layer {name}: {field} must be a positive integer, not {value!r}")
    if k % params.simd:
        raise ValueError(f"layer {name}: in_features ({k}) must be a multiple of simd "
                         f"({params.simd})")
    if o % params.pe:
        raise ValueError(f"layer {name}: out_features ({o}) must be a multiple of pe "
                         f"({params.pe})")
    weights = np.asarray(params.weights)
    if weights.shape != (m_bases, o, k):
        raise ValueError(f"layer {name}: weights must have shape (m_bases, out_features, "
                         f"in_features) = {(m_bases, o, k)}, not {weights.shape}")
    if not np.isin(weights, (0, 1)).all():
        raise ValueError(f"layer {name}: weights must be 0 or 1")
    if np.shape(params.coefficients) != (m_bases, in_bits):
        raise ValueError(f"layer {name}: coefficients must have shape (m_bases, in_bits) = "
                         f"{(m_bases, in_bits)}, not {np.shape(params.coefficients)}")
    if params.output == "bases":
        _check_thresholds(params)
    elif params.output == "scores":
        if np.shape(params.score_offset) != (o,):
            raise ValueError(f"layer {name}: score_offset must have shape (out_features,) = "
                             f"{(o,)}, not {np.shape(params.score_offset)}")
    else:
        raise ValueError(f"layer {name}: output must be \"bases\" or \"scores\", not "
                         f"{params.output!r}")


def _check_thresholds(params):
    name, o = params.name, params.out_features
    if not isinstance(params.out_bits, (int, np.integer)) or params.out_bits < 1:
        raise ValueError(f"layer {name}: out_bits must be a positive integer for a \"bases\" "
                         f"layer, not {params.out_bits!r}")
    if np.shape(params.thresholds) != (o, params.out_bits):
        raise ValueError(f"layer {name}: thresholds must have shape (out_features, out_bits) "
                         f"= {(o, params.out_bits)}, not {np.shape(params.thresholds)}")
    if np.shape(params.polarity) != (o,) or not np.isin(params.polarity, (-1, 1)).all():
        raise ValueError(f"layer {name}: polarity must be {o} values of +1 or -1")
    limit = params.y_bound + 1
    low, high = int(np.min(params.thresholds)), int(np.max(params.thresholds))
    if low < -limit or high > limit:
        raise ValueError(f"layer {name}: thresholds must lie in [{-limit}, {limit}] "
                         f"(y_bound + 1), found [{low}, {high}]; clip them first")


def _balanced_sum(terms):
    """Sum of Values as a balanced adder tree; an empty list sums to 0."""
    if not terms:
        return Const(0, signed(2))
    while len(terms) > 1:
        paired = [terms[i] + terms[i + 1] for i in range(0, len(terms) - 1, 2)]
        terms = paired + terms[len(paired) * 2:]
    return terms[0]


def _argmax_lowest(candidates):
    """Reduce (score, index) pairs to the largest score, ties going to the earlier pair."""
    while len(candidates) > 1:
        reduced = []
        for i in range(0, len(candidates) - 1, 2):
            (left_score, left_index), (right_score, right_index) = candidates[i:i + 2]
            take_right = right_score > left_score
            reduced.append((Mux(take_right, right_score, left_score),
                            Mux(take_right, right_index, left_index)))
        if len(candidates) % 2:
            reduced.append(candidates[-1])
        candidates = reduced
    return candidates[0]


class MatrixVectorUnit(wiring.Component):
    """XNOR-popcount matrix-vector engine of one layer, folded by PE and SIMD.

    For each of the O output channels of ``params`` and one input vector of K elements, the
    engine computes ``y = Σ_m Σ_n C[m, n]·(2·p[m, n] − K)``, where ``p[m, n]`` counts the
    inputs whose bit n equals weight base m. A "bases" layer thresholds y into ``out_bits``
    bits per channel. A "scores" layer outputs ``y + score_offset`` for every channel and
    the index of the largest. ``gen.params`` gives the exact semantics.

    Throughput is one input vector per ``cycles_per_vector`` = (K / SIMD)·(O / PE) cycles
    with no bubble between vectors. The output is valid ``latency`` = ``cycles_per_vector``
    + 4 cycles after the input transfer when the output is not stalled.

    Pipeline: each cycle, the issue stage reads one weight word (neuron fold nf, synapse
    fold sf) and the next SIMD elements of the held input vector. The accumulate stage adds
    the XNOR popcounts of every PE, base and input bit. The combine stage forms y of every
    PE and reads the thresholds (or score offsets) of fold nf. The write stage shifts the
    PE results into the output register. PE pe computes output channel ``nf·PE + pe`` in
    neuron fold nf. The weight, threshold and offset memories are read-only with a
    synchronous read port, so synthesis can map them to block RAM (layouts:
    :func:`weight_words`, :func:`threshold_words`, :func:`offset_words`).

    Backpressure: the engine stalls in a cycle where the write stage contains a result and
    the output register is still full (valid and not ready). A stall freezes every stage,
    the counters and the memory read ports. ``input.ready`` is high while the input
    register is empty, and in the cycle that issues the last fold of the held vector
    without a stall. ``output.valid`` does not depend on ``output.ready``.

    Parameters
    ----------
    params : :class:`gen.params.LayerParams`
        Integer parameters and folding of the layer.

    Members
    -------
    input : ``In(stream.Signature(unsigned(K·in_bits)))``
        One input vector per transfer: element k at bits ``[k·in_bits, (k + 1)·in_bits)``,
        and in each element, bit n is input base n (1 means +1) or bit n of a pixel.
    output : ``Out(stream.Signature(...))``
        For "bases", ``unsigned(O·out_bits)``: channel c at bits
        ``[c·out_bits, (c + 1)·out_bits)``, bit n of it is output base n (1 means +1).
        For "scores", a struct of ``scores`` (O signed ``score_width`` integers, channel 0
        first) and ``label`` (index of the largest score, ties to the lowest index).
    """

    def __init__(self, *, params):
        _check_params(params)
        self._params = params
        k, o = params.in_features, params.out_features
        if params.output == "bases":
            output_shape = unsigned(o * params.out_bits)
        else:
            output_shape = data.StructLayout({
                "scores": data.ArrayLayout(signed(params.score_width), o),
                "label": unsigned(self.label_width),
            })
        super().__init__({
            "input": In(stream.Signature(unsigned(k * params.in_bits))),
            "output": Out(stream.Signature(output_shape)),
        })

    @property
    def params(self):
        """Layer parameters the engine was built from."""
        return self._params

    @property
    def cycles_per_vector(self):
        """Initiation interval: cycles between input vectors, (K / SIMD)·(O / PE)."""
        return self._params.cycles_per_vector

    @property
    def latency(self):
        """Cycles from an input transfer to its output becoming valid, with no stall."""
        return self.cycles_per_vector + PIPELINE_DEPTH + 1

    @property
    def label_width(self):
        """Width of the argmax label of a "scores" layer."""
        return unsigned_width(self._params.out_features - 1)

    def elaborate(self, platform):
        m = Module()
        # High in a cycle where the write stage cannot empty, which freezes every stage.
        stall = Signal()
        issued = self._elaborate_issue(m, stall)
        accumulated = self._elaborate_accumulate(m, stall, issued)
        combined = self._elaborate_combine(m, stall, accumulated)
        self._elaborate_write(m, stall, combined)
        return m

    def _elaborate_issue(self, m, stall):
        """Input register, fold counters and the weight memory read; returns stage 1."""
        params = self._params
        sf_count, nf_count = params.synapse_fold, params.neuron_fold
        slice_width = params.simd * params.in_bits

        in_buf = Signal(params.in_features * params.in_bits)
        in_full = Signal()
        sf = Signal(range(sf_count))
        nf = Signal(range(nf_count))
        address = Signal(range(params.cycles_per_vector))
        last_sf = sf == sf_count - 1
        last_nf = nf == nf_count - 1
        issue = Signal()
        issue_last = Signal()
        m.d.comb += [
            issue.eq(in_full & ~stall),
            issue_last.eq(issue & last_sf & last_nf),
            self.input.ready.eq(~in_full | issue_last),
        ]

        # The held vector rotates by one synapse fold per issue, so the current slice is
        # always its low bits. After SF issues it is back in place for the next neuron fold.
        with m.If(self.input.valid & self.input.ready):
            m.d.sync += [in_buf.eq(self.input.payload), in_full.eq(1)]
        with m.Elif(issue):
            m.d.sync += in_buf.eq(in_buf.rotate_right(slice_width))
            with m.If(issue_last):
                m.d.sync += in_full.eq(0)

        with m.If(issue):
            with m.If(last_sf):
                m.d.sync += [sf.eq(0), nf.eq(Mux(last_nf, 0, nf + 1))]
            with m.Else():
                m.d.sync += sf.eq(sf + 1)
            m.d.sync += address.eq(Mux(issue_last, 0, address + 1))

        m.submodules.weights = weights = Memory(
            shape=unsigned(params.pe * params.m_bases * params.simd),
            depth=params.cycles_per_vector, init=weight_words(params))
        weight_port = weights.read_port()
        m.d.comb += [weight_port.addr.eq(address), weight_port.en.eq(~stall)]

        stage = {
            "valid": Signal(name="s1_valid"),
            "first": Signal(name="s1_first"),
            "last": Signal(name="s1_last"),
            "nf": Signal(range(nf_count), name="s1_nf"),
            "slice": Signal(slice_width, name="s1_slice"),
            "weights": weight_port.data,
        }
        with m.If(~stall):
            m.d.sync += [
                stage["valid"].eq(issue),
                stage["first"].eq(sf == 0),
                stage["last"].eq(last_sf),
                stage["nf"].eq(nf),
                stage["slice"].eq(in_buf[:slice_width]),
            ]
        return stage

    def _elaborate_accumulate(self, m, stall, stage):
        """XNOR popcounts added into M·in_bits accumulators per PE; returns stage 2."""
        params = self._params
        simd, m_bases, in_bits = params.simd, params.m_bases, params.in_bits

        accumulators = []
        for pe in range(params.pe):
            per_pe = {}
            for base in range(m_bases):
                lane = (pe * m_bases + base) * simd
                w = stage["weights"][lane:lane + simd]
                for bit in range(in_bits):
                    x = Cat(*[stage["slice"][s * in_bits + bit] for s in range(simd)])
                    # A named signal keeps the simulator from re-evaluating the XNOR at
                    # every node of the popcount tree.
                    matches = Signal(simd, name=f"matches_pe{pe}_m{base}_n{bit}")
                    m.d.comb += matches.eq(~(w ^ x))
                    count = popcount(matches)
                    acc = Signal(params.popcount_width, name=f"acc_pe{pe}_m{base}_n{bit}")
                    with m.If(stage["valid"] & ~stall):
                        m.d.sync += acc.eq(Mux(stage["first"], 0, acc) + count)
                    per_pe[base, bit] = acc
            accumulators.append(per_pe)

        done = {
            "valid": Signal(name="s2_valid"),
            "nf": Signal.like(stage["nf"], name="s2_nf"),
            "accumulators": accumulators,
        }
        with m.If(~stall):
            m.d.sync += [
                done["valid"].eq(stage["valid"] & stage["last"]),
                done["nf"].eq(stage["nf"]),
            ]
        return done

    def _elaborate_combine(self, m, stall, stage):
        """y of each PE from its accumulators, and the constants memory read; returns stage 3."""
        params = self._params
        coefficients = np.asarray(params.coefficients, dtype=np.int64)
        # Σ C·(2p − K) = 2·Σ C·p − K·Σ C: one constant multiply per accumulator.
        bias = params.in_features * int(coefficients.sum())

        combined = {
            "valid": Signal(name="s3_valid"),
            "nf": Signal.like(stage["nf"], name="s3_nf"),
            "y": [Signal(signed(params.y_width), name=f"y_pe{pe}") for pe in range(params.pe)],
        }
        with m.If(~stall):
            m.d.sync += [combined["valid"].eq(stage["valid"]), combined["nf"].eq(stage["nf"])]
            for pe, per_pe in enumerate(stage["accumulators"]):
                terms = [acc * Const(int(coefficients[key]), signed(params.coefficient_width))
                         for key, acc in per_pe.items() if coefficients[key] != 0]
                weighted = _balanced_sum(terms)
                m.d.sync += combined["y"][pe].eq(2 * weighted - bias)

        if params.output == "bases":
            init = threshold_words(params)
            field = params.out_bits * params.threshold_width + 1
        else:
            init = offset_words(params)
            field = params.score_width
        m.submodules.constants = constants = Memory(
            shape=unsigned(params.pe * field), depth=params.neuron_fold, init=init)
        constants_port = constants.read_port()
        m.d.comb += [constants_port.addr.eq(stage["nf"]), constants_port.en.eq(~stall)]
        combined["constants"] = [constants_port.data[pe * field:(pe + 1) * field]
                                 for pe in range(params.pe)]
        return combined

    def _elaborate_write(self, m, stall, stage):
        """Output register, output valid and the stall condition."""
        params = self._params
        out_valid = Signal()
        write = Signal()
        last = stage["nf"] == params.neuron_fold - 1
        m.d.comb += [
            stall.eq(stage["valid"] & out_valid & ~self.output.ready),
            write.eq(stage["valid"] & ~stall),
            self.output.valid.eq(out_valid),
        ]
        with m.If(write & last):
            m.d.sync += out_valid.eq(1)
        with m.Elif(self.output.ready):
            m.d.sync += out_valid.eq(0)

        if params.output == "bases":
            self._elaborate_thresholds(m, stage, write)
        else:
            self._elaborate_scores(m, stage, write)

    def _elaborate_thresholds(self, m, stage, write):
        params = self._params
        width, out_bits = params.threshold_width, params.out_bits
        fold_bits = []
        for y, field in zip(stage["y"], stage["constants"]):
            negative = field[out_bits * width]
            for bit in range(out_bits):
                threshold = field[bit * width:(bit + 1) * width].as_signed()
                fold_bits.append(Mux(negative, y <= threshold, y >= threshold))

        # Neuron folds arrive in order, so shifting each one in from the top leaves fold nf
        # at bits [nf·PE·out_bits, (nf + 1)·PE·out_bits) after the last.
        out_reg = Signal(params.out_features * out_bits)
        with m.If(write):
            m.d.sync += out_reg.eq(Cat(out_reg[params.pe * out_bits:], *fold_bits))
        m.d.comb += self.output.payload.eq(out_reg)

    def _elaborate_scores(self, m, stage, write):
        params = self._params
        width = params.score_width
        fold_scores = []
        for pe, (y, field) in enumerate(zip(stage["y"], stage["constants"])):
            score = Signal(signed(width), name=f"score_pe{pe}")
            m.d.comb += score.eq(y + field.as_signed())
            fold_scores.append(score)

        scores_reg = Signal(params.out_features * width)
        with m.If(write):
            m.d.sync += scores_reg.eq(Cat(scores_reg[params.pe * width:], *fold_scores))

        # Running argmax over the folds. Earlier folds hold lower channels, so a later fold
        # replaces the best only with a strictly larger score.
        fold_score, fold_pe = _argmax_lowest(
            [(score, Const(pe, unsigned_width(params.pe - 1)))
             for pe, score in enumerate(fold_scores)])
        fold_label = Signal(self.label_width)
        m.d.comb += fold_label.eq(stage["nf"] * params.pe + fold_pe)
        best_score = Signal(signed(width))
        best_label = Signal(self.label_width)
        with m.If(write & ((stage["nf"] == 0) | (fold_score > best_score))):
            m.d.sync += [best_score.eq(fold_score), best_label.eq(fold_label)]

        m.d.comb += [
            self.output.payload.scores.eq(scores_reg),
            self.output.payload.label.eq(best_label),
        ]
