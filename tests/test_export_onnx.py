"""`darkcfg export` (darkcfg/export): the ONNX model computes what darkcfg computes.

Every layer of every Darknet reference case (both lineages, the cases' own weights) run
in onnxruntime is within rel 1e-4 of darkcfg's output (and so of Darknet's); onnx.checker
passes; `--decode`'s boxes and scores equal darkcfg.detection's entries before NMS; a
dynamic batch runs at 1 and 4; BN kept as nodes (--no-fuse) gives the same numbers; every
runnable section's contract example exports (or is refused by name). The CLI's refusals,
and that nothing but the exporter imports onnx. Skipped without onnx and onnxruntime
(`pip install "darkcfg[onnx]"`).
"""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

from darkcfg.activations import ACTIVATIONS
from darkcfg.cfg import parse_cfg
from darkcfg.errors import CfgError, CfgWarning, DarkcfgError, OutputError
from darkcfg.graph import build_graph, load_graph
from darkcfg.layers import REGISTRY
from darkcfg.network import Network

from .conftest import DARKNET_CFG, REFERENCE, ROOT, listing
from .reference import REL_BAR, case_dirs, case_input, rel_error, weights_path

WHY = 'the ONNX export tests need onnx and onnxruntime: pip install "darkcfg[onnx]"'
onnx = pytest.importorskip("onnx", reason=WHY)
ort = pytest.importorskip("onnxruntime", reason=WHY)

from darkcfg.export import activations as export_activations  # noqa: E402
from darkcfg.export import save_onnx, sections, to_onnx  # noqa: E402

AB = REFERENCE / "alexeyab" / "cases"
AB_CASES = sorted(p for p in AB.iterdir() if (p / "net.cfg").exists()) if AB.exists() else []
# the one case over ten seconds (yolov4 at 128 x 128: its weights rebuilt, 64 M
# parameters through darkcfg and onnxruntime)
SLOW_CASES = {"ab_yolov4"}
CASES = [pytest.param(c, id=c.name, marks=[pytest.mark.slow] if c.name in SLOW_CASES else [])
         for c in case_dirs() + AB_CASES]
HEAD_CASES = ["real_yolov2_tiny", "real_yolov3_tiny", "train_region", "train_yolo",
              "ab_yolov4_tiny", "ab_train_yolo_ciou"]


def session(model) -> ort.InferenceSession:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def run(model, x: np.ndarray) -> dict[str, np.ndarray]:
    sess = session(model)
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": x})))


@pytest.fixture(scope="module")
def case_network(tmp_path_factory):
    """case -> a Network with the case's weights (rebuilt by regen_weights.py once per
    module where not stored)."""
    folder = tmp_path_factory.mktemp("weights")
    cache = {}

    def load(case) -> Network:
        if case not in cache:
            cache[case] = weights_path(case, folder)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", CfgWarning)   # AB cfgs that set a key twice
            net = Network(load_graph(case / "net.cfg", strict=False,
                                     dialect="alexeyab" if case.parent == AB else None))
        net.load_weights(cache[case])
        return net
    return load


def layer_errors(net: Network, x: np.ndarray, **kw) -> list[tuple[float, int, str]]:
    """(rel, index, type) of every layer: the exported model's output (every layer an
    output too) against darkcfg's forward on x; the model passes onnx.checker."""
    net.forward(x)
    kw.setdefault("batch", len(x))
    model = to_onnx(net, extra_outputs=range(len(net.layers)), **kw)
    onnx.checker.check_model(model, full_check=True)
    got = run(model, x)
    return [(rel_error(got[f"{lay.index}_{lay.type}"], net.outputs[lay.index]), lay.index,
             lay.type) for lay in net.layers]


# --- Darknet's reference cases ------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_reference_case_layer_by_layer(case, case_network):
    net = case_network(case)
    c, h, w = net.input_shape
    worst = layer_errors(net, case_input(case).reshape(1, c, h, w))
    bad = [r for r in worst if not r[0] <= REL_BAR]
    assert not bad, "layers off darkcfg in onnxruntime (rel, index, type): " + repr(bad)


def corners(xywh: np.ndarray, w: int, h: int) -> np.ndarray:
    """Relative centre boxes -> x1 y1 x2 y2 in pixels of a w x h network input."""
    p = xywh.astype(np.float64) * [w, h, w, h]
    return np.concatenate([p[:, :2] - p[:, 2:] / 2, p[:, :2] + p[:, 2:] / 2], axis=1)


