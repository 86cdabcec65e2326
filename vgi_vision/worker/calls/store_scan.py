"""A table function that reads the write-back store, shared by ``similar()`` and
``duplicates()``."""

from __future__ import annotations

from vgi_vision.worker.calls.context import VisionContext
from vgi_vision.worker.registry import Args
from vgi_vision.worker.state import CursorState


class StoreScan:
    """A cursor over argument rows of a function that needs the store: a worker without
    one refuses the call when the scan starts (NOT_CONFIGURED), before any tick runs."""

    state_type = CursorState

    def __init__(self, ctx: VisionContext) -> None:
        self.ctx = ctx

    def initial_state(self, args: Args) -> CursorState:
        self.ctx.store()
        return CursorState()
