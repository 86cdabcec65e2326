"""One query over many workers: identical results, and faults a pool survives.

Real workers (unix and HTTP replicas, private subprocess pools), the real model, real DuckDB.
A worker is killed only once it is provably busy with the query: it holds an outstanding
request of the pool and has burnt CPU time since the query started.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest
from conftest import DATA, REPO

import vgi_vision
from vgi_vision.client.client import Client
from vgi_vision.client.fanout import Member
from vgi_vision.testing.launch import RunningWorker, start_http, start_unix

pytestmark = pytest.mark.slow

PHOTOS = sorted(p.name for p in DATA.iterdir() if p.is_file())


def hostile_images() -> list[bytes | None]:
    coffee = (DATA / "coffee.png").read_bytes()
    return [None, b"", b"definitely not an image", b"\x89PNG\r\n\x1a\n", coffee[:2000],
            b"\xff\xd8\xff" + os.urandom(5000)]


def photo_table(rows: int) -> pa.Table:
    """``rows`` rows cycling through the fixture photos and hostile images, with their paths."""
    images: list[bytes | None] = [(DATA / name).read_bytes() for name in PHOTOS]
    images += hostile_images()
    paths = [f"test/sql/data/{name}" for name in PHOTOS] + ["test/sql/data/missing.png",
                                                              None]
    return pa.table({"id": pa.array(range(rows), pa.int32()),
                     "image": pa.array([images[i % len(images)] for i in range(rows)],
                                       pa.binary()),
                     "path": pa.array([paths[i % len(paths)] for i in range(rows)])})


QUERIES = {
    "top_label": "SELECT id, vision.top_label(image) FROM photos ORDER BY id",
    "top_label_path": "SELECT id, vision.top_label(path, missing := 'null') FROM photos "
                      "ORDER BY id",
    # no ORDER BY: the lateral join's own order (input rows, then rank) must survive fan-out
    "classify": "SELECT p.id, c.* FROM photos p, vision.classify(p.image, top_k := 3) c",
    "classify_path": "SELECT p.id, c.rank, c.label FROM photos p, "
                     "vision.classify(p.path, missing := 'null') c",
    "image_classes": "SELECT * FROM vision.image_classes()",
}


def run_queries(con: duckdb.DuckDBPyConnection) -> dict[str, list[tuple]]:
    return {name: con.execute(sql).fetchall() for name, sql in QUERIES.items()}


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[RunningWorker]]:
    """Two unix and two HTTP workers, reading paths under the repository."""
    folder = tmp_path_factory.mktemp("replicas")
    flags = ["--data-root", str(REPO)]
    with ExitStack() as stack:
        started = []
        for i in range(2):
            for start, name in ((start_unix, f"w{i}.sock"), (start_http, f"w{i}.port")):
                worker = start(folder / name, *flags, log_file=folder / f"{name}.log")
                stack.callback(worker.stop)
                started.append(worker)
        yield started


def connection_with(location, table: pa.Table, **options
                    ) -> tuple[duckdb.DuckDBPyConnection, Client]:
    """A connection with ``table`` as ``photos`` and workers attached; and their client."""
    con = duckdb.connect()
    con.register("photo_rows", table)
    con.execute("CREATE TABLE photos AS SELECT * FROM photo_rows")
    con.unregister("photo_rows")
    return con, vgi_vision.attach(con, location, **options).client


@pytest.fixture(scope="module")
def single_worker_results(replicas: list[RunningWorker]) -> dict[str, list[tuple]]:
    con, _ = connection_with(replicas[0].location, photo_table(150), concurrency=1)
    try:
        return run_queries(con)
    finally:
        vgi_vision.detach(con)


@pytest.mark.parametrize("count", [1, 2, 4])
def test_results_identical_to_a_single_worker(count: int, replicas: list[RunningWorker],
                                              single_worker_results: dict[str, list[tuple]]
                                              ) -> None:
    """1, 2 and 4 workers (unix and HTTP mixed in one list), row for row, hostile rows too."""
    locations = [w.location for w in replicas[:count]]
    con, _ = connection_with(locations, photo_table(150))
    try:
        results = run_queries(con)
    finally:
        vgi_vision.detach(con)
    for name, rows in single_worker_results.items():
        assert results[name] == rows, name
    cycle = len(PHOTOS) + len(hostile_images())
    for row, label in single_worker_results["top_label"]:
        assert (label is None) == (row % cycle >= len(PHOTOS)), row


def test_requests_spread_over_the_workers(replicas: list[RunningWorker]) -> None:
    """A two-worker query sends sub-batches to both, several in flight."""
    with Client([w.location for w in replicas[:2]]) as client:
        seen: list[str] = []
        for member in client.pool.members:
            member.transport = Recording(member, seen)
        client.call("top_label", pa.array([(DATA / "coffee.png").read_bytes()] * 64))
    assert set(seen) == {replicas[0].location, replicas[1].location}


class Recording:
    """A transport that notes which member each request went to."""

    def __init__(self, member: Member, seen: list[str]) -> None:
        self.inner, self.name, self.seen = member.transport, member.name, seen

    def roundtrip(self, request: bytes) -> bytes:
        self.seen.append(self.name)
        return self.inner.roundtrip(request)

    def close(self) -> None:
        self.inner.close()


# --- faults -------------------------------------------------------------------------------

def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def big_table(rows: int) -> pa.Table:
    photos = [(DATA / name).read_bytes() for name in PHOTOS]
    return pa.table({"id": pa.array(range(rows), pa.int32()),
                     "image": pa.array([photos[i % len(photos)] for i in range(rows)],
                                       pa.binary())})


def expected_labels(client: Client, rows: int) -> list[tuple[int, str]]:
    alone = [client.call("top_label", pa.array([(DATA / n).read_bytes()], pa.binary()))[0]
             .as_py() for n in PHOTOS]
    return [(i, alone[i % len(PHOTOS)]) for i in range(rows)]


def interrupted_query(con: duckdb.DuckDBPyConnection, sql: str, busy: list[Member],
                      pid_of: Callable[[Member], int], interrupt: Callable[[], object]
                      ) -> dict[str, object]:
    """Runs ``sql`` in a thread, calls ``interrupt`` once the ``busy`` members work on it, and
    returns how the query ended: its ``rows`` or its ``error``."""
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["rows"] = con.cursor().execute(sql).fetchall()
        except duckdb.Error as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    wait_until_busy(busy, pid_of)
    interrupt()
    thread.join(timeout=600)
    assert not thread.is_alive()
    return outcome


def wait_until_busy(members: list[Member], pid_of: Callable[[Member], int],
                    timeout: float = 120) -> None:
    """Until every member holds a request of the query and its process burnt CPU on it."""
    baseline = {id(m): cpu_seconds(pid_of(m)) for m in members}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(m.outstanding > 0 and cpu_seconds(pid_of(m)) > baseline[id(m)] + 0.3
               for m in members):
            return
        time.sleep(0.01)
    raise AssertionError("the workers never became busy with the query")


def private_pid(member: Member) -> int:
    pid = member.transport.pid  # type: ignore[attr-defined]
    assert pid is not None
    return pid


ROWS = 800
SQL = "SELECT id, vision.top_label(image) FROM photos ORDER BY id"


def test_kill_one_of_two_private_workers_mid_query() -> None:
    con, client = connection_with(None, big_table(ROWS), workers=2)
    try:
        expected = expected_labels(client, ROWS)
        victim = client.pool.members[0]
        outcome = interrupted_query(con, SQL, [victim], private_pid,
                                    lambda: os.kill(private_pid(victim), signal.SIGKILL))
        assert outcome.get("rows") == expected, outcome.get("error")
        # the dead worker is started again for the next query
        assert con.execute(SQL).fetchall() == expected
    finally:
        vgi_vision.detach(con)


def test_kill_both_private_workers_names_both_then_recovers() -> None:
    con, client = connection_with(None, big_table(ROWS), workers=2)
    try:
        expected = expected_labels(client, ROWS)
        pids: list[int] = []

        def kill_both() -> None:
            pids.extend(private_pid(m) for m in client.pool.members)
            for pid in pids:
                os.kill(pid, signal.SIGKILL)

        outcome = interrupted_query(con, SQL, client.pool.members, private_pid, kill_both)
        message = str(outcome.get("error"))
        assert "no worker could serve" in message, outcome
        for name, pid in zip(("private worker 1", "private worker 2"), pids, strict=True):
            assert re.search(rf"{name}: the vgi-vision worker \(pid {pid}\) exited \(killed "
                             rf"by SIGKILL\)", message), message
        assert con.execute(SQL).fetchall() == expected
    finally:
        vgi_vision.detach(con)


def test_kill_one_of_two_remote_workers_mid_query(tmp_path: Path) -> None:
    unix = start_unix(tmp_path / "w.sock", log_file=tmp_path / "unix.log")
    http = start_http(tmp_path / "w.port", log_file=tmp_path / "http.log")
    con, client = connection_with([unix.location, http.location], big_table(ROWS))
    try:
        expected = expected_labels(client, ROWS)
        victim = client.pool.members[0]
        assert unix.process is not None
        pid = unix.process.pid
        outcome = interrupted_query(con, SQL, [victim], lambda _: pid,
                                    lambda: os.kill(pid, signal.SIGKILL))
        assert outcome.get("rows") == expected, outcome.get("error")
        assert con.execute(SQL).fetchall() == expected  # the dead one refuses: failover
        http.stop()
        with pytest.raises(duckdb.Error, match="no worker could serve the call: ") as failure:
            con.execute(SQL).fetchall()
        # Both are named, each with its reason, in the order their failures were seen.
        assert f"{unix.location}: " in str(failure.value)
        assert f"{http.location}: " in str(failure.value)
    finally:
        vgi_vision.detach(con)
        unix.stop()
        http.stop()


def test_a_worker_stopped_mid_query_hands_its_work_to_the_other(tmp_path: Path) -> None:
    """SIGTERM: the stopping worker answers what it holds, refuses the rest (`unavailable`),
    and the other worker serves those; nothing is lost or doubled."""
    first = start_unix(tmp_path / "a.sock", log_file=tmp_path / "a.log")
    second = start_unix(tmp_path / "b.sock", log_file=tmp_path / "b.log")
    con, client = connection_with([first.location, second.location], big_table(ROWS))
    try:
        expected = expected_labels(client, ROWS)
        assert first.process is not None
        pid = first.process.pid
        outcome = interrupted_query(con, SQL, [client.pool.members[0]], lambda _: pid,
                                    lambda: os.kill(pid, signal.SIGTERM))
        assert outcome.get("rows") == expected, outcome.get("error")
        assert first.process.wait(timeout=60) == 0
    finally:
        vgi_vision.detach(con)
        first.stop()
        second.stop()

def test_a_worker_that_stops_answering_times_out_and_its_work_moves(tmp_path: Path) -> None:
    """SIGSTOP one of two unix workers mid-query: after ``timeout`` its sub-batch is retried on
    the other worker and the result is complete."""
    first = start_unix(tmp_path / "a.sock", log_file=tmp_path / "a.log")
    second = start_unix(tmp_path / "b.sock", log_file=tmp_path / "b.log")
    con, client = connection_with([first.location, second.location], big_table(ROWS),
                                  timeout=60)  # long enough for a busy machine
    assert first.process is not None
    try:
        expected = expected_labels(client, ROWS)
        pid = first.process.pid
        outcome = interrupted_query(con, SQL, [client.pool.members[0]], lambda _: pid,
                                    lambda: os.kill(pid, signal.SIGSTOP))
        assert outcome.get("rows") == expected, outcome.get("error")
    finally:
        first.process.send_signal(signal.SIGCONT)
        vgi_vision.detach(con)
        first.stop()
        second.stop()

# --- the same options on the command line -------------------------------------------------

def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vgi_vision", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_sql_with_a_private_pool_and_with_a_worker_list(replicas: list[RunningWorker]) -> None:
    sql = ("SELECT count(*) FILTER (WHERE vision.top_label(path) = 'espresso') AS n "
           "FROM (SELECT 'test/sql/data/coffee.png' AS path FROM range(40))")
    pooled = cli("sql", "--workers", "2", sql)
    assert pooled.returncode == 0, pooled.stderr
    listed = cli("sql", "--location", replicas[0].location or "", "--location",
                 replicas[1].location or "", "--concurrency", "3", sql)
    assert listed.returncode == 0, listed.stderr
    assert re.search(r"│\s*40\s*│", pooled.stdout), pooled.stdout
    assert pooled.stdout == listed.stdout
    refused = cli("sql", "--workers", "0", "SELECT 1")
    assert refused.returncode == 2 and "--workers" in refused.stderr


def test_classify_over_a_worker_list_matches_a_private_worker(replicas: list[RunningWorker]
                                                              ) -> None:
    folder = str(DATA)
    alone = cli("classify", folder, "--format", "csv", "--top-k", "2")
    assert alone.returncode == 0, alone.stderr
    listed = cli("classify", folder, "--format", "csv", "--top-k", "2",
                 "--location", replicas[2].location or "", "--location",
                 replicas[3].location or "")
    assert listed.returncode == 0, listed.stderr
    pooled = cli("classify", folder, "--format", "csv", "--top-k", "2", "--workers", "auto")
    assert pooled.returncode == 0, pooled.stderr
    assert alone.stdout == listed.stdout == pooled.stdout
    assert "espresso" in alone.stdout


# --- write-back ----------------------------------------------------------------------------

def test_kill_one_writing_worker_mid_query_stores_every_image_once(tmp_path: Path) -> None:
    """Two private workers writing to one store; one is killed mid-query. The query completes,
    every committed run is complete, and every image is stored by exactly one run."""
    from bench.images import make_jpegs

    images = make_jpegs(300, size=256)
    con, client = connection_with(None, pa.table({"image": pa.array(images, pa.binary())}),
                                  workers=2, lance=str(tmp_path / "store"))
    try:
        victim = client.pool.members[0]
        sql = "SELECT count(*) FROM photos p, vision.classify(p.image, top_k := 2) c"
        outcome = interrupted_query(con, sql, [victim], private_pid,
                                    lambda: os.kill(private_pid(victim), signal.SIGKILL))
        assert outcome.get("rows") == [(2 * len(images),)], outcome.get("error")
        stored = con.execute("SELECT image_key, run_id, list(rank ORDER BY rank) "
                             "FROM vision.predictions() GROUP BY ALL").fetchall()
    finally:
        vgi_vision.detach(con)
    keys = [key for key, _, _ in stored]
    assert sorted(keys) == sorted(hashlib.sha256(i).hexdigest() for i in images)
    assert all(ranks == [1, 2] for _, _, ranks in stored)