def check_decoded(net: Network, model, x: np.ndarray) -> None:
    """The model's boxes/scores for every image of x equal darkcfg.detection's entries
    before NMS for an image of the network's size (every entry kept: thresh below any
    probability), in the same order: within REL_BAR of darkcfg's own (whose head outputs
    differ by float rounding), and within 1e-5 of darkcfg's decoding of onnxruntime's
    head outputs (the decoding alone)."""
    from darkcfg.detection.detect import network_boxes
    _, h, w = net.input_shape
    heads = [lay.index for lay in net.layers if lay.is_head]
    raw = to_onnx(net, batch=len(x))
    sess = session(raw)
    theirs = dict(zip(heads, sess.run([f"{i}_{net.layers[i].type}" for i in heads],
                                      {"input": x})))
    net.forward(x)
    got = run(model, x)
    boxes, scores = got["boxes"], got["scores"]
    assert boxes.shape[:2] == scores.shape[:2] and boxes.shape[0] == len(x)
    for i in range(len(x)):
        for outputs, bar in (({j: net.outputs[j][i] for j in heads}, REL_BAR),
                             ({j: theirs[j][i] for j in heads}, 1e-5)):
            ref = network_boxes(net.graph, outputs, w, h, thresh=-1.0, letter=False)
            assert len(ref) == boxes.shape[1]
            assert rel_error(boxes[i], corners(ref.xywh, w, h)) <= bar
            assert rel_error(scores[i], ref.probs) <= bar


@pytest.mark.parametrize("name", HEAD_CASES)
def test_decode_equals_darkcfgs_boxes(name, case_network):
    case = next(c for c in case_dirs() + AB_CASES if c.name == name)
    net = case_network(case)
    c, h, w = net.input_shape
    model = to_onnx(net, decode=True)
    onnx.checker.check_model(model, full_check=True)
    assert [o.name for o in model.graph.output] == ["boxes", "scores"]
    check_decoded(net, model, case_input(case).reshape(1, c, h, w))


YOLO_AB = """[net]
width=64
height=64
channels=3
[convolutional]
filters=16
size=3
stride=2
pad=1
batch_normalize=1
activation=mish
[convolutional]
filters=14
size=1
activation=logistic
[yolo]
mask=0,1
anchors=10,14, 23,27, 37,58
classes=2
num=3
new_coords={new_coords}
scale_x_y={scale}
[route]
layers=-2
[convolutional]
filters=14
size=3
stride=2
pad=1
activation=linear
[yolo]
mask=1,2
anchors=10,14, 23,27, 37,58
classes=2
num=3
scale_x_y=1.1
"""


@pytest.mark.parametrize("new_coords,scale", [(1, 2.0), (0, 1.05)])
def test_decode_new_coords_and_scale_x_y(new_coords, scale, rng):
    net = Network(build_graph(parse_cfg(YOLO_AB.format(new_coords=new_coords, scale=scale),
                                        "heads.cfg", ), dialect="alexeyab"))
    net.init_weights(3)
    x = rng.random((2, 3, 64, 64), dtype=np.float32)
    assert max(layer_errors(net, x))[0] <= REL_BAR
    check_decoded(net, to_onnx(net, decode=True, batch="dynamic"), x)


YOLOV1 = """[net]
width=16
height=16
channels=3
[convolutional]
filters=4
size=3
stride=2
pad=1
activation=leaky
[connected]
output=52
activation=linear
[detection]
classes=3
coords=4
num=2
side=2
softmax={softmax}
sqrt={sqrt}
"""
GAUSSIAN = """[net]
width=32
height=32
channels=3
[convolutional]
filters=24
size=3
stride=4
pad=1
activation=linear
[Gaussian_yolo]
mask=0,1
anchors=10,14, 23,27, 37,58
classes=3
num=3
scale_x_y={scale}
yolo_point={point}
"""


@pytest.mark.parametrize("text,dialect", [
    (YOLOV1.format(softmax=1, sqrt=1), None), (YOLOV1.format(softmax=0, sqrt=0), None),
    (GAUSSIAN.format(scale=1.0, point="center"), "alexeyab"),
    (GAUSSIAN.format(scale=1.2, point="left_top"), "alexeyab"),
    (GAUSSIAN.format(scale=1.1, point="right_bottom"), "alexeyab")],
    ids=["yolov1_softmax_sqrt", "yolov1_plain", "gaussian", "gaussian_left_top",
         "gaussian_right_bottom"])
