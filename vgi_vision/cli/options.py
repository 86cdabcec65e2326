"""What the subcommands share: the one-line usage error, argument types, and every option
that more than one subcommand takes, each declared once here.

Nothing here imports worker code at module level: ``import vgi_vision.cli`` must stay light
(the client side imports it), so the few worker constants used in defaults and choices are
imported inside the functions that declare them.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

from vgi_vision.errors import VgiVisionError
from vgi_vision.protocol.bearer import AUTH_TOKEN_ENV

LOG_LEVELS = ["debug", "info", "warning", "error"]

#: The help of ``--auth-token-file`` wherever the token is an HTTP worker's.
HTTP_TOKEN_HELP = f"HTTP bearer token file (or ${AUTH_TOKEN_ENV})"


#: The exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED = 130


class CliError(VgiVisionError):
    """A user-facing failure found before any work starts: printed as one line, exit code
    ``status`` (2, a usage error: an option or argument no run could take)."""

    status = 2


class MissingPath(CliError):
    """A path the command needs is missing or of the wrong kind (a folder for a file): the
    arguments are well formed but the machine does not match them, so exit code 1."""

    status = 1


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the usage itself is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


#: What ``add_subparsers`` returns; each subcommand module's ``add`` declares its parser on it.
Subcommands = argparse._SubParsersAction


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


def bounded_int(low: int, high: int) -> Callable[[str], int]:
    """An argparse type for an integer in ``low..high``, refused at parse time so a value no
    run could take never waits for a worker to start."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {text}")
        return value

    return parse


#: A TCP port; 0 asks the system for a free one.
port_number = bounded_int(0, 65535)


def check_data_root(args: argparse.Namespace) -> None:
    """Refuse a ``--data-root`` that names no folder, or a malformed object URL prefix,
    before anything slow starts (object prefixes are not listed: the bucket may be big)."""
    from vgi_vision.objects import ObjectStoreError, is_object_url
    from vgi_vision.worker.paths import PathPolicy
    from vgi_vision.worker.registry import FunctionError

    roots = [args.data_root] if isinstance(args.data_root, str) else args.data_root or []
    for root in roots:
        if not is_object_url(root) and not Path(root).is_dir():
            raise CliError(f"--data-root {root} is not an existing folder")
    try:
        PathPolicy.confined(roots)
    except (ValueError, FunctionError, ObjectStoreError) as exc:
        raise CliError(f"--data-root: {exc}") from None


def add_auth_token_option(p: argparse.ArgumentParser, help: str = HTTP_TOKEN_HELP) -> None:
    p.add_argument("--auth-token-file", help=help)


def auth_token(args: argparse.Namespace) -> str | None:
    """The bearer token ``--auth-token-file`` (or the environment) gives."""
    return read_secret(args.auth_token_file, AUTH_TOKEN_ENV)


def add_data_root_option(p: argparse.ArgumentParser, help: str, repeatable: bool = False
                         ) -> None:
    """``--data-root``; ``repeatable``: given more than once, a list (a folder and object URL
    prefixes such as ``s3://bucket/photos/``)."""
    p.add_argument("--data-root", action="append" if repeatable else "store", help=help)


def lance_uri(text: str) -> str:
    """A LanceDB URI; a plain path is made absolute, so a bare folder name (``db``) is not
    read as a LanceDB Cloud address and every process given it finds the same folder."""
    return text if "://" in text else str(Path(text).resolve())


def add_lance_option(p: argparse.ArgumentParser, help: str, required: bool = False) -> None:
    p.add_argument("--lance", metavar="URI", type=lance_uri, required=required, help=help)


def add_format_option(p: argparse.ArgumentParser, choices: Sequence[str], default: str) -> None:
    p.add_argument("--format", choices=choices, default=default)


def add_log_level_option(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--log-level", default=default, choices=LOG_LEVELS)


def add_listen_options(p: argparse.ArgumentParser, port: int, protocol: str = "") -> None:
    """Where a server binds: ``--host``, ``--port``, ``--port-file``; ``protocol`` ("HTTP")
    names what is served when the command serves more than one way."""
    named = f"{protocol} " if protocol else ""
    p.add_argument("--host", default="127.0.0.1", help=f"{named}bind address (default 127.0.0.1)")
    p.add_argument("--port", type=port_number, default=port,
                   help=f"{named}port (0..65535); 0 picks a free one")
    p.add_argument("--port-file", help=f"write the bound {named}port here once serving")


def add_insecure_option(p: argparse.ArgumentParser, protocol: str = "") -> None:
    on = f"{protocol} on " if protocol else ""
    p.add_argument("--insecure-no-auth", action="store_true",
                   help=f"allow {on}a non-loopback address without a bearer token")


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


def add_location_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--location", action="append", help=help)


def add_pool_options(p: argparse.ArgumentParser) -> None:
    """How many private workers, and how many requests each ``--location`` serves at once."""
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


def private_worker_options(args: argparse.Namespace, names: tuple[str, ...]) -> dict[str, str]:
    """The given options among ``names``, the ``dest``s of flags that configure a private
    worker; refused with ``--location``, whose workers were started with their own flags."""
    given = {name: getattr(args, name) for name in names if getattr(args, name)}
    if args.location and given:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise CliError(f"{flags} configure a private worker; start the worker at --location "
                       f"with its own flags")
    return given
