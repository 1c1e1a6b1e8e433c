"""The CLI's last line of defence: Ctrl-C at any point of start-up, memory errors and a
closed stdout end with a darkcfg message and an exit code, never a traceback."""
from __future__ import annotations

import subprocess
import sys

import pytest

from darkcfg import cli

from .conftest import ROOT

RUN = ["run", str(ROOT / "cfg/fashion_plain.cfg"), str(ROOT / "weights/fashion_plain.weights"),
       str(ROOT / "weights/samples/test00002_trouser.png")]


def interrupt(*args, **kw):
    raise KeyboardInterrupt


@pytest.mark.parametrize("where", ["build_parser", "kernels"])
def test_ctrl_c_during_start_up(monkeypatch, capsys, where):
    if where == "build_parser":
        monkeypatch.setattr(cli, "build_parser", interrupt)
    else:           # importing / setting up Numba
        import darkcfg.kernels.config as config
        monkeypatch.setattr(config, "announce_compiling", interrupt)
    assert cli.main(RUN) == 130
    assert capsys.readouterr().err == "darkcfg: interrupted\n"


def test_memory_error_becomes_a_message(monkeypatch, capsys):
    monkeypatch.setattr(cli, "build_parser", _parser_with(cli.build_parser, MemoryError))
    assert cli.main(["summary", str(ROOT / "cfg/fashion_plain.cfg")]) == 2
    assert "darkcfg: error: out of memory" in capsys.readouterr().err


def _parser_with(build, exc):
    """The real parser with every command's function raising `exc`."""
    def patched():
        parser = build()
        parser.set_defaults(func=lambda args: (_ for _ in ()).throw(exc))
        for action in parser._subparsers._group_actions:
            for sub in action.choices.values():
                sub.set_defaults(func=lambda args: (_ for _ in ()).throw(exc))
        return parser
    return patched


def test_importing_the_cli_does_not_import_numpy():
    # a Ctrl-C before main() runs would otherwise land in the middle of NumPy's import
    code = "import sys, darkcfg.cli; print('numpy' in sys.modules, 'numba' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    assert done.stdout.split() == ["False", "False"]


def test_closed_stdout_is_quiet():
    done = subprocess.run(f"{sys.executable} -m darkcfg summary "
                          f"{ROOT / 'cfg/yolo_fashion.cfg'} | head -c 10", shell=True,
                          capture_output=True, text=True)
    assert "Traceback" not in done.stderr and "Exception" not in done.stderr
