#!/usr/bin/env python3
"""darkcfg speed against PyTorch, OpenCV and onnxruntime (those installed): forward and
training, each engine in its own process, interleaved round by round.

    python tools/bench.py --threads 2 --rounds 5          # the issue-13 nets, batch 1
    python tools/bench.py --nets yolov4-tiny --engines darkcfg opencv --no-train
    python tools/bench.py --range-test --no-train         # activations near 1e4 too
    python tools/bench.py --no-forward --detector         # training img/s only

Engines (`--engines`, default: every one installed):
- darkcfg: `Network.forward`, Numba threads = --threads.
- torch: the same net rebuilt by tools/torch_from_cfg.py, torch.set_num_threads.
- opencv: cv2.dnn.readNetFromDarknet(cfg, weights), DNN_BACKEND_OPENCV / DNN_TARGET_CPU,
  cv2.setNumThreads; `pip install "opencv-python-headless<5"` (5.0 dropped the Darknet
  importer). A net it cannot read or run is recorded as "refuses" with its message.
- onnxruntime: the PyTorch copy exported with torch.onnx.export at the bench size (in a
  short-lived process, so the worker never imports torch), CPUExecutionProvider,
  intra_op_num_threads = --threads, inter_op 1.

Each worker loads the same random weights file (`random_network`: Darknet's init with BN
statistics calibrated so activations stay O(1)); the parent alternates them, --rounds
rounds of --reps timed repetitions after warm-up, with a SETTLE_S pause before each
engine's turn, and takes the median of every repetition. Once per net every engine's
outputs (all detection heads) are compared with darkcfg's (`max_rel`: max |a - b| /
max |darkcfg|; OpenCV's [yolo] rows are darkcfg's outputs decoded as OpenCV lays them out).
--range-test times each net again with BN scales that drive activations to ~1e4 and
reports each engine's slow/normal ratio. Training: img/s of a full SGD step at the cfg's
batch (darkcfg and PyTorch) on cifar_small.cfg and cfg/fashion_mish.cfg; --detector adds
darkcfg's yolov4-tiny training on the composed detection dataset
(tools/make_detection_dataset.py).

Prints one JSON line per measurement, then the tables; the first line names the CPU, its
instruction set and the date.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import re
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
# issue 13's "Done when" nets and sizes
FORWARD = {"yolov3-tiny": 416, "darknet19": 224, "resnet18": 224, "yolov4-tiny": 416,
           "yolov7-tiny": 416, "yolov4": 416, "yolov4-csp": 512, "efficientnet_b0": 224}
TRAIN = ["tutorial/cifar_small.cfg", str(ROOT / "cfg" / "fashion_mish.cfg")]
ENGINES = ("darkcfg", "torch", "opencv", "onnxruntime")
LABELS = {"darkcfg": "darkcfg", "torch": "PyTorch", "opencv": "OpenCV",
          "onnxruntime": "onnxruntime"}
SETTLE_S = 0.25
# --range-test: the BN layers' output scale (random_network's spread); their values then
# reach a few times this, ~1e4
RANGE_SPREAD = 2500.0


def cfg_path(name: str) -> Path:
    """A cfg by path, by path under darknet-cfg/, or by name in pjreddie/ then alexeyab/."""
    p = Path(name)
    if p.exists():
        return p
    if (SHARED / name).exists():
        return SHARED / name
    for lineage in ("pjreddie", "alexeyab"):
        if (SHARED / lineage / f"{name}.cfg").exists():
            return SHARED / lineage / f"{name}.cfg"
    return SHARED / "pjreddie" / f"{name}.cfg"


def installed(engine: str) -> bool:
    need = {"darkcfg": [], "torch": ["torch"], "opencv": ["cv2"],
            "onnxruntime": ["onnxruntime", "onnx", "torch"]}[engine]
    return all(importlib.util.find_spec(m) is not None for m in need)


def machine() -> dict:
    """CPU model, its widest vector instruction set (from /proc/cpuinfo flags), cores."""
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    isa = "avx512f" if "avx512f" in flags else "avx2" if "avx2" in flags else \
        "avx" if "avx" in flags else "sse"
    if isa == "avx2" and "fma" in flags:
        isa = "avx2+fma"
    return {"cpu": model, "isa": isa, "cores": os.cpu_count(),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def versions(engines: list[str]) -> dict:
    import numba

    import darkcfg
    out = {"python": sys.version.split()[0], "numpy": np.__version__,
           "numba": numba.__version__, "darkcfg": darkcfg.__version__}
    mods = {"torch": "torch", "opencv": "cv2", "onnxruntime": "onnxruntime"}
    for e in engines:
        if e in mods:
            out[e] = __import__(mods[e]).__version__
    return out


def random_network(cfg: str | Path, size: int | None, batch: int | None, seed: int = 0,
                   spread: float = 1.0, calibrate: bool = True):
    """A darkcfg Network with Darknet's random initialisation and BN statistics that keep
    activations finite.

    With `calibrate` (inference), one pass over a random image sets each BN layer's
    rolling statistics from its own raw conv output, so that the normalised values have
    a root mean square near `spread` wherever they are in the net (scales U(0.8, 1.2)
    and biases N(0, 0.1) times `spread`; means and variances off by a few percent, as
    trained ones would be). `spread` 1 keeps every activation O(1) in deep nets too (with
    Darknet's own init, yolov4-csp's reach 1e5). Convs without BN get their weights
    scaled to the same end. A large `spread` drives the activations to the
    magnitudes that --range-test wants. Without it (training, which normalises with batch
    statistics): rolling variance U(0.5, 1.5), small means.
    """
    from darkcfg.graph import load_graph
    from darkcfg.network import Network
    sizes = {"width": size, "height": size} if size else {}
    net = Network(load_graph(cfg, batch=batch, strict=False, **sizes))
    net.init_weights(seed)
    rng = np.random.default_rng(seed + 1)
    if not calibrate:
        for layer in net.layers:
            p = layer.params
            if "rolling_variance" in p:
                n = p["scales"].size
                p["rolling_variance"][...] = rng.uniform(0.5, 1.5, n)
                p["rolling_mean"][...] = rng.normal(0, 0.1, n)
                p["scales"][...] = rng.uniform(0.8, 1.2, n)
                p["biases"][...] = rng.normal(0, 0.1, n)
        return net
    from darkcfg.kernels.conv import conv2d
    c, h, w = net.input_shape
    x = np.random.default_rng(seed + 2).random((4, c, h, w), np.float32)
    for i, layer in enumerate(net.layers):
        p = layer.params
        if "rolling_variance" in p:
            n = p["scales"].size
            if layer.type == "convolutional":
                z, _ = conv2d(x, p["weights"], sy=layer.stride_y, sx=layer.stride_x,
                              pad=layer.pad * layer.dilation, d=layer.dilation,
                              groups=layer.groups)
                mean = z.mean(axis=(0, 2, 3), dtype=np.float64)
                # the second moment, not the variance: on a few cells (the last maps of
                # a classifier, an SE branch's 1 x 1) a variance from one input says
                # little about another, whose values may lie far from this mean
                var = np.square(z, dtype=np.float64).mean(axis=(0, 2, 3))
            else:
                mean, var = np.zeros(n), np.ones(n)
            var = np.where(var > 1e-12, var, 1.0)       # dead channels
            p["rolling_mean"][...] = mean + rng.normal(0, 0.05, n) * np.sqrt(var)
            p["rolling_variance"][...] = var * rng.uniform(0.9, 1.1, n)
            p["scales"][...] = rng.uniform(0.8, 1.2, n) * spread
            p["biases"][...] = rng.normal(0, 0.1, n) * spread
            layer.params_changed()
        elif layer.type == "convolutional":
            # no BN (detection heads, SE branches): the weights scaled instead, so that the
            # raw output's root mean square is `spread` (logits near 1, not 1e3)
            z, _ = conv2d(x, p["weights"], sy=layer.stride_y, sx=layer.stride_x,
                          pad=layer.pad * layer.dilation, d=layer.dilation,
                          groups=layer.groups)
            rms = float(np.sqrt(np.square(z, dtype=np.float64).mean()))
            if rms > 0:
                p["weights"] *= np.float32(spread / rms)
            layer.params_changed()
        x = layer.forward(x, net)
        net.outputs[i] = x
    net.outputs = [None] * len(net.layers)
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
def head_indices(net) -> list[int]:
    heads = [layer.index for layer in net.layers if layer.type in
             ("yolo", "gaussian_yolo", "region", "detection")]
    return heads or [net.output_index]


def opencv_cfg(cfg: Path, size: int, out: Path) -> Path:
    """A copy of cfg whose [net] says width/height = size and batch 1 (OpenCV's importer
    takes the input size from the cfg)."""
    text = cfg.read_text()
    text = re.sub(r"(?m)^\s*(width|height)\s*=.*$", lambda m: f"{m.group(1)}={size}", text)
    text = re.sub(r"(?m)^\s*(batch|subdivisions)\s*=.*$", lambda m: f"{m.group(1)}=1",
                  text)
    out.write_text(text)
    return out


def export_onnx(job: dict, path: str) -> None:
    """The PyTorch copy of the job's net, every head an output, exported at its size; with
    job["exporter"] == "darkcfg", darkcfg's own `darkcfg export` model instead (BN folded,
    raw heads)."""
    if job.get("exporter") == "darkcfg":
        from darkcfg.export import save_onnx, to_onnx
        from darkcfg.network import Network
        net = Network.load(cfg_path(job["cfg"]), job["weights"], batch=job["batch"],
                           strict=False, width=job["size"], height=job["size"])
        save_onnx(to_onnx(net, batch=job["batch"]), path, force=True)
        return
    import torch
    from torch_from_cfg import from_network

    from darkcfg.network import Network
    net = Network.load(cfg_path(job["cfg"]), job["weights"], batch=job["batch"],
                       strict=False, width=job["size"], height=job["size"])
    heads = head_indices(net)
    model = from_network(net, heads=heads)

    class Heads(torch.nn.Module):       # forward(x) alone, for the tracer
        def __init__(self):
            super().__init__()
            self.net = model

        def forward(self, x):
            return self.net(x)

    c, h, w = net.input_shape
    x = torch.rand(job["batch"], c, h, w)
    with torch.inference_mode():
        torch.onnx.export(Heads().eval(), (x,), path, input_names=["x"],
                          output_names=[f"out{i}" for i in heads], opset_version=17,
                          dynamo=False)


class Refused(Exception):
    """The engine cannot build or run this net (its message is reported)."""


class Worker:
    """Runs in a subprocess: setup once, then `run k` -> k timings (s), `out PATH` -> saves
    the heads' outputs (.npz, arr_0..), `rss` -> peak RSS (MB)."""

    def __init__(self, fw: str, job: dict, threads: int):
        self.fw, self.job = fw, job
        shape = (job.get("batch", 1), *job.get("input_shape", (3, 1, 1)))
        self.x = np.random.default_rng(1).random(shape, np.float32)
        getattr(self, "_setup_" + fw)(threads)

    def _setup_darkcfg(self, threads: int) -> None:
        import numba

        from darkcfg.network import Network
        numba.set_num_threads(threads)
        job = self.job
        if job["kind"] == "forward":
            self.net = Network.load(cfg_path(job["cfg"]), job["weights"], batch=job["batch"],
                                    strict=False, width=job["size"], height=job["size"])
            self.heads = head_indices(self.net)
        else:
            self._setup_training()

    def _setup_training(self) -> None:
        job = self.job
        net = random_network(cfg_path(job["cfg"]), None, None, seed=job["seed"],
                             calibrate=False)
        o = net.graph.net
        n = o.batch * o.opts["subdivisions"]
        c, h, w = net.input_shape
        rng = np.random.default_rng(2)
        self.x = rng.random((n, c, h, w), np.float32)
        classes = net.layers[net.output_index].out_shape[0]
        self.labels = rng.integers(0, classes, n)
        self.truth = np.eye(classes, dtype=np.float32)[self.labels]
        self.net = net

    def _setup_torch(self, threads: int) -> None:
        import torch
        torch.set_num_threads(threads)
        self.torch = torch
        from torch_from_cfg import from_network
        self._setup_darkcfg(threads)
        train = self.job["kind"] == "train"
        self.model = from_network(self.net, train=train,
                                  heads=None if train else self.heads)
        self.tx = torch.from_numpy(self.x)
        if train:
            o = self.net.graph.net.opts
            # Darknet's SGD: lr/batch on the summed gradient == lr on the mean
            self.opt = torch.optim.SGD(self.model.parameters(), lr=o["learning_rate"],
                                       momentum=o["momentum"], weight_decay=o["decay"])
            self.ty = torch.from_numpy(self.labels)

    def _setup_opencv(self, threads: int) -> None:
        import cv2
        cv2.setNumThreads(threads)
        try:
            net = cv2.dnn.readNetFromDarknet(self.job["cv_cfg"], self.job["weights"])
            net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
            net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
            self.names = list(net.getUnconnectedOutLayersNames())
            self.cv = net
            self.step()
        except cv2.error as e:
            raise Refused(" ".join(str(e).split())) from None

    def _setup_onnxruntime(self, threads: int) -> None:
        import onnxruntime as ort
        path = self.job["onnx"]
        r = subprocess.run([sys.executable, __file__, "--export", json.dumps(self.job),
                            path], capture_output=True, text=True, env=worker_env())
        if r.returncode != 0:
            raise Refused("export failed: " + " ".join(r.stderr.strip().splitlines()[-1:]))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.feed = {self.sess.get_inputs()[0].name: self.x}

    def step(self):
        fw, job = self.fw, self.job
        if fw == "darkcfg":
            if job["kind"] == "forward":
                return self.net.forward(self.x)
            return self.net.train_step(self.x, self.truth)
        if fw == "opencv":
            self.cv.setInput(self.x)
            return self.cv.forward(self.names)
        if fw == "onnxruntime":
            return self.sess.run(None, self.feed)
        torch = self.torch
        if job["kind"] == "forward":
            with torch.inference_mode():
                return self.model(self.tx)
        self.opt.zero_grad(set_to_none=True)
        p = self.model(self.tx).reshape(len(self.tx), -1)
        loss = torch.nn.functional.nll_loss(torch.log(p + 1e-12), self.ty)
        loss.backward()
        self.opt.step()
        return None

    def outputs(self) -> list[np.ndarray]:
        out = self.step()
        if self.fw == "darkcfg":
            return [self.net.outputs[i].copy() for i in self.heads]
        if self.fw == "torch":
            return [t.numpy().copy() for t in out]
        return [np.array(a) for a in out]


