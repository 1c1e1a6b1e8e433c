#!/usr/bin/env python3
"""darkcfg speed against PyTorch (when installed): forward and training, interleaved.

    python tools/bench.py                      # every net, batch 1 and 16, and training
    python tools/bench.py --nets yolov3-tiny --batches 1 --no-train
    python tools/bench.py --json-only          # just the JSON lines

Each framework runs in its own worker process (so neither's threads spin while the other
runs, and each reports its own peak RSS); the parent alternates them, `--rounds` rounds of
`--reps` timed repetitions each after warm-up, and takes the median of every repetition.
Networks get random weights with sane BN statistics (the same file for both); PyTorch's
copy comes from tools/torch_from_cfg.py, and its output is compared with darkcfg's once per
net (`max_rel`). Forward: batch 1 and 16 on yolov3-tiny 416, darknet19 224, resnet18 224,
tiny 224. Training: img/s of a full SGD step (momentum, decay, BN batch statistics,
softmax cross-entropy) on cifar_small.cfg and cfg/fashion_*.cfg, synthetic data.

Prints one JSON line per measurement, then a table. Threads: numba's count for darkcfg,
torch.set_num_threads(--threads) for PyTorch (default: every core).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("DARKCFG_SHARED", ROOT.parent / "shared")) / "darknet-cfg"
FORWARD = {"yolov3-tiny": 416, "darknet19": 224, "resnet18": 224, "tiny": 224}
TRAIN = ["tutorial/cifar_small.cfg", *(str(ROOT / "cfg" / f"fashion_{k}.cfg") for k in
                                        ("plain", "gap", "resnet", "dilated", "separable"))]
# Darknet C's CPU forward at batch 1 on this machine (ms), for the "x faster" column.
DARKNET_MS = {"yolov3-tiny": 250.0, "darknet19": 245.0, "resnet18": 157.0}


def cfg_path(name: str) -> Path:
    p = Path(name)
    if p.exists():
        return p
    if (SHARED / name).exists():
        return SHARED / name
    return SHARED / "pjreddie" / f"{name}.cfg"


def random_network(cfg: str | Path, size: int | None, batch: int | None, seed: int = 0):
    """A darkcfg Network with Darknet's random initialisation and BN statistics that keep
    activations finite (rolling variance near 1, small means)."""
    from darkcfg.graph import load_graph
    from darkcfg.network import Network
    sizes = {"width": size, "height": size} if size else {}
    net = Network(load_graph(cfg, batch=batch, strict=False, **sizes))
    net.init_weights(seed)
    rng = np.random.default_rng(seed + 1)
    for layer in net.layers:
        p = layer.params
        if "rolling_variance" in p:
            n = p["scales"].size
            p["rolling_variance"][...] = rng.uniform(0.5, 1.5, n)
            p["rolling_mean"][...] = rng.normal(0, 0.1, n)
            p["scales"][...] = rng.uniform(0.8, 1.2, n)
            p["biases"][...] = rng.normal(0, 0.1, n)
    return net


def rss_mb() -> float:
    """This process's peak RSS (MB). VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    fork and exec, so a worker would report its parent's peak when that is higher."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# --- workers ------------------------------------------------------------------------------
