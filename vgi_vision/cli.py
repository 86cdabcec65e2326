"""The ``vgi-vision`` command (also ``python -m vgi_vision``)."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from vgi_vision import __version__
from vgi_vision.loopback import is_loopback
from vgi_vision.protocol.limits import DEFAULT_MAX_REQUEST_BYTES, DEFAULT_MAX_ROWS_PER_CALL

AUTH_TOKEN_ENV = "VGI_VISION_AUTH_TOKEN"
TOKEN_KEY_ENV = "VGI_VISION_TOKEN_KEY"
#: Shortest bearer token accepted on a non-loopback address: guessable tokens are no auth.
MIN_AUTH_TOKEN_CHARS = 16


class CliError(Exception):
    """A user-facing failure: printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage itself is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def read_secret(file: str | None, env_var: str) -> str | None:
    """A secret from a file (preferred) or an environment variable, never from argv."""
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip() or None
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror}") from None
    return os.environ.get(env_var) or None


def positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type for a limit: zero or less would quietly refuse every image or request,
    or leave every request waiting for a connection slot or thread that never comes."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
        return value

    return parse


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


def add_serve(commands: argparse._SubParsersAction) -> None:
    from vgi_vision.worker.tokens import DEFAULT_TTL_SECONDS  # stdlib only; the module is light

    p = commands.add_parser("serve", help="run a worker (stdio by default)",
                            description="Serve the vision functions over stdio (default), a "
                                        "unix socket or HTTP. Logs go to stderr.")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--unix", metavar="PATH", help="serve on a unix socket (mode 0600)")
    where.add_argument("--http", action="store_true", help="serve HTTP")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8765, help="HTTP port; 0 picks a free one")
    p.add_argument("--port-file", help="write the bound HTTP port here once serving")
    p.add_argument("--data-root", help="path arguments may read only below this folder "
                                       "(required for path arguments over unix/HTTP)")
    add_model_options(p)
    p.add_argument("--lance", metavar="URI", help="write results back to LanceDB at URI")
    p.add_argument("--lance-max-in-flight", type=positive(int), default=2,
                   help="batches inference may run ahead of the LanceDB writer")
    p.add_argument("--lance-recovery-grace", type=float, default=0.0, metavar="SECONDS",
                   help="at start, keep uncommitted rows younger than this (set it above the "
                        "longest call when replicas share one Lance URI)")
    p.add_argument("--auth-token-file", help=f"HTTP bearer token file (or ${AUTH_TOKEN_ENV})")
    p.add_argument("--token-key-file", help="key sealing HTTP continuation tokens, shared by "
                                            f"replicas (or ${TOKEN_KEY_ENV}); random if unset")
    p.add_argument("--token-ttl", type=positive(int), default=DEFAULT_TTL_SECONDS,
                   metavar="SECONDS",
                   help="seconds an HTTP scan's continuation token stays valid; write-back rows "
                        "of runs unfinished for longer are deleted (scans abandoned mid-way)")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="allow HTTP on a non-loopback address without a bearer token")
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
    p.add_argument("--log-level", default="info",
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from vgi_vision.worker.build import WorkerConfig, build_worker
    from vgi_vision.worker.dispatcher import SealedStates, ServerLimits
    from vgi_vision.worker.tokens import TokenSealer
    from vgi_vision.worker.vision.imaging import DecodeLimits
    from vgi_vision.worker.vision.model import DEFAULT_MODEL, ModelError

    # Everything that can be checked before the model loads is: a bad flag costs no wait.
    transport = "unix" if args.unix else "http" if args.http else "stdio"
    auth_token = checked_auth_token(args) if args.http else None
    sealer = TokenSealer(checked_token_key(args), args.token_ttl) if args.http else None
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise CliError(f"--data-root {args.data_root} is not an existing folder")
    check_address_free(args)
    if args.cpus:
        try:
            # Before the model loads: its thread count follows the cores it may use.
            os.sched_setaffinity(0, args.cpus)
        except OSError as exc:
            raise CliError(f"cannot run on cores {sorted(args.cpus)}: {exc.strerror}") from None
    frames = None
    if transport == "stdio":
        from vgi_vision.worker.serve.stdio import claim_stdout

        frames = claim_stdout()
    limits = ServerLimits(max_request_bytes=args.max_request_mb << 20,
                          max_rows_per_call=args.max_rows_per_call)
    config = WorkerConfig(transport=transport, data_root=args.data_root, limits=limits,
                          model=args.model or DEFAULT_MODEL, device=args.device or "cpu",
                          lance=args.lance,
                          decode_limits=DecodeLimits(
                              max_pixels=args.max_pixels,
                              max_bytes=int(args.max_image_mb * (1 << 20)),
                              max_decode_bytes=int(args.max_decode_mb * (1 << 20)),
                              pool_bytes=int(args.decode_pool_mb * (1 << 20))),
                          max_in_flight=args.lance_max_in_flight,
                          lance_recovery_grace=args.lance_recovery_grace,
                          token_ttl=args.token_ttl)
    try:
        worker = build_worker(config)
    except ModelError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:  # the write-back store is the one thing opened here
        raise CliError(f"cannot open the write-back store {args.lance}: {exc}") from None
    dispatcher = worker.dispatcher
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if transport == "stdio":
            from vgi_vision.worker.serve.stdio import serve_stdio

            assert frames is not None
            # Served off the main thread, so SIGTERM (raised in the main thread) never lands
            # inside a request: worker.close() below lets the request in flight finish.
            serving = threading.Thread(target=serve_stdio, args=(dispatcher, frames),
                                       name="vgi-stdio", daemon=True)
            serving.start()
            serving.join()
        elif transport == "unix":
            from vgi_vision.worker.serve.unix import UnixServer

            with UnixServer(args.unix, dispatcher, max_connections=args.max_connections,
                            idle_timeout=args.idle_timeout,
                            frame_timeout=args.frame_timeout) as server:
                logging.getLogger(__name__).info("serving on unix://%s", args.unix)
                server.serve_forever()
        else:
            from vgi_vision.worker.serve.http import make_app, serve_http

            assert sealer is not None
            app = make_app(dispatcher, SealedStates(sealer), auth_token, threads=args.threads,
                           max_requests=args.max_connections,
                           loopback_only=is_loopback(args.host))
            serve_http(app, args.host, args.port, args.port_file,
                       header_timeout=args.header_timeout, idle_timeout=args.idle_timeout)
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # the socket path or port is taken, or not ours to bind
        where = f"unix://{args.unix}" if args.unix else f"http://{args.host}:{args.port}"
        raise CliError(f"cannot serve on {where}: {exc.strerror or exc}") from None
    finally:
        worker.close()  # drain write-back: nothing acknowledged is lost
    return 0


def checked_auth_token(args: argparse.Namespace) -> str | None:
    """The HTTP bearer token, refusing to start where it would not protect the worker."""
    from vgi_vision.protocol.bearer import checked_token

    auth_token = read_secret(args.auth_token_file, AUTH_TOKEN_ENV)
    if auth_token is not None:
        try:
            checked_token(auth_token)
        except ValueError as exc:
            raise CliError(f"refusing to start: {exc}") from None
    if is_loopback(args.host) or args.insecure_no_auth:
        return auth_token
    if not auth_token:
        raise CliError(f"refusing to serve HTTP on {args.host} without a bearer token: set "
                       f"${AUTH_TOKEN_ENV} or --auth-token-file (or pass --insecure-no-auth)")
    if len(auth_token) < MIN_AUTH_TOKEN_CHARS:
        raise CliError(f"refusing to serve HTTP on {args.host}: the bearer token has "
                       f"{len(auth_token)} characters, fewer than {MIN_AUTH_TOKEN_CHARS}")
    return auth_token


def check_address_free(args: argparse.Namespace) -> None:
    """Fail before loading the model when the socket path or port is already taken.

    Binding again later can still fail (the race is real but rare); this makes the common
    case, a second worker started on the same address, fail at once and say why.
    """
    import socket

    if args.unix:
        from vgi_vision.worker.serve.unix import socket_is_live

        if socket_is_live(Path(args.unix)):
            raise CliError(f"cannot serve on unix://{args.unix}: another worker is serving "
                           f"there")
    elif args.http and args.port:
        family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
        with socket.socket(family) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((args.host, args.port))
            except OSError as exc:
                raise CliError(f"cannot serve on http://{args.host}:{args.port}: "
                               f"{exc.strerror or exc}") from None


def checked_token_key(args: argparse.Namespace) -> bytes | None:
    """The key replicas share for continuation tokens (None: a random one per process)."""
    from vgi_vision.worker.tokens import MIN_KEY_BYTES, key_from_env

    key = key_from_env(read_secret(args.token_key_file, TOKEN_KEY_ENV))
    if key is not None and len(key) < MIN_KEY_BYTES:
        raise CliError(f"the continuation token key has {len(key)} bytes, fewer than "
                       f"{MIN_KEY_BYTES}")
    return key


def add_model_options(p: argparse.ArgumentParser) -> None:
    """``--model`` and ``--device``; unset means the worker's defaults (efficientnet-lite0
    on the CPU)."""
    from vgi_vision.worker.vision.providers import DEVICES  # a plain tuple; the module is light

    p.add_argument("--model", metavar="NAME|DIR",
                   help="a shipped model (see `vgi-vision models`) or a model directory "
                        "(default: efficientnet-lite0, fp32)")
    p.add_argument("--device", choices=DEVICES,
                   help="onnxruntime execution provider: cpu (default), cuda (a start-up "
                        "error without a usable GPU) or auto (a GPU if one works, else cpu)")


def model_flags(args: argparse.Namespace) -> dict[str, str]:
    """``--model`` / ``--device`` given to a client command: options for its private worker."""
    return {k: v for k, v in (("model", args.model), ("device", args.device)) if v}


def add_browse(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "browse", help="a web gallery of a write-back store",
        description="Serve a read-only web page over a LanceDB write-back store: thumbnails "
                    "with labels and confidence, facets, uncertain-first ordering, and each "
                    "image's top-k, EXIF facts and nearest stored neighbours.")
    p.add_argument("--lance", metavar="URI", required=True, help="the write-back store")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8766, help="port; 0 picks a free one")
    p.add_argument("--port-file", help="write the bound port here once serving")
    p.add_argument("--data-root", help="show stored paths, and read EXIF facts, only for "
                                       "files below this folder")
    p.add_argument("--auth-token-file", help=f"bearer token file (or ${AUTH_TOKEN_ENV}); "
                                             f"open the page once with ?token=...")
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="allow a non-loopback address without a bearer token")
    p.add_argument("--log-level", default="warning",
                   choices=["debug", "info", "warning", "error"])
    p.set_defaults(run=run_browse)


