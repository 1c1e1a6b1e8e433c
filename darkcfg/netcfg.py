"""The [net] / [network] section: input shape and training options, and `NetInfo`, the
typed section every layer is built with (Darknet's src/parser.c: parse_net_options)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .activations import ACTIVATIONS, CODES
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
    # AH: `darknet detector test`/`map` letterbox the image (and undo it on the boxes)
    # only with letter_box=1; otherwise they stretch it to the network size; detector
    # training (dialect=alexeyab) letterboxes its crops too
    "letter_box": Opt("int", 0, "detection: letterbox instead of stretching (AH)", min=0),
    # AH detector training (data/detection.py, dialect=alexeyab only)
    "mosaic": Opt("int", 0, "detector training: 4-image mosaic half of the time (AH)",
                  min=0),
    "mosaic_bound": Opt("int", 0, "mosaic boxes clipped to their quadrant (AH)", min=0),
    "blur": Opt("int", 0, "detector training: 1 blurs the background, k>1 the image (AH)",
                min=0),
    "resize_step": Opt("int", 32, "multi-scale training ([yolo] random=1): sizes are "
                       "multiples of this (AH)", min=1),
}

# Detector-training, GPU and tracking knobs of the AH lineage that change nothing darkcfg
# computes on a CPU: accepted silently (a key that would change the math and that darkcfg
# does not implement is an error instead).
NET_QUIET = frozenset({
    "notruth", "clip", "gaussian_noise", "mixup", "cutmix", "track", "augment_speed",
    "sequential_subdivisions", "try_fix_nan",
    "weights_reject_freq", "equidistant_point", "badlabels_rejection_percentage",
    "num_sigmas_reject_badlabels", "ema_alpha", "use_cuda_graph", "loss_scale",
    "dynamic_minibatch", "optimized_memory", "workspace_size_limit_MB", "contrastive",
    "contrastive_jit_flip", "contrastive_color", "attention",
    "adversarial_lr", "max_chart_loss", "show_receptive_field", "unsupervised",
    "seq_scales", "seen", "max_epochs", "beta1",
})


# Training techniques of AlexeyAB's [net] that darkcfg does not compute yet: accepted so the
# cfgs load, but training says they are left out (`not_computed`).
NOT_COMPUTED = ("gaussian_noise", "mixup", "cutmix", "dynamic_minibatch", "ema_alpha",
                "adversarial_lr", "contrastive", "attention")


def not_computed(section, computed: tuple[str, ...] = ()) -> list[str]:
    """`file:line: key=value` for every NOT_COMPUTED key of [net] set to something other
    than 0 (the value that switches it off), except those the caller computes."""
    out = []
    for key in NOT_COMPUTED:
        if key in computed:
            continue
        entry = section.entries.get(key)
        if entry is None:
            continue
        try:
            off = float(entry.value) == 0
        except ValueError:
            off = False
        if not off:
            out.append(f"{section.file}:{entry.line}: {key}={entry.value}")
    return out


# ---------------------------------------------------------------------------------------
# which lineage a cfg was written for (DECISIONS.md 2: the `dialect`)

@dataclass(frozen=True)
class DialectChoice:
    """The dialect a network runs under, which rule chose it and why. Precedence: a
    dialect given (`--dialect`, `dialect=`) > a weights header with revision >= 5 > an
    AlexeyAB-only section, key or activation in the cfg > pjreddie by default."""
    dialect: str
    rule: str               # "given", "weights", "cfg" or "default"
    reason: str             # one sentence naming the file/line that decided

    def describe(self) -> str:
        """One line: "dialect: alexeyab, chosen by the cfg content: x.cfg line 60: ..."."""
        return f"dialect: {self.dialect}, chosen by {RULES[self.rule]}: {self.reason}"


# how each rule is named when a choice is reported, in order of precedence
RULES = {"given": "--dialect", "weights": "the weights header", "cfg": "the cfg content",
         "default": "default"}


# Sections, keys and activation names that exist only in AlexeyAB's Darknet (and its
# hank-ai fork): spec/cfg-format.md's lineage columns. A key both lineages read (conv
# `groups`, softmax `groups`, [net] `flip`, ...) is no evidence and is left out.
AB_SECTIONS = frozenset({"sam", "scale_channels", "implicit", "reorg3d", "local_avgpool",
                         "empty", "Gaussian_yolo", "contrastive", "conv_lstm", "history"})
AB_ANY_KEYS = frozenset({"dont_update", "burnin_update", "train_only_bn", "stream",
                         "wait_stream"})
AB_KEYS = {
    "net": frozenset({
        "letter_box", "mosaic", "cutmix", "mixup", "blur", "gaussian_noise", "mosaic_bound",
        "label_smooth_eps", "track", "augment_speed", "sequential_subdivisions",
        "try_fix_nan", "weights_reject_freq", "equidistant_point",
        "badlabels_rejection_percentage", "num_sigmas_reject_badlabels", "ema_alpha",
        "use_cuda_graph", "loss_scale", "dynamic_minibatch", "optimized_memory",
        "workspace_size_limit_MB", "contrastive", "contrastive_jit_flip",
        "contrastive_color", "resize_step", "attention", "adversarial_lr", "max_chart_loss",
        "show_receptive_field", "unsupervised", "seq_scales", "sgdr_cycle", "sgdr_mult",
        "learning_rate_min"}),
    "convolutional": frozenset({
        "stride_x", "stride_y", "dilation", "antialiasing", "share_index", "cbn",
        "assisted_excitation", "sway", "rotate", "stretch", "stretch_sway", "grad_centr",
        "coordconv", "deform", "bin_output"}),
    "maxpool": frozenset({"stride_x", "stride_y", "maxpool_depth", "out_channels",
                          "antialiasing", "maxpool_zero_nonmax"}),
    "route": frozenset({"groups", "group_id"}),
    "shortcut": frozenset({"weights_type", "weights_normalization"}),
    "yolo": frozenset({
        "scale_x_y", "new_coords", "iou_loss", "iou_normalizer", "obj_normalizer",
        "cls_normalizer", "delta_normalizer", "iou_thresh", "nms_kind", "beta_nms",
        "label_smooth_eps", "counters_per_class", "max_delta", "objectness_smooth",
        "focal_loss", "resize", "track_history_size", "track_ciou_norm", "sim_thresh",
        "dets_for_track", "dets_for_show", "embedding_layer", "show_details",
        "iou_thresh_kind"}),
    "dropout": frozenset({"dropblock", "dropblock_size_rel", "dropblock_size_abs"}),
}
AB_ACTIVATIONS = frozenset(ACTIVATIONS[CODES["relu6"]:])


def ab_only_feature(sections: list[Section]) -> str | None:
    """The first thing in a cfg (sections with resolved names, in file order) that only
    AlexeyAB's Darknet reads, as "line N: ..."; None if there is none."""
    for sec in sections:
        if sec.name in AB_SECTIONS:
            return f"line {sec.line}: section [{sec.written}]"
        keys = AB_KEYS.get(sec.name, frozenset()) | AB_ANY_KEYS
        for entry in sec.entries.values():
            what = f"line {entry.line}: [{sec.written}] {entry.key}={entry.value}"
            if entry.key in keys:
                return what
            if entry.key == "activation" and entry.value in AB_ACTIVATIONS:
                return what
            if sec.name == "shortcut" and entry.key == "from" and "," in entry.value:
                return what + " (several layers)"
            if sec.name == "net" and entry.key == "policy" and entry.value == "sgdr":
                return what
    return None


