"""A catalogue of broken cfgs: each error names the file, line, section, key and a fix."""
from __future__ import annotations

import pytest

from darkcfg import CfgError, load_graph

NET = "[net]\nwidth=16\nheight=16\nchannels=3\n"           # lines 1-4
CONV = "[convolutional]\nfilters=8\nsize=3\npad=1\nactivation=leaky\n"

# (id, cfg text, expected line, expected key, text the message must contain)
CASES = [
    ("key-before-section", "width=16\n[net]\n", 1, "width", "before any section"),
    ("first-not-net", "[convolutional]\nfilters=1\n", 1, None, "first section must be [net]"),
    ("unknown-section", NET + "[convolutinal]\nfilters=1\n", 5, None,
     "did you mean [convolutional]"),
    ("unknown-key", NET + "[convolutional]\nfiltres=8\n", 6, "filtres",
     "did you mean 'filters'"),
    ("duplicate-key", NET + "[convolutional]\nfilters=8\nsize=3\nfilters=16\n", 8, "filters",
     "duplicate key 'filters' (first set on line 6"),
    ("not-a-number", NET + "[convolutional]\nfilters=abc\n", 6, "filters",
     "must be an integer, got 'abc'"),
    ("fraction-for-int", NET + "[convolutional]\nsize=3.5\n", 6, "size",
     "must be an integer, got '3.5'"),
    ("negative-size", NET + "[convolutional]\nsize=-1\n", 6, "size", "must be >= 1"),
    ("zero-filters", NET + "[convolutional]\nfilters=0\n", 6, "filters", "must be >= 1"),
    ("groups-vs-channels", NET + "[convolutional]\nfilters=8\ngroups=2\n", 7, "groups",
     "received groups=2 with 3 input channels"),
    ("groups-vs-filters", NET + CONV + "[convolutional]\nfilters=6\ngroups=4\n", 12, "groups",
     "received groups=4, filters=6"),
    ("route-out-of-range", NET + CONV + "[route]\nlayers=-5\n", 11, "layers",
     "before the first layer"),
    ("route-forward", NET + CONV + CONV + "[route]\nlayers=3\n", 16, "layers",
     "which comes later"),
    ("route-itself", NET + CONV + "[route]\nlayers=1\n", 11, "layers", "refers to itself"),
    ("route-spatial-clash", NET + CONV + "[maxpool]\nsize=2\nstride=2\n[route]\nlayers=-1,-2\n",
     14, "layers", "need the same width and height"),
    ("shortcut-unmappable",
     "[net]\nwidth=13\nheight=13\nchannels=3\n" + CONV +
     "[convolutional]\nfilters=8\nsize=3\nstride=2\npad=1\n"
     "[convolutional]\nfilters=8\nsize=3\nstride=1\nactivation=linear\n[shortcut]\nfrom=-3\n",
     21, "from", "differ by the same integer factor"),
    ("shortcut-without-from", NET + CONV + "[shortcut]\nactivation=linear\n", 10, None,
     "missing required key 'from'"),
    ("shapes-shrink-to-zero", NET + "[convolutional]\nfilters=4\nsize=5\nstride=4\n"
     "[convolutional]\nfilters=4\nsize=5\n", 9, None, "is empty"),
    ("unknown-activation", NET + "[convolutional]\nactivation=leakey\n", 6, "activation",
     "did you mean 'leaky'"),
    ("no-input-shape", "[net]\nwidth=16\nheight=16\n[convolutional]\nfilters=1\n", 1, None,
     "missing channels"),
    ("subdivisions-over-batch", "[net]\nbatch=2\nsubdivisions=4\nwidth=8\nheight=8\n"
     "channels=1\n[avgpool]\n", 3, "subdivisions", "mini-batch"),
    ("line-without-equals", NET + "[convolutional]\nfilters 8\n", 6, None,
     "expected 'key=value'"),
    ("empty-value", NET + "[convolutional]\nfilters=\n", 6, "filters", "empty value"),
    ("unclosed-header", NET + "[convolutional\nfilters=8\n", 5, None, "no closing ']'"),
    ("second-net", NET + CONV + "[net]\nwidth=3\n", 10, None, "a second [net]"),
    ("bad-policy", "[net]\nwidth=8\nheight=8\nchannels=1\npolicy=stepz\n[avgpool]\n", 5,
     "policy", "did you mean 'step'"),
    ("bad-list-item", "[net]\nwidth=8\nheight=8\nchannels=1\nsteps=400,abc\n[avgpool]\n", 5,
     "steps", "must be an integer, got 'abc'"),
    ("yolo-filters-mismatch", NET + "[convolutional]\nfilters=20\nsize=1\n[yolo]\nclasses=2\n"
     "mask=0,1\nanchors=10,10,20,20\nnum=2\n", 9, "classes", "set filters=14"),
    ("upsample-zero", NET + "[upsample]\nstride=0\n", 6, "stride", "must not be 0"),
    ("dropout-certain", NET + "[dropout]\nprobability=1\n", 6, "probability", "below 1"),
    ("reorg-odd-size", "[net]\nwidth=15\nheight=15\nchannels=4\n[reorg]\nstride=2\n", 6,
     "stride", "divisible by 2"),
    ("softmax-groups", NET + "[softmax]\ngroups=5\n", 6, "groups",
     "must divide the layer's 768 inputs"),
    ("maxpool-zero-stride", NET + "[maxpool]\nstride=0\nsize=2\n", 6, "stride", ">= 1"),
    ("yolo-mask-outside", NET + "[convolutional]\nfilters=7\nsize=1\n[yolo]\nclasses=2\n"
     "mask=3\nanchors=10,10,20,20\nnum=2\n", 10, "mask", "outside the 2 anchors"),
    ("crop-too-large", NET + "[crop]\ncrop_height=32\ncrop_width=8\n", 6, "crop_height",
     "larger than the input"),
    ("scale-channels-shape", NET + CONV + "[avgpool]\n[convolutional]\nfilters=4\nsize=1\n"
     "[scale_channels]\nfrom=-3\n", 15, "from", "needs 1 x 1 x 8"),
]