def test_yolov1_and_gaussian_heads(text, dialect, rng):
    net = Network(build_graph(parse_cfg(text, "head.cfg"), dialect=dialect))
    net.init_weights(1)
    c, h, w = net.input_shape
    x = rng.random((2, c, h, w), dtype=np.float32)
    assert max(layer_errors(net, x))[0] <= REL_BAR
    check_decoded(net, to_onnx(net, decode=True, batch=2), x)


def test_recurrent_sections_are_refused_with_the_reason():
    net = section_net("[rnn]\noutput=4\nhidden=4\nactivation=leaky\n")
    with pytest.raises(CfgError, match=r"\[rnn\] \(layer 1\): \[rnn\] cannot be exported "
                       "to ONNX: it carries a hidden state from one call to the next"):
        to_onnx(net)


def test_dynamic_batch_runs_at_1_and_4(case_network, rng):
    case = next(c for c in AB_CASES if c.name == "ab_yolov4_tiny")
    net = case_network(case)
    model = to_onnx(net, batch="dynamic")
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert dim.dim_param == "N" and not dim.dim_value
    sess = session(model)
    heads = [lay.index for lay in net.layers if lay.is_head]
    assert [o.name for o in sess.get_outputs()] == [f"{i}_yolo" for i in heads]
    c, h, w = net.input_shape
    x = rng.random((4, c, h, w), dtype=np.float32)
    for n in (1, 4):
        got = sess.run(None, {"input": x[:n]})
        net.forward(x[:n])
        for i, out in zip(heads, got):
            assert out.shape == (n, *net.layers[i].out_shape)
            assert rel_error(out, net.outputs[i]) <= REL_BAR
    with pytest.raises(Exception, match="(?i)dimension|shape"):     # a fixed batch of 1
        session(to_onnx(net)).run(None, {"input": x})


@pytest.mark.parametrize("name", ["activations", "ab_bn_eps", "batchnorm_crop", "connected",
                                  "deconv"])
def test_no_fuse_keeps_batchnorm_nodes(name, case_network):
    case = next(c for c in case_dirs() + AB_CASES if c.name == name)
    net = case_network(case)
    with_bn = [lay for lay in net.layers if getattr(lay, "batch_normalize", False)
               or lay.type == "batchnorm"]
    assert with_bn
    kept = to_onnx(net, fuse=False)
    ops = [n.op_type for n in kept.graph.node]
    assert ops.count("BatchNormalization") == len(with_bn)
    folded = to_onnx(net)
    assert folded.graph.node and [n.op_type for n in folded.graph.node].count(
        "BatchNormalization") == sum(lay.type == "batchnorm" for lay in net.layers)
    c, h, w = net.input_shape
    worst = layer_errors(net, case_input(case).reshape(1, c, h, w), fuse=False)
    assert max(worst)[0] <= REL_BAR, max(worst)


# --- every section darkcfg runs -----------------------------------------------------------

NET = "[net]\nwidth=6\nheight=6\nchannels=4\n[empty]\n"     # as tests/test_contract.py
EXAMPLES = {name: cls.example for name, cls in REGISTRY.items()
            if cls.runnable and cls.example is not None}
# what the examples leave out: Darknet's padding corner cases, the Pad path of pools
# whose padding reaches the window size, maxpool_depth, reorg reverse, reorg3d both ways,
# shortcut channel and size mixes, [local], [triplet] normalize, [region] logistic
EXTRA = {
    "maxpool_pads": "[maxpool]\nsize=3\nstride=2\npadding=4\n[maxpool]\nsize=2\nstride=1\n",
    "maxpool_depth": "[maxpool]\nmaxpool_depth=1\nout_channels=3\n",
    "local_avgpool_pads": "[local_avgpool]\nsize=2\nstride=2\npadding=3\n"
                          "[local_avgpool]\nsize=3\nstride=1\n",
    "reorg_reverse": "[convolutional]\nfilters=8\nsize=1\nactivation=linear\n"
                     "[reorg]\nstride=2\nreverse=1\n",
    "reorg3d_both": "[reorg3d]\nstride=3\n[reorg3d]\nstride=3\nreverse=1\n"
                    "[reorg3d]\nstride=2\n",
    "shortcut_mixes": "[convolutional]\nfilters=6\nsize=3\nstride=2\npad=1\nactivation=tanh\n"
                      "[shortcut]\nfrom=-2\nalpha=0.5\nbeta=2\n[convolutional]\nfilters=3\n"
                      "size=1\nactivation=leaky\n[upsample]\nstride=2\n"
                      "[shortcut]\nfrom=-3\nactivation=swish\n[convolutional]\nfilters=5\n"
                      "size=1\nactivation=linear\n[shortcut]\nfrom=-7,-3\n",
    "local": "[local]\nfilters=3\nsize=3\nstride=1\npad=1\nactivation=leaky\n",
    "triplet_normalize": "[connected]\noutput=5\nactivation=linear\n[triplet]\nnormalize=1\n",
    "upsample_sum": "[upsample]\nstride=-3\nscale=0.5\n[upsample]\nstride=3\n",
    "region_logistic": "[convolutional]\nfilters=14\nsize=1\nactivation=linear\n"
                       "[region]\nclasses=2\nnum=2\ncoords=4\nanchors=1,2,3,4\n",
}