def worker_main(fw: str, job: dict, threads: int) -> None:
    t0 = time.perf_counter()
    try:
        w = Worker(fw, job, threads)
    except (Refused, NotImplementedError) as e:
        print(json.dumps({"refuses": str(e)}), flush=True)
        return
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
            np.savez(cmd[1], *w.outputs())
            print("{}", flush=True)
        elif cmd[0] == "rss":
            print(json.dumps(rss_mb()), flush=True)
        else:
            break


# The environment as the user gave it: importing darkcfg in this process sets OpenMP
# defaults (kernels.config) that must not leak into the other engines' workers.
USER_ENV = dict(os.environ)
TORCH_ENV: dict[str, str] = {}      # --torch-env: extra settings for the PyTorch worker


def worker_env(fw: str = "") -> dict[str, str]:
    env = dict(USER_ENV)
    if fw == "torch":
        env.update(TORCH_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tools"),
                                         env.get("PYTHONPATH", "")])
    return env


def spawn(fw: str, job: dict, threads: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, "--worker", fw, "--job",
                             json.dumps(job), "--threads", str(threads)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=worker_env(fw))


def ask(p: subprocess.Popen, cmd: str):
    p.stdin.write(cmd + "\n")
    p.stdin.flush()
    line = p.stdout.readline()
    if not line:
        raise RuntimeError(f"worker died on '{cmd}'")
    return json.loads(line)


