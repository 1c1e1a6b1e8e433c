"""Per-layer time of darkcfg beside onnxruntime's own node profile, for finding where a
net loses.

    python tools/profile_layers.py yolov4-tiny --threads 1

The net gets bench.py's random weights (calibrated BN statistics); darkcfg's ONNX export
of it (BN folded) runs in onnxruntime with profiling on. darkcfg's time per layer is the
median over --rounds forward passes, as CPU time of this thread at one thread (other jobs
on the machine do not count) or wall time with more; onnxruntime's is the median of its
own per-node kernel times, each node counted to the darkcfg layer its name starts with
(`12_convolutional...`). Prints one row per layer (type, output shape, GFLOPs, both times
in ms and their ratio) and the totals. Needs onnx and onnxruntime (`pip install -e
".[onnx]"`).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import FORWARD, cfg_path, random_network


def darkcfg_times(net, x: np.ndarray, rounds: int, one_thread: bool) -> np.ndarray:
    clock = time.thread_time if one_thread else time.perf_counter
    for _ in range(3):
        net.forward(x)
    times = np.zeros((rounds, len(net.layers)))
    for r in range(rounds):
        y = x
        for i, layer in enumerate(net.layers):
            t0 = clock()
            y = layer.forward(y, net)
            times[r, i] = clock() - t0
            net.outputs[i] = y
    return np.median(times, axis=0) * 1e3


def onnxruntime_times(net, x: np.ndarray, rounds: int, threads: int, folder: str
                      ) -> dict[int, float]:
    import onnxruntime as ort

    from darkcfg.export import save_onnx, to_onnx
    path = os.path.join(folder, "net.onnx")
    save_onnx(to_onnx(net, batch=1), path, force=True)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(folder, "profile")
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    warm = 3
    for _ in range(warm + rounds):
        sess.run(None, {name: x})
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    per_node: dict[str, list[float]] = {}
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node.setdefault(e["name"][:-len("_kernel_time")], []).append(e["dur"] / 1e3)
    per_layer: dict[int, float] = {}
    for node, durs in per_node.items():
        m = re.search(r"(?:^|[^0-9])(\d+)_", node)
        index = int(m.group(1)) if m else -1
        per_layer[index] = per_layer.get(index, 0.0) + statistics.median(durs[warm:] or durs)
    return per_layer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("net", help="a cfg path or a name bench.py knows (yolov4-tiny, ...)")
    ap.add_argument("--size", type=int, default=0, help="input size (default: bench.py's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    import numba
    numba.set_num_threads(args.threads)
    size = args.size or FORWARD.get(args.net, 224)
    net = random_network(cfg_path(args.net), size, 1)
    c, h, w = net.input_shape
    x = np.random.default_rng(5).random((1, c, h, w), np.float32)
    dk = darkcfg_times(net, x, args.rounds, args.threads == 1)
    with tempfile.TemporaryDirectory() as folder:
        ort = onnxruntime_times(net, x, args.rounds, args.threads, folder)
    clock = "CPU time" if args.threads == 1 else "wall time"
    print(f"{args.net} {size} x {size}, {args.threads} thread(s), darkcfg {clock}: "
          f"darkcfg {dk.sum():.1f} ms, onnxruntime {sum(ort.values()):.1f} ms "
          f"(not tied to a layer: {ort.get(-1, 0.0):.2f} ms)")
    print(f"{'layer':>5} {'type':14} {'output':18} {'GFLOPs':>7} {'darkcfg':>8} "
          f"{'ort':>8} {'ratio':>6}")
    for i, layer in enumerate(net.layers):
        o = ort.get(i, 0.0)
        kind = layer.type
        if kind == "convolutional":
            kind = f"conv {layer.size}x{layer.size}/{layer.stride_x}"
        gf = layer.flops() / 1e9 if kind.startswith("conv") else 0.0
        ratio = f"{dk[i] / o:6.2f}" if o > 0 else "     -"
        print(f"{i:5d} {kind:14} {layer.out_shape!s:18} {gf:7.3f} {dk[i]:8.2f} "
              f"{o:8.2f} {ratio}")


if __name__ == "__main__":
    main()
