"""Starting a socket or HTTP worker as a child process and waiting until it serves.

Used by the test suite, the SQL runner and the benchmarks, which all need "a unix worker" or
"an HTTP worker" without caring how one is started.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

TRANSPORTS = ("subprocess", "unix", "http")


@dataclass
class RunningWorker:
    location: str | None  # what Client()/attach() take; None for a subprocess worker
    process: subprocess.Popen | None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def spawn(args: Sequence[str], env: dict[str, str] | None = None,
          log_file: Path | None = None) -> subprocess.Popen:
    with contextlib.ExitStack() as stack:
        stderr = stack.enter_context(open(log_file, "ab")) if log_file else subprocess.DEVNULL
        return subprocess.Popen([sys.executable, "-m", "vgi_vision", "serve", *args],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=stderr, env={**os.environ, **(env or {})})


def wait_for(ready: Callable[[], bool], process: subprocess.Popen, what: str, timeout: float = 60.0
             ) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with code {process.returncode} before {what}")
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"worker did not start {what} within {timeout}s")
        time.sleep(0.05)


#: /proc/net/unix flag of a listening socket (__SO_ACCEPTCON).
_ACCEPTING = 0x10000


def is_listening(socket_path: Path) -> bool:
    """Whether a socket listens at ``socket_path``. The file alone is not enough: it exists
    from bind(), before listen(), and a connect in between is refused. Read from Linux's
    /proc/net/unix, so the check opens no connection the worker would have to serve."""
    try:
        table = Path("/proc/net/unix").read_text().splitlines()[1:]
    except OSError:
        return socket_path.is_socket()
    for line in table:
        fields = line.split(None, 7)
        if len(fields) == 8 and fields[7] == str(socket_path) \
                and int(fields[3], 16) & _ACCEPTING:
            return True
    return False


def start_unix(socket_path: Path, *extra: str, env: dict[str, str] | None = None,
               log_file: Path | None = None) -> RunningWorker:
    process = spawn(["--unix", str(socket_path), *extra], env, log_file)
    wait_for(lambda: is_listening(socket_path), process, f"serving on {socket_path}")
    return RunningWorker(f"unix://{socket_path}", process)


def start_http(port_file: Path, *extra: str, port: int = 0, env: dict[str, str] | None = None,
               log_file: Path | None = None) -> RunningWorker:
    process = spawn(["--http", "--host", "127.0.0.1", "--port", str(port),
                     "--port-file", str(port_file), *extra], env, log_file)
    wait_for(port_file.exists, process, "writing its port file")
    return RunningWorker(f"http://127.0.0.1:{port_file.read_text().strip()}", process)


@contextlib.contextmanager
def running_worker(transport: str, *extra: str, env: dict[str, str] | None = None,
                   workdir: Path | None = None) -> Iterator[RunningWorker]:
    """A worker of the given transport for the duration of the block."""
    if transport not in TRANSPORTS:
        raise ValueError(f"transport must be one of {TRANSPORTS}, got {transport!r}")
    with contextlib.ExitStack() as stack:
        folder = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        if transport == "subprocess":
            worker = RunningWorker(None, None)
        elif transport == "unix":
            worker = start_unix(folder / "worker.sock", *extra, env=env,
                                log_file=folder / "worker.log")
        else:
            worker = start_http(folder / "worker.port", *extra, env=env,
                                log_file=folder / "worker.log")
        try:
            yield worker
        finally:
            worker.stop()