# --- comparing outputs --------------------------------------------------------------------
def opencv_rows(net, i: int, out: np.ndarray, size: int) -> np.ndarray:
    """darkcfg's [yolo] output (A*(5+C), H, W) of one image laid out as OpenCV's region
    layer returns it: a row per cell and anchor (cell-major), x, y as fractions of the
    image, w, h decoded with the anchors, objectness, then objectness x class."""
    from darkcfg.geometry import anchor_pairs
    layer = net.layers[i]
    a = len(layer.mask)
    k = out.shape[0] // a
    h, w = out.shape[1:]
    t = out.reshape(a, k, h, w).transpose(2, 3, 0, 1).reshape(-1, k).astype(np.float64)
    row, col = np.divmod(np.arange(h * w).repeat(a), w)
    anchors = anchor_pairs(layer.anchors, layer.total)[layer.mask]
    aw, ah = np.tile(anchors[:, 0], h * w), np.tile(anchors[:, 1], h * w)
    rows = np.empty_like(t)
    np.seterr(over="ignore")            # exp(w) of the range test's logits is inf for both
    rows[:, 0] = (col + t[:, 0]) / w
    rows[:, 1] = (row + t[:, 1]) / h
    if layer.opts["new_coords"]:
        rows[:, 2], rows[:, 3] = t[:, 2] ** 2 * 4 * aw / size, t[:, 3] ** 2 * 4 * ah / size
    else:
        rows[:, 2], rows[:, 3] = np.exp(t[:, 2]) * aw / size, np.exp(t[:, 3]) * ah / size
    rows[:, 4] = t[:, 4]
    rows[:, 5:] = t[:, 4:5] * t[:, 5:]
    return rows


