"""The `darkcfg` command line."""
from __future__ import annotations

import argparse
import sys
import warnings

from . import __version__
from .errors import CfgWarning, DarkcfgError


def _shape_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--width", type=int, help="override [net] width")
    p.add_argument("--height", type=int, help="override [net] height")
    p.add_argument("--channels", type=int, help="override [net] channels")
    p.add_argument("--batch", type=int, help="override [net] batch (subdivisions become 1)")
    p.add_argument("--dialect", choices=("pjreddie", "alexeyab"),
                   help="which Darknet lineage's numbers to follow (default pjreddie)")
    p.add_argument("--lenient", action="store_true",
                   help="turn unknown keys and other fixable cfg problems into warnings")


def cmd_summary(args: argparse.Namespace) -> int:
    from .graph import load_graph
    from .summary import format_table, to_dot, to_json
    graph = load_graph(args.cfg, width=args.width, height=args.height,
                       channels=args.channels, batch=args.batch, dialect=args.dialect,
                       strict=not args.lenient)
    render = {"table": format_table, "json": to_json, "dot": to_dot}[args.format]
    print(render(graph))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="darkcfg", description="Run, summarise and train Darknet .cfg networks on a CPU.")
    parser.add_argument("--version", action="version", version=f"darkcfg {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="print a cfg's layers, shapes, parameters and FLOPs")
    p.add_argument("cfg", help="the .cfg file")
    p.add_argument("--format", choices=("table", "json", "dot"), default="table",
                   help="table (Darknet's layout plus extras), json, or dot (Graphviz)")
    _shape_args(p)
    p.set_defaults(func=cmd_summary)
    for extend in _EXTENSIONS:
        extend(sub)
    return parser


# Other modules add their sub-commands here (run, train, valid, ...).
_EXTENSIONS: list = []


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def show(message, category, filename, lineno, file=None, line=None):
        prefix = "warning: " if issubclass(category, CfgWarning) else f"{category.__name__}: "
        print(prefix + str(message), file=sys.stderr)

    warnings.showwarning = show
    try:
        return args.func(args)
    except DarkcfgError as e:
        print(f"darkcfg: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("darkcfg: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
