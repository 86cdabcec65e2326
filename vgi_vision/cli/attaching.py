"""The options of the commands that use a worker as a client (``sql``, ``functions``): which
worker, or how to start private ones, and the attach that follows from them."""

from __future__ import annotations

import argparse

from vgi_vision.cli.options import (
    add_auth_token_option,
    add_data_root_option,
    add_location_option,
    add_model_options,
    add_pool_options,
    auth_token,
    location_of,
    private_worker_options,
)

#: The ``dest``s of the flags that configure a private subprocess worker.
PRIVATE_WORKER_FLAGS = ("data_root", "model", "device")


def add_attach_options(p: argparse.ArgumentParser) -> None:
    add_location_option(p, help="worker to use: unix:///path or http://host:port; repeat it to "
                                "spread queries over several (default: a private subprocess "
                                "worker)")
    add_data_root_option(p, help="subprocess worker only: confine path arguments here")
    add_model_options(p)
    add_auth_token_option(p)
    add_pool_options(p)


def attach_from_args(con, args: argparse.Namespace) -> None:
    import vgi_vision

    options = private_worker_options(args, PRIVATE_WORKER_FLAGS)
    vgi_vision.attach(con, location_of(args), workers=args.workers,
                      concurrency=args.concurrency, auth_token=auth_token(args), **options)
