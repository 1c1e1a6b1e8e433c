"""`run`, `detect`, `valid` and `map` with `--workers 2` (darkcfg/distributed.py): the
same printed figures and outputs as the serial commands, in input order; a worker killed
mid-run loses no image; the workers find the compiled kernels in Numba's cache."""
from __future__ import annotations

import json
import os
import signal
import time

import numpy as np
import pytest
from PIL import Image

from darkcfg.cli import main
from darkcfg.graph import load_graph
from darkcfg.network import Network

from . import toy_classifier, toy_detector

pytest.importorskip("dask.distributed", reason="the darkcfg[dask] extra (dask[distributed]) "
                    "is not installed: pip install -e '.[dask]'")


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """The toy classifier with seeded random weights, 200 PNG images and a 250-image
    valid set (three chunks of whole forward batches of 100)."""
    tmp = tmp_path_factory.mktemp("dask_classifier")
    cfg = toy_classifier.write_cfg(tmp, 10)
    net = Network(load_graph(cfg))
    net.init_weights(3)
    for lay in net.layers:      # statistics a trained net would have
        if "rolling_variance" in lay.params:
            lay.params["rolling_variance"][...] = 0.5
    weights = tmp / "toy.weights"
    net.save_weights(weights)
    rng = np.random.default_rng(1)
    (tmp / "images").mkdir()
    paths = []
    for k in range(200):
        path = tmp / "images" / f"{k:03d}.png"
        Image.fromarray(rng.integers(0, 256, (8 + k % 5, 8), np.uint8)).save(path)
        paths.append(str(path))
    x = rng.integers(0, 256, (250, 8, 8), np.uint8)
    np.savez(tmp / "valid.npz", x=x, y=rng.integers(0, 3, 250))
    data = tmp / "toy.data"
    data.write_text("classes=3\ntrain=valid.npz\nvalid=valid.npz\n")
    return cfg, weights, paths, data


@pytest.fixture(scope="module")
def scheduler():
    """One two-worker cluster for the tests of `--scheduler ADDRESS` (`--workers N` starts
    its own in the `run` test), made as `--workers` makes it."""
    from dask.distributed import LocalCluster

    from darkcfg.distributed import worker_environment
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                           dashboard_address=None, env=worker_environment())
    yield cluster.scheduler_address
    cluster.close()


def cli(capsys, *args) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().out


def test_run_on_two_workers_prints_and_saves_the_serial_outputs(classifier, capsys,
                                                                 tmp_path, scheduler):
    cfg, weights, paths, _ = classifier
    images = [*paths[:100], str(tmp_path / "missing.png"), *paths[100:]]
    code, serial = cli(capsys, "run", cfg, weights, *images, "--top", "3", "--output",
                       tmp_path / "serial.npy")
    assert code == 1        # the missing image, said and skipped
    code, spread = cli(capsys, "run", cfg, weights, *images, "--top", "3", "--output",
                       tmp_path / "dask.npy", "--scheduler", scheduler)
    assert code == 1
    assert spread.replace("dask.npy", "serial.npy") == serial
    assert serial.count(":\n") == 200
    a, b = np.load(tmp_path / "serial.npy"), np.load(tmp_path / "dask.npy")
    assert a.shape == (200, 3) and np.array_equal(a, b)


def test_workers_start_a_local_cluster(classifier, capsys, tmp_path):
    cfg, weights, paths, _ = classifier
    code, serial = cli(capsys, "run", cfg, weights, *paths[:12])
    assert code == 0
    assert main(["run", str(cfg), str(weights), *paths[:12], "--workers", "2"]) == 0
    spread = capsys.readouterr()
    assert spread.out == serial
    assert spread.err.endswith("12/12 images\n")     # the progress, on stderr


def test_valid_on_two_workers_prints_the_serial_figures(classifier, capsys, scheduler):
    cfg, weights, _, data = classifier
    code, serial = cli(capsys, "valid", data, cfg, weights, "--top", "2")
    assert code == 0 and "250 images" in serial
    code, spread = cli(capsys, "valid", data, cfg, weights, "--top", "2", "--scheduler",
                       scheduler)
    assert code == 0 and spread == serial


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dask_detector")
    data = toy_detector.make_data(tmp, n=24)
    data.write_text(data.read_text() + "valid=train.txt\n")
    cfg = toy_detector.write_cfg(tmp)
    net = Network(load_graph(cfg))
    net.init_weights(5)
    for lay in net.layers:
        if "rolling_variance" in lay.params:
            lay.params["rolling_variance"][...] = 1
    weights = tmp / "det.weights"
    net.save_weights(weights)
    return cfg, weights, data, tmp


