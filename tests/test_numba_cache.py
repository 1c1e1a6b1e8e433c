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
