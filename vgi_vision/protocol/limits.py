"""Limits both sides of a transport agree on: one definition, imported by client and worker.

The worker's request limits are its defaults (``vgi-vision serve`` flags may lower or raise
them, and a worker states the ones it runs with in its ``describe`` answer); the client
assumes these when a worker does not say. Responses are trusted (the client chose its
worker) but still bounded.
"""

from __future__ import annotations

#: Largest response frame a client reads from a stream transport (stdio pipe, unix socket).
MAX_RESPONSE_BYTES = 1 << 31
#: Largest request a worker accepts by default (``--max-request-mb``).
DEFAULT_MAX_REQUEST_BYTES = 256 << 20
#: Most argument rows one request may carry by default (``--max-rows-per-call``).
DEFAULT_MAX_ROWS_PER_CALL = 4096
