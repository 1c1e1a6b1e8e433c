"""`darkcfg rnn`: char-RNN training, generation and validation on bytes
(darkcfg/train/charrnn.py)."""
from __future__ import annotations

import numpy as np
import pytest

from darkcfg.cfg import parse_cfg
from darkcfg.cli import main
from darkcfg.errors import DarkcfgError
from darkcfg.graph import build_graph
from darkcfg.network import Network
from darkcfg.train import charrnn

CFG = """[net]
inputs=256
batch=2
time_steps=4
learning_rate=0.1
momentum=0.9
decay=0.0005
max_batches=3

[gru]
output=12
tanh=1

[rnn]
output=10
activation=tanh

[connected]
output=256
activation=linear

[softmax]
"""
TEXT = b"In the beginning God created the heaven and the earth. " * 20


def small_net(steps: int = 4) -> Network:
    net = Network(build_graph(parse_cfg(CFG.replace("time_steps=4", f"time_steps={steps}"),
                                        "c.cfg"), batch=None))
    net.init_weights(seed=1)
    return net


def test_batch_rows_are_step_major_with_next_byte_truth():
    text = np.frombuffer(b"abcdefgh", np.uint8)
    x, truth = charrnn.batch_rows(text, np.array([0, 4]), 3)
    # row t*S + s: stream s at step t
    assert [chr(v) for v in x.argmax(1)] == list("aebfcg")
    assert [chr(v) for v in truth.argmax(1)] == list("bfcgdh")


def test_evaluate_equals_one_byte_a_call():
    # one stream of T steps a call, the state carried, against Darknet's valid_char_rnn
    # way: one byte per call of a time_steps=1 network with the same weights
    net = small_net()
    text = np.frombuffer(TEXT[:41], np.uint8)
    bits, ppl = charrnn.evaluate(net, text, streams=1)
    one = small_net(steps=1)
    for a, b in zip(net.layers, one.layers):
        for k in a.params:
            b.params[k][...] = a.params[k]
    total = 0.0
    for i in range(40):
        p = one.forward(charrnn.one_hot(text[i:i + 1])).reshape(-1)
        total -= np.log2(np.float64(p[text[i + 1]]))
    assert bits == pytest.approx(total / 40, rel=1e-5)
    assert ppl == pytest.approx(2 ** bits)


def test_bigram_baseline_is_add_one_smoothed_counts():
    text = np.frombuffer(b"ab" * 500, np.uint8)
    # 500 a->b of 500 a's, 499 b->a of 499 b's, one count added to each of 256 successors
    want = (500 * -np.log2(501 / 756) + 499 * -np.log2(500 / 755)) / 999
    assert charrnn.bigram_bits(text, text) == pytest.approx(want, rel=1e-12)
    noise = np.random.default_rng(0).integers(0, 256, 20000).astype(np.uint8)
    assert charrnn.bigram_bits(noise[:10000], noise[10000:]) > 7.9


