"""The contract between the DuckDB process and the worker; both sides import it, nothing else.

* :mod:`~vgi_vision.protocol.messages`: wire messages (Arrow IPC with a JSON header);
* :mod:`~vgi_vision.protocol.errors`: the error kinds, with their HTTP status;
* :mod:`~vgi_vision.protocol.sqltypes`: SQL type names and their Arrow types;
* :mod:`~vgi_vision.protocol.rows`: argument batches and the ``input_row`` tag;
* :mod:`~vgi_vision.protocol.limits`: the limits both sides share.
"""

from vgi_vision.protocol.errors import ErrorKind
from vgi_vision.protocol.limits import (
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_ROWS_PER_CALL,
    MAX_RESPONSE_BYTES,
)
from vgi_vision.protocol.messages import (
    HEADER_KEY,
    MAX_HEADER_BYTES,
    PROTOCOL_VERSION,
    Message,
    decode,
    encode,
    error_message,
)
from vgi_vision.protocol.rows import INPUT_ROW, argument_rows
from vgi_vision.protocol.sqltypes import UnsupportedType, arrow_type

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "DEFAULT_MAX_ROWS_PER_CALL",
    "ErrorKind",
    "HEADER_KEY",
    "INPUT_ROW",
    "MAX_HEADER_BYTES",
    "MAX_RESPONSE_BYTES",
    "PROTOCOL_VERSION",
    "Message",
    "UnsupportedType",
    "argument_rows",
    "arrow_type",
    "decode",
    "encode",
    "error_message",
]
