"""The training chart (AlexeyAB Darknet's chart.png, src/image_opencv.cpp: draw_train_chart,
draw_train_loss) drawn with Pillow only:
loss and average loss per iteration, validation accuracy on a right-hand axis.

    draw_chart("backup/chart.png", iterations, losses, avg_losses,
               accuracy=[(1000, 0.88), (2000, 0.90)], title="fashion_plain.cfg")

The file is replaced atomically, so a viewer never sees half a PNG.
"""
from __future__ import annotations

import math
import os
from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from ..fileio import atomic_write

LOSS = (160, 185, 230)         # raw loss: light, it is noisy
AVG = (20, 60, 170)            # average loss
ACC = (200, 40, 40)            # validation accuracy
STAT = (40, 150, 70)           # a 0..1 statistic per iteration (fraction of active triplets)
GRID = (228, 228, 228)
INK = (40, 40, 40)


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) from <= lo to >= hi."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / max(count - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9)
    last = math.ceil(hi / step - 1e-9)          # the last tick is at or above hi
    return [round(k * step, 12) for k in range(first, last + 1)]


def loss_axis_top(losses: Sequence[float]) -> float:
    """The top of the loss axis: the largest finite loss, unless the first iterations'
    losses dwarf the rest (a detector starts near 100 and trains at 2-5), when it is twice
    the 90th percentile of the run's second half, the earlier values clipped to the top
    edge (AlexeyAB's chart clips at a fixed max_chart_loss=20 for the same reason)."""
    finite = sorted(v for v in losses if math.isfinite(v))
    if not finite:
        return 1.0
    late = sorted(v for v in losses[len(losses) // 2:] if math.isfinite(v))
    if len(losses) < 20 or not late:
        return finite[-1]
    p90 = late[min(len(late) - 1, int(0.9 * len(late)))]
    return 2 * p90 if finite[-1] > 4 * p90 > 0 else finite[-1]


def _label(v: float) -> str:
    return f"{v:.4g}" if abs(v) < 1e5 else f"{v:.2g}"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)     # Pillow >= 10.1 with FreeType
    except (TypeError, OSError, ImportError):
        return ImageFont.load_default()


def draw_chart(path: str | os.PathLike, iterations: Sequence[int], losses: Sequence[float],
               avg_losses: Sequence[float] | None = None, *,
               accuracy: Sequence[tuple[int, float]] = (), title: str = "",
               accuracy_label: str = "accuracy",
               size: tuple[int, int] = (900, 560), max_loss: float | None = None,
               stat: tuple[str, Sequence[float]] | None = None) -> None:
    """Write the chart PNG. `accuracy` holds (iteration, fraction 0..1) pairs; losses
    above `max_loss` (default: `loss_axis_top`) are clipped to the top edge, which then
    says so.
    `stat`: (name, a value in 0..1 per iteration, NaN where there is none), drawn thin on
    the right-hand axis."""
    if len(iterations) != len(losses) or (avg_losses is not None and
                                          len(avg_losses) != len(losses)) or \
            (stat is not None and len(stat[1]) != len(losses)):
        raise ValueError("iterations, losses, avg_losses and stat must have the same length")
    width, height = size
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    font, small = _font(15), _font(12)
    right_axis = bool(accuracy) or stat is not None
    left, right = 70, 70 if right_axis else 25
    top, bottom = 45, 55
    x0, y0, x1, y1 = left, top, width - right, height - bottom

    finite = [v for v in losses if math.isfinite(v)]
    ymax = max_loss if max_loss is not None else loss_axis_top(losses)
    yticks = nice_ticks(0.0, ymax if ymax > 0 else 1.0)
    ytop = yticks[-1]
    xs = list(iterations)
    xlo, xhi = (min(xs), max(xs)) if xs else (0, 1)
    if accuracy:
        xlo, xhi = min([xlo] + [i for i, _ in accuracy]), max([xhi] + [i for i, _ in accuracy])
    xticks = nice_ticks(xlo, xhi if xhi > xlo else xlo + 1)
    xbot, xtop = xticks[0], xticks[-1]

    def px(i: float) -> float:
        return x0 + (i - xbot) / ((xtop - xbot) or 1) * (x1 - x0)

    def py(v: float, top_value: float = ytop) -> float:
        return y1 - min(max(v, 0.0), top_value) / top_value * (y1 - y0)

    for t in yticks:
        y = py(t)
        draw.line([(x0, y), (x1, y)], fill=GRID)
        draw.text((x0 - 6, y), _label(t), fill=INK, font=small, anchor="rm")
    for t in xticks:
        x = px(t)
        draw.line([(x, y0), (x, y1)], fill=GRID)
        draw.text((x, y1 + 6), _label(t), fill=INK, font=small, anchor="mt")
    if right_axis:
        ink = ACC if accuracy else STAT
        for t in nice_ticks(0.0, 1.0):
            draw.text((x1 + 6, py(t, 1.0)), f"{t * 100:.0f}%", fill=ink, font=small,
                      anchor="lm")
        draw.text((x1 + 6, y0 - 8), accuracy_label if accuracy else stat[0], fill=ink,
                  font=small, anchor="lb")

    def polyline(values: Sequence[float], colour, w: int, top_value: float = ytop) -> None:
        run: list[tuple[float, float]] = []
        for i, v in zip(xs, values):
            if math.isfinite(v):
                run.append((px(i), py(v, top_value)))
            else:                                  # a NaN/inf loss breaks the line
                _segment(draw, run, colour, w)
                run = []
        _segment(draw, run, colour, w)

    if stat is not None:
        polyline(stat[1], STAT, 1, 1.0)
    polyline(losses, LOSS, 1)
    if avg_losses is not None:
        polyline(avg_losses, AVG, 2)
    if accuracy:
        pts = [(px(i), py(a, 1.0)) for i, a in accuracy]
        _segment(draw, pts, ACC, 2)
        for x, y in pts:
            draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=ACC)
        title = f"{title or 'training loss'}   (last {accuracy_label} {accuracy[-1][1]:.2%})"

    draw.rectangle([x0, y0, x1, y1], outline=INK)
    draw.text((width / 2, 14), title or "training loss", fill=INK, font=font, anchor="mt")
    draw.text(((x0 + x1) / 2, height - 8), "iteration", fill=INK, font=small, anchor="mb")
    draw.text((x0 - 6, y0 - 8), "loss", fill=INK, font=small, anchor="rb")
    if finite and max(finite) > ytop:
        draw.text((x0 + 6, y0 + 6), f"losses above {_label(ytop)} clipped (largest "
                  f"{max(finite):.4g})", fill=INK, font=small, anchor="lt")
    legend = [("loss", LOSS), ("avg loss", AVG)] + ([(accuracy_label, ACC)] if accuracy else []) \
        + ([(stat[0], STAT)] if stat is not None else [])
    lx = x1 - 8 - 90 * len(legend)
    for name, colour in legend:
        draw.line([(lx, y0 + 14), (lx + 22, y0 + 14)], fill=colour, width=3)
        draw.text((lx + 27, y0 + 14), name, fill=INK, font=small, anchor="lm")
        lx += 90
    with atomic_write(path, "loss chart") as f:
        img.save(f, format="PNG")


def _segment(draw: ImageDraw.ImageDraw, pts: list[tuple[float, float]], colour,
             width: int) -> None:
    if len(pts) > 1:
        draw.line(pts, fill=colour, width=width, joint="curve" if width > 1 else None)
    elif pts:
        x, y = pts[0]
        draw.point((x, y), fill=colour)
