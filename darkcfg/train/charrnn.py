"""`darkcfg rnn`: Darknet's char-RNN workflow (examples/rnn.c: train_char_rnn,
test_char_rnn, valid_char_rnn) on any recurrent cfg whose input and output are 256 wide.

Text is bytes: each byte is a one-hot row of 256 and its target is the next byte. A
training iteration takes `batch` streams (the cfg's batch/subdivisions) at random offsets
of the training text, `time_steps` bytes each, in Darknet's step-major rows (row t*S + s:
layers/_recurrent.py), and the state starts from zeros every batch. The last
`valid_fraction` of the text is held out: `evaluate` reads it as S long streams, T steps
a call, the state carried from call to call, and gives bits per byte (the mean of
-log2 p(next byte)) and perplexity 2^bits.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DarkcfgError, DataError
from ..fileio import check_folder
from ..network import Network
from .loop import Step

SYMBOLS = 256
VALID_FRACTION = 0.05


def read_bytes(path: str | Path) -> np.ndarray:
    """The file's bytes as uint8 (refused when unreadable or shorter than 2 bytes)."""
    try:
        data = np.frombuffer(Path(path).read_bytes(), np.uint8)
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    if len(data) < 2:
        raise DataError(f"{path}: {len(data)} bytes: a text needs at least 2 (a byte and "
                        "the next one)")
    return data


def split(data: np.ndarray, valid_fraction: float = VALID_FRACTION
          ) -> tuple[np.ndarray, np.ndarray]:
    """(training head, held-out tail): the last `valid_fraction` of the bytes."""
    n = int(len(data) * valid_fraction)
    return data[:len(data) - n], data[len(data) - n:]


def check_net(net: Network, what: str) -> None:
    """A char-RNN net takes and gives one value per byte: 256 inputs, 256 outputs."""
    outs = net.layers[net.output_index].outputs
    if net.graph.net.inputs != SYMBOLS or outs != SYMBOLS:
        raise DarkcfgError(f"{what}: `darkcfg rnn` feeds one-hot bytes: the cfg needs "
                           f"inputs={SYMBOLS} and a last layer of {SYMBOLS} outputs (it has "
                           f"{net.graph.net.inputs} and {outs})")


def one_hot(codes: np.ndarray) -> np.ndarray:
    out = np.zeros((codes.size, SYMBOLS), np.float32)
    out[np.arange(codes.size), codes.reshape(-1)] = 1
    return out


