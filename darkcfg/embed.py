"""Embeddings of a metric-learning net ([triplet]): images to vectors (`darkcfg embed`),
two images compared under a threshold (`darkcfg compare`), and the retrieval measures of
`darkcfg valid` (leave-one-out recall@k, mAP@R, the best verification threshold) with a
2-D PCA scatter of the embeddings.

The embedding is the output of the final [triplet] (unit length with normalize=1) or
[contrastive], or of any layer chosen by index; distances are the [triplet]'s `distance`
(cosine for [contrastive], euclidean without either), as layers/_metric.py defines them.
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from .errors import DarkcfgError, DataError
from .fileio import atomic_write, read_text
from .layers._metric import DISTANCES, l2_normalize

if TYPE_CHECKING:
    from .graph import Graph
    from .layers.base import Layer
    from .network import Network


# --- which layer, which distance -------------------------------------------------------

def metric_head(graph: Graph) -> Layer | None:
    """The network's final [triplet] or [contrastive] (what makes it an embedding net), if
    it ends in one."""
    last = graph.layers[-1]
    return last if last.type in ("triplet", "contrastive") else None


def embedding_layer(graph: Graph, index: int | None = None) -> int:
    """The layer whose output is the embedding: `index` (negative counts from the end),
    else the final [triplet], else the network's output layer."""
    n = len(graph.layers)
    if index is None:
        return graph.output_layer.index
    if not -n <= index < n:
        raise DarkcfgError(f"{graph.file}: --layer {index}: the network has layers 0..{n - 1}"
                           f" (or -1..-{n} from the end)")
    return index % n


def distance_of(graph: Graph) -> str:
    """The [triplet]'s distance; cosine for [contrastive] (its similarity); else euclidean."""
    head = metric_head(graph)
    if head is None:
        return "euclidean"
    return head.opts["distance"] if head.type == "triplet" else "cosine"


def distances_to(queries: np.ndarray, items: np.ndarray, kind: str) -> np.ndarray:
    """(Q, N) distances between rows, float64 (distance_matrix's definitions, for two sets:
    rows of `queries` against rows of `items`)."""
    q, e = queries.astype(np.float64), items.astype(np.float64)
    if kind == "cosine":
        return 1.0 - l2_normalize(q)[0] @ l2_normalize(e)[0].T
    d2 = np.einsum("ij,ij->i", q, q)[:, None] + np.einsum("ij,ij->i", e, e)[None, :] \
        - 2.0 * (q @ e.T)
    d2 = np.maximum(d2, 0.0)
    return d2 if kind == "squared" else np.sqrt(d2 + 1e-12)


def pair_distance(a: np.ndarray, b: np.ndarray, kind: str) -> float:
    """The distance between two embeddings, as `valid` measured those of its threshold."""
    return float(distances_to(np.ravel(a)[None], np.ravel(b)[None], kind)[0, 0])


# --- embedding images --------------------------------------------------------------------

@dataclass
class Failure:
    index: int              # position in the input list
    image: str
    reason: str


def embed_images(net: Network, images: Sequence[str], layer: int
                 ) -> tuple[np.ndarray, list[int], list[Failure]]:
    """(embeddings (n, D) float32 in input order, the input index of each row, the images
    that could not be read). Images are letterboxed to the network size as `run` does."""
    from .predict import prepare
    rows, kept, failed = [], [], []
    for i, path in enumerate(images):
        try:
            x = prepare(path, net.input_shape)
        except DarkcfgError as e:
            failed.append(Failure(i, path, str(e)))
            continue
        net.forward(x[None])
        rows.append(net.outputs[layer].reshape(-1).copy())
        kept.append(i)
    width = int(np.prod(net.graph.layers[layer].out_shape))
    out = np.stack(rows) if rows else np.zeros((0, width), np.float32)
    return out, kept, failed


def embed_dataset(net: Network, data, layer: int, batch: int = 256) -> np.ndarray:
    """Embeddings (N, D) float32 of every image of a classifier dataset (data/classifier.py),
    sized as for validation (no augmentation)."""
    rng = np.random.default_rng(0)          # unused without augmentation
    out = []
    for start in range(0, len(data), batch):
        idx = np.arange(start, min(start + batch, len(data)))
        net.forward(data.batch(idx, net.input_shape, None, rng))
        out.append(net.outputs[layer].reshape(len(idx), -1).copy())
    return np.concatenate(out)