def section_net(text: str) -> Network:
    net = Network(build_graph(parse_cfg(NET + text, "section.cfg")))
    net.init_weights(1)
    rng = np.random.default_rng(2)
    for layer in net.layers:        # BN statistics and biases that are not the defaults
        for name, arr in layer.params.items():
            if name in ("biases", "rolling_mean"):
                arr[...] = rng.uniform(-0.5, 0.5, arr.shape)
            elif name in ("scales", "rolling_variance"):
                arr[...] = rng.uniform(0.5, 1.5, arr.shape)
    net.params_changed()
    return net


@pytest.mark.parametrize("text", [*EXAMPLES.values(), *EXTRA.values()],
                         ids=[*EXAMPLES, *EXTRA])
def test_section_exports(text, rng):
    net = section_net(text)
    x = rng.uniform(-1, 1, (3, 4, 6, 6)).astype(np.float32)
    missing = [lay for lay in net.layers if lay.type not in sections.EMITTERS]
    if missing:         # refused by name, before any work
        lay = missing[0]
        with pytest.raises(CfgError, match=rf"section.cfg:{lay.section.line}: "
                           rf"\[{lay.section.written}\] \(layer {lay.index}\): .*cannot "
                           "be exported to ONNX"):
            to_onnx(net)
        return
    worst = layer_errors(net, x)
    bad = [r for r in worst if not r[0] <= REL_BAR]
    assert not bad, bad


def test_every_activation_has_an_onnx_form(rng):
    assert set(export_activations.ACTIVATIONS) == set(ACTIVATIONS)
    # values around each activation's corners: 0, +-1, +-2, +-4 and beyond
    x = np.concatenate([rng.uniform(-6, 6, 200), [-4, -2, -1, -0.5, 0, 0.5, 1, 2, 4]])
    x = np.tile(x.astype(np.float32), 2)[:4 * 6 * 6 * 2].reshape(2, 4, 6, 6)
    body = "".join(f"[activation]\nactivation={a}\n[route]\nlayers=0\n" for a in ACTIVATIONS)
    net = Network(build_graph(parse_cfg(NET + body, "act.cfg")))
    worst = layer_errors(net, x)
    bad = [(r, net.layers[i].activation) for r, i, t in worst
           if t == "activation" and not r <= REL_BAR]
    assert not bad, bad


@pytest.mark.parametrize("opset", [13, 17, 18, "newest"])
def test_opsets_from_13_to_the_newest(opset, rng):
    # the operators whose signature changed (Reduce* axes as inputs from 13 / 18 on)
    if opset == "newest":
        opset = onnx.defs.onnx_opset_version()
    body = (EXTRA["maxpool_depth"] + EXTRA["upsample_sum"] + "[l2norm]\n" +
            "[activation]\nactivation=normalize_channels_softmax_maxval\n" +
            "[activation]\nactivation=normalize_channels\n")
    net = section_net(body)
    model = to_onnx(net, opset=opset)
    assert model.opset_import[0].version == opset
    x = rng.uniform(-1, 1, (2, 4, 6, 6)).astype(np.float32)
    assert max(layer_errors(net, x, opset=opset))[0] <= REL_BAR


