"""Bearer tokens: which characters a token may hold, and how a presented one is compared.

A token is restricted to RFC 6750's ``b64token`` alphabet (ASCII letters, digits and
``-._~+/``, optionally ending in ``=`` padding). Every such token is the same bytes in any
encoding an HTTP stack may apply to a header, so the comparison can be of exact bytes: a
token with other characters would be re-encoded on the way (HTTP header values are bytes,
decoded as Latin-1 by the servers used here), and a lossy re-encoding is how a token of
Cyrillic letters once matched a header of question marks. Tokens outside the alphabet are
refused when a server or client is set up, never silently mangled.
"""

from __future__ import annotations

import hmac
import re

#: Where a command finds its bearer token when no token file is given: never on the command
#: line, where other users of the machine could read it.
AUTH_TOKEN_ENV = "VGI_VISION_AUTH_TOKEN"
#: RFC 6750 section 2.1, ``b64token``.
TOKEN_PATTERN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def checked_token(token: str) -> str:
    """``token`` if every character is allowed; ValueError (naming no character) otherwise."""
    if not TOKEN_PATTERN.fullmatch(token):
        raise ValueError("a bearer token may hold only ASCII letters, digits and -._~+/ "
                         "(optionally ending in =), as RFC 6750 allows")
    return token


def bearer_matches(header: str, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared as exact bytes in constant time.

    ``header`` is the value as servers hand it over: its bytes decoded as Latin-1, so
    encoding it back gives the bytes on the wire. The scheme is case-insensitive (RFC 7235).
    """
    scheme, _, given = header.partition(" ")
    try:
        presented = given.strip().encode("latin-1")
    except UnicodeEncodeError:  # not a header value as received from the wire
        return False
    return scheme.lower() == "bearer" and hmac.compare_digest(presented, token.encode())
