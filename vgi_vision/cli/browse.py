"""``vgi-vision browse``: the read-only web gallery of a write-back store."""

from __future__ import annotations

import argparse

from vgi_vision.cli import options
from vgi_vision.cli.options import CliError, Subcommands
from vgi_vision.loopback import is_loopback


def add(commands: Subcommands) -> None:
    p = commands.add_parser(
        "browse", help="a web gallery of a write-back store",
        description="Serve a read-only web page over a LanceDB write-back store: thumbnails "
                    "with labels and confidence, facets, uncertain-first ordering, and each "
                    "image's top-k, EXIF facts and nearest stored neighbours.")
    options.add_lance_option(p, help="the write-back store", required=True)
    options.add_listen_options(p, port=8766)
    options.add_data_root_option(p, help="show stored paths, and read EXIF facts, only for "
                                         "files below this folder")
    options.add_auth_token_option(p, help=f"bearer token file (or ${options.AUTH_TOKEN_ENV}); "
                                          f"open the page once with ?token=...")
    options.add_insecure_option(p)
    options.add_log_level_option(p, default="warning")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    try:
        from vgi_vision.gallery.catalog import StoreMissing
        from vgi_vision.gallery.serve import bind, serve_gallery
    except ImportError as exc:
        raise CliError(f"browse needs the gallery extra ({exc.name} is missing): "
                       f"pip install 'vgi-vision[gallery]'") from None
    from vgi_vision.worker.serve.start import StartError, required_auth_token

    try:
        token = required_auth_token(options.auth_token(args), args.host, args.insecure_no_auth)
    except StartError as exc:
        raise CliError(str(exc)) from None
    options.check_data_root(args)
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        raise CliError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}") \
            from None
    with sock:
        try:
            asyncio.run(serve_gallery(args.lance, sock, token=token,
                                      loopback_only=is_loopback(args.host),
                                      data_root=args.data_root, port_file=args.port_file))
        except StoreMissing as exc:
            raise CliError(str(exc)) from None
    return 0
