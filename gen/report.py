"""The compile report: layers, folding, widths, memory and predicted timing, as JSON and Markdown."""

import json

from sim.cycles import network_timing

__all__ = ["build_report", "report_markdown", "report_json"]


def build_report(net, *, model_path=None):
    timing = network_timing(net)
    layers = []
    for params, layer_time in zip(net.layers, timing.layers):
        entry = {
            "name": params.name,
            "type": params.type,
            "in_features": params.in_features,
            "out_features": params.out_features,
            "weight_bases": params.m_bases,
            "in_bits": params.in_bits,
            "out_bits": params.out_bits,
            "output": params.output,
            "pe": params.pe,
            "simd": params.simd,
            "synapse_fold": params.synapse_fold,
            "neuron_fold": params.neuron_fold,
            "cycles_per_vector": params.cycles_per_vector,
            "cycles_per_image": layer_time.cycles_per_image,
            "latency": layer_time.latency,
            "coefficients": params.coefficients.tolist(),
            "scale": params.scale,
            "widths": {
                "popcount": params.popcount_width,
                "coefficient": params.coefficient_width,
                "y": params.y_width,
                "threshold": params.threshold_width if params.output == "bases" else None,
                "score": params.score_width if params.output == "scores" else None,
            },
            "memory_bits": {
                "weights": params.weight_memory_bits,
                "thresholds": params.threshold_memory_bits,
            },
        }
        layers.append(entry)
    return {
        "model": net.name,
        "model_path": None if model_path is None else str(model_path),
        "input_shape": list(net.input_shape),
        "input_bits": net.input_bits,
        "classes": net.classes,
        "coefficient_bits": net.coefficient_bits,
        "cycles_per_image": timing.cycles_per_image,
        "latency": timing.latency,
        "bottleneck": timing.bottleneck,
        "memory_bits": sum(l["memory_bits"]["weights"] + l["memory_bits"]["thresholds"]
                           for l in layers),
        "layers": layers,
    }


def report_json(report):
    return json.dumps(report, indent=2) + "\n"


def report_markdown(report):
    lines = [
        f"# {report['model']}",
        "",
        f"Input: {'x'.join(map(str, report['input_shape']))} values of {report['input_bits']} bits; "
        f"{report['classes']} classes; coefficients of {report['coefficient_bits']} bits.",
        "",
        f"- cycles per image (steady state): **{report['cycles_per_image']}** "
        f"(bottleneck: {report['bottleneck']})",
        f"- latency, input transfer to result valid: **{report['latency']}** cycles",
        f"- memory: {report['memory_bits']} bits ({report['memory_bits'] / 1024:.1f} kbit)",
        "",
        "| layer | type | K | O | M | bits in | bits out | PE | SIMD | II | cycles/image "
        "| latency | popcount | y | threshold/score | weight bits | threshold bits |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for layer in report["layers"]:
        widths = layer["widths"]
        last = widths["threshold"] if widths["threshold"] is not None else widths["score"]
        lines.append(
            f"| {layer['name']} | {layer['type']} | {layer['in_features']} "
            f"| {layer['out_features']} | {layer['weight_bases']} | {layer['in_bits']} "
            f"| {layer['out_bits'] or '-'} | {layer['pe']} | {layer['simd']} "
            f"| {layer['cycles_per_vector']} | {layer['cycles_per_image']} "
            f"| {layer['latency']} | {widths['popcount']} "
            f"| {widths['y']} | {last} | {layer['memory_bits']['weights']} "
            f"| {layer['memory_bits']['thresholds']} |")
    lines.append("")
    lines.append("Widths are in bits. II is the engine's cycles per input vector "
                 "(K/SIMD · O/PE); a convolution runs it once per output position.")
    return "\n".join(lines) + "\n"
