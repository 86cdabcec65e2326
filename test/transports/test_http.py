"""The stateless HTTP transport: continuation tokens, replicas sharing a key, response size."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from vgi_vision.client.client import Client
from vgi_vision.errors import WorkerError
from vgi_vision.protocol import argument_rows, decode, encode
from vgi_vision.testing.launch import RunningWorker, running_worker

KEY = "6b6579206f66207468652074657374207265706c69636173"  # hex, 24 bytes


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunningWorker]]:
    env = {"VGI_VISION_TOKEN_KEY": KEY}
    base = tmp_path_factory.mktemp("replicas")
    with running_worker("http", env=env, workdir=base / "a") as a, \
            running_worker("http", env=env, workdir=base / "b") as b:
        yield [a, b]


def first_page(location: str, function: str = "image_classes") -> tuple[dict, bytes]:
    """The first response of a scan, as raw header and raw body."""
    request = encode({"op": "scan", "function": function, "token": None},
                     argument_rows([], 1))
    body = httpx.post(f"{location}/v1/rpc", content=request).content
    return decode(body).header, body


def resume(location: str, token: str) -> httpx.Response:
    request = encode({"op": "scan", "function": "image_classes", "token": token},
                     argument_rows([], 1))
    return httpx.post(f"{location}/v1/rpc", content=request)


def test_token_from_one_replica_resumes_on_the_other(replicas: list[RunningWorker]) -> None:
    a, b = (r.location for r in replicas)
    header, _ = first_page(a)
    assert header["done"] is False
    reply = resume(b, header["token"])
    assert reply.status_code == 200
    message = decode(reply.content)
    assert message.batch.column("idx").to_pylist()[0] == 64  # continues, not restarts


# Token layout: version (1 byte) | expiry (8) | call digest (32) | state | HMAC tag (32).
FLIPPED_BYTE = {"digest": 12, "state": 9 + 32 + 4, "mac": -1}


@pytest.mark.parametrize("damage", ["digest", "state", "mac", "truncate", "garbage",
                                    "empty-ish"])
def test_damaged_tokens_are_rejected_before_deserializing(replicas: list[RunningWorker],
                                                          damage: str) -> None:
    """A flipped bit anywhere is refused by the HMAC check: in the tag alone (the call and
    the state untouched, so nothing but the tag check can refuse it) and in the state (which
    must not reach the deserializer)."""
    location = replicas[0].location
    header, _ = first_page(location)
    raw = bytearray(base64.urlsafe_b64decode(header["token"]))
    if damage in FLIPPED_BYTE:
        raw[FLIPPED_BYTE[damage]] ^= 0x01
        token = base64.urlsafe_b64encode(bytes(raw)).decode()
    elif damage == "truncate":
        token = base64.urlsafe_b64encode(bytes(raw[:-5])).decode()
    elif damage == "garbage":
        token = "!!not base64!!"
    else:
        token = "AA=="
    reply = resume(location, token)
    assert reply.status_code == 400
    error = decode(reply.content).header["error"]
    assert error["kind"] == "invalid_token"
    if damage in FLIPPED_BYTE:
        assert "not issued by a worker sharing this key" in error["message"]
    assert resume(location, header["token"]).status_code == 200  # the genuine one still works
    assert Client(location).table("image_classes").num_rows == 1000


def test_foreign_worker_token_is_rejected(replicas: list[RunningWorker],
                                          tmp_path: Path) -> None:
    header, _ = first_page(replicas[0].location)
    with running_worker("http", workdir=tmp_path) as other:  # random key of its own
        reply = resume(other.location, header["token"])
        assert reply.status_code == 400
        assert "key" in decode(reply.content).header["error"]["message"]


def test_token_is_bound_to_its_call(replicas: list[RunningWorker],
                                    fixture_bytes: dict[str, bytes]) -> None:
    location = replicas[0].location
    header, _ = first_page(location)
    other_call = encode({"op": "scan", "function": "image_classes", "token": header["token"]},
                        argument_rows([], 2))
    reply = httpx.post(f"{location}/v1/rpc", content=other_call)
    assert reply.status_code == 400
    assert "different call" in decode(reply.content).header["error"]["message"]


def test_image_classes_bytes_stay_linear(replicas: list[RunningWorker]) -> None:
    """All responses of a full scan < 3x the result as one Arrow IPC stream."""
    location = replicas[0].location
    total, token, rows = 0, None, 0
    with httpx.Client() as http:
        while True:
            request = encode({"op": "scan", "function": "image_classes", "token": token},
                             argument_rows([], 1))
            body = http.post(f"{location}/v1/rpc", content=request).content
            total += len(body)
            message = decode(body)
            rows += message.batch.num_rows if message.batch is not None else 0
            if message.header["done"]:
                break
            token = message.header["token"]
    table = Client(location).table("image_classes").drop_columns(["input_row"])
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    one_stream = len(sink.getvalue())
    assert rows == 1000
    assert total < 3 * one_stream, (total, one_stream)


def test_unknown_path_and_method(replicas: list[RunningWorker]) -> None:
    location = replicas[0].location
    assert httpx.get(f"{location}/healthz").text == "ok"
    assert httpx.post(f"{location}/nope", content=b"").status_code == 404
    assert httpx.get(f"{location}/v1/rpc").status_code == 405


def test_worker_error_surfaces_over_http(replicas: list[RunningWorker]) -> None:
    with Client(replicas[1].location) as client:
        with pytest.raises(WorkerError, match="between 1 and 1000"):
            client.table("classify", pa.array([b"x"], pa.binary()), pa.array([0], pa.int32()))
