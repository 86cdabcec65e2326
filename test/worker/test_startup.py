"""A worker that cannot start says why, in one line, to whoever started it.

Each case starts a real worker that fails before serving (a corrupt or missing model, a bad
flag, an unwritable write-back store, a missing data root) and checks the message the user
sees from ``attach()``, ``Client(...)``, ``vgi-vision sql`` and ``vgi-vision classify``; and
that socket and HTTP workers that cannot serve exit non-zero with one clear line.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from conftest import DATA, REPO

import vgi_vision
from vgi_vision.client.client import Client
from vgi_vision.transports.stdio import WorkerStartError
from vgi_vision.worker.vision.model import DEFAULT_MODEL, models_root

pytestmark = pytest.mark.slow


@pytest.fixture
def corrupt_models(tmp_path: Path) -> Path:
    """A models folder whose model.onnx does not match its recorded sha256."""
    folder = tmp_path / "models" / DEFAULT_MODEL
    shutil.copytree(models_root() / DEFAULT_MODEL, folder)
    (folder / "model.onnx").write_bytes(b"not an onnx model")
    return folder.parent


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path = REPO
        ) -> subprocess.CompletedProcess:
    import os

    return subprocess.run([sys.executable, "-m", "vgi_vision", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def assert_one_clear_line(result: subprocess.CompletedProcess, *expected: str) -> None:
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in result.stderr and "code -9" not in result.stderr


#: Worker options that make a private worker fail before serving, and what it must say.
BAD_OPTIONS = {
    "invalid limit": ({"max_pixels": 0}, ["--max-pixels", "must be greater than 0"]),
    "unknown flag": ({"no_such_flag": True}, ["unrecognized arguments: --no-such-flag"]),
    "unwritable lance": ({"lance": "/dev/null/results.lance"},
                         ["cannot open the write-back store /dev/null/results.lance"]),
    "missing data root": ({"data_root": "/no/such/folder"},
                          ["--data-root /no/such/folder is not an existing folder"]),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_attach_fails_with_the_workers_message(case: str) -> None:
    options, expected = BAD_OPTIONS[case]
    con = duckdb.connect()
    with pytest.raises(WorkerStartError) as info:
        vgi_vision.attach(con, **options)
    message = str(info.value)
    assert message.startswith("the vgi-vision worker could not start: ")
    assert all(text in message for text in expected), message
    assert "\n" not in message
    # nothing was left attached: a good worker attaches under the same name afterwards
    vgi_vision.attach(con)
    assert con.execute("SELECT count(*) FROM vision.image_classes()").fetchone() == (1000,)
    vgi_vision.detach(con)


def test_client_fails_with_the_model_error(corrupt_models: Path, tmp_path: Path) -> None:
    with pytest.raises(WorkerStartError, match="is corrupt: sha256 .* does not match"):
        Client(env={"VGI_VISION_MODELS": str(corrupt_models)})
    with pytest.raises(WorkerStartError, match="unknown model 'efficientnet-lite0': not a "
                                               "shipped model in .*empty"):
        Client(env={"VGI_VISION_MODELS": str(tmp_path / "empty")})


def test_cli_commands_print_the_workers_message(corrupt_models: Path) -> None:
    env = {"VGI_VISION_MODELS": str(corrupt_models)}
    query = "SELECT * FROM vision.classify('test/sql/data/coffee.png')"
    for args in (("sql", query), ("classify", str(DATA))):
        assert_one_clear_line(cli(*args, env=env), "could not start", "model.onnx is corrupt")
    assert_one_clear_line(cli("sql", "--data-root", "/no/such/folder", "SELECT 1"),
                          "--data-root /no/such/folder is not an existing folder")


def test_a_worker_that_dies_mid_call_is_named_with_its_exit() -> None:
    """A worker killed while a call waits on it is reported as such, with how it ended.

    The worker is stopped (SIGSTOP) before the call, so it is alive when the call writes its
    request, and killed only once the request sits in its pipe: the kill lands mid-call
    every time, whatever the machine's speed.
    """
    import fcntl
    import os
    import signal
    import struct
    import termios
    import threading
    import time

    import pyarrow as pa

    with Client() as client:
        transport = client.pool.members[0].transport
        pid = transport.pid  # type: ignore[attr-defined]
        request_pipe = transport._process.stdin  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGSTOP)
        failures: list[BaseException] = []

        def call() -> None:
            try:
                client.call("top_label", pa.array([None], pa.binary()))
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                failures.append(exc)

        caller = threading.Thread(target=call)
        caller.start()
        deadline = time.monotonic() + 30
        while struct.unpack("i", fcntl.ioctl(request_pipe, termios.FIONREAD, b"\0" * 4))[0] == 0:
            assert time.monotonic() < deadline, "the call never wrote its request"
            time.sleep(0.01)
        os.kill(pid, signal.SIGKILL)
        caller.join(30)
        assert len(failures) == 1 and isinstance(failures[0], ConnectionError)
        assert re.search(rf"worker \(pid {pid}\) exited \(killed by SIGKILL\) during the call",
                         str(failures[0]))
        assert client.call("top_label", pa.array([None], pa.binary())).to_pylist() == [None]


def test_a_worker_that_died_between_calls_is_replaced_without_an_error() -> None:
    """Nothing was in flight when it died, so the next call just starts a fresh worker."""
    import os
    import signal

    import pyarrow as pa

    with Client() as client:
        transport = client.pool.members[0].transport
        pid = transport.pid  # type: ignore[attr-defined]
        os.kill(pid, signal.SIGKILL)
        transport._process.wait(30)  # type: ignore[attr-defined]
        assert client.call("top_label", pa.array([None], pa.binary())).to_pylist() == [None]
        assert transport.pid != pid  # type: ignore[attr-defined]


def test_unix_socket_taken_by_a_live_worker(tmp_path: Path) -> None:
    from vgi_vision.testing.launch import start_unix

    path = tmp_path / "w.sock"
    worker = start_unix(path)
    try:
        assert_one_clear_line(cli("serve", "--unix", str(path)),
                              f"cannot serve on unix://{path}", "another worker is serving")
    finally:
        worker.stop()


def test_http_port_in_use_and_weak_tokens(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert_one_clear_line(cli("serve", "--http", "--port", str(port)),
                              f"cannot serve on http://127.0.0.1:{port}")
    short = tmp_path / "short"
    short.write_text("abc123\n")
    blank = tmp_path / "blank"
    blank.write_text("  \n")
    assert_one_clear_line(cli("serve", "--http", "--host", "0.0.0.0", "--auth-token-file",
                              str(short)), "bearer token has 6 characters, fewer than 16")
    assert_one_clear_line(cli("serve", "--http", "--host", "0.0.0.0", "--auth-token-file",
                              str(blank)), "without a bearer token")
    assert_one_clear_line(cli("serve", "--http", env={"VGI_VISION_TOKEN_KEY": "short"}),
                          "continuation token key has 5 bytes, fewer than 16")
    assert_one_clear_line(cli("serve", "--unix", str(tmp_path / "s.sock"), "--data-root",
                              str(tmp_path / "missing")), "is not an existing folder")