def test_cli_train_generate_valid(tmp_path, capsysbinary):
    capsys = capsysbinary      # generate writes raw bytes
    cfg = tmp_path / "c.cfg"
    cfg.write_text(CFG)
    text = tmp_path / "t.txt"
    text.write_bytes(TEXT)
    backup = tmp_path / "b"
    assert main(["rnn", "train", str(text), str(cfg), "--backup", str(backup)]) == 0
    final = backup / "c_final.weights"
    assert final.exists() and (backup / "c_chart.png").exists()
    net = Network.load(cfg, final)
    assert net.seen == 3 * 2 * 4            # 3 iterations of 2 streams x 4 steps
    capsys.readouterr()
    assert main(["rnn", "generate", str(cfg), str(final), "--seed", "In the", "--len",
                 "20"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(b"In the") and len(out) == 6 + 20 + 1
    with pytest.raises(SystemExit) as refused:      # a negative length is refused
        main(["rnn", "generate", str(cfg), str(final), "--len", "-5"])
    assert refused.value.code == 2 and b"--len" in capsys.readouterr().err
    assert main(["rnn", "valid", str(cfg), str(final), str(text), "--tail"]) == 0
    line = capsys.readouterr().out.decode()
    bits = float(line.split()[2])
    assert 0 < bits < 9 and f"{len(charrnn.split(np.frombuffer(TEXT, np.uint8))[1])} bytes" \
        in line


def test_subdivisions_pass_whole_streams(tmp_path, monkeypatch):
    # batch=4 subdivisions=2: each pass gets 2 streams x 4 steps, step-major, with the
    # byte after each input byte as its truth
    cfg = tmp_path / "c.cfg"
    cfg.write_text(CFG.replace("batch=2", "batch=4\nsubdivisions=2").replace(
        "max_batches=3", "max_batches=1"))
    text = tmp_path / "t.txt"
    text.write_bytes(bytes(range(200)))
    seen = []
    def step(net, x, t):
        seen.append((x, t))
        net.seen += len(x)
        return 1.0
    monkeypatch.setattr(Network, "train_step", step)
    charrnn.train_char_rnn(str(text), str(cfg), None, str(tmp_path / "b"),
                           charrnn.CharOptions(max_batches=1, valid_every=10**6))
    (x, t), = seen
    codes, nxt = x.argmax(1).reshape(2, 4, 2), t.argmax(1).reshape(2, 4, 2)
    assert np.array_equal(nxt, codes + 1)                   # bytes 0..199: next = + 1
    assert np.array_equal(codes[:, 1:] - codes[:, :-1], np.ones((2, 3, 2)))  # steps


def test_net_must_take_and_give_bytes(tmp_path):
    cfg = tmp_path / "c.cfg"
    cfg.write_text(CFG.replace("inputs=256", "inputs=8"))
    text = tmp_path / "t.txt"
    text.write_bytes(TEXT)
    with pytest.raises(DarkcfgError, match="inputs=256"):
        charrnn.train_char_rnn(str(text), str(cfg), None, str(tmp_path / "b"),
                               charrnn.CharOptions())
    assert not (tmp_path / "b").exists()


def test_generate_is_seeded_and_leaves_the_net_as_it_was():
    net = small_net()
    a = charrnn.generate(net, "In", 12, 0.5, np.random.default_rng(3))
    b = charrnn.generate(net, "In", 12, 0.5, np.random.default_rng(3))
    assert a == b and len(a) == 12
    assert net.graph.net.opts["time_steps"] == 4
    assert all(lay.state is None for lay in net.layers if lay.type in ("gru", "rnn"))
    # a low temperature picks the most likely byte: the argmax after the same prefix
    greedy = charrnn.generate(net, "In", 1, 1e-3, np.random.default_rng(0))
    net.graph.net.opts["time_steps"] = 1
    for byte in b"In":
        p = net.forward(charrnn.one_hot(np.array([byte])))
    assert greedy[0] == int(p.reshape(-1).argmax())


KJV_SHA256 = "82fa5f3788c6a9a010fb128a0f0bf588984b5888a82058520620eded59b033ea"


def test_shipped_char_rnn_gives_the_readme_numbers(tmp_path):
    # weights/char_rnn.weights: cfg/char_rnn.cfg trained on the King James Bible of the
    # Debian package bible-kjv (README "Recurrent networks")
    import hashlib
    import shutil
    import subprocess

    from .conftest import ROOT
    if shutil.which("bible") is None:
        pytest.skip("the text comes from Debian's bible-kjv package (apt-get install "
                    "bible-kjv), which is not installed")
    text = subprocess.run(["bible", "Gen1:1-Rev22:21"], capture_output=True,
                          check=True).stdout
    assert hashlib.sha256(text).hexdigest() == KJV_SHA256
    train, valid = charrnn.split(np.frombuffer(text, np.uint8))
    net = Network.load(ROOT / "cfg" / "char_rnn.cfg", ROOT / "weights" / "char_rnn.weights")
    bits, _ = charrnn.evaluate(net, valid[:30000])
    assert bits == pytest.approx(2.0540, abs=1e-3)
    assert charrnn.bigram_bits(train, valid[:30000]) == pytest.approx(3.5161, abs=1e-4)


def test_classifier_training_refuses_time_steps(tmp_path):
    from darkcfg.train.classifier import train
    from darkcfg.train.loop import TrainOptions
    cfg = tmp_path / "c.cfg"
    cfg.write_text(CFG)
    data = tmp_path / "t.data"
    data.write_text("classes=256\ntrain=fashion-mnist:train\nbackup=" + str(tmp_path / "b") +
                    "\n")
    with pytest.raises(DarkcfgError, match="time_steps=4: a classifier trains on single "
                                           "images.*darkcfg rnn train"):
        train(str(data), str(cfg), None, TrainOptions())
    assert not (tmp_path / "b").exists()
