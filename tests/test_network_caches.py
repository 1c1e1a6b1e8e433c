"""What the network keeps between calls: the convs' packed / Winograd-transformed weights
(dropped whenever the parameters change) and gradients handed between layers without a
copy (Network.add_grad)."""
from __future__ import annotations

import numpy as np

from darkcfg.graph import load_graph
from darkcfg.network import Network

CFG = """[net]
batch=2
width=12
height=12
channels=40
learning_rate=0.1
momentum=0.9
decay=0.0005

[convolutional]
filters=48
size=3
stride=1
pad=1
activation=leaky

[convolutional]
filters=40
size=1
stride=1
pad=0
activation=leaky

[convolutional]
filters=40
size=3
stride=1
pad=1
activation=leaky

[shortcut]
from=-2
activation=leaky

[convolutional]
filters=10
size=1
stride=1
pad=0
activation=linear

[avgpool]

[softmax]
"""


def network(tmp_path) -> Network:
    cfg = tmp_path / "net.cfg"
    cfg.write_text(CFG)
    net = Network(load_graph(cfg))
    net.init_weights(3)
    return net


def outputs(net: Network, x: np.ndarray) -> list[np.ndarray]:
    net.forward(x)
    return [o.copy() for o in net.outputs]


def same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a, b))


def fresh_copy(tmp_path, net: Network) -> Network:
    # an independent network with the same parameters and nothing cached
    other = network(tmp_path)
    for mine, theirs in zip(net.layers, other.layers):
        for k, v in mine.params.items():
            theirs.params[k][...] = v
    return other


def test_inference_sees_weights_edited_in_place(tmp_path):
    net = network(tmp_path)
    x = np.random.default_rng(0).random((2, 40, 12, 12), np.float32)
    before = outputs(net, x)                        # caches the packed weights
    for layer in (0, 1):                            # Winograd, then a packed 1x1 conv
        net.layers[layer].params["weights"].reshape(-1)[1129] += 2.0
    net.params_changed()
    after = outputs(net, x)
    assert not same(before, after)
    assert same(after, outputs(fresh_copy(tmp_path, net), x))


def test_loading_and_training_drop_the_cached_weights(tmp_path):
    net = network(tmp_path)
    x = np.random.default_rng(1).random((2, 40, 12, 12), np.float32)
    before = outputs(net, x)
    other = network(tmp_path)
    other.init_weights(9)
    other.save_weights(tmp_path / "other.weights")
    net.load_weights(tmp_path / "other.weights")
    after = outputs(net, x)
    assert not same(before, after)
    assert same(after, outputs(fresh_copy(tmp_path, net), x))
    truth = np.eye(10, dtype=np.float32)[[2, 7]]
    net.train_step(x, truth)
    net.train = False
    trained = outputs(net, x)
    assert not same(after, trained)
    assert same(trained, outputs(fresh_copy(tmp_path, net), x))


def test_add_grad_never_lets_two_slots_share_memory(tmp_path):
    net = network(tmp_path)
    net.grads = [None] * len(net.layers)
    g = np.ones((2, 40, 12, 12), np.float32)
    net.add_grad(0, g)
    assert net.grads[0] is g                        # taken as it is
    net.add_grad(2, g)                              # the same array again: copied
    assert not np.shares_memory(net.grads[0], net.grads[2])
    net.grads[0] *= 3                               # a layer working in place
    assert (net.grads[2] == 1).all()
    net.add_grad(0, g)                              # a second gradient: a new sum
    assert (net.grads[0] == 6).all() and (g == 3).all()
    net.add_grad(0, g)                              # the sum is ours: added in place
    assert (net.grads[0] == 9).all() and (g == 3).all()


ROUTED = """[net]
batch=3
width=8
height=8
channels=4
learning_rate=0.1

[convolutional]
batch_normalize=1
filters=6
size=3
stride=1
pad=1
activation=leaky

[maxpool]
size=2
stride=2

[convolutional]
filters=5
size=1
stride=1
pad=0
activation=leaky

[upsample]
stride=2

[route]
layers=-1,-4

[convolutional]
filters=7
size=3
stride=1
pad=1
activation=linear

[route]
layers=-1,-3

[convolutional]
filters=3
size=1
stride=1
pad=0
activation=linear

[avgpool]

[softmax]
"""


def test_gradients_handed_on_uncopied_equal_copied_ones(tmp_path):
    # routes hand channel slices of their gradient (views, not contiguous at batch 3) to
    # the layers they read; keep=True copies every gradient, as darkcfg always did
    cfg = tmp_path / "routed.cfg"
    cfg.write_text(ROUTED)
    rng = np.random.default_rng(5)
    x = rng.random((3, 4, 8, 8), np.float32)
    truth = np.eye(3, dtype=np.float32)[[0, 2, 1]]
    grads = []
    for keep in (False, True):
        net = Network(load_graph(cfg))
        net.init_weights(2)
        net.forward_train(x, truth)
        net.backward(keep=keep)
        grads.append([{k: v.copy() for k, v in layer.grads.items()}
                      for layer in net.layers if hasattr(layer, "grads")])
    for mine, copied in zip(*grads):
        for k in mine:
            np.testing.assert_array_equal(mine[k], copied[k])


