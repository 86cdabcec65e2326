"""Refuse Arrow IPC body compression before anything is decompressed.

The IPC reader decompresses a compressed record batch while reading it, before any size
limit can look at the result: 34 KB of zstd holds a gigabyte of zeros. No vgi-vision peer
compresses (the transports are local or fronted by HTTP, which has its own codings), so a
message whose batch declares body compression is refused outright. The check reads only the
message's FlatBuffers metadata (a few hundred bytes) and never touches the body.

The layout read here is Arrow's ``Message.fbs``: a ``Message`` table whose ``header`` union
holds a ``RecordBatch`` (or a ``DictionaryBatch`` wrapping one), whose field 3 is
``compression``.
"""

from __future__ import annotations

import struct

import pyarrow as pa

from vgi_vision.errors import VgiVisionError

# Message table fields and union tags, from Arrow's Message.fbs.
_MESSAGE_HEADER_TYPE, _MESSAGE_HEADER = 1, 2
_HEADER_DICTIONARY_BATCH, _HEADER_RECORD_BATCH = 2, 3
_DICTIONARY_BATCH_DATA = 1
_RECORD_BATCH_COMPRESSION = 3


class CompressedBody(VgiVisionError, ValueError):
    """A record batch whose body is compressed (or whose metadata cannot be read)."""


def refuse_compressed_bodies(data: pa.Buffer) -> None:
    """Raise CompressedBody if any batch of the IPC stream ``data`` declares compression."""
    try:
        reader = pa.ipc.MessageReader.open_stream(data)
        for message in reader:
            if _declares_compression(message.metadata.to_pybytes()):
                raise CompressedBody("compressed Arrow IPC bodies are not accepted: send "
                                     "the batch uncompressed")
    except (struct.error, IndexError) as exc:
        raise CompressedBody(f"unreadable message metadata: {exc}") from None


def _declares_compression(buf: bytes) -> bool:
    message = _root(buf)
    kind = _scalar(buf, message, _MESSAGE_HEADER_TYPE, "<B")
    if kind not in (_HEADER_RECORD_BATCH, _HEADER_DICTIONARY_BATCH):
        return False
    batch = _table(buf, message, _MESSAGE_HEADER)
    if batch is not None and kind == _HEADER_DICTIONARY_BATCH:
        batch = _table(buf, batch, _DICTIONARY_BATCH_DATA)
    return batch is not None and _field(buf, batch, _RECORD_BATCH_COMPRESSION) is not None


def _root(buf: bytes) -> int:
    return int(struct.unpack_from("<I", buf, 0)[0])


def _field(buf: bytes, table: int, index: int) -> int | None:
    """The position of field ``index`` of the table at ``table``, None when absent."""
    vtable = table - struct.unpack_from("<i", buf, table)[0]
    vtable_size = struct.unpack_from("<H", buf, vtable)[0]
    slot = 4 + 2 * index
    if slot + 2 > vtable_size:
        return None
    offset = struct.unpack_from("<H", buf, vtable + slot)[0]
    return table + offset if offset else None


def _scalar(buf: bytes, table: int, index: int, fmt: str) -> int:
    position = _field(buf, table, index)
    return 0 if position is None else int(struct.unpack_from(fmt, buf, position)[0])


def _table(buf: bytes, table: int, index: int) -> int | None:
    position = _field(buf, table, index)
    return None if position is None else position + struct.unpack_from("<I", buf, position)[0]
