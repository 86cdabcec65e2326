"""An S3-protocol server on loopback for tests and benchmarks, with a tap on what it serves.

The server is moto's (``moto[s3]`` with Flask, in the ``test`` extra), run in a thread of the
calling process. Clients reach it like any S3-compatible service: through the standard AWS
variables that :meth:`LocalS3.env` gives, so the code under test is configured exactly as it
is in production. The tap in front of it counts the body bytes of every object read (to prove
an object was refused before it was downloaded) and can answer the next requests with
``503 SlowDown``, as a throttling S3 does.
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

#: A bucket is named in requests; credentials are checked by nothing here, only sent.
ACCESS_KEY = "local-access-key"
SECRET_KEY = "local-secret-key"
REGION = "us-east-1"

SLOW_DOWN = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
             b'<Message>Please reduce your request rate.</Message></Error>')


class Tap:
    """WSGI middleware: counts object bytes served per path and answers per status (a 412
    is a conditional write refused: a commit that lost a race); answers 503 while told to."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.bytes_sent: Counter[str] = Counter()
        self.statuses: Counter[int] = Counter()
        self.throttled = 0
        self._throttle_next = 0
        self._throttle_prefix = ""
        self._lock = threading.Lock()

    def throttle(self, requests: int, path_prefix: str = "") -> None:
        """Answer the next ``requests`` requests whose path starts with ``path_prefix``
        (``/bucket/key``) with 503 SlowDown."""
        with self._lock:
            self._throttle_next, self._throttle_prefix = requests, path_prefix

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        with self._lock:
            throttle = self._throttle_next > 0 and path.startswith(self._throttle_prefix)
            if throttle:
                self._throttle_next -= 1
                self.throttled += 1
        if throttle:
            start_response("503 Slow Down", [("Content-Type", "application/xml"),
                                             ("Content-Length", str(len(SLOW_DOWN)))])
            return [SLOW_DOWN]
        def counted_start(status: str, headers: Any, *rest: Any) -> Any:
            with self._lock:
                self.statuses[int(status.split()[0])] += 1
            return start_response(status, headers, *rest)

        body = self.app(environ, counted_start)
        if environ.get("REQUEST_METHOD") != "GET":
            return body
        return self._counted(path, body)

    def _counted(self, path: str, body: Iterable[bytes]) -> Iterator[bytes]:
        try:
            for chunk in body:
                with self._lock:
                    self.bytes_sent[path] += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close is not None:
                close()


class LocalS3:
    """A running server: its endpoint, the variables that point a client at it, its tap."""

    def __init__(self, tap: Tap, endpoint: str) -> None:
        self.tap = tap
        self.endpoint = endpoint

    def env(self) -> dict[str, str]:
        """The standard AWS variables naming this server (plain HTTP, static credentials)."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_REGION": REGION,
                "AWS_ALLOW_HTTP": "true", "AWS_EC2_METADATA_DISABLED": "true"}

    def client(self) -> Any:
        """A boto3 S3 client of this server, to arrange buckets and objects in tests."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION,
                            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Store ``data`` at ``bucket``/``key``; returns its ``s3://`` URL."""
        self.client().put_object(Bucket=bucket, Key=key, Body=data)
        return f"s3://{bucket}/{key}"


@contextlib.contextmanager
def local_s3() -> Iterator[LocalS3]:
    """Serve S3 on a free loopback port until the block ends."""
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    class QuietHandler(MotoRequestHandler):
        def log_request(self, *args: Any, **kwargs: Any) -> None:
            """One line per request would drown the test output."""

    tap = Tap(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, tap, threaded=True, request_handler=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="local-s3", daemon=True)
    thread.start()
    try:
        yield LocalS3(tap, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
