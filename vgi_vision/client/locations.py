"""What ``location``, ``workers`` and ``concurrency`` mean: the members of a worker pool.

* ``None``: one private subprocess worker (``workers=N``: N of them, see below);
* ``"unix:///path"`` or ``"http://host:port"``: a running worker, or a load balancer in front
  of several, with ``concurrency`` requests in flight to it;
* a list of those: every one a member, requests spread by least outstanding requests.

Private workers (``workers=N``) are each pinned to their own group of cores and size their
onnxruntime threads to that group, so N workers never run more inference threads than the
machine has cores.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from urllib.parse import urlparse

from vgi_vision.client.fanout import Member
from vgi_vision.transports import Transport

#: Requests in flight to one worker address. Two keep a worker busy: while the model works on
#: one request, the next crosses the wire and waits its turn (the worker classifies requests in
#: turns of 32 images), so no core idles between them; more only queue inside the worker. A
#: load balancer in front of N replicas wants about 2 x N (``concurrency=``).
DEFAULT_CONCURRENCY = 2

#: Seconds a worker address may take to answer one request (a call on a big chunk is slow).
DEFAULT_TIMEOUT_SECONDS = 600.0

#: Uncommitted write-back rows younger than this are left alone by a private worker starting in
#: a pool that shares one store: longer than any call (the transports' own timeout is 600 s).
SHARED_STORE_GRACE_SECONDS = 600

Location = str | Sequence[str] | None
Workers = int | str | None


def available_cores() -> list[int]:
    """The cores this process may run on (respects CPU affinity, unlike ``os.cpu_count``)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return list(range(os.cpu_count() or 1))


def worker_count(workers: Workers) -> int:
    """``workers=N`` or ``"auto"``: one private worker per available core, one thread each.

    Measured with bench/bench_fanout.py on a quiet 2-core machine: two single-threaded workers
    ran 256 JPEGs 1.3x faster than one worker with two onnxruntime threads (``default`` group),
    and 1.9x faster than one single-threaded worker (``private``). A worker runs its model
    batches one at a time and decodes, encodes and talks to the client in between, leaving its
    cores idle then; one worker per core fills those gaps without ever running more inference
    threads than there are cores.

    ``None`` (what ``attach(con)`` uses) stays one worker on every core: a private worker per
    attachment, as before, and no slower (it is the same worker).
    """
    if workers is None:
        return 1
    if workers == "auto":
        return len(available_cores())
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive number or 'auto', got {workers!r}")
    return workers


def core_groups(count: int, cores: Sequence[int]) -> list[list[int]]:
    """``cores`` split into ``count`` near-equal groups (cores shared round-robin when fewer)."""
    if count <= len(cores):
        size, extra = divmod(len(cores), count)
        groups, start = [], 0
        for i in range(count):
            stop = start + size + (1 if i < extra else 0)
            groups.append(list(cores[start:stop]))
            start = stop
        return groups
    return [[cores[i % len(cores)]] for i in range(count)]


def open_transport(location: str, *, auth_token: str | None = None,
                   timeout: float = DEFAULT_TIMEOUT_SECONDS) -> Transport:
    """The transport for one worker address; a request unanswered after ``timeout`` seconds
    is a fault (in a pool: retried on another worker)."""
    from vgi_vision.transports.http import HttpTransport
    from vgi_vision.transports.unix import UnixTransport

    parsed = urlparse(location)
    if parsed.scheme == "unix":
        return UnixTransport(parsed.path, timeout=timeout)
    if parsed.scheme in ("http", "https"):
        return HttpTransport(location, auth_token=auth_token, timeout=timeout)
    raise ValueError(f"unsupported worker location {location!r}: use None, unix:///path or "
                     f"http://host:port")


def remote_members(location: str | Sequence[str], *, concurrency: int | None = None,
                   auth_token: str | None = None,
                   timeout: float = DEFAULT_TIMEOUT_SECONDS) -> list[Member]:
    """A member per address, each taking ``concurrency`` requests at once."""
    addresses = [location] if isinstance(location, str) else list(location)
    if not addresses:
        raise ValueError("location is an empty list: name at least one worker")
    capacity = DEFAULT_CONCURRENCY if concurrency is None else concurrency
    if capacity < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    return [Member(address, open_transport(address, auth_token=auth_token, timeout=timeout),
                   capacity)
            for address in addresses]


def private_members(workers: Workers, *, worker_args: Sequence[str] = (),
                    command: Sequence[str] | None = None,
                    env: dict[str, str] | None = None) -> list[Member]:
    """``workers`` private subprocess workers, started in parallel.

    A private worker serves one request at a time (its stdio loop is sequential), so each is a
    member of capacity 1. With more than one, each is pinned to its own core group.
    """
    from vgi_vision.transports.stdio import SubprocessTransport, worker_command

    count = worker_count(workers)
    if count > 1 and "--lance" in worker_args and "--lance-recovery-grace" not in worker_args:
        # The pool's workers share one store: one restarted after a crash must not roll back
        # the runs its siblings are still writing (it would, with no grace).
        worker_args = [*worker_args, "--lance-recovery-grace", str(SHARED_STORE_GRACE_SECONDS)]
    if command is not None:
        commands = [list(command)] * count
    elif count == 1:
        commands = [worker_command(*worker_args)]
    else:
        commands = [worker_command("--cpus", ",".join(map(str, group)), *worker_args)
                    for group in core_groups(count, available_cores())]
    started: list[Transport | BaseException | None] = [None] * count

    def start(i: int) -> None:
        try:
            started[i] = SubprocessTransport(commands[i], env=env)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the caller
            started[i] = exc

    threads = [threading.Thread(target=start, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failed = [s for s in started if isinstance(s, BaseException)]
    if failed:
        for transport in started:
            if transport is not None and not isinstance(transport, BaseException):
                transport.close()
        raise failed[0]
    return [Member(f"private worker {i + 1}" if count > 1 else "private worker",
                   transport, 1)
            for i, transport in enumerate(started) if transport is not None
            and not isinstance(transport, BaseException)]


def parse_workers(text: str) -> int | str:
    """``--workers`` on the command line: a number or ``auto``."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"--workers takes a number or 'auto', got {text!r}") from None
    worker_count(value)
    return value