def test_a_section_without_an_onnx_form_is_refused_by_name(monkeypatch):
    net = section_net("[convolutional]\nfilters=2\nsize=1\nactivation=leaky\n[l2norm]\n")
    monkeypatch.delitem(sections.EMITTERS, "l2norm")
    line = net.layers[2].section.line
    with pytest.raises(CfgError, match=rf"section.cfg:{line}: \[l2norm\] \(layer 2\): "
                       r"\[l2norm\] cannot be exported to ONNX"):
        to_onnx(net)


def test_names_and_metadata():
    net = section_net(EXAMPLES["shortcut"])
    model = to_onnx(net)
    assert model.graph.input[0].name == "input"
    last = net.layers[-1]
    assert [o.name for o in model.graph.output] == [f"{last.index}_shortcut"]
    names = [n.name for n in model.graph.node]
    assert len(set(names)) == len(names)
    for lay in net.layers:          # every layer's output node is named after it
        assert f"{lay.index}_{lay.type}" in names
    props = {p.key: p.value for p in model.metadata_props}
    import darkcfg
    assert props["darkcfg_version"] == darkcfg.__version__ == model.producer_version
    assert props["cfg"] == "section.cfg" and props["dialect"] == net.graph.net.dialect
    assert model.opset_import[0].version == 17


def test_bad_arguments_are_refused():
    net = section_net("[avgpool]\n")
    for opset in (12, 10_000, "17"):
        with pytest.raises(DarkcfgError, match=r"opset .*: darkcfg writes opsets 13\.\."):
            to_onnx(net, opset=opset)
    for batch in (0, -1, "many", 2.5):
        with pytest.raises(DarkcfgError, match="whole number >= 1 or 'dynamic'"):
            to_onnx(net, batch=batch)
    with pytest.raises(DarkcfgError, match="--decode needs a detection head"):
        to_onnx(net, decode=True)
    two = Network(build_graph(parse_cfg(YOLO_AB.format(new_coords=0, scale=1).replace(
        "classes=2\nnum=3\nscale_x_y=1.1", "classes=1\nnum=3\nscale_x_y=1.1").replace(
        "filters=14\nsize=3", "filters=12\nsize=3"), "two.cfg"), dialect="alexeyab"))
    with pytest.raises(DarkcfgError, match=r"disagree on classes \(layer 2: 2, layer 5: 1\)"):
        to_onnx(two, decode=True)


def test_save_is_atomic_and_does_not_replace_unasked(tmp_path):
    net = section_net("[avgpool]\n")
    out = tmp_path / "m.onnx"
    out.write_bytes(b"keep")
    with pytest.raises(OutputError, match="exists; darkcfg does not replace it unasked"):
        save_onnx(to_onnx(net), out)
    assert out.read_bytes() == b"keep"
    save_onnx(to_onnx(net), out, force=True)
    assert onnx.load(str(out)).graph.output[0].name == "1_avgpool"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]       # no temporary left


# --- the command line ---------------------------------------------------------------------

@pytest.fixture
def tiny_detector(tmp_path):
    from darkcfg.cfg import parse_cfg as parse
    cfg = tmp_path / "det.cfg"
    cfg.write_text(YOLO_AB.format(new_coords=0, scale=1.2))
    net = Network(build_graph(parse(cfg.read_text(), str(cfg)), dialect="alexeyab"))
    net.init_weights(5)
    weights = tmp_path / "det.weights"
    net.save_weights(weights)
    return cfg, weights, net


def test_cli_export_writes_a_model_that_runs(tiny_detector, tmp_path, capsys, rng):
    from darkcfg.cli import main
    cfg, weights, net = tiny_detector
    out = tmp_path / "det.onnx"
    assert main(["export", str(cfg), str(weights), str(out), "--decode", "--batch",
                 "dynamic", "--opset", "18"]) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}: opset 18" in text and "output boxes N x 2560 x 4" in text
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 18
    check_decoded(net, model, rng.random((3, 3, 64, 64), dtype=np.float32))
    # an existing file is kept unless --force
    assert main(["export", str(cfg), str(weights), str(out), "--no-fuse"]) == 2
    assert "exists; darkcfg does not replace it unasked (use --force" in \
        capsys.readouterr().err
    assert main(["export", str(cfg), str(weights), str(out), "--no-fuse", "--force"]) == 0
    ops = [n.op_type for n in onnx.load(str(out)).graph.node]
    assert "BatchNormalization" in ops


