"""Images under an object-storage prefix, for ``vgi-vision classify s3://bucket/prefix/``.

Listing and reading use the worker's filesystem (:mod:`vgi_vision.objects`): the same
standard AWS variables configure both, and a client that sends bytes to a remote worker
fetches the objects of a chunk in parallel, so memory stays bounded by the chunk.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path, PurePosixPath

from pyarrow import fs

from vgi_vision.objects import ObjectUrl, fetch_all, is_object_url, object_filesystem

#: A file the command classifies: a local path, or an object URL (a ``str``; a ``Path`` would
#: fold the ``//`` of ``s3://``).
Source = Path | str


def list_images(prefix: str, suffixes: Collection[str]) -> list[str]:
    """The object URLs under ``prefix`` (recursively) whose names end in ``suffixes``, in
    order; ``prefix`` itself when it names one object."""
    target = ObjectUrl.parse(prefix)
    filesystem = object_filesystem(target.scheme)
    location = target.location.rstrip("/")
    if not prefix.endswith("/") and filesystem.get_file_info(location).type == fs.FileType.File:
        return [prefix]
    found = filesystem.get_file_info(fs.FileSelector(location, recursive=True,
                                                     allow_not_found=True))
    return sorted(f"{target.scheme}://{info.path}" for info in found
                  if info.type == fs.FileType.File
                  and PurePosixPath(info.path).suffix.lower() in suffixes)


def read_all(sources: Sequence[Source]) -> list[bytes | None]:
    """The bytes of each file or object (None when it cannot be read); objects in parallel."""
    return fetch_all(read_or_none, sources,
                     parallel=any(isinstance(s, str) and is_object_url(s) for s in sources))


def read_or_none(source: Source) -> bytes | None:
    try:
        if isinstance(source, str) and is_object_url(source):
            target = ObjectUrl.parse(source)
            with object_filesystem(target.scheme).open_input_stream(target.location) as stream:
                return stream.read()
        return Path(source).read_bytes()
    except OSError:
        return None