def save_embeddings(path: str, emb: np.ndarray, failed: list[Failure]) -> str:
    """emb as .npy at `path`, and beside it `<path without .npy>.failed.txt`: one line per
    image left out ("index<TAB>image<TAB>why"; empty when none was), so that the rows
    can be matched to the input list. Returns the failures file's path."""
    listing = failed_list_path(path)
    with atomic_write(path, "embeddings") as f:
        np.save(f, emb)
    with atomic_write(listing, "list of failed images") as f:
        f.write("".join(f"{x.index}\t{x.image}\t{x.reason}\n" for x in failed).encode())
    return listing


def failed_list_path(path: str) -> str:
    stem = path[:-4] if path.endswith(".npy") else path
    return f"{stem}.failed.txt"


# --- the verification threshold, stored beside the weights -------------------------------

@dataclass
class Threshold:
    threshold: float        # "same" when the distance is at most this
    distance: str
    layer: int
    accuracy: float         # balanced verification accuracy on the valid split
    valid: str              # where it was chosen


def threshold_path(weights: str | os.PathLike) -> str:
    return f"{os.fspath(weights)}.threshold"


def save_threshold(weights: str | os.PathLike, t: Threshold) -> str:
    path = threshold_path(weights)
    with atomic_write(path, "threshold file") as f:
        f.write((json.dumps(asdict(t), indent=1) + "\n").encode())
    return path


def load_threshold(weights: str | os.PathLike) -> Threshold | None:
    """The threshold `darkcfg valid` stored beside the weights; None when there is none."""
    path = threshold_path(weights)
    if not os.path.exists(path):
        return None
    try:
        t = Threshold(**json.loads(read_text(path, "threshold")))
    except (ValueError, TypeError) as e:
        raise DataError(f"{path}: not a threshold file written by `darkcfg valid` ({e}); "
                        "run `darkcfg valid` again or pass --threshold") from None
    if t.distance not in DISTANCES or not np.isfinite(t.threshold):
        raise DataError(f"{path}: distance {t.distance!r}, threshold {t.threshold!r} cannot "
                        "be used; run `darkcfg valid` again or pass --threshold")
    return t


# --- retrieval measures --------------------------------------------------------------------

@dataclass
class Retrieval:
    images: int
    recall_at_1: float      # the nearest other image has the query's class
    recall_at_5: float      # one of the 5 nearest has it
    map_at_r: float         # mean over queries of AP over the first R neighbours
    threshold: float        # the best verification threshold: same when d <= threshold
    accuracy: float         # its balanced accuracy over all pairs: (TPR + TNR) / 2


def retrieval(emb: np.ndarray, labels: np.ndarray, kind: str, *, chunk: int = 512
              ) -> Retrieval:
    """Leave-one-out retrieval over a labelled set: each image queries all the others,
    ranked by distance (ties by index). recall@k: the fraction of queries with an image of
    their class among the k nearest. mAP@R (Musgrave et al. 2020, "A Metric Learning
    Reality Check"): with R the number of other images of the query's class, the mean of
    precision@i over the ranks i <= R that hold one, divided by R; queries whose class
    has no other image are left out of it. The threshold maximises the balanced accuracy
    of "same class iff d <= t" over all pairs."""
    n = len(emb)
    labels = np.asarray(labels)
    if n < 2:
        raise DataError(f"retrieval needs at least 2 images; got {n}")
    hit1 = hit5 = 0
    ap_sum, ap_count = 0.0, 0
    same_d = []
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        d = distances_to(emb[rows], emb, kind)
        d[np.arange(len(rows)), rows] = np.inf              # leave the query out
        order = np.argsort(d, axis=1, kind="stable")[:, :n - 1]
        rel = labels[order] == labels[rows][:, None]
        hit1 += int(rel[:, 0].sum())
        hit5 += int(rel[:, :5].any(1).sum())
        r = rel.sum(1)
        ranks = np.arange(1, n)
        prec = np.cumsum(rel, axis=1) / ranks
        within = ranks[None, :] <= r[:, None]
        ap = (prec * rel * within).sum(1) / np.maximum(r, 1)
        ap_sum += float(ap[r > 0].sum())
        ap_count += int((r > 0).sum())
        upper = rows[:, None] < np.arange(n)[None, :]        # each pair once
        same_d.append(d[upper & (labels[rows][:, None] == labels[None, :])])
    t, acc = best_threshold(emb, labels, kind, np.concatenate(same_d), chunk)
    return Retrieval(n, hit1 / n, hit5 / n, ap_sum / max(ap_count, 1), t, acc)


