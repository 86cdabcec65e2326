"""``vgi-vision classify``: image files, folders and globs in, a table of classes out."""

from __future__ import annotations

import argparse
import sys

from vgi_vision.cli import options
from vgi_vision.cli.options import Subcommands

#: The ``dest``s of the flags that configure the private worker.
PRIVATE_WORKER_FLAGS = ("lance", "model", "device")


def add(commands: Subcommands) -> None:
    from vgi_vision.client.classify_command import FORMATS

    p = commands.add_parser("classify", help="classify image files, folders and globs",
                            description="Classify images in batches with a progress bar (on a "
                                        "terminal). Folders and object URL prefixes "
                                        "(s3://bucket/photos/) are searched recursively. Files "
                                        "that cannot be read are listed at the end.")
    p.add_argument("paths", nargs="+", metavar="PATH",
                   help="file, folder, glob, or s3:// object or prefix")
    p.add_argument("--top-k", type=int, default=5, help="classes per image (1..1000)")
    options.add_format_option(p, choices=FORMATS, default="table")
    p.add_argument("-o", "--output", help="write results here instead of stdout")
    options.add_lance_option(p, help="also store results in LanceDB at URI")
    options.add_location_option(p, help="use a running worker (unix:///path or http://host:port; "
                                "repeat it for several); files are sent as bytes")
    options.add_model_options(p)
    options.add_auth_token_option(p)
    options.add_pool_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vgi_vision.client.classify_command import (
        classify_files,
        distinct_report,
        expand,
        failure_report,
        progress_wanted,
        write_table,
    )
    from vgi_vision.client.client import Client
    from vgi_vision.worker.registry import FunctionError

    private = options.private_worker_options(args, PRIVATE_WORKER_FLAGS)
    location = options.location_of(args)
    try:
        files, unmatched = expand(args.paths)
    except FunctionError as exc:  # a malformed object URL
        raise options.CliError(str(exc)) from None
    worker_args = [flag for key, value in private.items() for flag in (f"--{key}", value)]
    with Client(location, workers=args.workers, concurrency=args.concurrency,
                worker_args=worker_args, auth_token=options.auth_token(args)) as client:
        result = classify_files(client, files, args.top_k, progress_wanted(),
                                send_bytes=location is not None)
    write_table(result.table, args.format, sys.stdout, args.output)
    if files:
        print(distinct_report(files, result.failed), file=sys.stderr)
    for line in failure_report(result.failed, unmatched):
        print(line, file=sys.stderr)
    return 1 if not files or len(result.failed) == len(files) else 0
