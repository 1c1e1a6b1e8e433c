#!/usr/bin/env python3
"""Forward time of a cfg with random weights: median of repeated runs after warm-up.

usage: python tools/bench_forward.py [CFG] [--size 416] [--batch 1] [--repeat 20]
Prints one JSON line per measurement and a readable line.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import darkcfg  # noqa: E402
from darkcfg.graph import load_graph  # noqa: E402
from darkcfg.network import Network  # noqa: E402

DEFAULT = ROOT.parent / "shared" / "darknet-cfg" / "pjreddie" / "yolov3-tiny.cfg"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("cfg", nargs="?", default=str(DEFAULT))
    ap.add_argument("--size", type=int, default=416)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    graph = load_graph(args.cfg, width=args.size, height=args.size, batch=args.batch,
                       strict=False)
    net = Network(graph)
    net.init_weights(0)
    for layer in net.layers:       # sane BN statistics so activations stay finite
        if "rolling_variance" in layer.params:
            layer.params["rolling_variance"][...] = 1
    c, h, w = net.input_shape
    x = np.random.default_rng(0).random((args.batch, c, h, w), dtype=np.float32)
    t0 = time.perf_counter()
    net.forward(x)
    first = time.perf_counter() - t0
    for _ in range(3):
        net.forward(x)
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        net.forward(x)
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    rec = {"tool": "darkcfg", "version": darkcfg.__version__, "cfg": Path(args.cfg).name,
           "size": args.size, "batch": args.batch, "median_ms": round(1000 * med, 2),
           "min_ms": round(1000 * min(times), 2), "first_call_s": round(first, 2),
           "threads": os.cpu_count(),
           "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "")}
    print(json.dumps(rec))
    print(f"{rec['cfg']} {args.size}x{args.size} batch {args.batch}: median "
          f"{rec['median_ms']} ms (min {rec['min_ms']} ms) over {args.repeat} runs; "
          f"first call {first:.2f} s")


if __name__ == "__main__":
    main()