def best_threshold(emb: np.ndarray, labels: np.ndarray, kind: str, same: np.ndarray,
                   chunk: int) -> tuple[float, float]:
    """(t, balanced accuracy) maximising (TPR + TNR) / 2 of "same iff d <= t". The best t
    is one of the same-class distances (raising t between two of them only adds false
    positives), so the different-class distances are only counted below each candidate,
    chunk by chunk, never all held at once."""
    n = len(emb)
    if not len(same):
        return float("nan"), float("nan")
    cand = np.unique(same)
    tp = np.searchsorted(np.sort(same), cand, side="right")        # same pairs <= t
    fp = np.zeros(len(cand) + 1, np.int64)                         # different pairs <= t
    n_diff = 0
    for start in range(0, n, chunk):
        rows = np.arange(start, min(start + chunk, n))
        d = distances_to(emb[rows], emb, kind)
        upper = rows[:, None] < np.arange(n)[None, :]
        diff = d[upper & (labels[rows][:, None] != labels[None, :])]
        n_diff += len(diff)
        fp += np.bincount(np.searchsorted(cand, diff, side="left"), minlength=len(cand) + 1)
    if not n_diff:
        return float(cand[-1]), 1.0
    below = np.cumsum(fp)[:len(cand)]              # different pairs with d <= cand[k]
    acc = 0.5 * (tp / len(same) + 1.0 - below / n_diff)
    best = int(np.argmax(acc))
    return float(cand[best]), float(acc[best])


# --- the PCA scatter --------------------------------------------------------------------

def pca_2d(emb: np.ndarray) -> np.ndarray:
    """(N, 2): the embeddings on their two principal axes (centred; each axis's sign
    fixed so that its largest loading is positive)."""
    x = emb.astype(np.float64) - emb.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    axes = vt[:2]
    axes = axes * np.sign(axes[np.arange(len(axes)), np.abs(axes).argmax(1)])[:, None]
    out = x @ axes.T
    return out if out.shape[1] == 2 else np.pad(out, ((0, 0), (0, 2 - out.shape[1])))


def draw_scatter(path: str, emb: np.ndarray, labels: np.ndarray,
                 names: Sequence[str] | None = None, *, title: str = "",
                 size: tuple[int, int] = (860, 640), most: int = 4000,
                 seed: int = 0) -> None:
    """A PNG of the 2-D PCA projection, a dot per image coloured by class, with a legend
    of the class names (`most` images at most, drawn in a random order so that no class
    hides the others)."""
    from PIL import Image, ImageDraw

    from .detection.draw import class_colour
    xy = pca_2d(emb)
    order = np.random.default_rng(seed).permutation(len(xy))[:most]
    width, height = size
    legend_w = 170
    x0, y0, x1, y1 = 20, 40, width - legend_w, height - 20
    lo, hi = xy[order].min(0), xy[order].max(0)
    span = np.maximum(hi - lo, 1e-12)
    im = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(im)
    font = _font(14)
    draw.rectangle((x0, y0, x1, y1), outline=(200, 200, 200))
    for i in order:
        px = x0 + 4 + (xy[i, 0] - lo[0]) / span[0] * (x1 - x0 - 8)
        py = y1 - 4 - (xy[i, 1] - lo[1]) / span[1] * (y1 - y0 - 8)
        draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=class_colour(int(labels[i])))
    draw.text((width / 2, 12), title or "embeddings, PCA", fill=(40, 40, 40), font=font,
              anchor="mt")
    for k, c in enumerate(np.unique(labels)):
        ly = y0 + 10 + 22 * k
        draw.ellipse((x1 + 16, ly - 5, x1 + 26, ly + 5), fill=class_colour(int(c)))
        name = names[int(c)] if names is not None and int(c) < len(names) else f"class {c}"
        draw.text((x1 + 34, ly), name, fill=(40, 40, 40), font=font, anchor="lm")
    with atomic_write(path, "scatter plot") as f:
        im.save(f, format="PNG")


def _font(size: int):
    from PIL import ImageFont
    try:
        return ImageFont.load_default(size=size)     # Pillow >= 10.1 with FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def validate_embeddings(net: Network, data, layer: int,
                        progress: Callable[[str], None] | None = None
                        ) -> tuple[np.ndarray, Retrieval]:
    """Embeddings of a dataset and their retrieval measures under the net's distance."""
    emb = embed_dataset(net, data, layer)
    if progress:
        progress(f"embedded {len(emb)} images; ranking")
    return emb, retrieval(emb, data.labels, distance_of(net.graph))
