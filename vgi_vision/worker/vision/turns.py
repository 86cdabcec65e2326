"""A lock granted in the order it was asked for, for work that many callers take turns at.

``threading.Lock`` makes no promise of order: a thread that releases it and asks again at
once usually gets it back, so a caller with a long run of short steps can keep every other
caller waiting until it is done. Taking turns in arrival order bounds a caller's wait to one
step of each caller ahead of it.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator


class Turns:
    """A first-come, first-served lock: ``with turns.held(): ...`` runs one step."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    @property
    def finished(self) -> int:
        """Turns finished so far: shows that work is under way (and how far it got)."""
        with self._changed:
            return self._serving

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        with self._changed:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._changed.wait_for(lambda: self._serving == ticket)
        try:
            yield
        finally:
            with self._changed:
                self._serving += 1
                self._changed.notify_all()
