"""The options of the commands that use a worker as a client (``sql``, ``functions``): which
worker, or how to start private ones, and the attach that follows from them."""

from __future__ import annotations

import argparse

from vgi_vision.cli import options

#: The ``dest``s of the flags that configure a private subprocess worker.
PRIVATE_WORKER_FLAGS = ("data_root", "model", "device")


def add_attach_options(p: argparse.ArgumentParser) -> None:
    options.add_location_option(p, help="worker to use: unix:///path or http://host:port; "
                                        "repeat it to spread queries over several (default: a "
                                        "private subprocess worker)")
    options.add_data_root_option(p, help="subprocess worker only: confine path arguments here")
    options.add_model_options(p)
    options.add_auth_token_option(p)
    options.add_pool_options(p)


def attach_from_args(con, args: argparse.Namespace) -> None:
    import vgi_vision

    private = options.private_worker_options(args, PRIVATE_WORKER_FLAGS)
    vgi_vision.attach(con, options.location_of(args), workers=args.workers,
                      concurrency=args.concurrency, auth_token=options.auth_token(args), **private)
