"""The errors a user of vgi-vision catches, under one root: ``except VgiVisionError`` catches
every error the package raises.

Each error keeps its built-in parent too (``ProtocolError`` is a ``ValueError``, a
``TransportError`` a ``ConnectionError``), so code that catches those keeps working. The errors
here are the public ones, also importable as ``from vgi_vision import WorkerError``; errors only
one part of the package raises and handles are declared beside their code, on the same root.
This module imports nothing at run time, so catching an error never loads Arrow, DuckDB or the
worker.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for the annotation only: importing it would load the protocol (Arrow)
    from vgi_vision.protocol.errors import ErrorKind


class VgiVisionError(Exception):
    """An error raised by vgi-vision itself, as opposed to one passing through it."""


class WorkerError(VgiVisionError, RuntimeError):
    """A structured error the worker returned; ``kind`` is stable, the message human."""

    def __init__(self, kind: ErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class TransportError(VgiVisionError, ConnectionError):
    """The worker could not be reached, or went away during a call."""


class ProtocolError(VgiVisionError, ValueError):
    """Bytes that are not a well-formed message."""


class BindingError(VgiVisionError, ValueError):
    """A worker function whose signature cannot be expressed as DuckDB macros."""


class DetachedError(VgiVisionError, RuntimeError):
    """A ``vision.*`` function was called after its attachment was closed: the connection or
    cursor it was attached through was closed or collected, or ``detach`` ran."""


class ModelError(VgiVisionError, RuntimeError):
    """The model itself is unusable (missing, corrupt, or misdescribed files)."""


class BatchFunctionError(VgiVisionError, ValueError):
    """The function, its image column, a parameter or an option does not fit."""


#: Exported from :mod:`vgi_vision`.
PUBLIC_ERRORS = ("VgiVisionError", "WorkerError", "TransportError", "ProtocolError",
                 "BindingError", "DetachedError", "ModelError", "BatchFunctionError")
