"""Run the gallery with Hypercorn on a socket bound here.

Binding before Hypercorn starts gives a one-line error for a taken port and the real port
for ``--port 0`` (written to ``--port-file`` once the store is open and the page can answer).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
from pathlib import Path

from vgi_vision.gallery.app import make_app
from vgi_vision.gallery.catalog import Catalog
from vgi_vision.gallery.facts import FilePolicy

log = logging.getLogger(__name__)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (IPv6 when the host is an IPv6 address)."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a name such as localhost
        family = socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=128)


async def serve_gallery(uri: str, sock: socket.socket, *, token: str | None,
                        loopback_only: bool, data_root: str | None,
                        port_file: str | None = None) -> None:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    catalog = await Catalog.open(uri)
    try:
        await catalog.snapshot()  # a store that cannot be read fails here, not on first visit
        app = make_app(catalog, FilePolicy(data_root), token, loopback_only)
        config = Config()
        # Hypercorn closes the socket it is given on shutdown: give it its own descriptor.
        config.bind = [f"fd://{os.dup(sock.fileno())}"]
        config.accesslog = None
        config.errorlog = log
        config.include_server_header = False
        config.graceful_timeout = 2.0
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        host, port = sock.getsockname()[:2]
        if port_file:  # written whole, then renamed: a reader never sees it half-written
            partial = Path(f"{port_file}.partial")
            partial.write_text(str(port), encoding="utf-8")
            partial.replace(port_file)
        log.warning("gallery of %s on http://%s:%d/", uri,
                    f"[{host}]" if ":" in host else host, port)
        await serve(app, config, shutdown_trigger=stop.wait)
    finally:
        catalog.close()
