"""Wire messages: one Arrow IPC stream per request or response.

A message is an Arrow IPC stream whose schema metadata holds a small JSON header under
``vgi`` and which carries zero or one record batch:

* request  ``{"op": "describe"}``
* request  ``{"op": "call", "function": f}`` + argument batch (scalar functions)
* request  ``{"op": "scan", "function": f, "token": t | null}`` + argument batch (table
  functions; ``token`` resumes a scan); a call or new scan may add ``"job": j``
  (:mod:`vgi_vision.worker.jobs`)
* response ``{"ok": true, ...}`` + result batch, where scans add ``"token"`` and ``"done"``
* response ``{"ok": false, "error": {"kind": k, "message": m}}``

Transports move these bytes and never look inside them. Decoding is strict and bounded, so a
hostile message is a ``ProtocolError``, never a crash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from vgi_vision.errors import ProtocolError
from vgi_vision.protocol.compression import CompressedBody, refuse_compressed_bodies
from vgi_vision.protocol.errors import ErrorKind

HEADER_KEY = b"vgi"
MAX_HEADER_BYTES = 1 << 20
PROTOCOL_VERSION = 1


@dataclass
class Message:
    header: dict[str, Any]
    batch: pa.RecordBatch | None = field(default=None)


def encode(header: dict[str, Any], batch: pa.RecordBatch | None = None) -> bytes:
    meta = {HEADER_KEY: json.dumps({"v": PROTOCOL_VERSION, **header}).encode()}
    schema = (batch.schema if batch is not None else pa.schema([])).with_metadata(meta)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, schema) as writer:
        if batch is not None:
            writer.write_batch(batch.replace_schema_metadata(meta))
    return sink.getvalue().to_pybytes()


def decode(data: bytes | memoryview) -> Message:
    buffer = pa.py_buffer(data)
    try:
        refuse_compressed_bodies(buffer)  # before the reader decompresses anything
        reader = pa.ipc.open_stream(buffer)
        batches = list(reader)
    except CompressedBody as exc:
        raise ProtocolError(str(exc)) from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ProtocolError(f"malformed message: {exc}") from None
    if len(batches) > 1:
        raise ProtocolError("a message carries at most one record batch")
    raw = (reader.schema.metadata or {}).get(HEADER_KEY)
    if raw is None or len(raw) > MAX_HEADER_BYTES:
        raise ProtocolError("message has no valid header")
    try:
        header = json.loads(raw)
    except ValueError:
        raise ProtocolError("message header is not JSON") from None
    if not isinstance(header, dict) or header.get("v") != PROTOCOL_VERSION:
        version = header.get("v") if isinstance(header, dict) else None
        raise ProtocolError(f"unsupported protocol version {version!r}")
    batch = batches[0].replace_schema_metadata(None) if batches else None
    if batch is not None:
        try:
            # The IPC reader checks little of a batch's contents: offsets pointing past their
            # buffers, invalid UTF-8 in values or column names would otherwise reach the
            # functions that read them.
            batch.validate(full=True)
            _ = batch.schema.names  # decodes (so checks) every column name
        except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
            raise ProtocolError(f"malformed record batch: {exc}") from None
    return Message(header, batch)


def error_message(kind: ErrorKind, message: str) -> bytes:
    return encode({"ok": False, "error": {"kind": kind, "message": message}})
