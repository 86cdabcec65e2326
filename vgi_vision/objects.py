"""Images named by object-storage URLs (``s3://bucket/key``): confined, sized, then fetched.

An object URL in a path argument is as untrusted as a file path, so it is held to the same
rules: a worker with a data root reads only under the URL prefixes it was given
(``--data-root s3://bucket/photos/``), an object larger than ``--max-image-mb`` is refused
from its metadata before any of its bytes are fetched, and a missing object raises the same
``FileNotFoundError`` that opening a missing file does, so the path policy treats both alike.

Reading goes through pyarrow's S3 filesystem (the AWS C++ SDK): credentials, region and
endpoint come from the standard chain (``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, an instance
role, ``AWS_REGION``, ``AWS_ENDPOINT_URL``), never from a query, and throttling or 5xx
answers are retried with exponential backoff by the SDK's standard retry strategy.

Shared by the worker (path arguments), the ``classify`` command (listing and fetching a
prefix) and the gallery (full-size images), so it depends on none of them: its refusals are
:class:`ObjectStoreError`, which carries the same error kind a worker answers with.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from pyarrow import fs

from vgi_vision.errors import VgiVisionError
from vgi_vision.protocol import ErrorKind

Item = TypeVar("Item")
Result = TypeVar("Result")

#: URL schemes read as object storage; every other string is a local path.
SCHEMES = ("s3",)

#: Seconds to wait for a connection, and for a request's answer, before a try fails.
CONNECT_TIMEOUT_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 30.0
#: Objects fetched at once per process: a model batch arrives in about one round trip.
FETCH_THREADS = 16
#: Tries per request (the first included): throttling and 5xx back off exponentially between.
MAX_ATTEMPTS = 6


class ObjectStoreError(VgiVisionError):
    """An object URL refused (malformed, outside the data roots, no such scheme) or a read
    that kept failing; ``kind`` is what a worker answers with."""

    def __init__(self, message: str, kind: ErrorKind) -> None:
        super().__init__(message)
        self.kind = kind


def is_object_url(path: str) -> bool:
    """Whether ``path`` names an object (``s3://...``) rather than a local file."""
    scheme, sep, _ = path.partition("://")
    return bool(sep) and scheme.lower() in SCHEMES


@dataclass(frozen=True)
class ObjectUrl:
    """A checked object URL: its scheme, bucket and key, with no segment that could be read
    as a step up or aside (``..``, ``.``, empty), so a prefix test on it means containment."""

    scheme: str
    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> ObjectUrl:
        parts = urlsplit(url)
        segments = parts.path.lstrip("/").split("/")
        if (parts.query or parts.fragment or "@" in parts.netloc or not parts.hostname
                or any(s in (".", "..") for s in segments) or "" in segments[:-1]
                or "\x00" in url):
            raise ObjectStoreError(f"object URL {url!r} is not of the form "
                                "scheme://bucket/key", kind=ErrorKind.PATH_REFUSED)
        return cls(parts.scheme.lower(), parts.netloc, "/".join(segments))

    @property
    def prefix(self) -> str:
        """The URL as a prefix to compare: a folder-like URL ends in ``/``."""
        return f"{self.scheme}://{self.bucket}/{self.key}"

    @property
    def location(self) -> str:
        """The object as pyarrow's filesystem names it: ``bucket/key``."""
        return f"{self.bucket}/{self.key}"


@dataclass(frozen=True)
class ObjectPrefixes:
    """The object URLs a worker may read: any (``allow_any``), or those under ``prefixes``."""

    prefixes: tuple[str, ...] = ()
    allow_any: bool = False

    @classmethod
    def of(cls, roots: Iterable[str]) -> ObjectPrefixes:
        """The prefixes among data roots; each one a folder (a trailing ``/`` is implied, so
        ``s3://b/photos`` does not admit ``s3://b/photos-private/``)."""
        return cls(tuple(ObjectUrl.parse(r.rstrip("/") + "/").prefix
                         for r in roots if is_object_url(r)))

    def check(self, url: str) -> ObjectUrl:
        """The parsed ``url`` if this worker may read it, else a ``path_refused`` error."""
        parsed = ObjectUrl.parse(url)
        if not self.allow_any and not any(parsed.prefix.startswith(p) for p in self.prefixes):
            raise ObjectStoreError(f"object URL {url!r} is outside the data roots",
                                kind=ErrorKind.PATH_REFUSED)
        return parsed

    def read(self, url: str, max_bytes: int) -> bytes | None:
        """The bytes of the object ``url`` if it is a non-empty object of at most ``max_bytes``;
        None if it is too large or not an object. Raises ``FileNotFoundError`` when there is
        no such object (as opening a missing file does), ``path_refused`` outside the
        prefixes, and ``read_failed`` when the storage keeps failing or refuses access (not a
        silent NULL: the row's image exists, or may)."""
        target = self.check(url)
        try:
            # Opening asks for the object's metadata only (HeadObject): a missing object
            # raises FileNotFoundError here, and the size is known before any byte is read.
            with object_filesystem(target.scheme).open_input_file(target.location) as handle:
                if not 0 < handle.size() <= max_bytes:
                    return None
                data = handle.read(max_bytes + 1)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise ObjectStoreError(f"reading {url!r} from object storage failed: {exc}",
                                kind=ErrorKind.READ_FAILED) from None
        return data if 0 < len(data) <= max_bytes else None


@functools.cache
def object_filesystem(scheme: str) -> fs.FileSystem:
    """One filesystem per scheme and process, configured by the standard AWS variables only.

    Credentials come from the SDK's chain. ``AWS_ENDPOINT_URL`` names an S3-compatible
    server; one on plain HTTP is used only with ``AWS_ALLOW_HTTP=true``, the rule LanceDB (the
    Rust ``object_store``) applies to the same variables, so images and stores agree.
    ``AWS_REGION`` (or ``AWS_DEFAULT_REGION``) is the region when set. Read once per process.
    """
    if scheme != "s3":
        raise ObjectStoreError(f"no object storage for scheme {scheme!r}",
                            kind=ErrorKind.PATH_REFUSED)
    endpoint = urlsplit(os.environ.get("AWS_ENDPOINT_URL", ""))
    if endpoint.scheme == "http" and os.environ.get("AWS_ALLOW_HTTP", "").lower() != "true":
        raise ObjectStoreError(f"the S3 endpoint {endpoint.geturl()} is plain HTTP: set "
                            "AWS_ALLOW_HTTP=true to allow it", kind=ErrorKind.NOT_CONFIGURED)
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    return fs.S3FileSystem(region=region, scheme=endpoint.scheme or None,
                           endpoint_override=endpoint.netloc or None,
                           connect_timeout=CONNECT_TIMEOUT_SECONDS,
                           request_timeout=REQUEST_TIMEOUT_SECONDS,
                           retry_strategy=fs.AwsStandardS3RetryStrategy(
                               max_attempts=MAX_ATTEMPTS))


@functools.cache
def fetch_pool() -> ThreadPoolExecutor:
    """The threads that fetch objects, shared by every request of the process."""
    return ThreadPoolExecutor(max_workers=FETCH_THREADS, thread_name_prefix="object-fetch")


def fetch_all(fetch: Callable[[Item], Result], items: Sequence[Item], *, parallel: bool
              ) -> list[Result]:
    """``fetch`` of every item, in order: on the fetch threads when ``parallel`` (the items
    are objects, so waiting dominates), else here. The first failure is raised."""
    if not parallel or len(items) < 2:
        return [fetch(item) for item in items]
    return list(fetch_pool().map(fetch, items))
