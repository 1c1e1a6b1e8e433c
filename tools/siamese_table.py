#!/usr/bin/env python3
"""The measured table of README "Embeddings": leave-one-out recall@1 (and recall@5,
mAP@R) on the Fashion-MNIST test images of the four classes 0, 2, 4, 6 that training never
sees, for

  * raw pixels, L2-normalised;
  * the penultimate layer (the 128-value [connected]) of cfg/fashion_plain.cfg trained as
    a softmax classifier on the six classes 1, 3, 5, 7, 8, 9, L2-normalised;
  * cfg/fashion_siamese.cfg trained with each triplet miner (all, hard, semihard) on the
    same six classes;
  * `shipped`: cfg/fashion_siamese.cfg as it is (its miner, its max_batches unless
    --max-batches is given), measured as `darkcfg valid` measures it: its output, and the
    layer `--layer` (the one `darkcfg valid --layer` reads for the shipped weights), under
    the net's own distance without any further normalisation;

all trained for the same number of iterations with the same seed, with the wall time.
The last column is recall@1 on 4,000 *training* images of the unseen classes (the first
1,000 of each), the set on which settings were chosen: the test images stay unseen.

    python tools/siamese_table.py OUT_FOLDER [--max-batches 2000]
        [--runs pixels,softmax,all,hard,semihard,shipped] [--layer 3]

Each run's weights and chart go to OUT_FOLDER/<name>/; the table's rows are printed
(markdown). On two cores, two processes with --runs split between them and
OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 finish sooner than one.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from darkcfg.data.arrays import fashion_mnist  # noqa: E402
from darkcfg.embed import retrieval  # noqa: E402
from darkcfg.layers._metric import l2_normalize  # noqa: E402

SEEN, UNSEEN = (1, 3, 5, 7, 8, 9), (0, 2, 4, 6)


def unseen(split: str, per_class: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Images of the unseen classes: all of a split, or its first `per_class` of each."""
    ds = fashion_mnist(split)
    keep = np.isin(ds.labels, UNSEEN)
    if per_class is not None:
        for c in UNSEEN:                        # the first per_class images of class c
            keep[np.flatnonzero(ds.labels == c)[per_class:]] = False
    return ds.images[keep].astype(np.float32) / 255, ds.labels[keep]


def recall1(emb: np.ndarray, labels: np.ndarray, normalize: bool) -> float:
    e = l2_normalize(emb.astype(np.float64))[0] if normalize else emb
    return retrieval(e, labels, "euclidean").recall_at_1


def measure(emb: np.ndarray, labels: np.ndarray, normalize: bool) -> str:
    e = l2_normalize(emb.astype(np.float64))[0] if normalize else emb
    r = retrieval(e, labels, "euclidean")
    return f"**{r.recall_at_1:.4f}** | {r.recall_at_5:.4f} | {r.map_at_r:.4f}"


def write_data(folder: Path, name: str) -> Path:
    data = folder / f"{name}.data"
    data.write_text(f"classes=10\ntrain=fashion-mnist:train\n"
                    f"train_classes={','.join(map(str, SEEN))}\nbackup={folder / name}\n")
    return data


def train_run(folder: Path, name: str, cfg_text: str, max_batches: int, seed: int):
    """(the trained network, training seconds)."""
    from darkcfg.network import Network
    from darkcfg.train.classifier import train
    from darkcfg.train.loop import TrainOptions
    cfg = folder / f"{name}.cfg"
    cfg.write_text(cfg_text)
    start = time.monotonic()
    final = train(str(write_data(folder, name)), str(cfg), None,
                  TrainOptions(seed=seed, max_batches=max_batches, quiet=True,
                               save_every=10**9, backup_every=10**9),
                  log=lambda m: print(f"  {name}: {m}", file=sys.stderr))
    seconds = time.monotonic() - start
    return Network.load(cfg, final), seconds


def layer_output(net, layer: int, x: np.ndarray) -> np.ndarray:
    out = []
    for i in range(0, len(x), 500):
        net.forward(x[i:i + 500])
        out.append(net.outputs[layer].reshape(len(x[i:i + 500]), -1).copy())
    return np.concatenate(out)


def as_valid(net, layer: int, x: np.ndarray, labels: np.ndarray):
    """The retrieval `darkcfg valid --layer` reports: the layer's output under the net's
    distance, nothing else done to it."""
    from darkcfg.embed import distance_of
    return retrieval(layer_output(net, layer, x), labels, distance_of(net.graph))


