"""`darkcfg summary`: Darknet's layer table plus what Darknet lacks; JSON and Graphviz forms."""
from __future__ import annotations

import json
import math

from .graph import Graph
from .sgd import Frozen, frozen_layers

HEADER = "layer     filters    size              input                output"
EXTRA_COL = 86          # darkcfg's extra columns start here, after Darknet's text
HEADER_SIZE = 20        # bytes of a 0.2.x .weights header (major, minor, revision, seen)


def frozen_at_start(graph: Graph) -> Frozen:
    """The layers the first training iteration leaves unchanged (sgd.frozen_layers)."""
    return frozen_layers(graph.layers, 1, graph.net.dialect, graph.net.opts["burn_in"])


def layer_facts(graph: Graph) -> list[dict]:
    """Per-layer numbers shared by every output format."""
    rf: list[tuple[float, float]] = []
    facts = []
    batch = graph.net.batch
    frozen = frozen_at_start(graph).why
    for layer in graph.layers:
        rf.append(layer.receptive(rf))
        r, j = rf[-1]
        facts.append({
            "index": layer.index,
            "type": layer.type,
            "line": layer.section.line,
            "input": list(layer.in_shape),
            "output": list(layer.out_shape),
            "sources": list(layer.sources),
            "params": layer.nparams,
            "bflops": layer.flops() / 1e9,
            "receptive_field": None if math.isinf(r) else r,
            "stride": j,
            "memory_bytes": 4 * layer.outputs * batch,
            "runnable": layer.unsupported() is None,
            "frozen": frozen.get(layer.index),      # why, or None: trained
        })
    return facts


def totals(graph: Graph, facts: list[dict]) -> dict:
    params = graph.nparams
    return {
        "layers": len(graph.layers),
        "inputs": graph.net.inputs,
        "outputs": graph.layers[-1].outputs,
        "truths": graph.truths,
        "params": params,
        "bflops": sum(f["bflops"] for f in facts),
        "conv_bflops": sum(layer.conv_flops() for layer in graph.layers) / 1e9,
        "weights_bytes": HEADER_SIZE + 4 * params,
        "activation_bytes": sum(f["memory_bytes"] for f in facts),
        "frozen_params": sum(f["params"] for f in facts if f["frozen"]),
        "trainable_params": sum(f["params"] for f in facts if not f["frozen"]),
    }


def _num(x: float) -> str:
    return "all" if x is None else (f"{x:g}" if x != int(x) else str(int(x)))


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""  # pragma: no cover


def darknet_totals_line(t: dict) -> str:
    """The one-line totals Darknet's reference summaries end with."""
    return (f"layers {t['layers']} inputs {t['inputs']} outputs {t['outputs']} truths "
            f"{t['truths']} params {t['params']} weights_bytes {t['weights_bytes']} "
            f"conv_BFLOPs {t['conv_bflops']:.4f}")


def format_table(graph: Graph) -> str:
    facts = layer_facts(graph)
    lines = [HEADER.ljust(EXTRA_COL) + "    params     rf  stride    memory"]
    for layer, f in zip(graph.layers, facts):
        text = f"{layer.index:5d} {layer.row()}"
        first, *rest = text.split("\n")
        extra = (f"{f['params']:10,d} {_num(f['receptive_field']):>6} "
                 f"{_num(f['stride']):>7} {_size(f['memory_bytes']):>9}")
        if f["frozen"]:
            extra += "   frozen"
        if not f["runnable"]:
            extra += "   (summary only: " + layer.unsupported() + ")"
        lines.append(first.ljust(EXTRA_COL) + extra)
        lines.extend(rest)
    t = totals(graph, facts)
    lines.append(darknet_totals_line(t))
    c, h, w = graph.net.input_shape
    lines.append(
        f"total: {t['params']:,} parameters, {t['bflops']:.3f} BFLOPs "
        f"({t['conv_bflops']:.3f} in convolutions), weights file {t['weights_bytes']:,} "
        f"bytes, activations {_size(t['activation_bytes'])} at batch {graph.net.batch}, "
        f"input {w} x {h} x {c}")
    lines.append(freeze_line(graph.layers, frozen_at_start(graph)))
    if kind := getattr(graph.layers[-1], "truth_kind", None):
        lines.append(f"truth: {kind}")
    lines.append(dialect_line(graph))
    return "\n".join(lines)


def freeze_line(layers: list, frozen: Frozen) -> str:
    """'trainable: 132,874 parameters; frozen: 23,632 parameters in layers 0-5
    (stopbackward=1 at layer 5)', the layers grouped by why they are frozen."""
    params = {lay.index: lay.nparams for lay in layers}
    still = sum(n for i, n in params.items() if i not in frozen.why)
    if not frozen.why:
        return f"trainable: all {still:,} parameters (no layer frozen)"
    groups: dict[str, list[int]] = {}
    for i, why in sorted(frozen.why.items()):
        groups.setdefault(why, []).append(i)
    where = "; ".join(f"{_runs(ix)} ({why})" for why, ix in groups.items())
    cold = sum(params[i] for i in frozen.why)
    return f"trainable: {still:,} parameters; frozen: {cold:,} parameters in {where}"


def _runs(indices: list[int]) -> str:
    """'layers 0-5, 9', 'layer 3' (indices sorted)."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    word = "layer" if len(indices) == 1 else "layers"
    return f"{word} " + ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def dialect_line(graph: Graph) -> str:
    """Which lineage's numbers the network follows, which rule chose it and why."""
    choice = graph.net.dialect_choice
    if choice is None:
        return f"dialect {graph.net.dialect}"
    return choice.describe()


def to_json(graph: Graph) -> str:
    facts = layer_facts(graph)
    c, h, w = graph.net.input_shape
    choice = graph.net.dialect_choice
    doc = {"file": graph.file, "input": [c, h, w], "batch": graph.net.batch,
           "dialect": graph.net.dialect, "dialect_rule": choice and choice.rule,
           "dialect_reason": choice and choice.reason, "layers": facts,
           "totals": totals(graph, facts)}
    return json.dumps(doc, indent=1)


def to_dot(graph: Graph) -> str:
    """A Graphviz digraph: one box per layer, solid edges from the previous layer, dashed
    edges from the layers a route/shortcut/etc. reads."""
    c, h, w = graph.net.input_shape
    out = ["digraph darkcfg {", '  rankdir=TB; node [shape=box, fontname="Helvetica"];',
           f'  input [label="input\\n{w} x {h} x {c}", shape=ellipse];']
    for layer in graph.layers:
        lc, lh, lw = layer.out_shape
        what = "\\n".join(layer.label_lines())
        out.append(f'  L{layer.index} [label="{layer.index}: {what}\\n{lw} x {lh} x {lc}"];')
        prev = f"L{layer.index - 1}" if layer.index else "input"
        if layer.type != "route":
            out.append(f"  {prev} -> L{layer.index};")
        for s in layer.sources:
            style = "" if layer.type == "route" else " [style=dashed]"
            out.append(f"  L{s} -> L{layer.index}{style};")
    out.append("}")
    return "\n".join(out)
