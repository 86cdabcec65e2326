"""``vgi-vision index``: build (or rebuild) the vector index of a write-back store."""

from __future__ import annotations

import argparse

from vgi_vision.cli import options
from vgi_vision.cli.options import CliError, Subcommands


def add(commands: Subcommands) -> None:
    p = commands.add_parser(
        "index", help="build the vector index of a write-back store",
        description="Build, or rebuild with parameters fitted to its current size, the ANN "
                    "index on the stored embeddings that similar() and the gallery's "
                    "neighbours search. Write-back builds it on its own once the store is "
                    "large and folds new images in as they arrive; rebuild after the store "
                    "has grown several times over. Safe while workers write: images "
                    "committed meanwhile are searched exactly until the next maintenance.")
    options.add_lance_option(p, help="the write-back store", required=True)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import time

    from vgi_vision.worker.lance.vector_index import NoStore, TooFewRows, index_store

    started = time.perf_counter()
    try:
        rows = asyncio.run(index_store(args.lance))
    except (NoStore, TooFewRows) as exc:
        raise CliError(str(exc)) from None
    print(f"indexed {rows:,} stored embeddings in {time.perf_counter() - started:.1f} s")
    return 0