def max_rel(ours: list[np.ndarray], theirs: list[np.ndarray], fw: str, job: dict) -> float:
    """max |ours - theirs| / max |ours| over the heads (inf where only one is finite). OpenCV's
    detection rows are compared with darkcfg's decoded output where OpenCV reports a class
    score (it zeroes those under its threshold)."""
    worst = 0.0
    net = None
    for k, (a, b) in enumerate(zip(ours, theirs)):
        if fw == "opencv" and b.ndim == 2 and a.ndim == 4 and b.shape[0] != a.shape[0]:
            if net is None:
                from darkcfg.graph import load_graph
                net = load_graph(cfg_path(job["cfg"]), width=job["size"],
                                 height=job["size"], batch=1, strict=False)
            a = opencv_rows(net, job["heads"][k], a[0], job["size"])
            keep = np.ones_like(b, bool)
            keep[:, 5:] = b[:, 5:] != 0
            a, b = a[keep], b[keep]
        a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
        if a.size != b.size:
            return float("nan")
        finite = np.isfinite(a)
        if (finite != np.isfinite(b)).any():
            return float("inf")
        # both infinite (the range test's exp(w) in OpenCV's rows): compared no further
        a, b = a[finite], b[finite]
        if a.size:
            worst = max(worst, float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12)))
    return worst