def choose_dialect(sections: list[Section], given: str | DialectChoice | None,
                   file: str) -> DialectChoice:
    """The dialect for a cfg: `given` (a name, or a choice a caller made, e.g. from a
    weights header) wins; else an AlexeyAB-only feature of the cfg; else pjreddie."""
    if isinstance(given, DialectChoice):
        return given
    if given is not None:
        return DialectChoice(given, "given", "given by the caller (--dialect, or dialect= "
                             "in Python), over the weights header and the cfg")
    found = ab_only_feature(sections)
    if found is not None:
        return DialectChoice("alexeyab", "cfg",
                             f"{file} {found} exists only in AlexeyAB's Darknet")
    return DialectChoice("pjreddie", "default",
                         "nothing AlexeyAB-only in the cfg and no weights header of "
                         "revision >= 5; --dialect alexeyab gives AlexeyAB's numbers")


@dataclass
class NetInfo:
    """The [net] section, typed, plus what darkcfg derives from it."""
    opts: dict[str, Any]
    input_shape: tuple[int, int, int]
    dialect: str = "pjreddie"
    section: Section | None = None
    dialect_choice: DialectChoice | None = None     # which rule chose `dialect`, and why

    @property
    def inputs(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    @property
    def batch(self) -> int:
        """The mini-batch: batch / subdivisions, at least 1."""
        return max(1, self.opts["batch"] // self.opts["subdivisions"])