def shipped_rows(args, text: str, x, labels, sx, slabels) -> list[str]:
    from darkcfg.graph import load_graph
    graph = load_graph(args.cfg)
    head = graph.layers[-1]
    iterations = args.max_batches or graph.net.opts["max_batches"]
    net, seconds = train_run(args.out, "shipped", text, iterations, args.seed)
    rows = []
    for layer in (len(graph.layers) - 1, args.layer):
        lay = graph.layers[layer]
        r, s = as_valid(net, layer, x, labels), as_valid(net, layer, sx, slabels)
        what = (f"`{args.cfg.name}` ({iterations} iterations, `[triplet] "
                f"mining={head.opts['mining']}`): its embedding ({lay.outputs})"
                if layer == len(graph.layers) - 1 else
                f"the same net, layer {layer} ([{lay.type}], {lay.outputs} values, "
                f"`valid --layer {layer}`)")
        rows.append(f"| {what} | **{r.recall_at_1:.4f}** | {r.recall_at_5:.4f} | "
                    f"{r.map_at_r:.4f} | {f'{seconds:.0f} s' if not rows else ''} | "
                    f"{s.recall_at_1:.4f} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out", type=Path)
    p.add_argument("--max-batches", type=int, default=None,
                   help="iterations of every run (default: 2000; `shipped`: the cfg's)")
    p.add_argument("--runs", default="pixels,softmax,all,hard,semihard")
    p.add_argument("--layer", type=int, default=3,
                   help="`shipped`: the inner layer measured beside the output (3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cfg", type=Path, default=ROOT / "cfg" / "fashion_siamese.cfg",
                   help="the triplet cfg (its mining= is replaced by each miner's)")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    x, labels = unseen("test")
    # settings are chosen on training images of the unseen classes, never on the test ones
    sx, slabels = unseen("train", 1000)
    runs = args.runs.split(",")
    iterations = args.max_batches or 2000           # of the baseline and the miners' runs
    rows = ["| embedding (test images of the unseen classes 0, 2, 4, 6) | recall@1 | "
            "recall@5 | mAP@R | training wall time | recall@1, selection set |",
            "|---|---|---|---|---|---|"]
    if "pixels" in runs:
        rows.append(f"| raw pixels, L2-normalised | "
                    f"{measure(x.reshape(len(x), -1), labels, True)} | - | "
                    f"{recall1(sx.reshape(len(sx), -1), slabels, True):.4f} |")
        print(rows[-1], file=sys.stderr)
    if "softmax" in runs:
        plain = (ROOT / "cfg" / "fashion_plain.cfg").read_text()
        net, seconds = train_run(args.out, "softmax", plain, iterations, args.seed)
        rows.append(f"| softmax classifier on the six classes (`fashion_plain.cfg`), "
                    f"penultimate layer (128), L2-normalised | "
                    f"{measure(layer_output(net, 6, x), labels, True)} | {seconds:.0f} s | "
                    f"{recall1(layer_output(net, 6, sx), slabels, True):.4f} |")
        print(rows[-1], file=sys.stderr)
    siamese = args.cfg.read_text()
    if "shipped" in runs:
        rows.extend(shipped_rows(args, siamese, x, labels, sx, slabels))
        print("\n".join(rows[-2:]), file=sys.stderr)
    for miner in ("all", "hard", "semihard"):
        if miner not in runs:
            continue
        text = re.sub(r"(?m)^mining=\w+", f"mining={miner}", siamese)
        net, seconds = train_run(args.out, f"triplet_{miner}", text, iterations,
                                 args.seed)
        rows.append(f"| `fashion_siamese.cfg`, `[triplet] mining={miner}`: its embedding "
                    f"(64) | {measure(layer_output(net, 8, x), labels, False)} | "
                    f"{seconds:.0f} s | {recall1(layer_output(net, 8, sx), slabels, False):.4f} |")
        rows.append(f"| the same net, the 128-value [connected] before the embedding, "
                    f"L2-normalised | {measure(layer_output(net, 6, x), labels, True)} | | "
                    f"{recall1(layer_output(net, 6, sx), slabels, True):.4f} |")
        print("\n".join(rows[-2:]), file=sys.stderr)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
