"""Several requests in flight over one or more workers, with failover.

DuckDB calls a UDF under the GIL, one chunk at a time, so a query only becomes parallel here:
the client cuts each chunk into sub-batches and runs them as *jobs* on a :class:`WorkerPool`.
A job is a function of one transport (a whole call, or a scan with all its continuations, so a
scan's live state never has to move between workers). The pool gives each job the member with
the fewest outstanding requests relative to its capacity (not blind round-robin: a slow or
busy worker gets fewer), and the results come back in input order.

A member that cannot be reached, dies or times out during a job (a ``TransportError``) is left
out for the rest of that call and the job runs again on another member. The functions are pure,
so running a sub-batch again is safe; with write-back a sub-batch is one run, committed
all-or-nothing by its worker, so a run its dead worker never committed stays invisible. Stored
results are keyed by (image content, model), so a retry stores each image once even when the
dead worker had committed before it could answer.
The call fails only when no member can serve it, with a message naming every failed member
(a pool of one raises its worker's own error).
Structured errors from a worker (a bad argument, a refused path) are answers, not faults: they
are raised as they are, never retried.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from vgi_vision.errors import TransportError
from vgi_vision.transports import Transport

T = TypeVar("T")
S = TypeVar("S")


class NoWorkerAvailable(TransportError):
    """Every worker of the pool failed during one call."""


@dataclass(eq=False)
class Member:
    """One worker of a pool: how to reach it, how many requests it takes at once."""

    name: str
    transport: Transport
    capacity: int = 1
    outstanding: int = 0

    @property
    def load(self) -> float:
        return self.outstanding / self.capacity


@dataclass
class Failures:
    """The members that failed during one call, and why (shared by the call's jobs)."""

    reasons: dict[Member, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, member: Member, error: Exception) -> None:
        with self.lock:
            self.reasons.setdefault(member, str(error))

    def __contains__(self, member: object) -> bool:
        with self.lock:
            return member in self.reasons

    def summary(self) -> str:
        with self.lock:
            return "; ".join(f"{m.name}: {reason}" for m, reason in self.reasons.items())


class WorkerPool:
    """Members, their outstanding requests, and the threads that keep them busy.

    It is itself a :class:`Transport` (``roundtrip`` on the least-loaded member, failing over),
    which is all that requests without state, such as ``describe``, need.
    """

    def __init__(self, members: Sequence[Member]) -> None:
        if not members:
            raise ValueError("a worker pool needs at least one worker")
        self.members = list(members)
        self._changed = threading.Condition()
        self._threads = ThreadPoolExecutor(max_workers=sum(m.capacity for m in self.members),
                                           thread_name_prefix="vgi-fanout")

    @property
    def capacity(self) -> int:
        return sum(m.capacity for m in self.members)

    def run(self, job: Callable[[Transport], T], failures: Failures | None = None) -> T:
        """``job`` on the least-loaded healthy member; on a transport fault, on another one."""
        failures = failures if failures is not None else Failures()
        while True:
            member = self._checkout(failures)
            try:
                return job(member.transport)
            except TransportError as exc:
                if len(self.members) == 1:
                    raise  # one worker: its own error says it best
                failures.add(member, exc)
            finally:
                self._checkin(member)

    def map(self, job: Callable[[Transport, S], T], items: Sequence[S]) -> Iterator[T]:
        """``job`` over ``items`` concurrently; results in the order of ``items``.

        All jobs of one map share their failures: once a member failed, the others avoid it.
        A single item runs in the calling thread (no hand-off: one-image latency unchanged).
        """
        failures = Failures()

        def one(item: S) -> T:
            return self.run(lambda transport: job(transport, item), failures)

        if len(items) == 1:
            return iter([one(items[0])])
        return self._threads.map(one, items)

    def roundtrip(self, request: bytes) -> bytes:
        return self.run(lambda transport: transport.roundtrip(request))

    def close(self) -> None:
        self._threads.shutdown(wait=False, cancel_futures=True)
        closers = [threading.Thread(target=m.transport.close, daemon=True)
                   for m in self.members]
        for closer in closers:
            closer.start()
        for closer in closers:
            closer.join()

    def _checkout(self, failures: Failures) -> Member:
        with self._changed:
            while True:
                healthy = [m for m in self.members if m not in failures]
                if not healthy:
                    raise NoWorkerAvailable(f"no worker could serve the call: "
                                            f"{failures.summary()}")
                free = [m for m in healthy if m.outstanding < m.capacity]
                if free:
                    member = min(free, key=lambda m: m.load)
                    member.outstanding += 1
                    return member
                self._changed.wait()  # every check-in notifies

    def _checkin(self, member: Member) -> None:
        with self._changed:
            member.outstanding -= 1
            self._changed.notify_all()
