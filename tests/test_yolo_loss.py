"""The [yolo] and [region] losses on random data: targets against the NumPy statements
in naive_yolo_loss.py, gradients against finite differences of the losses Darknet's
deltas are the gradients of, and what training refuses.

Finite differences are taken on the head's input z. An entry is checked only where
moving it by +-eps leaves the assignment (every target and weight of the naive
statement) unchanged: the ignore/truth thresholds and best-anchor choices are
discontinuities of the loss, not of its gradient.
"""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.cfg import parse_cfg
from darkcfg.errors import CfgError, DataError
from darkcfg.graph import build_graph
from darkcfg.network import Network

from . import naive_yolo_loss as naive
from .helpers import check_gradient

ANCHORS = np.array([[4, 5], [9, 7], [7, 13], [15, 14], [24, 20], [30, 30]], float)
ANCHOR_TEXT = ", ".join(f"{w:g},{h:g}" for w, h in ANCHORS)


def yolo_net(mask=(0, 1, 2), classes=3, extra="", dialect="pjreddie") -> Network:
    """A 32 x 32 net whose [yolo] head sees a 4 x 4 grid (an 8 x 8 max pool before it);
    tests feed the head directly with `run`. The dialect is given: AB keys in `extra`
    would otherwise choose alexeyab, whose loss is not the naive statement's."""
    c = len(mask) * (5 + classes)
    text = (f"[net]\nwidth=32\nheight=32\nchannels={c}\n\n[maxpool]\nsize=8\nstride=8\n\n"
            f"[yolo]\nmask={','.join(map(str, mask))}\nanchors={ANCHOR_TEXT}\nnum=6\n"
            f"classes={classes}\n{extra}")
    return Network(build_graph(parse_cfg(text, "t.cfg"), dialect=dialect))


def run(net: Network, z: np.ndarray, truth: np.ndarray | None):
    """Train-mode forward of the net's head alone on z (N, C, H, W); returns the head."""
    head = net.layers[-1]
    net.train = True
    net.truth = truth
    try:
        head.forward(z, net)
    finally:
        net.train = False
    return head


def net_output(head, z, net):
    """The head's inference output on z."""
    return head.forward(np.ascontiguousarray(z, np.float32), net).copy()


def random_truth(rng, n, boxes=5, classes=3, slots=90, same_cell=True):
    t = np.zeros((n, slots * 5), np.float32)
    for b in range(n):
        k = rng.integers(1, boxes + 1)
        xy = rng.uniform(0.05, 0.95, (k, 2))
        wh = rng.uniform(0.08, 0.8, (k, 2))
        cls = rng.integers(0, classes, k)
        rows = np.column_stack([xy, wh, cls])
        if same_cell and k >= 2:          # a second truth in the first one's cell and anchor
            rows[1, :4] = rows[0, :4] + 0.01
            rows[1, 4] = (rows[0, 4] + 1) % classes
        t[b, :5 * k] = rows.ravel()
    return t


def random_z(rng, n, a, k, h, w):
    return (rng.standard_normal((n, a * k, h, w)) * 1.5).astype(np.float32)


