"""Scale-out numbers for the README ("Scale-out").

    python tools/bench_mpi.py bytes [--time]
        per cfg in cfg/: the float32 values `mpiexec -n N darkcfg train` allreduces each
        iteration (darkcfg/train/mpi.py: buffer_values), in bytes, with subdivisions
        set to 8 (eight ranks need subdivisions divisible by 8), and, on paper, the
        network bandwidth at which 8 machines train at 90% scaling efficiency:

            ring allreduce moves 2 (N-1)/N x B bytes through each link;
            one machine's iteration takes t1; N machines each compute t1/N;
            efficiency = (t1/N) / (t1/N + 2 (N-1)/N B / bandwidth) >= 0.9
            => bandwidth >= 2 (N-1)/N x B x 9 N / t1 = 18 (N-1) B / t1 (126 B/t1 at N=8)

        t1 from the README's measured training speeds where it has one; --time measures
        it here (3 iterations of random data after one to warm up: on a loaded machine
        an upper bound).

    python tools/bench_mpi.py speed [DATA CFG] [--iterations 40]
        img/s of `darkcfg train` in 1 process x 2 threads against `mpiexec -n 2` ranks x
        1 thread, on the same cfg with subdivisions=2 (default: fashion_plain on
        Fashion-MNIST); needs darkcfg[mpi]. Validation is left out of both runs.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RANKS = 8
# seconds per iteration of one process at the cfg's batch, from the README's "Measured"
# table (images per second on this 2-core machine)
README_SECONDS = {"fashion_plain": 128 / 4486, "fashion_resnet": 128 / 2873,
                  "yolo_fashion": 32 / 210, "yolov4-tiny_fashion": 32 / 22}


def with_subdivisions(cfg: Path, subdivisions: int, folder: Path) -> Path:
    text = re.sub(r"(?m)^subdivisions\s*=.*$", f"subdivisions={subdivisions}",
                  cfg.read_text())
    out = folder / cfg.name
    out.write_text(text)
    return out


def iteration_seconds(net) -> float:
    """One process's time for an iteration of random data (best of 3, after a warm-up)."""
    rng = np.random.default_rng(0)
    x = rng.random((net.train_batch, *net.input_shape), dtype=np.float32)
    truth = np.zeros((net.train_batch, net.graph.truths), np.float32)
    if not any(lay.is_head for lay in net.layers):
        truth[np.arange(len(truth)), rng.integers(0, truth.shape[1], len(truth))] = 1
    net.train_step(x, truth)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        net.train_step(x, truth)
        best = min(best, time.perf_counter() - start)
    return best


def cmd_bytes(args: argparse.Namespace) -> None:
    from darkcfg.graph import load_graph
    from darkcfg.network import Network
    from darkcfg.train.mpi import buffer_values
    print(f"{'cfg':<22} {'params':>10} {'allreduced/iter':>16} {'t1 (s)':>9} "
          f"{'90% at 8 machines':>18}")
    with tempfile.TemporaryDirectory() as tmp:
        for cfg in sorted((ROOT / "cfg").glob("*.cfg")):
            net = Network(load_graph(with_subdivisions(cfg, RANKS, Path(tmp)), batch=None))
            net.init_weights(0)
            params = sum(lay.nparams for lay in net.layers)
            nbytes = 4 * buffer_values(net, net.freeze(1).layers)
            t1 = iteration_seconds(net) if args.time else README_SECONDS.get(cfg.stem)
            if t1 is None:
                print(f"{cfg.stem:<22} {params:>10,} {nbytes:>14,} B {'-':>9} {'-':>18}")
                continue
            need = 18 * (RANKS - 1) * nbytes / t1 * 8      # bits per second
            print(f"{cfg.stem:<22} {params:>10,} {nbytes:>14,} B {t1:>9.4f} "
                  f"{need / 1e9:>12.2f} Gbit/s")


def train_speed(cmd: list[str], threads: int, cwd: Path) -> float:
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    found = re.search(r"done: .*\((\d+) img/s\)", done.stdout)
    if done.returncode or not found:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}")
    return float(found.group(1))


def cmd_speed(args: argparse.Namespace) -> None:
    from darkcfg.data.classifier import read_data_config
    if shutil.which("mpiexec") is None:
        sys.exit("no mpiexec on PATH: pip install 'darkcfg[mpi]'")
    data_cfg = read_data_config(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        cfg = with_subdivisions(Path(args.cfg), 2, folder)
        data = folder / "bench.data"        # the same sets, no validation, backup here
        train = data_cfg.path("train")
        data.write_text(f"classes={data_cfg.classes}\ntrain={train}\nbackup={folder}/\n"
                        + (f"labels={data_cfg.path('labels')}\n" if data_cfg.path("labels")
                           else "") + (f"names={data_cfg.path('names')}\n"
                                       if data_cfg.path("names") else ""))
        run = [sys.executable, "-m", "darkcfg", "train", str(data), str(cfg), "--quiet",
               "--max-batches", str(args.iterations), "--backup-every", "100000",
               "--save-every", "100000"]
        one = train_speed(run, 2, folder)
        shutil.rmtree(folder / "bench_chart.png", ignore_errors=True)
        ranks = train_speed(["mpiexec", "-n", "2", *run], 1, folder)
    print(f"{Path(args.cfg).stem} (subdivisions=2), {args.iterations} iterations:")
    print(f"  1 process x 2 threads: {one:.0f} img/s")
    print(f"  2 ranks x 1 thread:    {ranks:.0f} img/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("bytes", help="bytes allreduced per iteration, bandwidth on paper")
    p.add_argument("--time", action="store_true", help="measure t1 here for every cfg")
    p.set_defaults(func=cmd_bytes)
    p = sub.add_parser("speed", help="img/s: 1 process x 2 threads vs 2 ranks x 1 thread")
    p.add_argument("data", nargs="?", default=str(ROOT / "cfg" / "fashion.data"))
    p.add_argument("cfg", nargs="?", default=str(ROOT / "cfg" / "fashion_plain.cfg"))
    p.add_argument("--iterations", type=int, default=40)
    p.set_defaults(func=cmd_speed)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
