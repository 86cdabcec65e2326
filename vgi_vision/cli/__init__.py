"""The ``vgi-vision`` command (also ``python -m vgi_vision``): one module per subcommand.

Each subcommand module has ``add`` (declare its parser) and ``run`` (act on the parsed
arguments); options more than one subcommand takes are declared once, in
:mod:`vgi_vision.cli.options`. The command parses and checks; what it runs lives elsewhere
(a worker starts in :mod:`vgi_vision.worker.serve.start`). Importing this package loads no
worker code: that happens inside ``run``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from vgi_vision import __version__
from vgi_vision.cli import browse, classify, functions, index, models, serve, sql
from vgi_vision.cli.options import INTERRUPTED, CliError, OneLineParser
from vgi_vision.errors import VgiVisionError

#: In the order ``--help`` lists them.
SUBCOMMANDS = (serve, sql, classify, models, functions, browse, index)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="vgi-vision",
        description="ImageNet image classification from DuckDB SQL.")
    parser.add_argument("--version", action="version", version=f"vgi-vision {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=OneLineParser)
    for subcommand in SUBCOMMANDS:
        subcommand.add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = getattr(args, "log_level", "warning")
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except CliError as exc:
        print(f"vgi-vision: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        # Ctrl-C: one line, the shell's code for SIGINT. Commands that keep partial work
        # (classify) catch it themselves to say what was kept.
        print("vgi-vision: interrupted", file=sys.stderr)
        return INTERRUPTED
    except (OSError, RuntimeError, ValueError) as exc:
        # Worker, transport and model failures: the message is the useful part. Our own
        # errors say everything; others keep their type for context.
        own = isinstance(exc, VgiVisionError)
        print(f"vgi-vision: {exc}" if own else f"vgi-vision: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
