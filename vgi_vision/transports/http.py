"""HTTP client transport: one pooled, keep-alive ``httpx.Client`` per worker URL.

The worker side (``vgi_vision.worker.serve.http``) is stateless: every scan response carries
at most one batch plus a sealed continuation token, so any replica can answer any request.
"""

from __future__ import annotations

import httpx

from vgi_vision.errors import TransportError
from vgi_vision.protocol import ErrorKind, error_message
from vgi_vision.protocol.bearer import checked_token
from vgi_vision.transports import cannot_connect, stopped_during_call

RPC_PATH = "/v1/rpc"
HEALTH_PATH = "/healthz"
CONTENT_TYPE = "application/vnd.apache.arrow.stream"


class HttpTransport:
    """Client half: keep-alive pooled HTTP/1.1, safe to share between threads.

    A worker that cannot be reached, or that fails during a call, is reported in the words
    the unix transport uses, so a stopped worker reads the same on either.
    """

    def __init__(self, url: str, auth_token: str | None = None, timeout: float = 600.0) -> None:
        headers = {"Content-Type": CONTENT_TYPE}
        if auth_token:
            headers["Authorization"] = f"Bearer {checked_token(auth_token)}"
        self.url = url.rstrip("/")
        self._client = httpx.Client(base_url=self.url, headers=headers,
                                    timeout=httpx.Timeout(timeout, connect=10.0),
                                    limits=httpx.Limits(max_keepalive_connections=16,
                                                        max_connections=64))

    def roundtrip(self, request: bytes) -> bytes:
        try:
            response = self._client.post(RPC_PATH, content=request)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise cannot_connect(self.url, exc) from None
        except httpx.HTTPError as exc:
            raise stopped_during_call(self.url, exc) from None
        if response.status_code == 413 and response.headers.get("content-type") != CONTENT_TYPE:
            # refused by the HTTP server itself before the worker saw it
            return error_message(ErrorKind.LIMIT_EXCEEDED, f"{self.url} refused the request as too "
                                                   f"large: {response.text[:200]}")
        if response.headers.get("content-type") != CONTENT_TYPE:
            raise TransportError(f"{self.url} answered HTTP {response.status_code} with "
                                 f"{response.headers.get('content-type')!r}: "
                                 f"{response.text[:200]}")
        return response.content

    def close(self) -> None:
        self._client.close()
