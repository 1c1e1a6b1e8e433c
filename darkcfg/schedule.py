"""Darknet's learning-rate schedule (src/network.c: get_current_rate): burn-in, then the
[net] `policy`.

The training loop calls `check_schedule` once (so a cfg problem is reported before any
work is done, with file and line) and `learning_rate` at every weight update:

    check_schedule(graph.net.opts, graph.net.section)
    rate = learning_rate(graph.net.opts, iteration, rng)

`opts` is the typed [net] dict that `netcfg.NET_OPTIONS` produces; `iteration` is
Darknet's `get_current_batch` (images seen / update batch).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from .cfg import Section
from .errors import CfgError, DarkcfgError


def _problem(message: str, section: Section | None, key: str | None) -> DarkcfgError:
    if section is not None:
        return section.error(message, key)
    return DarkcfgError(f"[net]: {message}")


def check_schedule(opts: dict[str, Any], section: Section | None = None) -> None:
    """Raise CfgError (or DarkcfgError without a section) when the policy cannot be computed.

    Darknet itself reads past the end of `scales` or divides by zero in these cases.
    """
    policy = opts["policy"]
    if policy == "steps":
        steps, scales = opts.get("steps"), opts.get("scales")
        if not steps:
            raise _problem("policy=steps needs 'steps' (iterations where the rate changes) "
                           "and 'scales' (one factor per step)", section, "policy")
        if not scales:
            raise _problem(f"policy=steps with steps={_join(steps)} needs 'scales': one "
                           "factor per step", section, "steps")
        if len(scales) < len(steps):
            raise _problem(f"{len(steps)} steps ({_join(steps)}) but only {len(scales)} "
                           f"scales ({_join(scales)}): give one scale per step", section,
                           "scales")
    elif policy == "poly" and opts["max_batches"] <= 0:
        raise _problem("policy=poly needs max_batches > 0 (the rate falls to 0 at "
                       "max_batches)", section, "max_batches")
    elif policy == "sgdr" and (opts["sgdr_cycle"] or opts["max_batches"]) <= 0:
        raise _problem("policy=sgdr needs sgdr_cycle > 0 (or max_batches > 0, its default)",
                       section, "policy")


def _join(values: list) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def learning_rate(opts: dict[str, Any], iteration: int,
                  rng: np.random.Generator | None = None,
                  section: Section | None = None) -> float:
    """The rate Darknet uses for the update at `iteration` (before per-layer multipliers).

    `rng` is needed only for policy=random (one uniform draw per call).
    """
    check_schedule(opts, section)
    lr0 = opts["learning_rate"]
    i = iteration
    burn_in = opts["burn_in"]
    if i < burn_in:
        return lr0 * (i / burn_in) ** opts["power"]
    policy = opts["policy"]
    if policy == "constant":
        return lr0
    if policy == "step":
        return lr0 * opts["scale"] ** (i // opts["step"])
    if policy == "steps":
        rate = lr0
        for step, scale in zip(opts["steps"], opts["scales"]):
            if step > i:      # Darknet scans in order and stops here, even if later
                break         # steps are smaller (unsorted steps are not re-sorted)
            rate *= scale
        return rate
    if policy == "exp":
        return lr0 * opts["gamma"] ** i
    if policy == "poly":
        # Past max_batches Darknet would raise a negative base to `power`; training has
        # stopped by then, so the rate simply stays at 0.
        return lr0 * max(0.0, 1.0 - i / opts["max_batches"]) ** opts["power"]
    if policy == "random":
        if rng is None:
            raise DarkcfgError("policy=random needs a random generator (rng=...)")
        return lr0 * float(rng.uniform(0.0, 1.0)) ** opts["power"]
    if policy == "sigmoid":
        z = opts["gamma"] * (i - opts["step"])
        return lr0 / (1.0 + math.exp(z)) if z < 700 else 0.0
    if policy == "sgdr":
        start, cycle = 0, opts["sgdr_cycle"] or opts["max_batches"]
        # AH move to the next cycle only once i is *past* its end (`<`, not `<=`), so
        # the last iteration of a cycle reaches lr_min and a restart begins one step in.
        while start + cycle < i:
            start += cycle
            cycle *= opts["sgdr_mult"]
        lo = opts["learning_rate_min"]
        return lo + 0.5 * (lr0 - lo) * (1.0 + math.cos(math.pi * (i - start) / cycle))
    raise CfgError(f"unknown policy '{policy}'")  # pragma: no cover - the schema prevents it
