"""Raw requests to real workers, and what a worker's log shows it did: the helpers the
security tests share."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pyarrow as pa
from conftest import DATA
from PIL import Image

from vgi_vision.protocol import decode, encode
from vgi_vision.testing.launch import RunningWorker
from vgi_vision.transports.framing import read_frame, write_frame

TOKEN = "s3cret-bearer-token-for-tests"
AUTH_ENV = "VGI_VISION_AUTH_TOKEN"
DESCRIBE = encode({"op": "describe"})
MB = 1 << 20


def dispatched(worker_dir: Path) -> int:
    """Requests the worker's dispatcher has handled: it logs one line for each."""
    log = worker_dir / "worker.log"
    return sum(" vgi_vision.worker.dispatcher: " in line for line in log.read_text().splitlines())


def labels(table: pa.Table) -> list[str]:
    return table.column("label").to_pylist()


def unix_path(worker: RunningWorker) -> str:
    return worker.location.removeprefix("unix://")


def connect(worker: RunningWorker) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(60)
    sock.connect(unix_path(worker))
    return sock


def exchange(sock: socket.socket, request: bytes) -> dict:
    """One framed request on a raw connection; the response header."""
    with sock.makefile("rwb") as stream:
        write_frame(stream, request)
        return decode(read_frame(stream, 1 << 30)).header


def read_reply(sock: socket.socket) -> dict:
    """A response the worker sends without being asked (e.g. refusing the connection)."""
    with sock.makefile("rb") as stream:
        return decode(read_frame(stream, 1 << 30)).header


def jpeg(side: int) -> bytes:
    """The coffee photo as a small JPEG, ``side`` pixels square."""
    with Image.open(DATA / "coffee.png") as image:
        out = io.BytesIO()
        image.convert("RGB").resize((side, side)).save(out, "JPEG", quality=40)
    return out.getvalue()