def run_browse(args: argparse.Namespace) -> int:
    import asyncio

    try:
        from vgi_vision.gallery.catalog import StoreMissing
        from vgi_vision.gallery.serve import bind, serve_gallery
    except ImportError as exc:
        raise CliError(f"browse needs the gallery extra ({exc.name} is missing): "
                       f"pip install 'vgi-vision[gallery]'") from None
    token = checked_auth_token(args)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise CliError(f"--data-root {args.data_root} is not an existing folder")
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


def add_attach_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--location", action="append",
                   help="worker to use: unix:///path or http://host:port; repeat it to spread "
                        "queries over several (default: a private subprocess worker)")
    p.add_argument("--data-root", help="subprocess worker only: confine path arguments here")
    add_model_options(p)
    p.add_argument("--auth-token-file", help=f"HTTP bearer token file (or ${AUTH_TOKEN_ENV})")
    add_pool_options(p)


def add_pool_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=pool_size, metavar="N|auto",
                   help="private subprocess workers, each pinned to its own cores (auto: one "
                        "per core)")
    p.add_argument("--concurrency", type=positive(int), metavar="N",
                   help="requests in flight to each --location (default 2)")


def pool_size(text: str) -> int | str:
    from vgi_vision.client.locations import parse_workers

    try:
        return parse_workers(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def location_of(args: argparse.Namespace) -> str | list[str] | None:
    """``--location`` given once is an address, several times a list of workers."""
    given = args.location or []
    if args.location and args.workers is not None:
        raise CliError("--workers starts private workers; it does not apply to --location")
    return None if not given else given[0] if len(given) == 1 else given


def attach_from_args(con, args: argparse.Namespace) -> None:
    import vgi_vision

    options = {"data_root": args.data_root} if args.data_root else {}
    options.update(model_flags(args))
    location = location_of(args)
    if location and options:
        flags = ", ".join("--" + k.replace("_", "-") for k in options)
        raise CliError(f"{flags} configure a subprocess worker; start a socket or HTTP "
                       f"worker with its own flags instead")
    token = read_secret(args.auth_token_file, AUTH_TOKEN_ENV)
    vgi_vision.attach(con, location, workers=args.workers, concurrency=args.concurrency,
                      auth_token=token, **options)


def add_sql(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("sql", help="run SQL in DuckDB with the worker attached as vision",
                            description="Run SQL in DuckDB with a worker attached as `vision`. "
                                        "With no query and no -f, an interactive prompt.")
    p.add_argument("query", nargs="?", help="SQL to run (several statements allowed)")
    p.add_argument("-f", "--file", help="read SQL from this file")
    p.add_argument("--database", default=":memory:", help="DuckDB database file")
    add_attach_options(p)
    p.set_defaults(run=run_sql)


def run_sql(args: argparse.Namespace) -> int:
    import duckdb

    if args.query and args.file:
        raise CliError("give a query or -f FILE, not both")
    try:
        text = Path(args.file).read_text(encoding="utf-8") if args.file else args.query
    except OSError as exc:
        raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
    con = duckdb.connect(args.database)
    try:
        attach_from_args(con, args)
        if text is None:
            return repl(con)
        return 0 if run_statements(con, text) else 1
    finally:
        close_attached(con)


def close_attached(con) -> None:
    import vgi_vision

    try:
        vgi_vision.detach(con)
    except ValueError:
        pass  # attaching failed: nothing to detach
    con.close()


def run_statements(con, text: str) -> bool:
    """Run every statement, printing query results as DuckDB renders them; False on error."""
    import duckdb

    try:
        for statement in con.extract_statements(text):
            if statement.type == duckdb.StatementType.SELECT:
                print(con.sql(statement.query))
            else:
                con.execute(statement.query)
    except duckdb.Error as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return False
    return True


def repl(con) -> int:
    """A prompt with history; statements end with ';'."""
    readline: types.ModuleType | None
    try:
        import readline
    except ImportError:  # pragma: no cover - not on every platform
        readline = None
    history = Path.home() / ".vgi_vision_history"
    if readline is not None and history.exists():
        readline.read_history_file(history)
    print("vgi-vision SQL: the worker is attached as `vision`. End statements with ';', "
          "Ctrl-D to quit.")
    buffer: list[str] = []
    try:
        while True:
            try:
                line = input("...> " if buffer else "D> ")
            except EOFError:
                print()
                return 0
            except KeyboardInterrupt:
                print()
                buffer.clear()
                continue
            buffer.append(line)
            if line.rstrip().endswith(";"):
                run_statements(con, "\n".join(buffer))
                buffer.clear()
    finally:
        if readline is not None:
            readline.write_history_file(history)


def add_classify(commands: argparse._SubParsersAction) -> None:
    from vgi_vision.client.classify_command import FORMATS

    p = commands.add_parser("classify", help="classify image files, folders and globs",
                            description="Classify images in batches with a progress bar (on a "
                                        "terminal). Folders are searched recursively. Files "
                                        "that cannot be read are listed at the end.")
    p.add_argument("paths", nargs="+", metavar="PATH", help="file, folder or glob")
    p.add_argument("--top-k", type=int, default=5, help="classes per image (1..1000)")
    p.add_argument("--format", choices=FORMATS, default="table")
    p.add_argument("-o", "--output", help="write results here instead of stdout")
    p.add_argument("--lance", metavar="URI", help="also store results in LanceDB at URI")
    p.add_argument("--location", action="append",
                   help="use a running worker (unix:///path or http://host:port; repeat it "
                        "for several); files are sent as bytes")
    add_model_options(p)
    p.add_argument("--auth-token-file", help=f"HTTP bearer token file (or ${AUTH_TOKEN_ENV})")
    add_pool_options(p)
    p.set_defaults(run=run_classify)


def run_classify(args: argparse.Namespace) -> int:
    from vgi_vision.client.classify_command import (
        classify_files,
        expand,
        failure_report,
        progress_wanted,
        write_table,
    )
    from vgi_vision.client.client import Client

    private = {"lance": args.lance, **model_flags(args)}
    if args.location and any(private.values()):
        raise CliError("--lance, --model and --device configure a private worker; start the "
                       "worker at --location with its own flags")
    location = location_of(args)
    files, unmatched = expand(args.paths)
    worker_args = [flag for key, value in private.items() if value
                   for flag in (f"--{key}", value)]
    with Client(location, workers=args.workers, concurrency=args.concurrency,
                worker_args=worker_args,
                auth_token=read_secret(args.auth_token_file, AUTH_TOKEN_ENV)) as client:
        result = classify_files(client, files, args.top_k, progress_wanted(),
                                send_bytes=location is not None)
    write_table(result.table, args.format, sys.stdout, args.output)
    for line in failure_report(result.failed, unmatched):
        print(line, file=sys.stderr)
    return 1 if not files or len(result.failed) == len(files) else 0


def add_catalog_commands(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("models", help="list the shipped models with their metadata",
                            description="Print the shipped models' metadata as a JSON list "
                                        "(SQL: SELECT * FROM vision.models()).")
    p.set_defaults(run=run_models)
    p = commands.add_parser("functions", help="the catalog the worker describes",
                            description="Print the functions a worker serves, with overloads, "
                                        "columns and documentation.")
    p.add_argument("--format", choices=["text", "json", "markdown"], default="text")
    add_attach_options(p)
    p.set_defaults(run=run_functions)


def run_models(args: argparse.Namespace) -> int:
    import json

    from vgi_vision.worker.vision.model_files import (
        ModelError,
        ModelInfo,
        models_root,
        shipped_model_names,
    )

    names = shipped_model_names()
    if not names:
        raise CliError(f"no models found under {models_root()}")
    found = []
    for name in names:
        try:
            info = ModelInfo.load(models_root() / name)
        except ModelError as exc:
            raise CliError(str(exc)) from None
        found.append({"folder": str(info.directory), **info.metadata})
    print(json.dumps(found, indent=2))
    return 0


def run_functions(args: argparse.Namespace) -> int:
    import json

    from vgi_vision.client.client import Client
    from vgi_vision.worker.docs import render_reference

    with Client(location_of(args), workers=args.workers, concurrency=args.concurrency,
                auth_token=read_secret(args.auth_token_file, AUTH_TOKEN_ENV)) as client:
        catalog = client.describe()
    if args.format == "json":
        print(json.dumps(catalog, indent=2))
    else:
        print(render_reference(catalog, markdown=args.format == "markdown"), end="")
    return 0


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM ends the worker the way Ctrl-C does, so the same shutdown path runs."""
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="vgi-vision",
        description="ImageNet image classification from DuckDB SQL.")
    parser.add_argument("--version", action="version", version=f"vgi-vision {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     parser_class=OneLineParser)
    add_serve(commands)
    add_sql(commands)
    add_classify(commands)
    add_catalog_commands(commands)
    add_browse(commands)
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
        return 2
    except (OSError, RuntimeError, ValueError) as exc:
        # Worker, transport and model failures: the message is the useful part. Our own
        # errors say everything; others keep their type for context.
        own = type(exc).__module__.startswith("vgi_vision.")
        print(f"vgi-vision: {exc}" if own else f"vgi-vision: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
