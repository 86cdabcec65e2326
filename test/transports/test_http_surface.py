"""What reaches an HTTP worker besides well-behaved clients: web pages through a browser (DNS
rebinding), bodies that stall, and clients of a worker that has stopped.

Real worker processes over real sockets; waits are on conditions, with generous bounds.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import httpx
import pytest
from conftest import DATA

import vgi_vision
from vgi_vision.client.client import Client
from vgi_vision.errors import TransportError
from vgi_vision.protocol import decode, encode
from vgi_vision.testing.launch import RunningWorker, running_worker, start_http

TOKEN = "s3cret-bearer-token-for-tests"
DESCRIBE = encode({"op": "describe"})
WITHIN = 60.0  # seconds: an upper bound for what should take one


def port_of(worker: RunningWorker) -> int:
    assert worker.location is not None
    return int(worker.location.rsplit(":", 1)[1])


# --- The loopback Host rule -----------------------------------------------------------------

@pytest.fixture(scope="module")
def open_loopback(tmp_path_factory: pytest.TempPathFactory):
    """A worker on 127.0.0.1 without a bearer token: the default ``serve --http``."""
    with running_worker("http", workdir=tmp_path_factory.mktemp("open")) as worker:
        yield worker


@pytest.mark.parametrize("host", ["evil.example", "evil.example:80", "localhost:1@evil.com",
                                  "localhost.evil.example", "127.0.0.1.nip.io", ""])
@pytest.mark.parametrize("path", ["/v1/rpc", "/healthz"])
def test_a_loopback_worker_without_a_token_refuses_other_host_names(
        open_loopback: RunningWorker, host: str, path: str) -> None:
    """A page that rebinds its own name to 127.0.0.1 is still sent with its name as Host."""
    rpc = path == "/v1/rpc"
    reply = httpx.request("POST" if rpc else "GET", f"{open_loopback.location}{path}",
                          content=DESCRIBE if rpc else None, headers={"Host": host},
                          timeout=WITHIN)
    assert reply.status_code == 421
    error = decode(reply.content).header["error"]
    assert error["kind"] == "bad_request" and "answers only to localhost" in error["message"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::1]", "LocalHost:8765",
                                  "127.0.0.1:1"])
def test_a_loopback_worker_serves_loopback_host_names(open_loopback: RunningWorker,
                                                      host: str) -> None:
    reply = httpx.post(f"{open_loopback.location}/v1/rpc", content=DESCRIBE,
                       headers={"Host": host}, timeout=WITHIN)
    assert reply.status_code == 200 and decode(reply.content).header["ok"]


def test_clients_of_a_loopback_worker_still_work(open_loopback: RunningWorker) -> None:
    assert open_loopback.location is not None
    with Client(open_loopback.location) as client:
        assert client.table("image_classes").num_rows == 1000
    localhost = open_loopback.location.replace("127.0.0.1", "localhost")
    con = duckdb.connect()
    vgi_vision.attach(con, localhost)
    try:
        assert con.execute("SELECT vision.top_label(?)",
                           [(DATA / "coffee.png").read_bytes()]).fetchone() == ("espresso",)
    finally:
        vgi_vision.detach(con)


def test_a_token_or_a_public_bind_leaves_the_host_to_the_proxy(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """With a bearer token a rebinding page has nothing to send, and a worker bound beyond
    loopback sits behind a proxy or a Service that names it however it likes: both serve any
    Host (the nginx setup of docs/deploy-nginx.md passes its upstream name)."""
    monkeypatch.delenv("VGI_VISION_AUTH_TOKEN", raising=False)
    with running_worker("http", env={"VGI_VISION_AUTH_TOKEN": TOKEN},
                        workdir=tmp_path / "token") as tokened:
        reply = httpx.post(f"{tokened.location}/v1/rpc", content=DESCRIBE, timeout=WITHIN,
                           headers={"Host": "vgi_vision", "Authorization": f"Bearer {TOKEN}"})
        assert reply.status_code == 200
    public = start_http(tmp_path / "public.port", "--host", "0.0.0.0", "--insecure-no-auth",
                        log_file=tmp_path / "public.log")
    try:
        reply = httpx.post(f"{public.location}/v1/rpc", content=DESCRIBE, timeout=WITHIN,
                           headers={"Host": "vision.default.svc.cluster.local"})
        assert reply.status_code == 200
    finally:
        public.stop()


# --- A body that stalls ---------------------------------------------------------------------

def closed_by_peer(sock: socket.socket, within: float) -> bool:
    """True once the other end closes ``sock`` (anything it sends first is read and skipped);
    False if it is still open after ``within`` seconds."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except OSError:
            return True  # reset: closed too
    return False


def test_a_body_that_stalls_is_cut_off_after_the_idle_timeout(tmp_path: Path) -> None:
    """Headers complete, then the body stops: the worker closes the connection after
    ``--idle-timeout`` instead of holding its one request slot (``--max-connections 1``)."""
    with running_worker("http", "--idle-timeout", "2", "--max-connections", "1",
                        workdir=tmp_path) as worker, \
            socket.create_connection(("127.0.0.1", port_of(worker)), timeout=WITHIN) as stalled:
        stalled.sendall(b"POST /v1/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                        b"Content-Length: 100000\r\n\r\n" + DESCRIBE[:10])
        assert closed_by_peer(stalled, within=WITHIN)
        with Client(worker.location, timeout=WITHIN) as client:  # the slot is free again
            assert client.table("image_classes").num_rows == 1000


# --- A worker that has stopped ------------------------------------------------------------------

@pytest.mark.parametrize("transport", ["unix", "http"])
def test_a_stopped_worker_is_reported_alike_on_every_transport(tmp_path: Path,
                                                               transport: str) -> None:
    """After SIGTERM and exit, a query says it cannot connect to the worker at its address,
    over HTTP as over a unix socket (not a bare errno from the HTTP library)."""
    with running_worker(transport, workdir=tmp_path) as worker:
        assert worker.location is not None and worker.process is not None
        con = duckdb.connect()
        vgi_vision.attach(con, worker.location)
        try:
            assert con.execute("SELECT count(*) FROM vision.image_classes()").fetchone() == (1000,)
            worker.process.send_signal(signal.SIGTERM)
            assert worker.process.wait(timeout=WITHIN) == 0
            with pytest.raises(duckdb.Error) as info:
                con.execute("SELECT vision.top_label(?)", [(DATA / "coffee.png").read_bytes()])
            assert f"cannot connect to the worker at {worker.location}: " in str(info.value)
            with Client(worker.location) as client, pytest.raises(TransportError) as direct:
                client.request({"op": "describe"})
            assert str(direct.value).startswith(f"cannot connect to the worker at "
                                                f"{worker.location}: ")
        finally:
            vgi_vision.detach(con)


# --- Limits that make no sense --------------------------------------------------------------

@pytest.mark.parametrize("flag", ["--max-connections", "--threads", "--max-request-mb",
                                  "--max-rows-per-call", "--lance-max-in-flight",
                                  "--idle-timeout"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_serve_refuses_limits_below_one(flag: str, value: str) -> None:
    """Zero connections would leave every request waiting forever, zero threads or rows
    refuse everything: a usage error at start-up, before any model is loaded."""
    result = subprocess.run([sys.executable, "-m", "vgi_vision", "serve", "--http",
                             "--port", "0", flag, value],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2, result.stderr
    assert f"argument {flag}: must be greater than 0, got {value}" in result.stderr