def test_inference_tail_is_kept_and_follows_bn_and_bias_edits(tmp_path):
    """The BN/bias tail a conv applies as it stores its tiles is kept between calls, and
    a change of any of its vectors in place, even without params_changed, is seen."""
    cfg = tmp_path / "bn.cfg"
    cfg.write_text(CFG.replace("[convolutional]\nfilters=48",
                               "[convolutional]\nbatch_normalize=1\nfilters=48"))

    def fresh_copy(_, net):
        other = Network(load_graph(cfg))
        for mine, theirs in zip(net.layers, other.layers):
            for k, v in mine.params.items():
                theirs.params[k][...] = v
        return other

    net = Network(load_graph(cfg))
    net.init_weights(3)
    x = np.random.default_rng(2).random((2, 40, 12, 12), np.float32)
    before = outputs(net, x)
    tail = net.layers[0].inference_tail()
    assert net.layers[0].inference_tail() is tail             # kept
    for layer, key in ((0, "rolling_variance"), (0, "scales"), (0, "rolling_mean"),
                       (0, "biases"), (1, "biases")):
        net.layers[layer].params[key][5] += 0.5
        after = outputs(net, x)
        assert not same(before, after), (layer, key)
        assert same(after, outputs(fresh_copy(tmp_path, net), x)), (layer, key)
        before = after


def test_fingerprint_follows_whole_rewrites():
    """The key of the packed and Winograd weights: equal for equal bits, different after
    a rewrite of the whole array (new draw, an SGD-like step, a scale) at any size."""
    from darkcfg.kernels.winograd import fingerprint
    rng = np.random.default_rng(0)
    for size in (1, 7, 16, 2047, 2048, 5000, 300_000):
        w = rng.standard_normal(size).astype(np.float32)
        f = fingerprint(w)
        assert fingerprint(w.copy()) == f
        for changed in (rng.standard_normal(size).astype(np.float32),
                        w - np.float32(1e-3) * rng.standard_normal(size).astype(np.float32),
                        w * np.float32(0.5)):
            assert fingerprint(changed) != f, size
    w = rng.standard_normal(2000).astype(np.float32)     # small: every value counts
    v = w.copy()
    v[1234] += 1
    assert fingerprint(v) != fingerprint(w)


ROUTES = """[net]
batch=1
width=8
height=8
channels=3

[convolutional]
filters=8
size=3
pad=1
batch_normalize=1
activation=leaky

[route]
layers=-1
groups=2
group_id=1

[convolutional]
filters=4
size=3
pad=1
activation=leaky

[route]
layers=-1,-3

[maxpool]
size=3
stride=1

[maxpool]
size=5
stride=1

[route]
layers=-1,-2,-3

[convolutional]
filters=6
size=1
activation=leaky

[route]
layers=-1,0

[convolutional]
filters=5
size=3
stride=2
pad=1
activation=linear

[upsample]
stride=2

[route]
layers=-1,6

[convolutional]
filters=3
size=1
activation=logistic
"""


def test_routes_of_one_image_are_written_in_place_and_equal_copies(tmp_path):
    """A forward pass of one image has each [route]'s sources write straight into its
    buffer (nested routes, a source of two routes, maxpool and upsample sources, a
    channel group taken as a view); every layer's output equals the batch's (where each
    route copies) and each route equals the NumPy concatenation of its sources after the
    whole pass (no source overwritten)."""
    cfg = tmp_path / "routes.cfg"
    cfg.write_text(ROUTES)
    net = Network(load_graph(cfg))
    net.init_weights(3)
    rng = np.random.default_rng(0)
    for layer in net.layers:        # BN statistics that are not the identity
        if "rolling_mean" in layer.params:
            layer.params["rolling_mean"][:] = rng.normal(0, 0.3, layer.n)
            layer.params["rolling_variance"][:] = rng.uniform(0.5, 2, layer.n)
    net.params_changed()
    x = rng.random((2, 3, 8, 8), np.float32)
    net.forward(x)
    batch = [o[:1].copy() for o in net.outputs]
    for _ in range(2):                      # and again after a batch of two
        y = net.forward(x[:1])
        for i, (o, ref) in enumerate(zip(net.outputs, batch)):
            np.testing.assert_allclose(o, ref, rtol=1e-6, atol=1e-7, err_msg=f"layer {i}")
        for layer in net.layers:
            if layer.type == "route":
                parts = [net.outputs[i] for i in layer.sources]
                if layer.groups > 1:
                    step = parts[0].shape[1] // layer.groups
                    parts = [p[:, layer.group_id * step:(layer.group_id + 1) * step]
                             for p in parts]
                np.testing.assert_array_equal(net.outputs[layer.index],
                                              np.concatenate(parts, axis=1))
        np.testing.assert_array_equal(y, net.outputs[-1])
        net.forward(x)
    out = net.outputs
    net.forward(x[:1])
    # the sources of each route are its buffer (route 3 inside route 6, itself inside 11)
    for route, sources in [(1, [0]), (3, [2]), (6, [3, 4, 5]), (8, [7, 0]), (11, [6, 10])]:
        for s in sources:
            assert np.shares_memory(out[route], out[s]), (route, s)
    assert np.shares_memory(out[11], out[2])
    assert not np.shares_memory(out[3], out[0])      # the later route 8 took layer 0