def test_map_on_two_workers_prints_the_serial_figures(detector, capsys, scheduler):
    cfg, weights, data, _ = detector
    code, serial = cli(capsys, "map", data, cfg, weights, "--quiet")
    assert code == 0 and "24 images" in serial
    code, spread = cli(capsys, "map", data, cfg, weights, "--quiet", "--scheduler",
                       scheduler)
    assert code == 0 and spread == serial


def test_detect_on_two_workers_finds_and_draws_the_serial_boxes(detector, capsys, tmp_path,
                                                                 scheduler):
    cfg, weights, _, tmp = detector
    images = sorted(str(p) for p in (tmp / "images").glob("*.png"))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    code, serial = cli(capsys, "detect", cfg, weights, *images, "--thresh", ".05", "--json",
                       "--out-dir", tmp_path / "a")
    assert code == 0
    code, spread = cli(capsys, "detect", cfg, weights, *images, "--thresh", ".05", "--json",
                       "--out-dir", tmp_path / "b", "--scheduler", scheduler)
    assert code == 0
    one, two = json.loads(serial)["images"], json.loads(spread)["images"]
    assert [r["image"] for r in two] == images
    assert sum(len(r["detections"]) for r in one) > 0
    for r1, r2 in zip(one, two, strict=True):
        assert r1["detections"] == r2["detections"]
        assert (tmp_path / "a" / os.path.basename(r1["drawn"])).read_bytes() == \
            (tmp_path / "b" / os.path.basename(r2["drawn"])).read_bytes()


@pytest.mark.slow       # 36 s on this machine under load (a worker restarts)
def test_a_killed_worker_loses_no_image(classifier):
    from darkcfg.distributed import Cluster, NetSpec, compiled_kernels, run_chunk
    cfg, weights, paths, _ = classifier
    serial = Network.load(cfg, weights)
    from darkcfg.predict import prepare
    want = [serial.forward(prepare(p, serial.input_shape)[None])[0].ravel() for p in paths]
    spec = NetSpec.of(str(cfg), str(weights), strict=True)

    def numba_threads() -> int:     # (local functions travel by value to the workers)
        import numba
        return numba.get_num_threads()

    def slow_chunk(spec, chunk):    # long enough for the kill to land mid-run
        time.sleep(0.1)
        return run_chunk(spec, chunk)

    with Cluster(workers=2) as cluster:
        pids = cluster.client.run(os.getpid)
        victim = sorted(pids.values())[0]
        chunks = [paths[i:i + 5] for i in range(0, 200, 5)]
        killed = []

        def kill(done: int) -> None:
            if done == 3:
                os.kill(victim, signal.SIGKILL)
                killed.append(done)
        got = cluster.map(slow_chunk, [(spec, c) for c in chunks], [5] * 40, on_done=kill)
        assert killed
        assert victim not in cluster.client.run(os.getpid).values()
        compiled = cluster.client.run(compiled_kernels)
        threads = cluster.client.run(numba_threads)
    flat = [y for chunk in got for y, _ in chunk]
    assert len(flat) == 200
    for y, w in zip(flat, want, strict=True):
        assert np.array_equal(y, w)
    # the workers (the restarted one included) took every kernel from Numba's cache,
    # and run one Numba thread each
    assert set(compiled.values()) == {0}
    assert set(threads.values()) == {1}


def test_workers_and_scheduler_are_refused_together_and_without_values(classifier, capsys):
    cfg, weights, paths, _ = classifier
    with pytest.raises(SystemExit):
        main(["run", str(cfg), str(weights), paths[0], "--workers", "2", "--scheduler",
              "tcp://x:1"])
    assert "not allowed with argument" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["run", str(cfg), str(weights), paths[0], "--workers", "0"])


def test_valid_on_workers_refuses_labels_the_serial_run_refuses(classifier, capsys, tmp_path):
    cfg, weights, _, _ = classifier
    np.savez(tmp_path / "bad.npz", x=np.zeros((5, 8, 8), np.uint8), y=np.arange(5))
    data = tmp_path / "bad.data"
    data.write_text("classes=3\ntrain=bad.npz\nvalid=bad.npz\n")
    said = []
    for extra in ([], ["--workers", "2"]):
        assert main(["valid", str(data), str(cfg), str(weights), *extra]) == 2
        said.append(capsys.readouterr().err)
    assert said[0] == said[1] and "bad.npz has label 4, outside 0..2 (classes=3)" in said[0]
