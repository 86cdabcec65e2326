"""The in-process transport: a dispatcher called directly, over the real wire format."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pytest
from conftest import EXPECTED_TOP5

import vgi_vision
from vgi_vision.client.client import Client
from vgi_vision.errors import TransportError, WorkerError
from vgi_vision.protocol import ErrorKind, decode, encode
from vgi_vision.transports.inprocess import InProcessTransport


def test_a_client_over_it_answers_like_any_worker(inprocess,
                                                  fixture_bytes: dict[str, bytes]) -> None:
    with Client(transport=inprocess()) as client:
        assert client.worker_info()["transport"] == "inprocess"
        assert {f["name"] for f in client.describe()} >= {"classify", "top_label"}
        labels = client.call("top_label", pa.array([fixture_bytes["coffee.png"], None],
                                                   pa.binary())).to_pylist()
        assert labels == ["espresso", None]
        by_path = client.table("classify", pa.array(["test/sql/data/cat.png"]))
        assert EXPECTED_TOP5["cat.png"] & set(by_path.column("label").to_pylist())


def test_scans_resume_from_live_state_in_this_process(inprocess) -> None:
    transport = inprocess()
    with Client(transport=transport) as client:
        before = client.requests
        assert client.table("image_classes").column("idx").to_pylist() == list(range(1000))
        assert client.requests - before > 1  # continued over several requests
        header, _ = client.request({"op": "scan", "function": "image_classes"},
                                   transport=transport)
        assert not header["done"] and header["token"] in transport.states._scans
        with pytest.raises(WorkerError) as info:
            client.request({"op": "scan", "function": "image_classes", "token": "forged"},
                           transport=transport)
        assert info.value.kind is ErrorKind.INVALID_TOKEN


def test_requests_are_bytes_on_the_wire(inprocess) -> None:
    """Nothing but encoded bytes crosses: malformed ones get the worker's structured error."""
    transport = inprocess()
    for raw in [b"", b"garbage", encode({"op": "launch"})]:
        reply = decode(transport.roundtrip(raw))
        assert reply.header["ok"] is False
        assert reply.header["error"]["kind"] == ErrorKind.BAD_REQUEST
    reply = decode(transport.roundtrip(bytearray(encode({"op": "describe"}))))
    assert reply.header["ok"] is True


def test_attach_takes_a_transport(inprocess) -> None:
    con = duckdb.connect()
    vgi_vision.attach(con, transport=inprocess())
    assert con.execute("SELECT vision.top_label('test/sql/data/coffee.png')").fetchone() == \
        ("espresso",)
    vgi_vision.detach(con)
    with pytest.raises(ValueError, match="transport= replaces location"):
        vgi_vision.attach(con, "http://127.0.0.1:1", transport=inprocess())


def test_a_started_worker_is_owned_and_closed_with_the_transport() -> None:
    transport = InProcessTransport.start(warm_up=False)
    assert transport.worker is not None
    assert decode(transport.roundtrip(encode({"op": "describe"}))).header["ok"]
    transport.close()
    assert transport.closed
    with pytest.raises(TransportError, match="closed"):
        transport.roundtrip(encode({"op": "describe"}))
    # the worker itself drained: a request reaching its dispatcher now is refused
    reply = decode(transport.dispatcher.handle(encode({"op": "describe"}), transport.states))
    assert reply.header["error"]["kind"] == ErrorKind.UNAVAILABLE


def test_a_borrowed_dispatcher_outlives_the_transport(inprocess) -> None:
    first = inprocess()
    first.close()
    second = inprocess()
    assert decode(second.roundtrip(encode({"op": "describe"}))).header["ok"]