def measure(job: dict, frameworks: list[str], args) -> list[dict]:
    procs, refused, ready = {}, {}, {}
    try:
        for fw in frameworks:
            procs[fw] = spawn(fw, job, args.threads)
            # one at a time: a worker compiling or exporting must not slow another's warm-up
            line = procs[fw].stdout.readline()
            msg = json.loads(line) if line else {"refuses": "worker failed to start"}
            if "refuses" in msg:
                refused[fw] = msg["refuses"]
                procs.pop(fw).wait(timeout=60)
            else:
                ready[fw] = msg["ready"]
        if "darkcfg" not in procs:
            raise RuntimeError(f"darkcfg failed on {job['name']}: {refused.get('darkcfg')}")
        times = {fw: [] for fw in procs}
        for _ in range(args.rounds):
            for fw, p in procs.items():       # alternate: every engine sees the same load
                # a pause first, so that the previous engine's threads, which spin for a
                # while after their last kernel, are asleep when this one starts
                time.sleep(SETTLE_S)
                times[fw] += ask(p, f"run {job['reps']}")
        rel = {}
        if job["kind"] == "forward":
            with tempfile.TemporaryDirectory() as d:
                outs = {}
                for fw, p in procs.items():
                    ask(p, f"out {d}/{fw}.npz")
                    with np.load(f"{d}/{fw}.npz") as z:
                        outs[fw] = [z[f"arr_{k}"] for k in range(len(z.files))]
            rel = {fw: max_rel(outs["darkcfg"], o, fw, job) for fw, o in outs.items()
                   if fw != "darkcfg"}
        rss = {fw: ask(p, "rss") for fw, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.stdin.close()
                p.wait(timeout=60)
    recs = []
    for fw in frameworks:
        rec = {"framework": fw, "kind": job["kind"], "net": job["name"], "batch": job["batch"],
               "size": job.get("size"), "threads": args.threads}
        if fw in refused:
            rec["refuses"] = refused[fw]
        else:
            med = statistics.median(times[fw])
            rec.update({"median_ms": round(1000 * med, 2),
                        "min_ms": round(1000 * min(times[fw]), 2), "runs": len(times[fw]),
                        "startup_s": ready[fw], "peak_rss_mb": round(rss[fw], 1)})
            if job["kind"] == "train":
                rec["img_per_s"] = round(job["batch"] / med, 1)
            if fw in rel:
                rec["max_rel"] = rel[fw]
        recs.append(rec)
    return recs


# --- training a detector (darkcfg only) --------------------------------------------------
DETECTOR_CFG = ROOT / "cfg" / "yolov4-tiny_fashion.cfg"


def detector_job(tmp: str) -> dict:
    """The composed Fashion-MNIST detection set (tools/make_detection_dataset.py, 512
    training images) for yolov4-tiny_fashion.cfg."""
    out = Path(tmp) / "fashion_det"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "make_detection_dataset.py"),
                        str(out), "--count", "512", "--valid", "32"], capture_output=True,
                       text=True, env=worker_env())
    if r.returncode != 0:
        sys.exit("bench.py --detector: tools/make_detection_dataset.py failed: "
                 + r.stderr.strip())
    return {"kind": "detector", "name": "yolov4-tiny_fashion (detection set)",
            "cfg": str(DETECTOR_CFG), "data": str(out / "fashion_det.data")}


