"""Jobs: the caller's name for a group of write-back runs.

One ``vgi-vision classify`` command sends many requests (a chunk of files, split into
sub-batches, each one scan and so one run). It names them all with one *job id*, carried in
the request header (``"job"``, 32 lowercase hex digits, optional), so the store can say which
runs belong together (the gallery shows a job as one entry). The header travels whole over
every transport, and over HTTP a continuation keeps the job of its first request inside its
sealed state: the id is read from the request that starts a run only.

The dispatcher checks the id and sets it for the request (:func:`requested_job`); a run
created while it is set records it (:class:`~vgi_vision.worker.calls.runs.RunState`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from contextvars import ContextVar

from vgi_vision.protocol import ErrorKind
from vgi_vision.worker.registry import FunctionError

JOB_ID = re.compile(r"^[0-9a-f]{32}$")

_current: ContextVar[str] = ContextVar("vgi_vision_job", default="")


def checked_job(value: object) -> str:
    """The job id of a request header's ``job`` field ("" when absent); anything but 32
    lowercase hex digits is a bad request (it is stored and shown)."""
    if value is None:
        return ""
    if not isinstance(value, str) or not JOB_ID.fullmatch(value):
        raise FunctionError("job must be 32 lowercase hex digits", kind=ErrorKind.BAD_REQUEST)
    return value


@contextlib.contextmanager
def requested_job(job_id: str) -> Iterator[None]:
    """Runs created inside belong to ``job_id`` ("" for none)."""
    token = _current.set(job_id)
    try:
        yield
    finally:
        _current.reset(token)


def current_job() -> str:
    """The job of the request being served ("" for none)."""
    return _current.get()