def batch_rows(text: np.ndarray, offsets: np.ndarray, steps: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(input, truth) one-hot rows, step-major: row t*S + s is byte offsets[s] + t and
    its truth the byte after it (examples/rnn.c: get_rnn_data)."""
    idx = offsets[None, :] + np.arange(steps)[:, None]        # (T, S)
    return one_hot(text[idx]), one_hot(text[idx + 1])


@dataclass(frozen=True)
class CharOptions:
    max_batches: int | None = None     # default: the cfg's max_batches
    seed: int = 0
    backup_every: int = 100
    chart_every: int = 50
    valid_every: int = 500             # bits per byte on the held-out tail
    valid_bytes: int = 100_000         # of the tail, for the check during training
    valid_fraction: float = VALID_FRACTION


def train_char_rnn(text_path: str, cfg: str, weights: str | None, backup: str,
                   opts: CharOptions, log: Callable[[str], None] = lambda m: None,
                   progress: Callable[[Step], None] | None = None) -> Path:
    """Train; returns the final weights' path (`<cfg stem>_final.weights` in `backup`,
    with `<stem>.backup` every backup_every iterations and `<stem>_chart.png`)."""
    from .chart import draw_chart
    net = Network.load(cfg, batch=None)
    check_net(net, cfg)
    net.init_weights(opts.seed)
    if weights:
        net.load_weights(weights)
    train, valid = split(read_bytes(text_path), opts.valid_fraction)
    steps = net.graph.net.opts["time_steps"]
    subs = net.graph.net.opts["subdivisions"]
    streams = net.graph.net.batch * subs
    if len(train) <= steps + 1:
        raise DataError(f"{text_path}: {len(train)} training bytes, fewer than "
                        f"time_steps + 2 = {steps + 2}")
    max_batches = opts.max_batches or net.graph.net.opts["max_batches"]
    if max_batches < 1:
        raise DarkcfgError(f"{cfg}: max_batches is 0: give --max-batches")
    folder = Path(check_folder(backup, "checkpoints"))
    base = Path(cfg).stem
    chart = folder / f"{base}_chart.png"
    its, losses, avgs, vals = [], [], [], []
    avg = None
    t0, seen0 = time.monotonic(), net.seen
    while net.iteration < max_batches:
        i = net.iteration
        rng = np.random.default_rng([opts.seed, i])
        offsets = rng.integers(0, len(train) - steps - 1, streams)
        # each of the `subdivisions` passes takes its own streams, step-major within it
        parts = [batch_rows(train, o, steps) for o in np.split(offsets, subs)]
        x = np.concatenate([p[0] for p in parts])
        truth = np.concatenate([p[1] for p in parts])
        loss = net.train_step(x, truth) / math.log(2)         # bits per byte
        if not math.isfinite(loss):
            raise DarkcfgError(f"the loss became {loss} at iteration {i + 1}; try a lower "
                               "learning_rate")
        avg = loss if avg is None else 0.9 * avg + 0.1 * loss
        it = net.iteration
        its.append(it)
        losses.append(loss)
        avgs.append(avg)
        if progress is not None:
            rate = (net.seen - seen0) / max(time.monotonic() - t0, 1e-9)
            progress(Step(it, max_batches, net.seen / len(train), loss, avg, net.last_rate,
                          rate, (max_batches - it) * net.train_batch / max(rate, 1e-9)))
        if len(valid) > 1 and (it % opts.valid_every == 0 or it == max_batches):
            bits, _ = evaluate(net, valid[:opts.valid_bytes])
            vals.append((it, bits))
            log(f"iteration {it}: {bits:.4f} bits per byte on the held-out tail")
        if it % opts.backup_every == 0:
            net.save_weights(folder / f"{base}.backup")
        if it % opts.chart_every == 0 or it == max_batches:
            draw_chart(chart, its, losses, avgs, title=f"{base}  (bits per byte)")
    final = folder / f"{base}_final.weights"
    net.save_weights(final)
    log(f"done: {net.iteration} iterations in {time.monotonic() - t0:.0f} s; weights "
        f"{final}; chart {chart}")
    return final


def evaluate(net: Network, text: np.ndarray, streams: int = 32) -> tuple[float, float]:
    """(bits per byte, perplexity) of predicting each byte of `text` from the ones before
    it: S contiguous streams, T steps a call, the state carried between calls (Darknet's
    valid_char_rnn feeds one byte at a time; this is the same sum in bigger calls)."""
    steps = net.graph.net.opts["time_steps"]
    streams = max(1, min(streams, (len(text) - 1) // steps))
    length = (len(text) - 1) // (streams * steps) * steps      # per stream
    if length == 0:
        raise DataError(f"{len(text)} bytes are too few to evaluate with time_steps="
                        f"{steps}")
    net.reset_state()
    starts = np.arange(streams) * length
    total = 0.0
    for t0 in range(0, length, steps):
        x, truth = batch_rows(text, starts + t0, steps)
        p = net.forward(x).reshape(len(x), -1)
        total -= np.log2(np.maximum(p[truth > 0], 1e-30)).sum()
    net.reset_state()
    bits = total / (streams * length)
    return float(bits), float(2.0 ** bits)


def bigram_bits(train: np.ndarray, valid: np.ndarray) -> float:
    """Bits per byte of the add-one-smoothed bigram model of `train` on `valid`: the
    baseline a char-RNN must beat."""
    counts = np.ones((SYMBOLS, SYMBOLS))
    np.add.at(counts, (train[:-1], train[1:]), 1)
    p = counts / counts.sum(1, keepdims=True)
    return float(-np.log2(p[valid[:-1], valid[1:]]).mean())


def generate(net: Network, seed: str, length: int, temp: float, rng: np.random.Generator
             ) -> bytes:
    """`length` bytes after `seed` (fed first, one byte a call, the state carried), each
    drawn from the output raised to 1/temp (the softmax at temperature temp)."""
    if temp <= 0:
        raise DarkcfgError(f"--temp must be > 0; got {temp}")
    # one byte a call (examples/rnn.c uses a time_steps=1 cfg for the same reason); the
    # cfg's time_steps is restored after
    opts = net.graph.net.opts
    steps, opts["time_steps"] = opts["time_steps"], 1
    try:
        net.reset_state()
        p = None
        for b in seed.encode() or b"\n":
            p = net.forward(one_hot(np.array([b]))).reshape(-1).astype(np.float64)
        out = bytearray()
        for _ in range(length):
            logq = np.log(np.maximum(p, 1e-300)) / temp     # p^(1/temp), in logs so a
            q = np.exp(logq - logq.max())                   # low temp cannot underflow
            b = int(rng.choice(SYMBOLS, p=q / q.sum()))
            out.append(b)
            p = net.forward(one_hot(np.array([b]))).reshape(-1).astype(np.float64)
    finally:
        opts["time_steps"] = steps
        net.reset_state()
    return bytes(out)