def bench_detector(job: dict, args) -> dict:
    """darkcfg's training iterations on the detection set: the batch as the training loop
    samples it (augmented), then `train_step`; img/s of the step and of the whole
    iteration, median over args.rounds * 2 iterations after 2 of warm-up."""
    import numba

    from darkcfg.data.classifier import read_data_config
    from darkcfg.data.detection import DetAugment, open_detection_dataset
    from darkcfg.graph import load_graph
    from darkcfg.layers._detection_head import widen_truth
    from darkcfg.network import Network
    numba.set_num_threads(args.threads)
    graph = load_graph(job["cfg"], strict=False)
    head = [lay for lay in graph.layers if lay.is_head][-1]
    net = Network(graph)
    net.init_weights(0)
    data = read_data_config(job["data"], strict=False)
    train_set = open_detection_dataset(data, "train")
    augment = DetAugment.from_net(graph.net.opts, head.opts["jitter"], graph.net.dialect)
    batch = graph.net.batch * graph.net.opts["subdivisions"]
    most = graph.truths // getattr(head, "truth_size", 5)
    rng = np.random.default_rng(0)
    steps, whole = [], []
    for i in range(2 + 2 * args.rounds):
        t0 = time.perf_counter()
        idx = rng.choice(len(train_set), batch, replace=False)
        x, truth = train_set.batch(idx, net.input_shape, augment, rng, most)
        truth = widen_truth(truth, getattr(head, "truth_size", 5))
        t1 = time.perf_counter()
        net.train_step(x, truth)
        t2 = time.perf_counter()
        if i >= 2:
            steps.append(t2 - t1)
            whole.append(t2 - t0)
    return {"framework": "darkcfg", "kind": "detector", "net": job["name"], "batch": batch,
            "size": net.input_shape[1], "threads": args.threads,
            "img_per_s": round(batch / statistics.median(steps), 1),
            "img_per_s_with_data": round(batch / statistics.median(whole), 1),
            "runs": len(steps)}