class Worker:
    """Runs in a subprocess: `setup` once, then `run k` -> k timings (s), `out` -> saves the
    output, `rss` -> peak RSS (MB)."""

    def __init__(self, fw: str, job: dict, threads: int):
        self.fw, self.job = fw, job
        if fw == "torch":
            import torch
            torch.set_num_threads(threads)
            self.torch = torch
        cfg = cfg_path(job["cfg"])
        if job["kind"] == "forward":
            from darkcfg.network import Network
            net = Network.load(cfg, job["weights"], batch=job["batch"], strict=False,
                               width=job["size"], height=job["size"])
            c, h, w = net.input_shape
            self.x = np.random.default_rng(1).random((job["batch"], c, h, w), np.float32)
        else:
            net = random_network(cfg, None, None, seed=job["seed"])
            o = net.graph.net
            n = o.batch * o.opts["subdivisions"]
            c, h, w = net.input_shape
            rng = np.random.default_rng(2)
            self.x = rng.random((n, c, h, w), np.float32)
            classes = net.layers[net.output_index].out_shape[0]
            self.labels = rng.integers(0, classes, n)
            self.truth = np.eye(classes, dtype=np.float32)[self.labels]
        self.net = net
        if fw == "torch":
            from torch_from_cfg import from_network
            self.model = from_network(net, train=job["kind"] == "train")
            self.tx = torch.from_numpy(self.x)
            if job["kind"] == "train":
                o = net.graph.net.opts
                # Darknet's SGD: lr/batch on the summed gradient == lr on the mean
                self.opt = torch.optim.SGD(self.model.parameters(), lr=o["learning_rate"],
                                           momentum=o["momentum"], weight_decay=o["decay"])
                self.ty = torch.from_numpy(self.labels)

    def step(self) -> None:
        if self.fw == "darkcfg":
            if self.job["kind"] == "forward":
                self.net.forward(self.x)
            else:
                self.net.train_step(self.x, self.truth)
            return
        torch = self.torch
        if self.job["kind"] == "forward":
            with torch.inference_mode():
                self.model(self.tx)
        else:
            self.opt.zero_grad(set_to_none=True)
            p = self.model(self.tx).reshape(len(self.tx), -1)
            loss = torch.nn.functional.nll_loss(torch.log(p + 1e-12), self.ty)
            loss.backward()
            self.opt.step()

    def output(self) -> np.ndarray:
        if self.fw == "darkcfg":
            return self.net.forward(self.x).copy()
        with self.torch.inference_mode():
            return self.model(self.tx).numpy().copy()


def worker_main(fw: str, job: dict, threads: int) -> None:
    t0 = time.perf_counter()
    w = Worker(fw, job, threads)
    for _ in range(job["warmup"]):
        w.step()
    print(json.dumps({"ready": round(time.perf_counter() - t0, 2)}), flush=True)
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "run":
            times = []
            for _ in range(int(cmd[1])):
                t = time.perf_counter()
                w.step()
                times.append(time.perf_counter() - t)
            print(json.dumps(times), flush=True)
        elif cmd[0] == "out":
            np.save(cmd[1], w.output())
            print("{}", flush=True)
        elif cmd[0] == "rss":
            print(json.dumps(rss_mb()), flush=True)
        else:
            break


SETTLE_S = 0.2

# The environment as the user gave it: importing darkcfg in this process sets OpenMP
# defaults (kernels.config) that must not leak into the PyTorch worker.
USER_ENV = dict(os.environ)


TORCH_ENV: dict[str, str] = {}      # --torch-env: extra settings for the PyTorch worker


