"""The kinds of error a worker reports: stable names on the wire, one HTTP status each.

A failure response names its kind (``{"error": {"kind": "path_refused", ...}}``); the HTTP
transport answers with the kind's status, the stream transports carry the kind alone. Clients
branch on the kind, never on the message, which is for people. Every kind is documented in
``docs/protocol.md`` (a test holds the table and this enum to each other).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """One kind of failure; its value is the name on the wire."""

    http_status: int

    def __new__(cls, wire_name: str, http_status: int) -> ErrorKind:
        member = str.__new__(cls, wire_name)
        member._value_ = wire_name
        member.http_status = http_status
        return member

    BAD_REQUEST = "bad_request", 400
    INVALID_ARGUMENT = "invalid_argument", 400
    NO_MATCHING_OVERLOAD = "no_matching_overload", 400
    INVALID_TOKEN = "invalid_token", 400
    NOT_CONFIGURED = "not_configured", 400
    UNAUTHORIZED = "unauthorized", 401
    PATH_REFUSED = "path_refused", 403
    UNKNOWN_FUNCTION = "unknown_function", 404
    LIMIT_EXCEEDED = "limit_exceeded", 413
    MODEL_ERROR = "model_error", 500
    WRITE_FAILED = "write_failed", 500
    INTERNAL = "internal", 500
    READ_FAILED = "read_failed", 502  # object storage kept failing (after its retries)
    UNAVAILABLE = "unavailable", 503

    @classmethod
    def from_wire(cls, name: object) -> ErrorKind:
        """The kind a response names; a name this client does not know is ``INTERNAL``."""
        return next((kind for kind in cls if kind.value == name), cls.INTERNAL)
