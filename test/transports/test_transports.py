"""One registry, identical behaviour over subprocess, unix socket and HTTP (real model)."""

from __future__ import annotations

import sys
import threading

import pyarrow as pa
import pytest
from conftest import EXPECTED_TOP5

from vgi_vision.client.client import Client
from vgi_vision.errors import WorkerError
from vgi_vision.protocol import ErrorKind, decode, encode
from vgi_vision.worker.vision.model import load_classifier


def classify_rows(client: Client, images: list, top_k: int = 5) -> dict[int, list[dict]]:
    table = client.table("classify", pa.array(images, pa.binary()),
                         pa.array([top_k] * len(images), pa.int32()))
    rows: dict[int, list[dict]] = {}
    for row in table.to_pylist():
        rows.setdefault(row["input_row"], []).append(row)
    return rows


def test_image_classes_dense(client: Client) -> None:
    table = client.table("image_classes")
    assert table.num_rows == 1000
    assert sorted(table.column("idx").to_pylist()) == list(range(1000))
    info = load_classifier().info
    assert table.column("label").to_pylist() == list(info.labels)
    assert table.column("wnid").to_pylist() == list(info.wnids)


def test_classify_fixtures(client: Client, fixture_bytes: dict[str, bytes]) -> None:
    names = list(EXPECTED_TOP5)
    rows = classify_rows(client, [fixture_bytes[n] for n in names])
    for i, name in enumerate(names):
        got = rows[i]
        assert [r["rank"] for r in got] == [1, 2, 3, 4, 5]
        confidences = [r["confidence"] for r in got]
        assert confidences == sorted(confidences, reverse=True)
        assert all(0.0 <= c <= 1.0 for c in confidences)
        assert EXPECTED_TOP5[name] & {r["label"] for r in got}, (name, got)