def spawn(fw: str, job: dict, threads: int) -> subprocess.Popen:
    env = dict(USER_ENV)
    if fw == "torch":
        env.update(TORCH_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tools"),
                                         env.get("PYTHONPATH", "")])
    p = subprocess.Popen([sys.executable, __file__, "--worker", fw, "--job", json.dumps(job),
                          "--threads", str(threads)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)
    return p


def ask(p: subprocess.Popen, cmd: str):
    p.stdin.write(cmd + "\n")
    p.stdin.flush()
    line = p.stdout.readline()
    if not line:
        raise RuntimeError(f"worker died on '{cmd}'")
    return json.loads(line)


def measure(job: dict, frameworks: list[str], args) -> list[dict]:
    procs = {fw: spawn(fw, job, args.threads) for fw in frameworks}
    try:
        ready = {}
        for fw, p in procs.items():
            line = p.stdout.readline()
            if not line:
                raise RuntimeError(f"{fw} worker failed to start for {job}")
            ready[fw] = json.loads(line)["ready"]
        times = {fw: [] for fw in frameworks}
        for _ in range(args.rounds):
            for fw, p in procs.items():       # alternate: same load for both
                # a pause first, so that the other worker's OpenMP threads, which spin
                # for a while after their last kernel, are asleep when this one starts
                time.sleep(SETTLE_S)
                times[fw] += ask(p, f"run {job['reps']}")
        max_rel = None
        if job["kind"] == "forward" and len(frameworks) == 2:
            with tempfile.TemporaryDirectory() as d:
                outs = []
                for fw, p in procs.items():
                    ask(p, f"out {d}/{fw}.npy")
                    outs.append(np.load(f"{d}/{fw}.npy"))
            scale = max(float(np.abs(outs[1]).max()), 1e-6)
            max_rel = float(np.abs(outs[0] - outs[1]).max() / scale)
        rss = {fw: ask(p, "rss") for fw, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.stdin.close()
                p.wait(timeout=60)
    recs = []
    for fw in frameworks:
        med = statistics.median(times[fw])
        rec = {"framework": fw, "kind": job["kind"], "net": job["name"], "batch": job["batch"],
               "size": job.get("size"), "median_ms": round(1000 * med, 2),
               "min_ms": round(1000 * min(times[fw]), 2), "runs": len(times[fw]),
               "startup_s": ready[fw], "peak_rss_mb": round(rss[fw], 1),
               "threads": args.threads,
               "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "")}
        if job["kind"] == "train":
            rec["img_per_s"] = round(job["batch"] / med, 1)
        if max_rel is not None:
            rec["max_rel_vs_torch"] = max_rel
        recs.append(rec)
    return recs


# --- the run ------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="*", default=list(FORWARD))
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 16])
    ap.add_argument("--train", nargs="*", default=TRAIN)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--no-forward", action="store_true")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--json-only", action="store_true")
    ap.add_argument("--torch-env", nargs="*", default=[], metavar="KEY=VALUE",
                    help="environment for the PyTorch worker only (e.g. "
                         "OMP_WAIT_POLICY=PASSIVE, which PyTorch's OpenMP runtime reads)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--job", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker_main(args.worker, json.loads(args.job), args.threads)
        return
    TORCH_ENV.update(kv.split("=", 1) for kv in args.torch_env)
    frameworks = ["darkcfg"]
    if not args.no_torch:
        try:
            import importlib.util
            if importlib.util.find_spec("torch") is not None:
                frameworks.append("torch")
        except ImportError:
            pass
    recs = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = []
        if not args.no_forward:
            for name in args.nets:
                size = FORWARD.get(name, 224)
                weights = f"{tmp}/{name}.weights"
                random_network(cfg_path(name), size, 1).save_weights(weights)
                for b in args.batches:
                    reps = args.reps if b == 1 else max(1, args.reps // 2)
                    jobs.append({"kind": "forward", "name": name, "cfg": name, "size": size,
                                 "batch": b, "weights": weights, "warmup": 3, "reps": reps})
        if not args.no_train:
            for cfg in args.train:
                from darkcfg.graph import load_graph
                g = load_graph(cfg_path(cfg), strict=False)
                jobs.append({"kind": "train", "name": Path(cfg).stem, "cfg": cfg,
                             "batch": g.net.batch * g.net.opts["subdivisions"], "seed": 0,
                             "warmup": 2, "reps": max(1, args.reps // 2)})
        for job in jobs:
            for rec in measure(job, frameworks, args):
                recs.append(rec)
                print(json.dumps(rec), flush=True)
    if not args.json_only:
        print()
        print(table(recs))


def table(recs: list[dict]) -> str:
    """Markdown table: one row per (kind, net, batch) with both frameworks side by side."""
    rows = {}
    for r in recs:
        rows.setdefault((r["kind"], r["net"], r["batch"]), {})[r["framework"]] = r
    head = ("| what | net | batch | darkcfg | PyTorch | darkcfg/PyTorch | vs Darknet C | "
            "RSS darkcfg / PyTorch (MB) |")
    out = [f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
           f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}", "",
           head, "|---" * (head.count("|") - 1) + "|"]
    for (kind, net, batch), fw in rows.items():
        d, t = fw.get("darkcfg"), fw.get("torch")
        if kind == "forward":
            dv = f"{d['median_ms']:.1f} ms"
            tv = f"{t['median_ms']:.1f} ms" if t else "-"
            ratio = f"{d['median_ms'] / t['median_ms']:.2f}" if t else "-"
            dk = DARKNET_MS.get(net)
            vs = f"{dk / d['median_ms']:.1f}x faster" if dk and batch == 1 else ""
        else:
            dv = f"{d['img_per_s']:.0f} img/s"
            tv = f"{t['img_per_s']:.0f} img/s" if t else "-"
            # a ratio of speeds, so > 1 means darkcfg is faster
            ratio = f"{d['img_per_s'] / t['img_per_s']:.2f} (speed)" if t else "-"
            vs = ""
        rss = f"{d['peak_rss_mb']:.0f} / {t['peak_rss_mb']:.0f}" if t else \
            f"{d['peak_rss_mb']:.0f}"
        out.append(f"| {kind} | {net} | {batch} | {dv} | {tv} | {ratio} | {vs} | {rss} |")
    return "\n".join(out)


if __name__ == "__main__":
    main()
