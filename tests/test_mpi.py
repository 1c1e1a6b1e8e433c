"""`mpiexec -n 2 darkcfg train`: the same run as one process, spread over two ranks
(darkcfg/train/mpi.py). The reference is a one-process run of the same cfg and seed in
this test process; the MPI runs are real mpiexec jobs on localhost."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from darkcfg.graph import load_graph
from darkcfg.network import Network
from darkcfg.train.classifier import train
from darkcfg.train.detector import train_detector
from darkcfg.train.loop import TrainOptions

from . import toy_classifier, toy_detector
from .conftest import ROOT

pytest.importorskip("mpi4py", reason="the darkcfg[mpi] extra (mpi4py, mpich) is not "
                    "installed: pip install -e '.[mpi]'")
MPIEXEC = shutil.which("mpiexec")
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec on PATH (the mpich "
                                "wheel of darkcfg[mpi] brings one)")


def mpiexec(n: int, *args, cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([MPIEXEC, "-n", str(n), sys.executable, "-m", "darkcfg", *map(
        str, args)], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for k in [k for k in env if k.startswith(("PMI_", "OMPI_", "PMIX_"))]:
        del env[k]      # this process is no rank
    return env


def params(cfg: Path, weights: Path) -> dict[str, np.ndarray]:
    net = Network(load_graph(cfg))
    net.load_weights(weights)
    out = {f"{lay.index}.{k}": v.copy() for lay in net.layers for k, v in lay.params.items()}
    out["seen"] = np.array(net.seen)
    return out


def assert_same_weights(cfg: Path, a: Path, b: Path) -> None:
    pa, pb = params(cfg, a), params(cfg, b)
    assert pa.keys() == pb.keys()
    for k in pa:
        scale = max(float(np.abs(pa[k]).max(initial=0)), 1e-30)
        worst = float(np.abs(pa[k] - pb[k]).max(initial=0)) / scale
        assert worst <= 1e-5, f"{k}: rel {worst:.3g}"


def classifier_case(tmp_path: Path, max_batches: int = 3) -> tuple[Path, Path]:
    data = toy_classifier.make_data(tmp_path)       # subdivisions=2, BN, dropout, crop
    return data, toy_classifier.write_cfg(tmp_path, max_batches)


def detector_case(tmp_path: Path) -> tuple[Path, Path]:
    data = toy_detector.make_data(tmp_path)
    cfg = toy_detector.write_cfg(tmp_path, 3)
    cfg.write_text(cfg.read_text().replace("subdivisions=1", "subdivisions=2"))
    return data, cfg


@pytest.mark.parametrize("kind", ["classifier", "detector"])
def test_two_ranks_give_the_one_process_weights(tmp_path, kind):
    data, cfg = (classifier_case if kind == "classifier" else detector_case)(tmp_path)
    trainer = train if kind == "classifier" else train_detector
    one = trainer(str(data), str(cfg), None, TrainOptions(seed=7, quiet=True))
    kept = tmp_path / "one.weights"
    one.rename(kept)
    Path(f"{one}.state").rename(f"{kept}.state")
    done = mpiexec(2, "train", data, cfg, "--seed", 7, "--quiet", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "training over MPI: 2 ranks share the 2 mini-batches" in done.stdout
    assert done.stdout.count("done: 3 iterations") == 1        # rank 0 alone reports
    assert_same_weights(cfg, kept, tmp_path / "backup" / f"{cfg.stem}_final.weights")
    # the momentum buffers too (a resume continues from them)
    with np.load(f"{kept}.state") as a, \
            np.load(tmp_path / "backup" / f"{cfg.stem}_final.weights.state") as b:
        for k in a.files:
            if not k.startswith("history."):
                np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-7, err_msg=k)


def test_a_resumed_mpi_run_equals_an_uninterrupted_one(tmp_path):
    data, cfg = classifier_case(tmp_path)
    whole = train(str(data), str(cfg), None, TrainOptions(seed=2, quiet=True))
    whole.rename(tmp_path / "whole.weights")
    first = mpiexec(2, "train", data, cfg, "--seed", 2, "--quiet", "--max-batches", 2,
                    cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    part = tmp_path / "backup" / "toy_final.weights"
    for suffix in ("", ".state"):
        Path(f"{part}{suffix}").rename(tmp_path / f"two.weights{suffix}")
    rest = mpiexec(2, "train", data, cfg, tmp_path / "two.weights", "--seed", 2, "--quiet",
                   cwd=tmp_path)
    assert rest.returncode == 0, rest.stderr
    assert "resuming from" in rest.stdout and "at iteration 2" in rest.stdout
    assert_same_weights(cfg, tmp_path / "whole.weights", part)


def test_ranks_that_do_not_divide_subdivisions_are_refused(tmp_path):
    data, cfg = classifier_case(tmp_path)
    done = mpiexec(3, "train", data, cfg, "--quiet", cwd=tmp_path)
    assert done.returncode == 2
    # said once, by one rank, naming both numbers
    assert done.stderr.count("darkcfg: error") == 1, done.stderr
    assert "3 MPI ranks cannot share subdivisions=2 mini-batches" in done.stderr
    assert "run with -n 1 / 2" in done.stderr
    assert not (tmp_path / "backup" / "toy_final.weights").exists()


def test_a_failing_rank_is_named(tmp_path):
    # rank 1 cannot read the training data (its copy is damaged): it says so, with its
    # rank; rank 0, which set up fine, stops without training
    data, cfg = classifier_case(tmp_path)
    script = tmp_path / "rank_damage.py"
    script.write_text(
        "import os, runpy, sys\n"
        "if os.environ.get('PMI_RANK') == '1':\n"
        "    sys.argv[2] = 'broken.data'\n"
        "sys.argv[0] = 'darkcfg'\n"
        "runpy.run_module('darkcfg', run_name='__main__')\n")
    (tmp_path / "broken.data").write_text("classes=3\ntrain=missing.npz\nbackup=backup/\n")
    done = subprocess.run([MPIEXEC, "-n", "2", sys.executable, str(script), "train",
                           str(data), str(cfg), "--quiet"], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 2
    assert done.stderr.count("darkcfg: error") == 1, done.stderr
    assert "darkcfg: error (rank 1 of 2): " in done.stderr and "missing.npz" in done.stderr


def signal_rank_1(tmp_path: Path, signum: int) -> tuple[int, str, int, Path, Path]:
    """Train the toy classifier on 2 ranks until a backup exists, send `signum` to
    rank 1's trainer; returns (mpiexec's exit code, its output, that pid, cfg, backup)."""
    data, cfg = classifier_case(tmp_path, max_batches=100000)
    log = tmp_path / "log.txt"
    with open(log, "w") as out:
        job = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "darkcfg", "train",
                                str(data), str(cfg), "--quiet", "--backup-every", "2"],
                               cwd=tmp_path, env=_env(), stdout=out,
                               stderr=subprocess.STDOUT, text=True)
    backup = tmp_path / "backup" / "toy.backup"
    try:
        deadline = time.monotonic() + 600
        while not (backup.exists() and Path(f"{backup}.state").exists()):
            assert job.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        text = log.read_text()
        pid = int(text.split("rank 1: pid ")[1].split()[0])
        os.kill(pid, signum)
        job.wait(timeout=120)
    finally:
        if job.poll() is None:
            job.kill()
    return job.returncode, log.read_text(), pid, cfg, backup


def test_sigterm_on_one_rank_stops_every_rank_after_one_iteration(tmp_path):
    code, text, _, cfg, backup = signal_rank_1(tmp_path, signal.SIGTERM)
    assert code != 0, text      # mpiexec passes on the ranks' 130
    said = text.split("interrupted at iteration ")[1]
    iteration = int(said.split(":")[0])
    assert f"saved {backup}" in said
    net = Network(load_graph(cfg))
    net.load_weights(backup)
    assert net.seen == 8 * iteration        # every rank stopped after that iteration


def test_a_killed_rank_ends_the_job_and_keeps_the_last_checkpoint(tmp_path):
    code, text, pid, cfg, backup = signal_rank_1(tmp_path, signal.SIGKILL)
    assert code != 0
    assert f"darkcfg: error: rank 1 of 2 (pid {pid} on " in text, text
    assert "was killed by signal 9" in text
    # the checkpoint loads whole, its momentum file belongs to it
    net = Network(load_graph(cfg))
    net.load_weights(backup)
    assert net.seen % 8 == 0 and net.iteration >= 2
    with np.load(f"{backup}.state") as z:
        assert int(z["seen"]) == net.seen


def test_one_process_imports_neither_mpi4py_nor_dask(tmp_path):
    data, cfg = classifier_case(tmp_path, max_batches=1)
    image = tmp_path / "x.png"
    from PIL import Image
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    code = (
        "import sys\n"
        "from darkcfg.cli import main\n"
        f"assert main(['train', {str(data)!r}, {str(cfg)!r}, '--quiet']) == 0\n"
        f"assert main(['run', {str(cfg)!r}, 'backup/toy_final.weights', {str(image)!r}]) == 0\n"
        "print(sorted(m for m in ('mpi4py', 'dask', 'distributed') if m in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]"


@pytest.mark.parametrize("bn", [0, 1])
def test_recurrent_layers_are_not_split_among_ranks(bn):
    # a recurrent layer carries its state from one mini-batch to the next (and its BN
    # moves once per time step): refused by name, before any rank trains
    from darkcfg.cfg import parse_cfg
    from darkcfg.errors import DarkcfgError
    from darkcfg.graph import build_graph
    from darkcfg.train.mpi import MPIReducer
    text = ("[net]\nbatch=4\nsubdivisions=2\ntime_steps=2\ninputs=6\n\n[rnn]\noutput=5\n"
            f"hidden=5\nbatch_normalize={bn}\nactivation=leaky\n\n[connected]\noutput=6\n"
            "activation=linear\n\n[softmax]\n")
    net = Network(build_graph(parse_cfg(text, "r.cfg")))
    team = object.__new__(MPIReducer)       # check() needs no communicator
    team.rank, team.size = 0, 2
    with pytest.raises(DarkcfgError, match=r"r.cfg:7: layer 0 \[rnn\] is not trained over "
                       r"MPI: it carries its state from one mini-batch to the next"):
        team.check(net)
