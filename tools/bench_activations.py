#!/usr/bin/env python3
"""Time darkcfg's activations and their gradients: ns per value, on well-scaled inputs
(normal, sigma 3) and on inputs of any range (sigma 1e4, with denormals, inf and NaN
mixed in), to show that the time does not depend on the values.

    python tools/bench_activations.py                    # every activation, 4M values
    python tools/bench_activations.py --names mish swish --size 1000000

Threads: Numba's (NUMBA_NUM_THREADS). Prints one JSON line per measurement, then a table.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

NAMES = ["logistic", "tanh", "loggy", "elu", "selu", "gelu", "swish", "mish", "leaky"]


def inputs(n: int, wide: bool, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if not wide:
        return rng.normal(0, 3, n).astype(np.float32)
    x = (rng.normal(0, 1, n) * 1e4).astype(np.float32)
    k = n // 100           # 1% each: denormals, +-inf, NaN
    x[:k] = rng.uniform(-1e-39, 1e-39, k).astype(np.float32)
    x[k:2 * k] = np.inf
    x[2 * k:3 * k] = -np.inf
    x[3 * k:4 * k] = np.nan
    return rng.permutation(x)


def ns_per_value(fn, x: np.ndarray, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e9 * statistics.median(times) / x.size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--names", nargs="*", default=NAMES)
    ap.add_argument("--size", type=int, default=1 << 22)
    ap.add_argument("--reps", type=int, default=7)
    args = ap.parse_args()
    from darkcfg.kernels.activations import activate, gradient, needs_input
    rows = []
    for name in args.names:
        rec = {"activation": name}
        for label, wide in (("normal", False), ("any", True)):
            x = inputs(args.size, wide)
            buf = x.copy()
            y = activate(x.copy(), name)
            dy = np.ones_like(x)
            activate(buf, name)                          # compile / warm up
            gradient(dy.copy(), y, x if needs_input(name) else None, name)

            def fwd(b=buf, x=x, name=name):
                b[...] = x
                activate(b, name)

            def bwd(d=dy, y=y, x=x, name=name):
                d[...] = 1.0        # gradient is in place: start from the same dy each time
                gradient(d, y, x if needs_input(name) else None, name)

            # the copies are timed too: subtract them
            copy = ns_per_value(lambda b=buf, x=x: b.__setitem__(Ellipsis, x), x, args.reps)
            rec[f"forward_{label}_ns"] = round(ns_per_value(fwd, x, args.reps) - copy, 3)
            rec[f"gradient_{label}_ns"] = round(ns_per_value(bwd, x, args.reps) - copy, 3)
        rows.append(rec)
        print(json.dumps(rec), flush=True)
    print(f"\n{platform.processor() or platform.machine()}, {args.size} values, ns per value "
          f"(median of {args.reps})\n")
    print("| activation | forward | forward, any range | gradient | gradient, any range |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['activation']} | {r['forward_normal_ns']:.2f} | {r['forward_any_ns']:.2f} "
              f"| {r['gradient_normal_ns']:.2f} | {r['gradient_any_ns']:.2f} |")


if __name__ == "__main__":
    main()
