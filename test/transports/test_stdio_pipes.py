"""The pipes to and from a private worker hold a megabyte, so a request of phone photos
crosses in ~40 hand-offs between the processes rather than ~700."""

from __future__ import annotations

import fcntl
from pathlib import Path

from vgi_vision.transports.stdio import PIPE_BYTES, SubprocessTransport, worker_command

F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)


def test_both_pipes_of_a_private_worker_are_widened() -> None:
    # Linux lets any process ask for up to pipe-max-size, 1 MiB unless an admin lowered it.
    assert int(Path("/proc/sys/fs/pipe-max-size").read_text()) >= PIPE_BYTES
    transport = SubprocessTransport(worker_command())
    try:
        process = transport._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        sizes = [fcntl.fcntl(pipe.fileno(), F_GETPIPE_SZ)
                 for pipe in (process.stdin, process.stdout)]
    finally:
        transport.close()
    assert sizes == [PIPE_BYTES, PIPE_BYTES]