# --- the run ------------------------------------------------------------------------------
def forward_jobs(args, tmp: str) -> list[dict]:
    jobs = []
    for name in args.nets:
        size = args.size or FORWARD.get(name, 224)
        cfg = cfg_path(name)
        spreads = [("forward", 1.0)] + ([("range", RANGE_SPREAD)] if args.range_test else [])
        for kind, spread in spreads:
            weights = f"{tmp}/{name}.{kind}.weights"
            net = random_network(cfg, size, 1, spread=spread)
            net.save_weights(weights)
            for b in args.batches:
                jobs.append({"kind": "forward", "range": kind == "range", "name": name,
                             "cfg": str(cfg), "size": size, "batch": b, "weights": weights,
                             "input_shape": list(net.input_shape),
                             "heads": head_indices(net),
                             "cv_cfg": str(opencv_cfg(cfg, size, Path(f"{tmp}/{name}.cfg"))),
                             "onnx": f"{tmp}/{name}.{kind}.b{b}.onnx",
                             "exporter": args.onnx_exporter,
                             "warmup": 3, "reps": args.reps if b == 1 else
                             max(1, args.reps // 2)})
    return jobs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="*", default=list(FORWARD))
    ap.add_argument("--size", type=int, default=0, help="input size for every net "
                    "(default: the issue's size per net)")
    ap.add_argument("--batches", nargs="*", type=int, default=[1])
    ap.add_argument("--engines", nargs="*", choices=ENGINES, default=None,
                    help="default: every one installed")
    ap.add_argument("--train", nargs="*", default=TRAIN)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--no-forward", action="store_true")
    ap.add_argument("--range-test", action="store_true",
                    help="time each net again with activations near 1e4")
    ap.add_argument("--detector", action="store_true",
                    help="darkcfg's yolov4-tiny training on the composed detection set")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=4)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json-only", action="store_true")
    ap.add_argument("--torch-env", nargs="*", default=[], metavar="KEY=VALUE",
                    help="environment for the PyTorch worker only (e.g. "
                         "OMP_WAIT_POLICY=PASSIVE, which PyTorch's OpenMP runtime reads)")
    ap.add_argument("--onnx-exporter", choices=("torch", "darkcfg"), default="torch",
                    help="what writes onnxruntime's model: torch.onnx.export of the PyTorch "
                    "copy (default), or darkcfg's own exporter")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--job", help=argparse.SUPPRESS)
    ap.add_argument("--export", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.export:
        export_onnx(json.loads(args.export[0]), args.export[1])
        return
    if args.worker:
        worker_main(args.worker, json.loads(args.job), args.threads)
        return
    TORCH_ENV.update(kv.split("=", 1) for kv in args.torch_env)
    engines = [e for e in (args.engines or ENGINES) if installed(e)]
    for e in set(args.engines or ()) - set(engines):
        print(json.dumps({"skipped": e, "why": "not installed (see this file's docstring)"}),
              flush=True)
    if "darkcfg" not in engines:
        engines.insert(0, "darkcfg")
    info = {**machine(), "threads": args.threads, "versions": versions(engines)}
    print(json.dumps(info), flush=True)
    recs = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [] if args.no_forward else forward_jobs(args, tmp)
        if not args.no_train:
            from darkcfg.graph import load_graph
            for cfg in args.train:
                if not cfg_path(cfg).exists():
                    print(json.dumps({"skipped": cfg, "why": "no such cfg"}), flush=True)
                    continue
                g = load_graph(cfg_path(cfg), strict=False)
                jobs.append({"kind": "train", "name": Path(cfg).stem, "cfg": cfg,
                             "batch": g.net.batch * g.net.opts["subdivisions"], "seed": 0,
                             "warmup": 2, "reps": max(1, args.reps // 2)})
        for job in jobs:
            fws = engines if job["kind"] == "forward" else \
                [e for e in engines if e in ("darkcfg", "torch")]
            for rec in measure(job, fws, args):
                rec["range"] = job.get("range", False)
                recs.append(rec)
                print(json.dumps(rec), flush=True)
        if args.detector:
            rec = bench_detector(detector_job(tmp), args)
            recs.append(rec)
            print(json.dumps(rec), flush=True)
    if not args.json_only:
        print()
        print(report(info, recs, engines))


def report(info: dict, recs: list[dict], engines: list[str]) -> str:
    """The header line and markdown tables: forward ms per engine with darkcfg/engine
    ratios; the range test's slow/normal per engine; training img/s."""
    v = info["versions"]
    out = [f"{info['cpu']} ({info['isa']}), {info['cores']} cores, {info['threads']} "
           f"threads, {info['date']}; " + ", ".join(f"{k} {v[k]}" for k in v), ""]
    others = [e for e in engines if e != "darkcfg"]
    fwd = {}
    for r in recs:
        if r["kind"] == "forward":
            fwd.setdefault((r["net"], r["size"], r["batch"], r["range"]), {})[r["framework"]] = r

    def ms(r: dict | None) -> str:
        if r is None:
            return "-"
        return "refuses" if "refuses" in r else f"{r['median_ms']:.1f}"

    if fwd:
        head = ["net", "batch", *(LABELS[e] for e in engines),
                *(f"dk/{LABELS[e]}" for e in others)]
        if others:
            head.append("max rel " + " / ".join(LABELS[e] for e in others))
        out += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
        for (net, size, batch, rng), fw in fwd.items():
            if rng:
                continue
            d = fw["darkcfg"]
            ratios = [f"{d['median_ms'] / fw[e]['median_ms']:.2f}"
                      if e in fw and "median_ms" in fw[e] else "-" for e in others]
            rels = [f"{fw[e]['max_rel']:.1e}" if "max_rel" in fw.get(e, {}) else "-"
                    for e in others]
            cells = [ms(fw.get(e)) for e in engines] + ratios + (
                [" / ".join(rels)] if others else [])
            out.append(f"| {net} {size} | {batch} | " + " | ".join(cells) + " |")
        refusals = {(net, e): fw[e]["refuses"] for (net, _, _, _), fw in fwd.items()
                    for e in others if "refuses" in fw.get(e, {})}
        if refusals:
            out.append("")
            out += [f"- {LABELS[e]} refuses {net}: {msg}" for (net, e), msg in
                    refusals.items()]
        if any(k[3] for k in fwd):
            head = ["net (activations ~1e4)", "batch",
                    *(f"{LABELS[e]} ms (slow/normal)" for e in engines)]
            out += ["", "| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
            for (net, size, batch, rng), fw in fwd.items():
                if not rng:
                    continue
                base = fwd.get((net, size, batch, False), {})
                cells = []
                for e in engines:
                    r, b = fw.get(e), base.get(e)
                    if r and b and "median_ms" in r and "median_ms" in b:
                        slow = r["median_ms"] / b["median_ms"]
                        cells.append(f"{r['median_ms']:.1f} ({slow:.2f})")
                    else:
                        cells.append(ms(r))
                out.append(f"| {net} {size} | {batch} | " + " | ".join(cells) + " |")
    train = [r for r in recs if r["kind"] == "train"]
    if train:
        rows = {}
        for r in train:
            rows.setdefault((r["net"], r["batch"]), {})[r["framework"]] = r
        out += ["", "| training | batch | darkcfg img/s | PyTorch img/s | speed ratio |",
                "|---|---|---|---|---|"]
        for (net, batch), fw in rows.items():
            d, t = fw["darkcfg"], fw.get("torch")
            tv = f"{t['img_per_s']:.0f}" if t else "-"
            ratio = f"{d['img_per_s'] / t['img_per_s']:.2f}" if t else "-"
            out.append(f"| {net} | {batch} | {d['img_per_s']:.0f} | {tv} | {ratio} |")
    for r in recs:
        if r["kind"] == "detector":
            out += ["", f"darkcfg training {r['net']} at {r['size']}, batch {r['batch']}: "
                    f"{r['img_per_s']:.0f} img/s (train_step), {r['img_per_s_with_data']:.0f}"
                    " img/s with the batch's loading and augmentation"]
    return "\n".join(out)


if __name__ == "__main__":
    main()
