"""The root of every error the package raises: ``except VgiVisionError`` catches them all.

Each error keeps its built-in parent too (``ProtocolError`` is a ``ValueError``, a
``TransportError`` a ``ConnectionError``), so code that catches those keeps working.
"""

from __future__ import annotations


class VgiVisionError(Exception):
    """An error raised by vgi-vision itself, as opposed to one passing through it."""
