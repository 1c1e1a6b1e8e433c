"""A read-only install (no writable __pycache__ beside darkcfg, no writable home) still
imports and runs: Numba's cache moves to a temporary folder, or compiling goes uncached,
with a warning either way. Made real with a read-only bind mount in a private mount
namespace (needs root and unshare; skipped elsewhere)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from .conftest import ROOT

SCRIPT = textwrap.dedent("""
    import warnings
    warnings.simplefilter("always")
    from darkcfg.kernels import config

    @config.jit
    def twice(x):
        return 2 * x

    print("cache", config._FLAGS["cache"], config.numba.config.CACHE_DIR or "-", twice(21))
""")


def run_read_only(tmp_path, tmp_writable: bool) -> subprocess.CompletedProcess:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare for a read-only bind mount")
    ro = tmp_path / "ro"
    shutil.copytree(ROOT / "darkcfg", ro / "darkcfg",
                    ignore=shutil.ignore_patterns("__pycache__"))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (ro / "script.py").write_text(SCRIPT)
    mounts = f"mount --bind {ro} {ro} && mount -o remount,ro,bind {ro}"
    if not tmp_writable:        # every folder tempfile.gettempdir() would try
        for folder in (scratch, "/tmp", "/var/tmp"):
            mounts += f" && mount --bind {folder} {folder} && mount -o remount,ro,bind {folder}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    env.update(HOME=str(ro), TMPDIR=str(scratch), PYTHONPATH=str(ro),
               XDG_CACHE_HOME=str(ro / ".cache"))
    probe = subprocess.run(["unshare", "-m", "sh", "-c", f"{mounts} && touch {ro}/x"],
                           capture_output=True, text=True)
    if "Read-only" not in probe.stderr:
        pytest.skip(f"no read-only bind mount here: {probe.stderr.strip()[:200]}")
    return subprocess.run(["unshare", "-m", "sh", "-c",
                           f"{mounts} && cd {scratch} && {sys.executable} {ro}/script.py"],
                          capture_output=True, text=True, env=env, timeout=300)


def test_read_only_install_caches_in_the_temporary_folder(tmp_path):
    done = run_read_only(tmp_path, tmp_writable=True)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    expect = tmp_path / "scratch" / f"darkcfg-numba-cache-{os.getuid()}"
    assert done.stdout.split() == ["cache", "True", str(expect), "42"]
    assert "using " + str(expect) in done.stderr
    assert any(expect.rglob("*.nbi")), "nothing was cached in the fallback folder"


def test_nowhere_writable_compiles_uncached_with_a_warning(tmp_path):
    done = run_read_only(tmp_path, tmp_writable=False)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stdout.split()[:2] == ["cache", "False"] and done.stdout.split()[-1] == "42"
    assert "compiling without a cache" in done.stderr


def test_stale_kernels_are_cleared_with_the_modules_they_import(tmp_path):
    from darkcfg.kernels.config import clear_stale_cache
    cache, pkg = tmp_path / "cache", tmp_path / "pkg"
    src = pkg / "kernels"
    cache.mkdir()
    src.mkdir(parents=True)
    (pkg / "consts.py").write_text("K = 1\n")
    (src / "a.py").write_text("from .b import f\nfrom ..consts import K\n")
    (src / "b.py").write_text("def f(): return 1\n")
    (src / "c.py").write_text("from . import (\n    b,\n)\n")
    (src / "d.py").write_text("x = 1\n")

    def fill():
        for m in "abcd":
            (cache / f"{m}.f-1.py311.nbi").write_text("")
            (cache / f"{m}.f-1.py311.1.nbc").write_text("")
        (cache / "keep.txt").write_text("")

    def left():
        return sorted({p.name.split(".")[0] for p in cache.glob("*.nb?")})

    fill()
    assert clear_stale_cache(cache, src) == ["a", "b", "c", "d"]     # no stamp yet
    assert left() == [] and (cache / "keep.txt").exists()
    fill()
    assert clear_stale_cache(cache, src) == []                       # nothing changed
    assert left() == ["a", "b", "c", "d"]
    (src / "b.py").write_text("def f(): return 2\n")                 # b and its importers
    assert clear_stale_cache(cache, src) == ["a", "b", "c"]
    assert left() == ["d"]
    fill()
    (pkg / "consts.py").write_text("K = 2\n")                        # a base module
    assert clear_stale_cache(cache, src) == ["a"]
    assert left() == ["b", "c", "d"]


SHORTCUT = textwrap.dedent("""
    import numpy as np
    from darkcfg.kernels.shortcut import shortcut_mix
    x = np.full((1, 1, 1, 1), -10, np.float32)
    out, done = shortcut_mix(x, np.zeros_like(x), activation="leaky")
    print(float(out.ravel()[0]))
""")


def test_a_kernel_does_not_keep_an_inlined_function_from_its_cache(tmp_path):
    """kernels/shortcut.py inlines kernels/activations.py's leaky; editing only the
    latter must change what the cached shortcut kernel computes (Numba alone would load
    the old compiled code: shortcut.py's own timestamp did not change)."""
    tree = tmp_path / "tree"
    shutil.copytree(ROOT / "darkcfg", tree / "darkcfg",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tree / "script.py").write_text(SHORTCUT)
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CACHE")}
    env["PYTHONPATH"] = str(tree)

    def run() -> float:
        done = subprocess.run([sys.executable, str(tree / "script.py")], capture_output=True,
                              text=True, env=env, timeout=600)
        assert done.returncode == 0, done.stderr
        return float(done.stdout)

    assert run() == -1.0                                  # Darknet's leaky: 0.1 x
    act = tree / "darkcfg" / "kernels" / "activations.py"
    text = act.read_text()
    assert "return x * (1.0 if x > 0.0 else 0.1)" in text
    act.write_text(text.replace("return x * (1.0 if x > 0.0 else 0.1)",
                                "return x * (1.0 if x > 0.0 else 0.2)"))
    assert run() == pytest.approx(-2.0)
