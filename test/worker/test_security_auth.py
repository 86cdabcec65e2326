"""What makes a worker safe to expose (1/3): HTTP authentication and binding publicly.

Every test runs real worker processes and talks to them over real sockets; "no work was done"
is proven from the worker's own log, which has one line per dispatched request.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import httpx
import pyarrow as pa
import pytest
from conftest import DATA
from security_probes import AUTH_ENV, DESCRIBE, TOKEN, dispatched

import vgi_vision
from vgi_vision.client.client import Client
from vgi_vision.errors import WorkerError
from vgi_vision.protocol import ErrorKind, decode, encode
from vgi_vision.protocol.bearer import bearer_matches
from vgi_vision.testing.launch import RunningWorker, running_worker, start_http
from vgi_vision.transports.http import HttpTransport
from vgi_vision.worker.dispatcher import Dispatcher, SealedStates
from vgi_vision.worker.registry import Registry
from vgi_vision.worker.serve.http import make_app
from vgi_vision.worker.tokens import TokenSealer

# --- HTTP authentication --------------------------------------------------------------------

@pytest.fixture(scope="module")
def authed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningWorker, Path]]:
    folder = tmp_path_factory.mktemp("authed")
    with running_worker("http", env={AUTH_ENV: TOKEN}, workdir=folder) as worker:
        yield worker, folder


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-token", f"Bearer {TOKEN}x",
                                           TOKEN, f"Basic {TOKEN}", "Bearer"])
def test_missing_or_wrong_token_is_refused_before_any_work(authed, authorization) -> None:
    worker, folder = authed
    headers = {"Authorization": authorization} if authorization else {}
    before = dispatched(folder)
    # Garbage would be a 400 and a real call would run the model, were either dispatched.
    for body in [b"garbage", DESCRIBE,
                 encode({"op": "scan", "function": "classify", "token": None},
                        pa.record_batch({"image": pa.array([(DATA / "coffee.png")
                                                            .read_bytes()])}))]:
        reply = httpx.post(f"{worker.location}/v1/rpc", content=body, headers=headers)
        assert reply.status_code == 401
        error = decode(reply.content).header["error"]
        assert error == {"kind": "unauthorized", "message": "missing or wrong bearer token"}
    assert dispatched(folder) == before
    httpx.post(f"{worker.location}/v1/rpc", content=DESCRIBE,
               headers={"Authorization": f"Bearer {TOKEN}"}).raise_for_status()
    assert dispatched(folder) == before + 1  # the count does see dispatched requests
    httpx.post(f"{worker.location}/v1/rpc", content=DESCRIBE,  # the scheme is case-insensitive
               headers={"Authorization": f"bearer {TOKEN}"}).raise_for_status()


def test_client_and_attach_need_the_token(authed) -> None:
    worker, _ = authed
    with Client(worker.location) as anonymous, pytest.raises(WorkerError) as info:
        anonymous.describe()
    assert info.value.kind is ErrorKind.UNAUTHORIZED
    with Client(worker.location, auth_token=TOKEN) as client:
        assert client.table("image_classes").num_rows == 1000
    con = duckdb.connect()
    with pytest.raises(WorkerError, match="bearer token"):
        vgi_vision.attach(con, worker.location)
    vgi_vision.attach(con, worker.location, auth_token=TOKEN)
    try:
        blob = (DATA / "coffee.png").read_bytes()
        assert con.execute("SELECT label FROM vision.classify(?) WHERE rank = 1",
                           [blob]).fetchall() == [("espresso",)]
        assert con.execute("SELECT count(*) FROM vision.image_classes()").fetchone() == (1000,)
    finally:
        vgi_vision.detach(con)


#: Lossily encoded to Latin-1, each of these letters became "?": a header of question marks
#: of the right length was let in.
CYRILLIC_TOKEN = "секретный-ключ-доступа-2026"


def as_received(text: str) -> str:
    """A header value as the HTTP servers hand it over: its UTF-8 bytes decoded as Latin-1."""
    return text.encode().decode("latin-1")


def test_bearer_tokens_are_compared_as_exact_bytes() -> None:
    assert bearer_matches(f"Bearer {as_received(TOKEN)}", TOKEN)
    assert not bearer_matches(f"Bearer {TOKEN[:-1]}", TOKEN)
    question_marks = "".join("?" if ord(c) > 255 else c for c in CYRILLIC_TOKEN)
    assert not bearer_matches(f"Bearer {question_marks}", CYRILLIC_TOKEN)
    assert bearer_matches(f"Bearer {as_received(CYRILLIC_TOKEN)}", CYRILLIC_TOKEN)


@pytest.mark.parametrize("command", [["serve", "--http", "--port", "0"],
                                     ["browse", "--lance", "no-such-store", "--port", "0"]])
def test_a_token_outside_the_allowed_characters_is_refused_at_start(command: list[str]
                                                                    ) -> None:
    result = subprocess.run([sys.executable, "-m", "vgi_vision", *command],
                            env={**os.environ, AUTH_ENV: CYRILLIC_TOKEN},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "a bearer token may hold only ASCII letters" in result.stderr
    states = SealedStates(TokenSealer())
    for make in (lambda: make_app(Dispatcher(Registry()), states, CYRILLIC_TOKEN),
                 lambda: HttpTransport("http://127.0.0.1:1", auth_token=CYRILLIC_TOKEN)):
        with pytest.raises(ValueError, match="may hold only ASCII"):
            make()


def env_without_token() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != AUTH_ENV}


def test_public_bind_without_token_is_refused() -> None:
    result = subprocess.run([sys.executable, "-m", "vgi_vision", "serve", "--http",
                             "--host", "0.0.0.0", "--port", "0"],
                            env=env_without_token(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "refusing to serve HTTP on 0.0.0.0 without a bearer token" in result.stderr
    assert AUTH_ENV in result.stderr and "--insecure-no-auth" in result.stderr


@pytest.mark.parametrize("how", ["insecure-no-auth", "auth-token-file"])
def test_public_bind_starts_when_told_how_to_authenticate(tmp_path: Path, how: str,
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    flag = ["--insecure-no-auth"] if how == "insecure-no-auth" else \
        ["--auth-token-file", str(token_file)]
    monkeypatch.delenv(AUTH_ENV, raising=False)
    worker = start_http(tmp_path / "port", "--host", "0.0.0.0", *flag,
                        log_file=tmp_path / "worker.log")
    try:
        token = None if how == "insecure-no-auth" else TOKEN
        with Client(worker.location, auth_token=token) as client:
            assert client.table("image_classes").num_rows == 1000
        anonymous = httpx.post(f"{worker.location}/v1/rpc", content=DESCRIBE)
        assert anonymous.status_code == (200 if token is None else 401)
    finally:
        worker.stop()
    assert worker.process.returncode is not None