def test_many_images_in_one_call_stay_aligned(client: Client,
                                              fixture_bytes: dict[str, bytes]) -> None:
    """A chunk larger than one tick and one client slice, with hostile rows mixed in."""
    good = list(fixture_bytes.values())
    hostile = [None, b"", b"not an image", good[0][: len(good[0]) // 3]]
    images = [(good + hostile)[i % (len(good) + len(hostile))] for i in range(150)]
    rows = classify_rows(client, images, top_k=3)
    expected = load_classifier().classify(images, top_k=3)
    for i, result in enumerate(expected):
        if result is None:
            assert i not in rows
        else:
            assert [r["idx"] for r in rows[i]] == result.indices.tolist()


def test_top_label_scalar(client: Client, fixture_bytes: dict[str, bytes]) -> None:
    images = [fixture_bytes["coffee.png"], None, b"garbage", fixture_bytes["cat.png"]]
    labels = client.call("top_label", pa.array(images, pa.binary())).to_pylist()
    assert labels[0] == "espresso"
    assert labels[1] is None and labels[2] is None
    assert labels[3] in EXPECTED_TOP5["cat.png"]


def test_path_overload_matches_blob(client: Client, fixture_bytes: dict[str, bytes]) -> None:
    by_path = client.table("classify", pa.array(["test/sql/data/coffee.png"]))
    by_blob = client.table("classify", pa.array([fixture_bytes["coffee.png"]], pa.binary()))
    assert by_path.column("idx").to_pylist() == by_blob.column("idx").to_pylist()
    with pytest.raises(WorkerError, match="'test/sql/data/no-such-file.png' does not exist"):
        client.table("classify", pa.array(["test/sql/data/no-such-file.png"]))
    missing = client.table("classify", pa.array(["test/sql/data/no-such-file.png"]),
                           pa.array([5], pa.int32()), pa.array(["null"]))
    assert missing.num_rows == 0  # asked for: a missing file is then an unreadable image


@pytest.mark.parametrize("columns, kind, text", [
    ([pa.array([b"x"], pa.binary()), pa.array([0], pa.int32())], ErrorKind.INVALID_ARGUMENT,
     "top_k"),
    ([pa.array([b"x"], pa.binary()), pa.array([1001], pa.int32())], ErrorKind.INVALID_ARGUMENT,
     "between 1 and 1000"),
    ([pa.array([1.5])], ErrorKind.NO_MATCHING_OVERLOAD, "classify(image BLOB"),
    ([], ErrorKind.NO_MATCHING_OVERLOAD, "no arguments"),
])
def test_errors_are_structured_and_the_worker_survives(client: Client, columns, kind,
                                                       text) -> None:
    with pytest.raises(WorkerError) as info:
        client.table("classify", *columns)
    assert info.value.kind is kind
    assert text in str(info.value)
    assert client.table("image_classes").num_rows == 1000


def test_protocol_errors(client: Client) -> None:
    for raw in [b"", b"garbage", encode({"op": "launch"}), encode({"op": "call",
                                                                   "function": "nope"})]:
        reply = decode(client.transport.roundtrip(raw))
        assert reply.header["ok"] is False
        assert reply.header["error"]["kind"] in {"bad_request", "unknown_function"}
    assert client.call("top_label", pa.array([None], pa.binary())).to_pylist() == [None]


def test_wrong_op_for_function_kind(client: Client) -> None:
    reply = decode(client.transport.roundtrip(encode({"op": "call",
                                                      "function": "image_classes"})))
    assert reply.header["error"]["kind"] == "bad_request"
    assert "table function" in reply.header["error"]["message"]


@pytest.mark.parametrize("transport", ["unix", "http"])
def test_concurrent_clients_get_their_own_results(transport: str, worker_pool,
                                                  fixture_bytes: dict[str, bytes]) -> None:
    """8 clients at once, each with its own image order: no result reaches the wrong one."""
    location = worker_pool.get(transport).location
    names = list(EXPECTED_TOP5)
    failures: list[str] = []

    def run(worker_id: int) -> None:
        order = names[worker_id % 4:] + names[:worker_id % 4]
        with Client(location) as c:
            for _ in range(3):
                rows = classify_rows(c, [fixture_bytes[n] for n in order], top_k=5)
                for i, name in enumerate(order):
                    if not EXPECTED_TOP5[name] & {r["label"] for r in rows[i]}:
                        failures.append(f"client {worker_id}: {name} -> {rows[i]}")
                if c.table("image_classes").num_rows != 1000:
                    failures.append(f"client {worker_id}: image_classes short")

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=240)
    assert not any(t.is_alive() for t in threads)
    assert failures == []


NOISY_WORKER = """
import os, sys
from vgi_vision.cli import main
from vgi_vision.worker.functions.image_classes import ImageClasses
process = ImageClasses.process
def noisy(self, args, state, out):
    print("a stray print")            # Python-level stdout
    os.write(1, b"a native write\\n")  # file-descriptor-level stdout, as C libraries do
    process(self, args, state, out)
ImageClasses.process = noisy
sys.exit(main(["serve", "--log-level", "warning"]))
"""


def test_stdout_noise_in_a_subprocess_worker_cannot_corrupt_frames() -> None:
    with Client(command=[sys.executable, "-c", NOISY_WORKER]) as noisy:
        assert noisy.table("image_classes").num_rows == 1000


def test_one_client_shared_by_threads_resumes_every_scan(client: Client) -> None:
    """DuckDB calls UDFs from several threads on one client: each multi-request scan must
    find its state whichever pooled connection its continuation goes over."""
    failures: list[str] = []

    def scan() -> None:
        for _ in range(3):
            try:
                if client.table("image_classes").column("idx").to_pylist() != list(range(1000)):
                    failures.append("wrong rows")
            except Exception as exc:  # collected and asserted below
                failures.append(repr(exc))

    threads = [threading.Thread(target=scan) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)  # finished, not merely out of time
    assert failures == []
