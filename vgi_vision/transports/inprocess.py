"""In-process transport: the client calls a worker's dispatcher directly, in this process.

Like httpx's WSGI and mock transports, it replaces the wire with a function call, not the
protocol: every request is still encoded to bytes by the client and decoded by the
dispatcher, and every response encoded by the dispatcher and decoded by the client, exactly
as over a pipe, a socket or HTTP. What it leaves out is the process boundary and the framing,
so tests of the binding and the client need no worker process, and a program that wants the
functions without a second process (a notebook, a script on a machine without ``fork``) can
have them.

Scan state stays live in this process, as in a private subprocess worker
(:class:`~vgi_vision.worker.dispatcher.LiveStates`), and paths are read with the caller's
rights unless a ``data_root`` confines them: the worker is the caller's own.

Use it by passing the object, not a location string::

    from vgi_vision.transports.inprocess import InProcessTransport

    vgi_vision.attach(con, transport=InProcessTransport.start())
    client = Client(transport=InProcessTransport.start(model="efficientnet-lite0-int8"))

This module imports the worker (onnxruntime, the model, LanceDB when write-back is on). Nothing
on the client side imports it: only code that asks for an in-process worker pays for one.
"""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

from vgi_vision.errors import TransportError
from vgi_vision.protocol.limits import MAX_RESPONSE_BYTES
from vgi_vision.worker.build import Worker, WorkerConfig, build_worker
from vgi_vision.worker.dispatcher import Dispatcher, LiveStates

#: ``WorkerConfig.transport`` of an in-process worker (what its ``describe`` answer says).
TRANSPORT_NAME = "inprocess"


class InProcessTransport:
    """Client half whose "worker" is a :class:`Dispatcher` in this process. Thread-safe.

    ``dispatcher``: the dispatcher to call. ``worker``: the worker it belongs to, if this
    transport owns it; ``close`` then drains it and flushes its write-back. Use :meth:`start`
    to build a worker the way ``vgi-vision serve`` does.
    """

    def __init__(self, dispatcher: Dispatcher, *, worker: Worker | None = None,
                 max_scans: int = 256) -> None:
        self.dispatcher = dispatcher
        self.worker = worker
        self.states = LiveStates(max_scans=max_scans)
        self._closed = False
        self._lock = threading.Lock()

    @classmethod
    def start(cls, config: WorkerConfig | None = None, **options: Any) -> InProcessTransport:
        """Build a worker in this process (loading its model now) and a transport owning it.

        ``options`` are :class:`~vgi_vision.worker.build.WorkerConfig` fields, e.g.
        ``model=``, ``lance=``, ``data_root=``, ``warm_up=False``.
        """
        config = dataclasses.replace(config or WorkerConfig(transport=TRANSPORT_NAME),
                                     **options)
        worker = build_worker(config)
        return cls(worker.dispatcher, worker=worker)

    @property
    def closed(self) -> bool:
        return self._closed

    def roundtrip(self, request: bytes) -> bytes:
        if self._closed:
            raise TransportError("the in-process worker is closed")
        response = self.dispatcher.handle(request, self.states)
        if len(response) > MAX_RESPONSE_BYTES:
            raise TransportError(f"the in-process worker answered {len(response)} bytes, over "
                                 f"the limit of {MAX_RESPONSE_BYTES}")
        return response

    def close(self) -> None:
        """Stop taking requests; an owned worker answers those in flight, then flushes."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self.worker is not None:
            self.worker.close()