@pytest.mark.parametrize("args,message", [
    (["--opset", "11"], "opset 11: darkcfg writes opsets 13.."),
    (["--batch", "0"], "expected a whole number >= 1 or 'dynamic', got '0'"),
    (["--batch", "two"], "expected a whole number >= 1 or 'dynamic', got 'two'"),
])
def test_cli_refuses_bad_options(tiny_detector, tmp_path, capsys, args, message):
    from darkcfg.cli import main
    cfg, weights, _ = tiny_detector
    try:
        code = main(["export", str(cfg), str(weights), str(tmp_path / "x.onnx"), *args])
    except SystemExit as e:         # argparse's own refusal
        code = e.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_cli_refuses_missing_inputs_and_the_input_as_output(tiny_detector, tmp_path, capsys):
    from darkcfg.cli import main
    cfg, weights, _ = tiny_detector
    cases = [([str(tmp_path / "no.cfg"), str(weights), str(tmp_path / "a.onnx")],
              "no.cfg: no such file"),
             ([str(cfg), str(tmp_path / "no.weights"), str(tmp_path / "a.onnx")],
              "no.weights: cannot read"),
             ([str(cfg), str(weights), str(weights), "--force"],
              "is the input weights file"),
             ([str(cfg), str(weights), str(tmp_path / "missing" / "a.onnx")],
              "no such folder for the ONNX model")]
    for args, message in cases:
        assert main(["export", *args]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "a.onnx").exists()


def test_without_onnx_the_cli_says_what_to_install(tiny_detector, tmp_path, capsys,
                                                   monkeypatch):
    from darkcfg.cli import main
    cfg, weights, _ = tiny_detector
    monkeypatch.setitem(sys.modules, "onnx", None)      # `import onnx` raises ImportError
    assert main(["export", str(cfg), str(weights), str(tmp_path / "a.onnx")]) == 2
    assert 'ONNX export needs the onnx package: pip install "darkcfg[onnx]"' in \
        capsys.readouterr().err


