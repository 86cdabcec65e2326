"""LanceDB persistence helpers: batching writes so each ``add`` carries many rows."""

from vgi_vision.worker.lance.write_queue import CoalescingWriteQueue, QueueClosedError

__all__ = ["CoalescingWriteQueue", "QueueClosedError"]
