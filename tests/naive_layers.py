"""Slow, obvious NumPy references for the other layers' kernels (darkcfg/kernels/pool.py,
softmax.py, shortcut.py, reorg.py, resample.py, normalize.py, loss.py) and their losses.

Each is written from the rule it checks (the spec or reference/README.md), by a different
route than the kernel: padding plus slicing instead of bounds tests, reshape/transpose
instead of index arithmetic, closed forms instead of running sums. float64 where the
order of summation would otherwise matter.
"""
from __future__ import annotations

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)


def _pool_pad(x: np.ndarray, size: int, sy: int, sx: int, padding: int, fill: float):
    # (N, C, H, W) -> padded array, out dims, the left/top pad: `padding` is the total,
    # padding//2 before, the rest after (src/maxpool_layer.c: make_maxpool_layer).
    h, w = x.shape[2:]
    oh, ow = (h + padding - size) // sy + 1, (w + padding - size) // sx + 1
    before = padding // 2
    after_h = max(0, (oh - 1) * sy - before + size - h)
    after_w = max(0, (ow - 1) * sx - before + size - w)
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (before, after_h), (before, after_w)),
                constant_values=fill)
    return xp, oh, ow, before


def maxpool(x: np.ndarray, size: int, sy: int, sx: int,
            padding: int) -> tuple[np.ndarray, np.ndarray]:
    """-> (out (N, C, oh, ow), argmax flat index per sample, -1 for an all-padding window)."""
    n, c, h, w = x.shape
    xp, oh, ow, before = _pool_pad(x, size, sy, sx, padding, -np.inf)
    out = np.full((n, c, oh, ow), -FLT_MAX)
    arg = np.full((n, c, oh, ow), -1)
    for i in range(oh):
        for j in range(ow):
            win = xp[:, :, i * sy:i * sy + size, j * sx:j * sx + size].reshape(n, c, -1)
            best = win.argmax(axis=2)            # first maximum, rows then columns
            val = np.take_along_axis(win, best[..., None], 2)[..., 0]
            y = i * sy - before + best // size
            xx = j * sx - before + best % size
            ok = np.isfinite(val)
            out[:, :, i, j] = np.where(ok, val, -FLT_MAX)
            flat = (np.arange(c)[None, :] * h + y) * w + xx
            arg[:, :, i, j] = np.where(ok, flat, -1)
    return out.astype(np.float32), arg


def local_avgpool(x: np.ndarray, size: int, sy: int, sx: int, padding: int) -> np.ndarray:
    """Mean over the in-image cells of each window."""
    xp, oh, ow, _ = _pool_pad(x, size, sy, sx, padding, np.nan)
    n, c = x.shape[:2]
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = np.nanmean(xp[:, :, i * sy:i * sy + size, j * sx:j * sx + size],
                                         axis=(2, 3))
    return out


def maxpool_depth(x: np.ndarray, out_c: int) -> np.ndarray:
    """Output channel g = max over input channels g, g+out_c, ..."""
    return np.stack([x[:, g::out_c].max(axis=1) for g in range(out_c)], axis=1)


def global_avgpool(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64).mean(axis=(2, 3), keepdims=True)


def softmax_chunks(x: np.ndarray, groups: int, temperature: float) -> np.ndarray:
    """Softmax over each of `groups` contiguous chunks of every sample's flat buffer."""
    z = x.astype(np.float64).reshape(x.shape[0], groups, -1) / temperature
    e = np.exp(z - z.max(axis=2, keepdims=True))
    return (e / e.sum(axis=2, keepdims=True)).reshape(x.shape)


