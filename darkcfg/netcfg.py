"""The [net] / [network] section: input shape and training options, and `NetInfo`, the
typed section every layer is built with (Darknet's src/parser.c: parse_net_options)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .cfg import Section
from .options import Opt

# Darknet's two lineages: pjreddie/darknet and AlexeyAB/darknet (their BN epsilon and a
# few defaults differ). Comments abbreviate them P and AH (AlexeyAB and its hank-ai fork;
# A or H alone when the two differ).
DIALECTS = ("pjreddie", "alexeyab")

POLICIES = ("constant", "step", "steps", "exp", "poly", "sigmoid", "random", "sgdr")

NET_OPTIONS = {
    "batch": Opt("int", 1, "images per weight update", min=1),
    "subdivisions": Opt("int", 1, "mini-batches per update (batch/subdivisions each)", min=1),
    "width": Opt("int", 0, "input width", min=0),
    "height": Opt("int", 0, "input height", min=0),
    "channels": Opt("int", 0, "input channels", min=0),
    "inputs": Opt("int", 0, "flat input size for non-image nets", min=0),
    "learning_rate": Opt("float", 0.001, "base learning rate", min=0),
    "momentum": Opt("float", 0.9, "SGD momentum", min=0),
    "decay": Opt("float", 0.0001, "weight decay", min=0),
    "policy": Opt("str", "constant", "learning-rate policy", choices=POLICIES),
    "burn_in": Opt("int", 0, "warm-up iterations", min=0),
    "power": Opt("float", 4.0, "exponent for burn-in, poly and random"),
    "max_batches": Opt("int", 0, "training length in iterations", min=0),
    "step": Opt("int", 1, "step for policy=step/sigmoid", min=1),
    "scale": Opt("float", 1.0, "factor for policy=step"),
    "steps": Opt("ints", None, "iterations for policy=steps"),
    "scales": Opt("floats", None, "factors for policy=steps"),
    "gamma": Opt("float", 1.0, "for policy=exp and sigmoid"),
    "learning_rate_min": Opt("float", 0.00001, "floor for policy=sgdr", min=0),
    "sgdr_cycle": Opt("int", 0, "first SGDR cycle (default: max_batches)", min=0),
    "sgdr_mult": Opt("int", 2, "SGDR cycle multiplier", min=1),
    "time_steps": Opt("int", 1, "RNN unroll length", min=1),
    "adam": Opt("int", 0, "Adam instead of SGD", min=0),
    "B1": Opt("float", 0.9, "Adam beta1"),
    "B2": Opt("float", 0.999, "Adam beta2"),
    "eps": Opt("float", 1e-7, "Adam epsilon"),
    "angle": Opt("float", 0.0, "max random rotation (degrees)"),
    "aspect": Opt("float", 1.0, "aspect-ratio jitter", min=1e-9),
    "saturation": Opt("float", 1.0, "saturation jitter factor", min=1e-9),
    "exposure": Opt("float", 1.0, "exposure jitter factor", min=1e-9),
    "hue": Opt("float", 0.0, "hue shift range", min=0),
    "max_crop": Opt("int", 0, "random-crop size max (default 2*width)", min=0),
    "min_crop": Opt("int", 0, "random-crop size min (default width)", min=0),
    "max_ratio": Opt("float", 0.0, "max_crop as a ratio of width", min=0),
    "min_ratio": Opt("float", 0.0, "min_crop as a ratio of width", min=0),
    "center": Opt("int", 0, "centre crop instead of random crop", min=0),
    "flip": Opt("int", 1, "random horizontal flip", min=0),
    "random": Opt("int", 0, "random input resizing (classifier)", min=0),
    "label_smooth_eps": Opt("float", 0.0, "label smoothing", min=0),
}

# Detector-training, GPU and tracking knobs of the AH lineage that change nothing darkcfg
# computes on a CPU: accepted silently (a key that would change the math and that darkcfg
# does not implement is an error instead).
NET_QUIET = frozenset({
    "notruth", "clip", "blur", "gaussian_noise", "mixup", "cutmix", "mosaic", "letter_box",
    "mosaic_bound", "track", "augment_speed", "sequential_subdivisions", "try_fix_nan",
    "weights_reject_freq", "equidistant_point", "badlabels_rejection_percentage",
    "num_sigmas_reject_badlabels", "ema_alpha", "use_cuda_graph", "loss_scale",
    "dynamic_minibatch", "optimized_memory", "workspace_size_limit_MB", "contrastive",
    "contrastive_jit_flip", "contrastive_color", "resize_step", "attention",
    "adversarial_lr", "max_chart_loss", "show_receptive_field", "unsupervised",
    "seq_scales", "seen", "max_epochs", "beta1",
})


@dataclass
class NetInfo:
    """The [net] section, typed, plus what darkcfg derives from it."""
    opts: dict[str, Any]
    input_shape: tuple[int, int, int]
    dialect: str = "pjreddie"
    section: Section | None = None

    @property
    def inputs(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    @property
    def batch(self) -> int:
        """The mini-batch: batch / subdivisions, at least 1."""
        return max(1, self.opts["batch"] // self.opts["subdivisions"])
