"""``vgi-vision functions``: the catalog a worker describes, as text, JSON or Markdown."""

from __future__ import annotations

import argparse

from vgi_vision.cli.attaching import add_attach_options
from vgi_vision.cli.options import Subcommands, add_format_option, auth_token, location_of


def add(commands: Subcommands) -> None:
    p = commands.add_parser("functions", help="the catalog the worker describes",
                            description="Print the functions a worker serves, with overloads, "
                                        "columns and documentation.")
    add_format_option(p, choices=("text", "json", "markdown"), default="text")
    add_attach_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from vgi_vision.client.client import Client
    from vgi_vision.worker.docs import render_reference

    with Client(location_of(args), workers=args.workers, concurrency=args.concurrency,
                auth_token=auth_token(args)) as client:
        catalog = client.describe()
    if args.format == "json":
        print(json.dumps(catalog, indent=2))
    else:
        print(render_reference(catalog, markdown=args.format == "markdown"), end="")
    return 0