def reorg_formula(x: np.ndarray, w: int, h: int, c: int, s: int, forward: bool) -> np.ndarray:
    """Darknet's `reorg_cpu` written out element by element (src/blas.c: reorg_cpu)."""
    n = x.shape[0]
    xf = x.reshape(n, -1)
    out = np.zeros_like(xf)
    cq = c // (s * s)
    for k in range(c):
        for j in range(h):
            for i in range(w):
                src = i + w * (j + h * k)
                off = k // cq
                dst = (i * s + off % s) + w * s * ((j * s + off // s) + h * s * (k % cq))
                if forward:
                    out[:, dst] = xf[:, src]
                else:
                    out[:, src] = xf[:, dst]
    return out


def space_to_depth(x: np.ndarray, s: int) -> np.ndarray:
    """(N, C, H, W) -> (N, s*s*C, H/s, W/s): channel (dy*s + dx)*C + k holds x[k, s*j+dy,
    s*i+dx] (AH [reorg3d])."""
    n, c, h, w = x.shape
    y = x.reshape(n, c, h // s, s, w // s, s)            # n, k, j, dy, i, dx
    return y.transpose(0, 3, 5, 1, 2, 4).reshape(n, s * s * c, h // s, w // s)


def shortcut_p(x: np.ndarray, add: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """P's shortcut by slicing: overlapping channels, strided read / sparse write."""
    out = x.astype(np.float64)
    w, wa = x.shape[3], add.shape[3]
    stride, sample = max(1, wa // w), max(1, w // wa)
    minc = min(x.shape[1], add.shape[1])
    minh, minw = min(x.shape[2], add.shape[2]), min(w, wa)
    dst = out[:, :minc, ::sample, ::sample][:, :, :minh, :minw]
    src = add[:, :minc, ::stride, ::stride][:, :, :minh, :minw]
    out[:, :minc, 0:minh * sample:sample, 0:minw * sample:sample] = alpha * dst + beta * src
    return out


def shortcut_flat(x: np.ndarray, adds: list[np.ndarray]) -> np.ndarray:
    """AH: per sample, out[i] = x[i] + sum of add_k[i] for i < len(add_k)."""
    n = x.shape[0]
    out = x.astype(np.float64).reshape(n, -1)
    for a in adds:
        af = a.reshape(n, -1)
        for i in range(min(out.shape[1], af.shape[1])):
            out[:, i] += af[:, i]
    return out.reshape(x.shape)


def upsample(x: np.ndarray, s: int, scale: float) -> np.ndarray:
    return scale * x.astype(np.float64).repeat(s, axis=2).repeat(s, axis=3)


def downsample_sum(x: np.ndarray, s: int, scale: float) -> np.ndarray:
    n, c, h, w = x.shape
    blocks = x.astype(np.float64).reshape(n, c, h // s, s, w // s, s)
    return scale * blocks.sum(axis=(3, 5))


def lrn(x: np.ndarray, size: int, alpha: float, beta: float, kappa: float) -> np.ndarray:
    """Darknet's LRN in closed form: the window of channel k is [k-(size-1)//2, k+size//2],
    but its running sum never included channel size//2, so every norm lacks that channel's
    square (the off-by-one that reference case `misc_layers` confirms)."""
    c = x.shape[1]
    sq = x.astype(np.float64) ** 2
    out = np.empty(x.shape)
    for k in range(c):
        lo, hi = max(0, k - (size - 1) // 2), min(c - 1, k + size // 2)
        total = sq[:, lo:hi + 1].sum(axis=1)
        if size // 2 < c:
            total = total - sq[:, size // 2]
        out[:, k] = x[:, k] * (kappa + alpha * total) ** -beta
    return out


def l2norm(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return x64 / np.sqrt((x64 ** 2).sum(axis=1, keepdims=True))


def crop(x: np.ndarray, top: int, left: int, height: int, width: int, flip: bool,
         scale: float, shift: float) -> np.ndarray:
    """Darknet's loop: output column j reads column left + j, or w - left - j - 1 flipped."""
    w = x.shape[3]
    out = np.empty((*x.shape[:2], height, width))
    for i in range(height):
        for j in range(width):
            col = w - left - j - 1 if flip else left + j
            out[:, :, i, j] = x[:, :, top + i, col] * scale + shift
    return out


# --- backward references ------------------------------------------------------------------
def lrn_norms(x: np.ndarray, size: int, alpha: float, kappa: float) -> np.ndarray:
    """kappa + alpha * (Darknet's window sum of x^2), closed form as in `lrn`."""
    c = x.shape[1]
    sq = x.astype(np.float64) ** 2
    norms = np.empty(x.shape)
    for k in range(c):
        lo, hi = max(0, k - (size - 1) // 2), min(c - 1, k + size // 2)
        total = sq[:, lo:hi + 1].sum(axis=1)
        if size // 2 < c:
            total = total - sq[:, size // 2]
        norms[:, k] = kappa + alpha * total
    return norms


# Losses as src/cost_layer.c and src/softmax_layer.c compute them: (summed cost,
# gradient w.r.t. the layer's input = minus Darknet's delta).
def softmax_xent(p: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    cost = float(np.sum(np.where(t64 != 0, -np.log(p64), 0.0)))
    return cost, p64 - t64


def logistic_xent(p: np.ndarray, t: np.ndarray) -> tuple[float, np.ndarray]:
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    return float(np.sum(-t64 * np.log(p64) - (1 - t64) * np.log(1 - p64))), p64 - t64


def cost_loss(p: np.ndarray, t: np.ndarray, kind: str,
              scale: float = 1.0) -> tuple[float, np.ndarray, np.ndarray]:
    """[cost] -> (cost, per-element error, gradient passed back)."""
    p64, t64 = p.astype(np.float64), t.astype(np.float64)
    diff = t64 - p64
    if kind == "masked":
        diff = np.where(t64 == -1234, 0.0, diff)
    big = np.abs(diff) >= 1
    if kind == "smooth":
        error = np.where(big, 2 * np.abs(diff) - 1, diff ** 2)
        delta = np.where(big, np.sign(diff), diff)
    elif kind == "L1":
        error = np.abs(diff)
        delta = np.where(diff > 0, 1.0, -1.0)
    else:                                     # sse, masked, seg, wgan
        error, delta = diff ** 2, diff
    return float(error.sum()), error, -scale * delta
