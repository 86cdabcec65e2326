"""Continuation tokens: scan state sealed so that only a worker holding the key can resume it.

A token is ``base64url(version | expiry | call digest | state bytes | HMAC-SHA256 tag)``.
The tag is checked (in constant time) before anything else is parsed, so a forged, truncated
or damaged token never reaches the state deserializer. The call digest binds a token to the
function call that minted it, and the expiry bounds how long a captured token stays useful.
Any replica started with the same key resumes any other replica's tokens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import struct
import time

from vgi_vision.errors import VgiVisionError

VERSION = 1
_HEAD = struct.Struct(">BQ")  # version, expiry (unix seconds)
DIGEST_BYTES = 32
TAG_BYTES = 32
DEFAULT_TTL_SECONDS = 3600
MIN_KEY_BYTES = 16


class TokenError(VgiVisionError, ValueError):
    """A continuation token that is not genuine, not for this call, or expired."""


class TokenSealer:
    def __init__(self, key: bytes | None = None, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> None:
        if key is not None and len(key) < MIN_KEY_BYTES:
            raise ValueError(f"token key must be at least {MIN_KEY_BYTES} bytes")
        self._key = key if key is not None else os.urandom(32)
        self.ttl_seconds = ttl_seconds

    def seal(self, call_digest: bytes, state: bytes) -> str:
        body = _HEAD.pack(VERSION, int(time.time()) + self.ttl_seconds) + call_digest + state
        tag = hmac.new(self._key, body, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(body + tag).decode("ascii")

    def open(self, token: str, call_digest: bytes) -> bytes:
        """The state bytes inside ``token``; TokenError unless genuine, current and ours."""
        try:
            raw = base64.urlsafe_b64decode(token.encode("ascii"))
        except (binascii.Error, UnicodeEncodeError, AttributeError):
            raise TokenError("continuation token is not valid base64") from None
        if len(raw) < _HEAD.size + DIGEST_BYTES + TAG_BYTES:
            raise TokenError("continuation token is truncated")
        body, tag = raw[:-TAG_BYTES], raw[-TAG_BYTES:]
        if not hmac.compare_digest(tag, hmac.new(self._key, body, hashlib.sha256).digest()):
            raise TokenError("continuation token was not issued by a worker sharing this key "
                             "(tampered, truncated or foreign)")
        version, expiry = _HEAD.unpack_from(body)
        if version != VERSION:
            raise TokenError(f"continuation token version {version} is not supported")
        if expiry < time.time():
            raise TokenError("continuation token has expired; restart the query")
        digest = body[_HEAD.size:_HEAD.size + DIGEST_BYTES]
        if not hmac.compare_digest(digest, call_digest):
            raise TokenError("continuation token belongs to a different call")
        return body[_HEAD.size + DIGEST_BYTES:]


def key_from_env(value: str | None) -> bytes | None:
    """Decode a shared key given as hex or as plain text (at least 16 bytes either way)."""
    if not value:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return value.encode()
