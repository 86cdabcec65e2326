"""``vgi-vision serve``: its flags, checked and handed to :mod:`vgi_vision.worker.serve.start`,
which builds the worker and serves it."""

from __future__ import annotations

import argparse
import dataclasses

from vgi_vision.cli import options
from vgi_vision.cli.options import CliError, Subcommands, positive
from vgi_vision.protocol.limits import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_ROWS_PER_CALL

TOKEN_KEY_ENV = "VGI_VISION_TOKEN_KEY"


def cpu_list(text: str) -> set[int]:
    """``0,2`` or ``0-3``: the cores a worker is pinned to."""
    cores: set[int] = set()
    try:
        for part in text.split(","):
            first, _, last = part.partition("-")
            cores.update(range(int(first), int(last or first) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of cores: {text!r}") from None
    if not cores or min(cores) < 0:
        raise argparse.ArgumentTypeError(f"not a list of cores: {text!r}")
    return cores


def add(commands: Subcommands) -> None:
    from vgi_vision.worker.tokens import DEFAULT_TTL_SECONDS  # stdlib only; the module is light

    p = commands.add_parser("serve", help="run a worker (stdio by default)",
                            description="Serve the vision functions over stdio (default), a "
                                        "unix socket or HTTP. Logs go to stderr.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--unix", metavar="PATH", help="serve on a unix socket (mode 0600)")
    where.add_argument("--http", action="store_true", help="serve HTTP")
    options.add_listen_options(p, port=8765, protocol="HTTP")
    options.add_data_root_option(p, help="path arguments may read only below this folder or "
                                 "object URL prefix (s3://bucket/photos/); repeat it to add "
                                 "URL prefixes (required for path arguments over unix/HTTP)",
                                 repeatable=True)
    options.add_model_options(p)
    p.add_argument("--detector", metavar="NAME|DIR",
                   help="the object detector detect() and count_objects() run: a shipped one "
                        "or an SSD-style detector's model directory (default: "
                        "ssd-mobilenet-v2-coco; see docs/models.md)")
    options.add_lance_option(p, help="write results back to LanceDB at URI")
    p.add_argument("--lance-max-in-flight", type=positive(int), default=2,
                   help="batches inference may run ahead of the LanceDB writer")
    p.add_argument("--lance-recovery-grace", type=float, default=0.0, metavar="SECONDS",
                   help="at start, keep uncommitted rows younger than this (set it above the "
                        "longest call when replicas share one Lance URI)")
    options.add_auth_token_option(p)
    p.add_argument("--token-key-file", help="key sealing HTTP continuation tokens, shared by "
                                            f"replicas (or ${TOKEN_KEY_ENV}); random if unset")
    p.add_argument("--token-ttl", type=positive(int), default=DEFAULT_TTL_SECONDS,
                   metavar="SECONDS",
                   help="seconds an HTTP scan's continuation token stays valid; write-back rows "
                        "of runs unfinished for longer are deleted (scans abandoned mid-way)")
    options.add_insecure_option(p, protocol="HTTP")
    p.add_argument("--threads", type=positive(int), default=8, help="HTTP worker threads")
    p.add_argument("--max-connections", type=positive(int), default=64,
                   help="concurrent unix connections; HTTP requests received or "
                        "served at once")
    p.add_argument("--max-request-mb", type=positive(int), default=DEFAULT_MAX_REQUEST_BYTES >> 20,
                   help="largest request body")
    p.add_argument("--max-rows-per-call", type=positive(int), default=DEFAULT_MAX_ROWS_PER_CALL,
                   help="most argument rows (images) in one call")
    p.add_argument("--max-image-mb", type=positive(float), default=64,
                   help="larger encoded images (bytes or files) get no prediction")
    p.add_argument("--max-pixels", type=positive(int), default=64_000_000,
                   help="images with more pixels get no prediction (checked from the header, "
                        "before decoding)")
    p.add_argument("--cpus", type=cpu_list, metavar="LIST",
                   help="run on these cores only, e.g. 0,1 (the model then uses one thread "
                        "per core); private pool workers are started with their own group")
    p.add_argument("--max-decode-mb", type=positive(float), default=256,
                   help="images whose decode needs more memory (pixels x bytes per pixel, "
                        "from the header) get no prediction")
    p.add_argument("--decode-pool-mb", type=positive(float), default=512,
                   help="memory all concurrent decodes may hold together; decodes wait for it")
    p.add_argument("--idle-timeout", type=positive(float), default=300.0,
                   help="seconds before an idle connection is closed")
    p.add_argument("--header-timeout", type=positive(float), default=10.0,
                   help="HTTP: seconds a connection may take to send its request headers")
    p.add_argument("--frame-timeout", type=positive(float), default=60.0,
                   help="unix: seconds a request may take from its first byte to its last")
    options.add_log_level_option(p, default="info")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from vgi_vision.worker.serve.start import ServeSettings, StartError, serve

    flags = {field.name: getattr(args, field.name) for field in dataclasses.fields(ServeSettings)
             if hasattr(args, field.name)}
    # The secrets are read only for HTTP, the one transport that uses them.
    settings = ServeSettings(
        **flags, auth_token=options.auth_token(args) if args.http else None,
        token_key=options.read_secret(args.token_key_file, TOKEN_KEY_ENV) if args.http else None)
    options.check_data_root(args)
    try:
        serve(settings)
    except StartError as exc:
        raise CliError(str(exc)) from None
    return 0

