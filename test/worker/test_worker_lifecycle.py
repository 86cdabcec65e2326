"""A worker stopping or dying under a call, files swapped under a read, and attach per cursor.

Real workers, real signals, real FIFOs: SIGTERM in the middle of a write-back call drains (the
request in flight is answered, the worker exits 0) and the client says the worker stopped
during the call; after kill -9 the client does not send the request again.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from test_lance import classify_args, distinct_photos, table_counts

import vgi_vision
from vgi_vision.client.client import Client
from vgi_vision.errors import TransportError, WorkerError
from vgi_vision.protocol import ErrorKind, decode, encode
from vgi_vision.testing.launch import running_worker
from vgi_vision.transports.framing import read_frame, write_frame
from vgi_vision.worker.lance.kinds import STAGED

pytestmark = pytest.mark.slow


def worker_log(folder: Path) -> str:
    return (folder / "worker.log").read_text(errors="replace")


def test_sigterm_during_write_back_drains(tmp_path: Path, fixture_bytes: dict[str, bytes]
                                          ) -> None:
    """SIGTERM lands while a long classify call is writing back: the worker answers what is in
    flight, flushes write-back and exits 0; the caller is told the worker stopped."""
    photos = distinct_photos(fixture_bytes, 200)  # seven requests of 32 images
    db, folder = tmp_path / "db", tmp_path / "w"
    with running_worker("unix", "--lance", str(db), workdir=folder) as worker:
        assert worker.process is not None
        errors: list[Exception] = []

        def long_call() -> None:
            try:
                with Client(worker.location) as client:
                    client.table("classify", pa.array(photos, pa.binary()))
            except Exception as exc:  # the stop is expected to end it
                errors.append(exc)

        thread = threading.Thread(target=long_call)
        thread.start()
        deadline = time.monotonic() + 120
        while table_counts(db)[STAGED] == 0 and time.monotonic() < deadline:
            time.sleep(0.05)  # write-back is under way
        worker.process.send_signal(signal.SIGTERM)
        assert worker.process.wait(timeout=120) == 0, worker_log(folder)[-2000:]
        thread.join(timeout=60)
        assert not thread.is_alive()
    assert "terminate called" not in worker_log(folder)
    assert len(errors) == 1 and "stopped during the call" in str(errors[0])
    # Every row handed to write-back reached the table: staged rows are whole batches of 32.
    assert table_counts(db)[STAGED] % 32 == 0


def cpu_ticks(pid: int) -> int:
    """User + system CPU time of a process, in clock ticks (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_kill9_during_a_call_is_reported_and_not_sent_again(tmp_path: Path,
                                                            fixture_bytes: dict[str, bytes]
                                                            ) -> None:
    """The worker is busy with the request (it was read) when it dies: the client says the
    worker died during the call instead of sending the request again."""
    photos = distinct_photos(fixture_bytes, 64) * 32  # one call of 2048 images: seconds of work
    with running_worker("unix", "--max-rows-per-call", "4096", workdir=tmp_path) as worker:
        assert worker.process is not None
        client = Client(worker.location)
        assert client.request({"op": "describe"})[0]["ok"]  # a pooled connection now exists
        idle = cpu_ticks(worker.process.pid)
        outcome: list[BaseException] = []

        def call() -> None:
            try:
                client.request({"op": "call", "function": "top_label"},
                               pa.record_batch([pa.array(photos, pa.binary())], ["image"]))
            except BaseException as exc:  # examined below
                outcome.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        deadline = time.monotonic() + 60
        while cpu_ticks(worker.process.pid) < idle + 100 and time.monotonic() < deadline:
            time.sleep(0.02)  # a second of CPU: the worker is classifying the request
        os.kill(worker.process.pid, signal.SIGKILL)
        worker.process.wait(timeout=60)
        thread.join(timeout=60)
        client.close()
    assert len(outcome) == 1 and isinstance(outcome[0], TransportError), outcome
    assert "stopped during the call" in str(outcome[0]) and "died" in str(outcome[0])
    assert "cannot connect" not in str(outcome[0])  # it did not try to send it again


def test_requests_after_sigterm_are_refused_with_a_reason(tmp_path: Path,
                                                         fixture_bytes: dict[str, bytes]
                                                         ) -> None:
    """Between SIGTERM and exit the worker drains: a request on an open connection gets
    `unavailable`, neither a dropped connection nor an answer.

    A call of seconds keeps the worker draining; another client, whose connection was opened
    before SIGTERM, asks until it is refused, which must happen while that call still runs.
    """
    photos = distinct_photos(fixture_bytes, 64) * 8  # one call of 512 images: seconds of work
    with running_worker("unix", "--max-rows-per-call", "4096", workdir=tmp_path) as worker:
        assert worker.process is not None
        busy, probe = Client(worker.location), Client(worker.location)
        for client in (busy, probe):  # each holds a pooled connection now
            assert client.request({"op": "describe"})[0]["ok"]
        idle = cpu_ticks(worker.process.pid)
        answered: list[int] = []

        def call() -> None:
            # The drain waits for this call, its answer written, before the worker exits.
            _, batch = busy.request({"op": "call", "function": "top_label"},
                                    pa.record_batch([pa.array(photos, pa.binary())], ["image"]))
            answered.append(batch.num_rows if batch is not None else 0)

        thread = threading.Thread(target=call)
        thread.start()
        deadline = time.monotonic() + 60
        while cpu_ticks(worker.process.pid) < idle + 50 and time.monotonic() < deadline:
            time.sleep(0.02)  # half a second of CPU: the worker is classifying the call
        worker.process.send_signal(signal.SIGTERM)
        refused: WorkerError | None = None
        while refused is None:
            assert thread.is_alive(), "the call in flight ended before any request was refused"
            try:
                probe.request({"op": "describe"})  # served: SIGTERM is not handled yet
            except WorkerError as exc:
                refused = exc
        assert refused.kind is ErrorKind.UNAVAILABLE and "stopped during the call" in str(refused)
        thread.join(timeout=120)
        assert answered == [len(photos)]  # the call in flight got its whole answer
        assert worker.process.wait(timeout=60) == 0
        busy.close()
        probe.close()


@pytest.mark.parametrize("transport", ["subprocess", "unix"])
def test_a_path_swapped_to_a_fifo_never_hangs_the_worker(tmp_path: Path, transport: str,
                                                        fixture_bytes: dict[str, bytes]) -> None:
    """A path that is a regular file when checked and a FIFO (with no writer) when read."""
    photo = next(iter(fixture_bytes.values()))
    root = tmp_path / "root"
    root.mkdir()
    target = root / "photo.png"
    regular, fifo = root / ".regular", root / ".fifo"
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            regular.write_bytes(photo)
            os.replace(regular, target)
            time.sleep(0.002)  # a regular file about half of the time
            os.mkfifo(fifo)
            os.replace(fifo, target)
            time.sleep(0.002)

    swapper = threading.Thread(target=swap)
    swapper.start()
    flags = [] if transport == "subprocess" else ["--data-root", str(root)]
    path = str(target) if transport == "subprocess" else "photo.png"
    results: list[list] = []
    try:
        with running_worker(transport, *flags, workdir=tmp_path / "w") as worker, \
                Client(worker.location) as client:

            def classify_while_swapping() -> None:
                for _ in range(40):
                    results.append(client.call("top_label", pa.array([path] * 64)).to_pylist())

            caller = threading.Thread(target=classify_while_swapping, daemon=True)
            caller.start()
            caller.join(timeout=300)
            assert not caller.is_alive(), "the worker hangs reading a FIFO"
    finally:
        stop.set()
        swapper.join(timeout=10)
    labels = {label for batch in results for label in batch}
    assert len(results) == 40 and labels <= {None, "tiger cat"} and "tiger cat" in labels


def test_attach_on_a_second_cursor_leaves_the_first_attachment_working() -> None:
    """Catalogs and UDFs belong to the database: a cursor already sees the worker attached
    through its connection. Attaching again under the same name is refused and touches
    nothing; under another name it works."""
    coffee = "test/sql/data/coffee.png"
    con = duckdb.connect()
    vgi_vision.attach(con)
    cursor = con.cursor()
    try:
        with pytest.raises(ValueError, match="already has a catalog"):
            vgi_vision.attach(cursor)
        for user in (con, cursor):
            assert user.execute(f"SELECT vision.top_label('{coffee}')").fetchone() == \
                ("espresso",)
        vgi_vision.attach(cursor, name="second")
        assert cursor.execute(f"SELECT second.top_label('{coffee}')").fetchone() == \
            ("espresso",)
        vgi_vision.detach(cursor, name="second")
        assert con.execute(f"SELECT vision.top_label('{coffee}')").fetchone() == ("espresso",)
    finally:
        vgi_vision.detach(con)
        cursor.close()
        con.close()


def test_sigterm_to_a_subprocess_worker_answers_the_request_in_flight(
        tmp_path: Path, fixture_bytes: dict[str, bytes]) -> None:
    """Over stdio too: the request being served when SIGTERM arrives is answered, then the
    worker exits 0 (no abort at interpreter shutdown with the reader thread blocked)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vgi_vision", "serve", "--lance", str(tmp_path / "db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdin is not None and process.stdout is not None
        assert read_frame(process.stdout, 1 << 30) == b""  # ready
        request = encode({"op": "scan", "function": "classify", "token": None},
                         classify_args(distinct_photos(fixture_bytes, 32)))
        idle = cpu_ticks(process.pid)
        write_frame(process.stdin, request)
        deadline = time.monotonic() + 60
        while cpu_ticks(process.pid) < idle + 10 and time.monotonic() < deadline:
            time.sleep(0.01)  # the worker is classifying the request (or has answered it)
        process.send_signal(signal.SIGTERM)
        answer = decode(read_frame(process.stdout, 1 << 30) or b"")
        assert answer.header["ok"] and answer.batch is not None
        assert answer.batch.num_rows == 32 * 5
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
        _, stderr = process.communicate(timeout=60)
    assert b"Fatal Python error" not in stderr and b"terminate called" not in stderr


def test_an_answer_still_being_sent_at_sigterm_is_sent_whole(tmp_path: Path,
                                                              fixture_bytes: dict[str, bytes]
                                                              ) -> None:
    """A worker told to stop waits for answers to be written, not only computed.

    The answer (embeddings of 512 images, 2.6 MB) is larger than the socket's buffers and the
    client reads none of it until the worker has computed it and been sent SIGTERM: the
    worker is then blocked writing it, and must not exit before it is all written.
    """
    photos = distinct_photos(fixture_bytes, 64) * 8
    request = encode({"op": "call", "function": "embed"},
                     pa.record_batch([pa.array(photos, pa.binary())], ["image"]))
    with running_worker("unix", "--log-level", "info", workdir=tmp_path) as worker:
        assert worker.process is not None and worker.location is not None
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(worker.location.removeprefix("unix://"))
            sock.settimeout(300)
            with sock.makefile("rwb") as stream:
                write_frame(stream, request)
                deadline = time.monotonic() + 240
                while "call embed ok" not in worker_log(tmp_path):  # computed, not yet sent
                    assert time.monotonic() < deadline, "the worker never answered the call"
                    time.sleep(0.05)
                worker.process.send_signal(signal.SIGTERM)
                answer = decode(read_frame(stream, 1 << 30))
        assert answer.header["ok"] and answer.batch is not None
        assert answer.batch.num_rows == len(photos)
        assert worker.process.wait(timeout=60) == 0
