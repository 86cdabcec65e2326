"""HTTP scans started with write-back on and never continued: their staged rows expire once
no continuation token can resume them (``--token-ttl``), at the worker's write-back
maintenance and at start-up recovery, while stored rows and scans within their lifetime are
untouched.

Real HTTP workers, real LanceDB, the real model; the token lifetime is set short so the test
waits seconds, not an hour.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import lancedb
import pyarrow as pa
import pytest
from test_lance import classify_args, distinct_photos

from vgi_vision.client.client import Client
from vgi_vision.testing.launch import RunningWorker, start_http
from vgi_vision.worker.lance.kinds import IMAGES, STAGED
from vgi_vision.worker.lance.writeback import DEFAULT_COMPACT_EVERY

pytestmark = pytest.mark.slow

TTL_SECONDS = 8
KEY = {"VGI_VISION_TOKEN_KEY": "6162616e646f6e65642d7363616e732d6b6579"}  # shared by restarts


def table_rows(db: Path, name: str, columns: list[str]) -> pa.Table:
    """``columns`` of table ``name``, read with a fresh connection (the worker's own)."""

    async def read() -> pa.Table:
        connection = await lancedb.connect_async(str(db))
        table = await connection.open_table(name)
        try:
            return await table.query().select(columns).to_arrow()
        finally:
            table.close()
            connection.close()

    return asyncio.run(read())


def staged_runs(db: Path) -> set[str]:
    return set(table_rows(db, STAGED, ["run_id"]).column("run_id").to_pylist())


def stored_images(db: Path) -> dict[str, str]:
    """image_key -> run_id of every stored image."""
    rows = table_rows(db, IMAGES, ["image_key", "run_id"])
    return dict(zip(rows.column("image_key").to_pylist(), rows.column("run_id").to_pylist(),
                    strict=True))


def first_page(client: Client, photos: list[bytes]) -> str:
    """Start a classify scan over ``photos`` (more than one page) and return its token."""
    header, _ = client.request({"op": "scan", "function": "classify", "token": None},
                               classify_args(photos))
    assert header["done"] is False and header["token"]
    return str(header["token"])


def wait_for(condition: Callable[[], bool], what: str, within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"still not {what} after {within:.0f} s"
        time.sleep(0.1)


def serve(tmp_path: Path, name: str, db: Path, *extra: str) -> RunningWorker:
    return start_http(tmp_path / f"{name}.port", "--lance", str(db), "--token-ttl",
                      str(TTL_SECONDS), *extra, env=KEY, log_file=tmp_path / f"{name}.log")


def test_maintenance_expires_abandoned_scans_and_keeps_live_ones(
        tmp_path: Path, fixture_bytes: dict[str, bytes]) -> None:
    db = tmp_path / "db"
    photos = distinct_photos(fixture_bytes, 40 * 3 + DEFAULT_COMPACT_EVERY)
    abandoned, live, singles = photos[:80], photos[80:120], photos[120:]
    worker = serve(tmp_path, "worker", db)
    try:
        with Client(worker.location) as client:
            client.call("top_label", pa.array(singles[:1], pa.binary()))  # commit 1
            stored_before = stored_images(db)
            for start in (0, 40):
                first_page(client, abandoned[start:start + 40])  # 32 of 40 staged, then left
            wait_for(lambda: len(staged_runs(db)) == 2, "staged (written behind the answer)")
            left = staged_runs(db)
            abandoned_at = time.monotonic()
            for image in singles[1:-1]:  # commits 2 .. 9: maintenance not due yet
                client.call("top_label", pa.array([image], pa.binary()))
            wait_for(lambda: time.monotonic() > abandoned_at + TTL_SECONDS + 1,
                     "past the token lifetime")
            assert staged_runs(db) == left  # commits alone expire nothing
            token = first_page(client, live)  # a scan within its lifetime
            wait_for(lambda: len(staged_runs(db)) == 3, "staged")
            live_run = staged_runs(db) - left
            client.call("top_label", pa.array(singles[-1:], pa.binary()))  # commit 10
            wait_for(lambda: not staged_runs(db) & left, "expired by maintenance")
            assert staged_runs(db) == live_run  # the live scan kept its staged rows
            header, batch = client.request({"op": "scan", "function": "classify",
                                            "token": token}, classify_args(live))
            assert header["done"] is True and batch is not None and batch.num_rows == 8 * 5
        stored = stored_images(db)
        assert {k: stored[k] for k in stored_before} == stored_before  # untouched
        assert len(stored) == len(singles) + len(live)  # nothing of the abandoned scans
        assert set(stored.values()).isdisjoint(left)
        assert staged_runs(db) == set()
    finally:
        worker.stop()


def test_restart_with_a_recovery_grace_expires_scans_past_their_lifetime(
        tmp_path: Path, fixture_bytes: dict[str, bytes]) -> None:
    """A grace longer than the token lifetime keeps a replica's runs being written, but not
    those no token can continue any more."""
    db = tmp_path / "db"
    photos = distinct_photos(fixture_bytes, 41)
    first = serve(tmp_path, "first", db)
    try:
        with Client(first.location) as client:
            client.call("top_label", pa.array(photos[40:], pa.binary()))
            stored_before = stored_images(db)
            first_page(client, photos[:40])
            wait_for(lambda: len(staged_runs(db)) == 1, "staged (written behind the answer)")
            abandoned_at = time.monotonic()
    finally:
        first.stop()
    assert len(staged_runs(db)) == 1  # a clean stop leaves the staged rows to recovery
    wait_for(lambda: time.monotonic() > abandoned_at + TTL_SECONDS + 1,
             "past the token lifetime")
    second = serve(tmp_path, "second", db, "--lance-recovery-grace", "600")
    try:
        assert staged_runs(db) == set()
        assert stored_images(db) == stored_before
    finally:
        second.stop()