def test_only_the_exporter_imports_onnx():
    code = ("import sys, darkcfg, darkcfg.cli, darkcfg.network, darkcfg.export, "
            "darkcfg.detection.detect; darkcfg.cli.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('onnx', 'onnxruntime')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


# --- every Darknet cfg darkcfg runs, at a reduced size with random weights -----------------

DARKNET_CFGS = listing(DARKNET_CFG, "*/*.cfg")
SIZES = (64, 96, 128, 192, 256, 320, 448)
# cfgs darkcfg runs but the exporter refuses (README, "Export to ONNX"): recurrent sections
EXPORT_REFUSED = {
    key: "carries a hidden state from one call to the next"
    for key in ("alexeyab/rnn", "alexeyab/rnn.train", "alexeyab/gru", "alexeyab/lstm.train",
                "alexeyab/crnn.train", "alexeyab/yolov3-tiny_occlusion_track",
                "pjreddie/rnn", "pjreddie/rnn.train", "pjreddie/gru")
}
# a few seconds each here; the rest (up to a minute each: 30-160 M parameters drawn,
# calibrated and run twice) are @slow
FAST = {"tutorial/cifar_small", "pjreddie/tiny", "pjreddie/yolov3-tiny", "pjreddie/yolov2-tiny",
        "pjreddie/yolov1-tiny", "alexeyab/yolov4-tiny", "pjreddie/rnn", "alexeyab/crnn.train",
        "alexeyab/yolov3-tiny_occlusion_track"}


def cfg_key(path) -> str:
    return f"{path.parent.name}/{path.stem}"


def reduced_graph(path):
    """The cfg at the smallest of SIZES it builds at (its own size when its [net] has
    no image size: the recurrent cfgs' inputs=)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        for size in SIZES:
            try:
                return load_graph(path, width=size, height=size, batch=1, strict=False), size
            except CfgError:
                continue
        return load_graph(path, batch=1, strict=False), None


@pytest.mark.parametrize("path", [
    pytest.param(p, id=cfg_key(p), marks=[] if cfg_key(p) in FAST else [pytest.mark.slow])
    for p in DARKNET_CFGS])
def test_darknet_cfg_exports(path):
    key = cfg_key(path)
    graph, size = reduced_graph(path)
    problems = graph.unsupported()
    if problems:
        pytest.skip(f"darkcfg does not run {key}: {problems[0][1]}")
    if key in EXPORT_REFUSED:
        net = Network(graph)
        with pytest.raises(CfgError, match="cannot be exported to ONNX: it " +
                           EXPORT_REFUSED[key]):
            to_onnx(net)
        return
    assert all(lay.type in sections.EMITTERS for lay in graph.layers), key
    sys.path.insert(0, str(ROOT / "tools"))
    from bench import random_network  # Darknet's init, BN statistics calibrated
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CfgWarning)
        net = random_network(path, size, 1)
    c, h, w = net.input_shape
    # the first image random_network calibrated the BN statistics on: on another random
    # image a channel calibrated near 0 can grow 1e4-fold and a head's logits lose their
    # float32 digits (darkcfg and onnxruntime then both differ from float64 by ~1e-3)
    x = np.random.default_rng(2).random((4, c, h, w), np.float32)[:1]
    net.forward(x)
    # each layer on darkcfg's own inputs (float32 rounding does not accumulate)
    model = to_onnx(net, stepwise=True, extra_outputs=range(len(net.layers)))
    sess = session(model)
    feeds = {i.name: (x if i.name == "input" else net.outputs[int(i.name[3:])])
             for i in sess.get_inputs()}
    got = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))
    worst = [(rel_error(got[f"{lay.index}_{lay.type}"], net.outputs[lay.index]), lay.index,
              lay.type) for lay in net.layers]
    bad = [r for r in worst if not r[0] <= REL_BAR]
    assert not bad, f"{key}: layers off darkcfg (rel, index, type): {bad}"
    del model, sess, got         # the large nets' copies: one model in memory at a time
    # end to end: the exported model's outputs (its heads, or the network output)
    ends = [lay.index for lay in net.layers if lay.is_head] or [net.output_index]
    ours = [net.outputs[i].copy() for i in ends]
    outs = session(to_onnx(net)).run(None, {"input": x})
    assert [o.shape for o in outs] == [o.shape for o in ours]
    # A deep random net can amplify float32 rounding (a channel whose calibrated variance
    # is tiny): the bar is then ten times what a 1e-7 relative change of the input moves
    # darkcfg's own outputs (rounding perturbs every layer by about that much; measured
    # on yolov4-csp-x-swish: 5.8e-4 moved, onnxruntime 5.7e-4 from darkcfg), REL_BAR else
    jitter = 1 + 1e-7 * np.random.default_rng(5).standard_normal(x.shape)
    net.forward((x * jitter).astype(np.float32))
    moved = max(rel_error(net.outputs[i], o) for i, o in zip(ends, ours))
    for i, ort_out, out in zip(ends, outs, ours):
        assert rel_error(ort_out, out) <= max(REL_BAR, 10 * moved), (key, i, moved)


def test_readme_onnxruntime_example_runs(tmp_path, monkeypatch):
    """The README's "Export to ONNX" example, as written, on yolov4-tiny_fashion.cfg
    exported with random weights (its trained weights are not shipped)."""
    import re

    from PIL import Image
    text = (ROOT / "README.md").read_text()
    part = text[text.index("## Export to ONNX\n"):]
    code = re.search(r"```python\n(.*?)```", part, re.S).group(1)
    net = Network.load(ROOT / "cfg" / "yolov4-tiny_fashion.cfg")
    net.init_weights(0)
    for lay in net.layers:          # BN variances 1 (Darknet's fresh 0 would overflow)
        lay.params.get("rolling_variance", np.zeros(0))[...] = 1
    for head in (lay for lay in net.layers if lay.is_head):
        # an anchor-sized box in every cell with objectness and classes 0.95 (so that
        # boxes get drawn), whatever the random layers before give
        conv = net.layers[head.index - 1].params
        conv["weights"][...] = 0
        conv["biases"].reshape(-1, 5 + head.classes)[:, 4:] = 3
    net.params_changed()
    model = tmp_path / "yolo.onnx"
    save_onnx(to_onnx(net, decode=True), model)
    picture = tmp_path / "boxes.png"
    code = code.replace('"yolo.onnx"', repr(str(model))).replace('"boxes.png"',
                                                                  repr(str(picture)))
    monkeypatch.chdir(ROOT)
    scope: dict = {}
    exec(compile(code, "README.md (Export to ONNX)", "exec"), scope)
    assert scope["boxes"].shape == (1, 3 * (6 * 6 + 12 * 12), 4)   # 3 anchors a head
    assert len(scope["keep"]) > 0           # boxes were drawn
    assert Image.open(picture).size == (28 * 4, 28 * 4)