def to5(x, a):
    n, c, h, w = x.shape
    return x.reshape(n, a, c // a, h, w)


# --- targets against the naive statement --------------------------------------------------

YOLO_CASES = [
    dict(mask=(0, 1, 2), extra=""),
    dict(mask=(3, 4, 5), extra="ignore_thresh=.3\n"),
    dict(mask=(1, 3), extra="ignore_thresh=.2\ntruth_thresh=.35\n"),
    dict(mask=(0, 1, 2, 3, 4, 5), extra="ignore_thresh=.7\nmax=3\n"),
    dict(mask=(2, 4), extra="scale_x_y=1.1\niou_normalizer=0.5\nobj_normalizer=2\n"
                            "cls_normalizer=0.25\n"),
]


@pytest.mark.parametrize("case", range(len(YOLO_CASES)))
def test_yolo_targets_match_the_naive_statement(case):
    spec = YOLO_CASES[case]
    net = yolo_net(spec["mask"], extra=spec["extra"])
    rng = np.random.default_rng(case)
    z = random_z(rng, 3, len(spec["mask"]), 8, 4, 4)
    truth = random_truth(rng, 3)
    out = to5(net_output(net.layers[-1], z, net), len(spec["mask"]))
    head = run(net, z, truth)
    o = head.opts
    target, weight = naive.yolo(out, truth, ANCHORS, list(spec["mask"]), (32, 32),
                                o["ignore_thresh"], o["truth_thresh"], o["max"],
                                head.normalizers())
    delta = weight * (target - out)
    ours = -to5(head._grad, len(spec["mask"]))
    assert np.abs(ours - delta).max() <= 1e-5 * max(1, np.abs(delta).max())
    assert head.cost == pytest.approx(np.sum(delta ** 2), rel=1e-5)
    assert head.stats["count"] > 0


def test_yolo_quirk_two_classes_in_one_cell_and_later_box_wins():
    # two truths whose best anchor is the same, in the same cell: the second overwrites the
    # box and objectness, and only sets its own class entry (the first stays positive)
    net = yolo_net((0, 1, 2))
    z = np.zeros((1, 24, 4, 4), np.float32)
    truth = np.zeros((1, 450), np.float32)
    truth[0, :10] = [0.30, 0.30, 0.15, 0.15, 0, 0.32, 0.33, 0.16, 0.17, 2]
    head = run(net, z, truth)
    d = -to5(head._grad, 3)[0, :, :, 1, 1]           # cell (1, 1)
    a = int(np.argmax(np.abs(d[:, 4])))
    p = 0.5
    np.testing.assert_allclose(d[a, 5:], [1 - p, -p, 1 - p], rtol=1e-6)
    assert d[a, 0] == pytest.approx((2 - 0.16 * 0.17) * (0.32 * 4 - 1 - 0.5), rel=1e-5)
    assert d[a, 4] == pytest.approx(1 - p)


def test_yolo_truth_owned_by_another_head_is_ignored():
    net = yolo_net((0, 1, 2))
    z = np.full((1, 24, 4, 4), -4, np.float32)
    truth = np.zeros((1, 450), np.float32)
    truth[0, :5] = [0.5, 0.5, 0.9, 0.9, 1]            # best anchor 5: the other head's
    head = run(net, z, truth)
    assert head.stats["count"] == 0
    # no box, class or positive objectness delta anywhere: only the no-object terms
    d = -to5(head._grad, 3)
    assert np.all(d[:, :, [0, 1, 2, 3, 5, 6, 7]] == 0)
    assert np.all(d[:, :, 4] <= 0)


def test_reading_stops_at_the_first_zero_x_and_at_max():
    net = yolo_net((0, 1, 2, 3, 4, 5), extra="max=2\n")
    z = np.zeros((1, 48, 4, 4), np.float32)
    truth = np.zeros((1, 10), np.float32)
    truth[0] = [0.2, 0.2, 0.1, 0.1, 0, 0.7, 0.7, 0.3, 0.3, 1]
    assert run(net, z, truth).stats["count"] == 2
    assert run(yolo_net((0, 1, 2, 3, 4, 5), extra="max=1\n"), z, truth).stats["count"] == 1
    truth[0, 0] = 0
    assert np.isnan(run(net, z, truth).stats["iou"])      # no truth read: Darknet's -nan


REGION_CASES = [
    dict(extra="bias_match=1\nrescore=1\nsoftmax=1\n", seen=0),
    dict(extra="bias_match=0\nrescore=0\nsoftmax=1\nthresh=.3\n", seen=20000),
    dict(extra="bias_match=1\nrescore=1\nsoftmax=0\nobject_scale=5\ncoord_scale=2\n"
               "class_scale=3\nnoobject_scale=.5\n", seen=100),
]
REGION_ANCHORS = np.array([[0.6, 0.7], [1.2, 1.6], [2.0, 1.4], [3.2, 3.0]])


def region_net(extra: str, grid=4, classes=3) -> Network:
    num = len(REGION_ANCHORS)
    c = num * (5 + classes)
    text = (f"[net]\nwidth={grid}\nheight={grid}\nchannels={c}\n\n[region]\n"
            f"anchors={', '.join(f'{w:g},{h:g}' for w, h in REGION_ANCHORS)}\nnum={num}\n"
            f"classes={classes}\ncoords=4\n{extra}")
    return Network(build_graph(parse_cfg(text, "t.cfg")))


def region_naive(head, out, truth, seen):
    o = head.opts
    return naive.region(out, truth, REGION_ANCHORS, o["thresh"], seen, o["bias_match"],
                        o["rescore"], o["softmax"], (o["coord_scale"], o["object_scale"],
                                                     o["noobject_scale"], o["class_scale"]))


@pytest.mark.parametrize("case", range(len(REGION_CASES)))
def test_region_targets_match_the_naive_statement(case):
    spec = REGION_CASES[case]
    net = region_net(spec["extra"])
    net.seen = spec["seen"]
    rng = np.random.default_rng(10 + case)
    z = random_z(rng, 3, 4, 8, 4, 4)
    truth = random_truth(rng, 3, slots=30)
    out = to5(net_output(net.layers[-1], z, net), 4)
    head = run(net, z, truth)
    target, weight = region_naive(head, out, truth, spec["seen"])
    delta = weight * (target - out)
    assert np.abs(-to5(head._grad, 4) - delta).max() <= 1e-5 * np.abs(delta).max()
    assert head.cost == pytest.approx(np.sum(delta ** 2), rel=1e-5)


# --- finite differences ------------------------------------------------------------------

def unchanged(assignment, base) -> bool:
    """Every target and weight of the naive statement as at the reference point."""
    return all(np.array_equal(u, v) for u, v in zip(assignment, base))


@pytest.mark.parametrize("case", [0, 2, 4])
def test_yolo_gradient_is_the_derivative_of_its_loss(case):
    spec = YOLO_CASES[case]
    if "scale_x_y" in spec["extra"]:
        spec = dict(spec, extra=spec["extra"].replace("scale_x_y=1.1\n", ""))
    mask = list(spec["mask"])
    net = yolo_net(mask, extra=spec["extra"])
    rng = np.random.default_rng(100 + case)
    z = random_z(rng, 2, len(mask), 8, 4, 4)
    truth = random_truth(rng, 2)
    head = run(net, z, truth)
    o = head.opts

    def assign(z5):
        out = z5.copy()
        sig = 1 / (1 + np.exp(-z5))
        out[:, :, [0, 1, 4, 5, 6, 7]] = sig[:, :, [0, 1, 4, 5, 6, 7]]
        t, w = naive.yolo(out, truth, ANCHORS, mask, (32, 32), o["ignore_thresh"],
                          o["truth_thresh"], o["max"], head.normalizers())
        # the targets of weight-0 entries do not matter
        return np.where(w != 0, t, 0), w

    z5 = to5(z, len(mask)).astype(np.float64)
    frozen = assign(z5)
    ours = head.backward(None, net).reshape(z5.shape)
    check_gradient(lambda: naive.yolo_potential(z5, *frozen), z5, ours,
                   rng.permutation(z5.size), eps=1e-4, rtol=2e-4,
                   usable=lambda: unchanged(assign(z5), frozen), count=250, least=200)


@pytest.mark.parametrize("case", range(len(REGION_CASES)))
def test_region_gradient_follows_the_gpu_path(case):
    spec = REGION_CASES[case]
    net = region_net(spec["extra"])
    net.seen = spec["seen"]
    rng = np.random.default_rng(200 + case)
    z = random_z(rng, 2, 4, 8, 4, 4)
    truth = random_truth(rng, 2, slots=30)
    head = run(net, z, truth)
    softmax = bool(head.opts["softmax"])

    def assign(z5):
        out = to5(net_output(head, np.ascontiguousarray(
            z5.reshape(z.shape), np.float32), net), 4).astype(np.float64)
        return region_naive(head, out, truth, spec["seen"])

    z5 = to5(z, 4).astype(np.float64)
    frozen = assign(z5)
    def fixed(v):
        # the rescore target (the IoU) moves with the box, but Darknet's delta treats it
        # as a constant: it is frozen in the loss and left out of the comparison
        target, weight = assign(v)
        target = np.where(weight != 0, target, 0)
        target[:, :, 4] = 0
        return target, weight

    base = fixed(z5)
    ours = run(net, z, truth).backward(None, net).reshape(z5.shape).copy()
    check_gradient(lambda: naive.region_potential(z5, *frozen, softmax), z5, ours,
                   rng.permutation(z5.size), eps=1e-3, rtol=1e-3,
                   usable=lambda: unchanged(fixed(z5), base), count=200, least=150)


# --- what training refuses, and bad truths -----------------------------------------------

@pytest.mark.parametrize("extra, key", [
    ("iou_loss=giou\n", "iou_loss"), ("iou_loss=ciou\n", "iou_loss"),
    ("new_coords=1\n", "new_coords"), ("iou_thresh=0.2\n", "iou_thresh"),
    ("focal_loss=1\n", "focal_loss"), ("label_smooth_eps=0.1\n", "label_smooth_eps"),
])
def test_unimplemented_training_options_parse_and_infer_but_refuse_to_train(extra, key):
    net = yolo_net(extra=extra)
    net.forward(np.zeros((1, 24, 32, 32), np.float32))   # inference is fine
    z = np.zeros((1, 24, 4, 4), np.float32)
    truth = random_truth(np.random.default_rng(0), 1)
    with pytest.raises(CfgError, match=f"{key}.*not implemented|training with {key}"):
        run(net, z, truth)


def test_normalizers_default_to_one_for_pjreddie_and_to_ah_under_alexeyab():
    assert yolo_net().layers[-1].normalizers() == (1.0, 1.0, 1.0)
    assert yolo_net(dialect="alexeyab").layers[-1].normalizers() == (0.75, 1.0, 1.0)
    assert yolo_net(extra="iou_normalizer=0.07\n").layers[-1].normalizers() == \
        (0.07, 1.0, 1.0)


@pytest.mark.parametrize("box, what", [
    ([0.5, 0.5, 0.2, 0.2, 3], "class"), ([0.5, 0.5, 0.2, 0.2, 1.5], "class"),
    ([0.5, 0.5, 0.0, 0.2, 1], "w, h"), ([1.5, 0.5, 0.2, 0.2, 1], "x"),
    ([0.5, -0.1, 0.2, 0.2, 1], "y"),
])
def test_bad_truth_boxes_are_data_errors_naming_the_box(box, what):
    net = yolo_net()
    truth = np.zeros((1, 450), np.float32)
    truth[0, :5] = [0.3, 0.3, 0.1, 0.1, 0]
    truth[0, 5:10] = box
    with pytest.raises(DataError, match="image 0 of the batch, truth box 1"):
        run(net, np.zeros((1, 24, 4, 4), np.float32), truth)


def test_no_truth_means_no_loss_and_inference_has_none():
    net = yolo_net()
    z = np.zeros((1, 24, 4, 4), np.float32)
    head = run(net, z, None)
    assert head.cost is None and head.backward(None, net) is None
    net.forward(np.zeros((1, 24, 32, 32), np.float32))
    assert head.cost is None


# --- AlexeyAB's IoU-family box deltas (src/box.c: dx_box_iou) ------------------------------
# AB's delta is not the gradient of its printed loss: w, h come from d/d(right) -
# d/d(left) (twice d/d(size)) for the IoU/GIoU part; the DIoU centre term is
# -d(S/C)/d(box) with exponent 1 (box_diou prints 0.6) and, when the enclosing box moves
# with the centre, the opposite sign on that part; the CIoU aspect term lacks the
# 1/(w^2+h^2) factor. Each part is checked against finite differences of the NumPy
# formula where the stated relation is exact.

def _sides(b):
    x, y, w, h = b
    return x - w / 2, x + w / 2, y - h / 2, y + h / 2


def np_iou(p, t):
    pl, pr, pt, pb = _sides(p)
    tl, tr, tt, tb = _sides(t)
    inter = max(min(pr, tr) - max(pl, tl), 0) * max(min(pb, tb) - max(pt, tt), 0)
    union = p[2] * p[3] + t[2] * t[3] - inter
    return inter / union, union


def np_giou(p, t):
    iou, union = np_iou(p, t)
    pl, pr, pt, pb = _sides(p)
    tl, tr, tt, tb = _sides(t)
    c = (max(pr, tr) - min(pl, tl)) * (max(pb, tb) - min(pt, tt))
    return iou - (c - union) / c


def np_centre_penalty(p, t):
    """-S/C: minus the squared centre distance over the enclosing box's squared diagonal."""
    pl, pr, pt, pb = _sides(p)
    tl, tr, tt, tb = _sides(t)
    c = (max(pr, tr) - min(pl, tl)) ** 2 + (max(pb, tb) - min(pt, tt)) ** 2
    return -((p[0] - t[0]) ** 2 + (p[1] - t[1]) ** 2) / c


def np_aspect(p, t):
    return 4 / np.pi ** 2 * (np.arctan(t[2] / t[3]) - np.arctan(p[2] / p[3])) ** 2


def ab_box_delta(p, t, kind: str) -> np.ndarray:
    from darkcfg.kernels.yolo_loss import IOU_KINDS, dx_box_iou
    return np.array(dx_box_iou(*map(float, p), *map(float, t), IOU_KINDS[kind]))


def box_pairs(rng, nested: bool):
    """(pred, truth) centre/size boxes overlapping in general position; nested: the
    prediction strictly inside or strictly around the truth on both axes (the enclosing
    box then does not move with the centre)."""
    for _ in range(12):
        t = np.array([*rng.uniform(0.3, 0.7, 2), *rng.uniform(0.15, 0.4, 2)])
        if nested:
            f = rng.choice([rng.uniform(0.5, 0.8), rng.uniform(1.3, 1.8)])
            room = abs(1 - f) * t[2:] / 2
            p = np.array([*(t[:2] + rng.uniform(-0.4, 0.4, 2) * room), *(t[2:] * f)])
        else:
            p = np.array([*(t[:2] + rng.uniform(-0.08, 0.08, 2)),
                          *(t[2:] * rng.uniform(0.6, 1.5, 2))])
        yield p, t


@pytest.mark.parametrize("kind, formula", [("iou", lambda p, t: np_iou(p, t)[0]),
                                           ("giou", np_giou)])
def test_ab_iou_and_giou_box_deltas_are_their_gradients_with_doubled_size_terms(kind,
                                                                                formula):
    rng = np.random.default_rng(31)
    for p, t in box_pairs(rng, nested=False):
        d = ab_box_delta(p, t, kind)
        ours = d * [1, 1, 0.5, 0.5]
        check_gradient(lambda p=p, t=t: formula(p, t), p, ours, eps=1e-6, rtol=1e-6, atol=1e-9,
                       what=kind)


def test_ab_diou_centre_term_is_minus_the_gradient_of_s_over_c_for_nested_boxes():
    rng = np.random.default_rng(32)
    for p, t in box_pairs(rng, nested=True):
        centre = ab_box_delta(p, t, "diou") - ab_box_delta(p, t, "iou")
        check_gradient(lambda p=p, t=t: np_centre_penalty(p, t), p, centre, eps=1e-6, rtol=1e-6,
                       atol=1e-9, what="diou")


def test_ab_diou_centre_term_flips_the_enclosing_box_part_when_it_moves():
    # the prediction sticks out on the right only: the enclosing width grows with x
    p, t = np.array([0.56, 0.5, 0.3, 0.2]), np.array([0.5, 0.5, 0.3, 0.3])
    centre = ab_box_delta(p, t, "diou") - ab_box_delta(p, t, "iou")
    s = 0.06 ** 2
    cw, ch = 0.71 - 0.35, 0.3
    c = cw ** 2 + ch ** 2
    true_dx = -(2 * 0.06 * c - s * 2 * cw) / c ** 2        # -d(S/C)/dx
    assert centre[0] == pytest.approx((-2 * 0.06 * c - s * 2 * cw) / c ** 2, rel=1e-9)
    assert centre[0] != pytest.approx(true_dx, rel=1e-2)


def test_ab_ciou_aspect_term_is_the_gradient_of_alpha_v_times_w2_plus_h2():
    rng = np.random.default_rng(33)
    for p, t in box_pairs(rng, nested=False):
        iou = np_iou(p, t)[0]
        v = np_aspect(p, t)
        alpha = v / (1 - iou + v + 1e-6)               # AB treats alpha as a constant
        aspect = ab_box_delta(p, t, "ciou") - ab_box_delta(p, t, "diou")
        ours = aspect / np.array([1, 1, p[2] ** 2 + p[3] ** 2, p[2] ** 2 + p[3] ** 2])
        check_gradient(lambda p=p, t=t, a=alpha: -a * np_aspect(p, t), p, ours, eps=1e-6, rtol=1e-6,
                       atol=1e-10, what="ciou")


def test_ab_box_delta_in_the_head_scales_by_exp_tw_and_the_normalizer_then_clips():
    """One truth, one cell: the [yolo] delta of x, y, tw, th under dialect=alexeyab is
    dx_box_iou's, w and h times exp(tw), times iou_normalizer, clipped at max_delta."""
    net = yolo_net((0, 1, 2), dialect="alexeyab",
                   extra="iou_loss=giou\niou_normalizer=0.5\nmax_delta=0.02\n")
    head = net.layers[-1]
    z = np.zeros((1, 24, 4, 4), np.float32)
    z[0, 8 + 2, 1, 1], z[0, 8 + 3, 1, 1] = 0.4, -0.3       # anchor 1's tw, th at (1, 1)
    truth = np.zeros((1, head.truths), np.float32)
    truth[0, :5] = [0.33, 0.36, 0.3, 0.2, 2]
    head = run(net, z, truth)
    d = -to5(head._grad, 3)[0, 1, :4, 1, 1]
    p = np.array([(1 + 0.5) / 4, (1 + 0.5) / 4, np.exp(0.4) * 9 / 32, np.exp(-0.3) * 7 / 32])
    raw = ab_box_delta(p, truth[0, :4].astype(np.float64), "giou")
    want = raw * [1, 1, np.exp(0.4), np.exp(-0.3)] * 0.5
    np.testing.assert_allclose(d, np.clip(want, -0.02, 0.02), rtol=1e-5)
    assert np.abs(want).max() > 0.02 and np.abs(want).min() < 0.02   # both happened


def test_ab_class_options_label_smoothing_focal_and_counters_per_class():
    """delta_yolo_class's variants on one positive cell (classes at p = 0.5)."""
    def class_delta(extra):
        net = yolo_net((0, 1, 2), dialect="alexeyab", extra=extra)
        head = net.layers[-1]
        truth = np.zeros((1, head.truths), np.float32)
        truth[0, :5] = [0.33, 0.36, 0.3, 0.2, 2]
        head = run(net, np.zeros((1, 24, 4, 4), np.float32), truth)
        return -to5(head._grad, 3)[0, 1, 4:, 1, 1]      # objectness, 3 classes
    np.testing.assert_allclose(class_delta(""), [0.5, -0.5, -0.5, 0.5])
    # label_smooth_eps: targets y(1 - eps) + eps/2
    np.testing.assert_allclose(class_delta("label_smooth_eps=0.1\n"),
                               [0.5, 0.05 - 0.5, 0.05 - 0.5, 0.95 - 0.5], rtol=1e-6)
    # focal_loss: (onehot - p) * 0.5 * -(1 - p)(2 p log p + p - 1)
    g = 0.5 * -(1 - 0.5) * (2 * 0.5 * np.log(0.5) + 0.5 - 1)
    np.testing.assert_allclose(class_delta("focal_loss=1\n"),
                               [0.5, -0.5 * g, -0.5 * g, 0.5 * g], rtol=1e-6)
    # counters_per_class 10,40,20 -> multipliers 4, 1, 2: class 2's objectness and class
    # delta x2 (the latter times cls_normalizer), the others unchanged
    np.testing.assert_allclose(class_delta("counters_per_class=10,40,20\ncls_normalizer=3\n"),
                               [1.0, -0.5, -0.5, 0.5 * 2 * 3], rtol=1e-6)
    # cls_normalizer alone changes nothing in AB (it multiplies only with the counters)
    np.testing.assert_allclose(class_delta("cls_normalizer=3\n"), [0.5, -0.5, -0.5, 0.5])