@pytest.mark.parametrize("text,line,key,words", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_error_names_line_and_key(tmp_path, text, line, key, words):
    path = tmp_path / "bad.cfg"
    path.write_text(text)
    with pytest.raises(CfgError) as info:
        load_graph(path)
    err = info.value
    message = str(err)
    assert words in message
    assert message.startswith(f"bad.cfg:{line}:"), message
    assert err.line == line
    if key is not None:
        assert err.key == key and f"'{key}" in message


def test_catalogue_is_large():
    assert len(CASES) >= 25


def test_error_names_section_and_layer(tmp_path):
    path = tmp_path / "net.cfg"
    path.write_text(NET + CONV + "[convolutional]\nfiltres=8\n")
    with pytest.raises(CfgError) as info:
        load_graph(path)
    assert str(info.value) == ("net.cfg:11: [convolutional] (layer 1): unknown key 'filtres'"
                               " - did you mean 'filters'?")
    assert (info.value.section, info.value.index) == ("convolutional", 1)


@pytest.mark.parametrize("content,words", [
    (b"", "empty"),
    (b"   \n\n# only a comment\n", "no sections"),
    (b"\x00\x00\x00\x00\x02\x00\x00\x00" + bytes(64), "binary file"),
    (b"<!DOCTYPE html>\n<html><body>yolo</body></html>", "HTML page"),
    (b"[net]\nwidth=\xff\xfe\n", "not UTF-8"),
])
def test_files_that_are_not_cfgs(tmp_path, content, words):
    path = tmp_path / "x.cfg"
    path.write_bytes(content)
    with pytest.raises(CfgError, match=words) as info:
        load_graph(path)
    assert str(info.value).startswith("x.cfg")


def test_missing_file(tmp_path):
    with pytest.raises(CfgError, match="no such file"):
        load_graph(tmp_path / "nope.cfg")


def test_crlf_comments_and_aliases_are_fine(tmp_path):
    path = tmp_path / "ok.cfg"
    path.write_bytes(b"[network]\r\nwidth = 16 # inline\r\nheight=16\r\nchannels=3\r\n"
                     b"; a comment\r\n[conv]\r\nfilters=4\r\nsize=3\r\nstride=2\r\npad=1\r\n"
                     b"[max]\r\nsize=2\r\nstride=2\r\n[route]\r\nlayers = -1, -2\r\n")
    with pytest.raises(CfgError, match="same width and height"):
        load_graph(path)
    path.write_bytes(path.read_bytes().replace(b"layers = -1, -2", b"layers = -1, 1"))
    graph = load_graph(path)
    assert [lay.out_shape for lay in graph.layers] == [(4, 8, 8), (4, 4, 4), (8, 4, 4)]


def test_lenient_turns_unknown_keys_into_warnings(tmp_path):
    path = tmp_path / "x.cfg"
    path.write_text(NET + "[convolutional]\nfiltres=8\nfilters=4\n")
    with pytest.warns(UserWarning, match="unknown key 'filtres'"):
        graph = load_graph(path, strict=False)
    assert graph.layers[0].out_shape == (4, 16, 16)


def test_unsupported_sections_are_refused_to_run(tmp_path):
    from darkcfg.network import Network
    path = tmp_path / "x.cfg"
    # a [local] whose pad Darknet turns into reads at the wrong stride
    path.write_text(NET + "[local]\nfilters=2\nsize=5\npad=1\n")
    graph = load_graph(path)          # summarises...
    with pytest.raises(CfgError, match=r"x.cfg:5: \[local\] \(layer 0\): cannot run .*"
                                       r"size=5 and pad=1.*use pad=2"):
        Network(graph)                # ...but does not run
