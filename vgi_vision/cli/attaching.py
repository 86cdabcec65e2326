"""The options of the commands that use a worker as a client (``sql``, ``functions``): which
worker, or how to start private ones, and the attach that follows from them.

``sql`` attaches lazily (:class:`LazyAttachment`): SQL that never names the ``vision``
schema runs in plain DuckDB, with no worker started and no model loaded."""

from __future__ import annotations

import argparse
import re

from vgi_vision.cli import options

#: The ``dest``s of the flags that configure a private subprocess worker.
PRIVATE_WORKER_FLAGS = ("data_root", "model", "device", "lance")
#: The schema the worker's functions are registered in.
SCHEMA = "vision"


def add_attach_options(p: argparse.ArgumentParser) -> None:
    options.add_location_option(p, help="worker to use: unix:///path or http://host:port; "
                                        "repeat it to spread queries over several (default: a "
                                        "private subprocess worker)")
    options.add_data_root_option(p, help="subprocess worker only: confine path arguments here")
    options.add_lance_option(p, help="subprocess worker only: the write-back store at URI "
                                     "(stored results: vision.predictions(), vision.similar())")
    options.add_model_options(p)
    options.add_auth_token_option(p)
    options.add_pool_options(p)


def attach_from_args(con, args: argparse.Namespace) -> None:
    import vgi_vision

    private = options.private_worker_options(args, PRIVATE_WORKER_FLAGS)
    vgi_vision.attach(con, options.location_of(args), workers=args.workers,
                      concurrency=args.concurrency, auth_token=options.auth_token(args), **private)


def mentions_worker(sql: str) -> bool:
    """Whether ``sql`` may use the worker: it names the ``vision`` schema anywhere (quoted,
    in a string, in a comment: a false alarm only costs a worker start)."""
    return re.search(rf"\b{SCHEMA}\b", sql, re.IGNORECASE) is not None


class LazyAttachment:
    """Attaches the worker to ``con`` the first time SQL that may use it runs."""

    def __init__(self, con, args: argparse.Namespace) -> None:
        self.con = con
        self.args = args
        self.attached = False

    def before(self, sql: str) -> None:
        """Call before running ``sql``: attaches if it names the worker's schema."""
        if not self.attached and mentions_worker(sql):
            attach_from_args(self.con, self.args)
            self.attached = True

    def close(self) -> None:
        import vgi_vision

        if self.attached:
            vgi_vision.detach(self.con)
