"""The DuckDB SQL surface: every query form, vectorization, errors and worker faults."""

from __future__ import annotations

import gc
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import duckdb
import pytest
from conftest import DATA, EXPECTED_TOP5

import vgi_vision
from vgi_vision.client.binding import Attachment
from vgi_vision.worker.vision.model import DEFAULT_TOP_K

#: The SQL surface is the same over every transport: it is tested in this process (no worker
#: process to start per test) and over the two shared socket workers. The subprocess
#: transport has tests of its own below and in test_transports.py.
BINDING_TRANSPORTS = ("inprocess", "unix", "http")


@pytest.fixture(params=BINDING_TRANSPORTS)
def con(request: pytest.FixtureRequest, worker_pool,
        inprocess) -> Iterator[duckdb.DuckDBPyConnection]:
    connection = duckdb.connect()
    if request.param == "inprocess":
        vgi_vision.attach(connection, transport=inprocess())
    else:
        vgi_vision.attach(connection, worker_pool.get(request.param).location)
    connection.execute(
        "CREATE TABLE photos AS SELECT row_number() OVER (ORDER BY filename) AS id, "
        f"content AS image, filename FROM read_blob('{DATA}/*')")
    yield connection
    vgi_vision.detach(connection)
    connection.close()


def test_every_documented_query_form(con: duckdb.DuckDBPyConnection) -> None:
    assert con.execute("SELECT count(*) FROM vision.image_classes()").fetchone() == (1000,)
    head = con.execute("SELECT label FROM vision.classify('test/sql/data/coffee.png')").fetchall()
    assert len(head) == 5 and head[0] == ("espresso",)
    blob = "(SELECT image FROM photos WHERE filename LIKE '%coffee.png')"
    assert len(con.execute(f"SELECT * FROM vision.classify({blob}, 10)").fetchall()) == 10
    assert len(con.execute(f"SELECT * FROM vision.classify({blob}, top_k := 3)").fetchall()) == 3
    scalar = con.execute("SELECT filename, vision.top_label(image) FROM photos").fetchall()
    assert all(label is not None for _, label in scalar)
    lateral = con.execute("SELECT p.filename, c.label FROM photos p, vision.classify(p.image) c"
                      ).fetchall()
    assert len(lateral) == 5 * con.execute("SELECT count(*) FROM photos").fetchone()[0]
    for name, labels in EXPECTED_TOP5.items():
        assert labels & {label for f, label in lateral if f.endswith(name)}, name
    direct = con.execute("SELECT label FROM vision.classify((SELECT content FROM "
                     "read_blob('test/sql/data/cat.png')))").fetchall()
    assert EXPECTED_TOP5["cat.png"] & {label for (label,) in direct}


def test_hostile_rows_give_null_for_that_row_only(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("CREATE TABLE mixed AS SELECT * FROM (VALUES (1, NULL::BLOB), (2, ''::BLOB), "
                "(3, 'garbage'::BLOB)) t(id, image) UNION ALL "
                "SELECT 4, image FROM photos WHERE filename LIKE '%coffee.png'")
    rows = con.execute("SELECT id, vision.top_label(image) FROM mixed ORDER BY id").fetchall()
    assert rows == [(1, None), (2, None), (3, None), (4, "espresso")]
    counts = con.execute("SELECT m.id, count(*) FROM mixed m, vision.classify(m.image, 2) c "
                     "GROUP BY ALL").fetchall()
    assert counts == [(4, 2)]


def test_classify_without_top_k_gives_the_shared_default(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute("SELECT count(*) FROM photos p, vision.classify(p.image) c "
                       "WHERE p.filename LIKE '%coffee.png'").fetchone()
    assert rows == (DEFAULT_TOP_K,)


def test_worker_errors_carry_the_worker_message(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(duckdb.Error, match="top_k must be between 1 and 1000"):
        con.execute("SELECT * FROM vision.classify('x'::BLOB, 0)").fetchall()
    with pytest.raises(duckdb.Error, match="must be BLOB or VARCHAR, got INTEGER"):
        con.execute("SELECT * FROM vision.classify(42)").fetchall()
    assert con.execute("SELECT count(*) FROM vision.image_classes()").fetchone() == (1000,)


def test_calls_scale_with_chunks_not_rows(con: duckdb.DuckDBPyConnection) -> None:
    attachment: Attachment = vgi_vision.client.binding._attachments[(id(con), "vision")]
    con.execute("CREATE TABLE many AS SELECT i AS id, NULL::BLOB AS image FROM range(1000) t(i)")
    before = attachment.client.requests
    assert con.execute("SELECT count(vision.top_label(image)) FROM many").fetchone() == (0,)
    scalar_calls = attachment.client.requests - before
    before = attachment.client.requests
    con.execute("SELECT count(*) FROM many m, vision.classify(m.image) c").fetchall()
    table_calls = attachment.client.requests - before
    # 1000 rows arrive as one DuckDB chunk; the client splits it into the worker's slices.
    assert scalar_calls <= 1000 // 256 + 1
    assert table_calls <= 1000 // 32 + 1


def test_comments_reach_duckdb(con: duckdb.DuckDBPyConnection) -> None:
    comments = dict(con.execute("SELECT function_name, comment FROM duckdb_functions() "
                            "WHERE database_name = 'vision'").fetchall())
    assert "ImageNet" in comments["classify"] and "confidence" in comments["classify"]
    assert comments["top_label"]


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (Linux /proc), to know it is working on our call."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_killed_subprocess_worker_fails_the_query_in_flight_only() -> None:
    con = duckdb.connect()
    attachment = vgi_vision.attach(con)
    # 20000 photographs to read and classify: minutes of work, so the query is provably still
    # running when the signal lands (a path per row keeps the table small).
    con.execute(f"CREATE TABLE big AS SELECT '{DATA}/coffee.png' AS path FROM range(20000)")
    transport = attachment.client.pool.members[0].transport
    pid = transport.pid
    started = attachment.client.requests
    errors: list[Exception] = []

    def query() -> None:
        try:
            con.cursor().execute("SELECT count(vision.top_label(path)) FROM big").fetchall()
        except duckdb.Error as exc:
            errors.append(exc)

    thread = threading.Thread(target=query)
    thread.start()
    deadline = time.monotonic() + 120
    baseline = cpu_seconds(pid)
    while (attachment.client.requests == started or cpu_seconds(pid) < baseline + 0.3) \
            and time.monotonic() < deadline:
        time.sleep(0.01)  # until the worker is busy with the first call
    assert time.monotonic() < deadline, "the worker never got busy with the query"
    assert thread.is_alive() and attachment.client.requests - started < 20000 // 256
    os.kill(pid, signal.SIGKILL)
    thread.join(timeout=120)
    assert len(errors) == 1 and re.search(r"worker \(pid \d+\) exited", str(errors[0]))
    assert con.execute("SELECT count(*) FROM vision.image_classes()").fetchone() == (1000,)
    assert transport.pid != pid
    vgi_vision.detach(con)


def test_detach_stops_the_worker_and_unregisters() -> None:
    con = duckdb.connect()
    attachment = vgi_vision.attach(con)
    con.execute("SELECT count(*) FROM vision.image_classes()").fetchall()
    process = attachment.client.pool.members[0].transport._process
    vgi_vision.detach(con)
    assert process.wait(timeout=10) == 0
    assert con.execute("SELECT count(*) FROM duckdb_functions() "
                   "WHERE function_name LIKE '__vgi%'").fetchone() == (0,)
    with pytest.raises(duckdb.Error):
        con.execute("SELECT * FROM vision.image_classes()").fetchall()
    vgi_vision.attach(con, name="vision")  # attach again under the same name
    assert con.execute("SELECT count(*) FROM vision.image_classes()").fetchone() == (1000,)
    vgi_vision.detach(con)


def test_a_collected_connection_stops_its_worker() -> None:
    con = duckdb.connect()
    process = vgi_vision.attach(con).client.pool.members[0].transport._process
    assert con.execute("SELECT count(*) FROM vision.image_classes()").fetchone() == (1000,)
    del con
    gc.collect()
    assert process.wait(timeout=10) == 0


@pytest.mark.timeout(60)
def test_a_connection_collected_during_attach_does_not_deadlock() -> None:
    """Garbage collection may run the finalizer inside attach(), which holds the lock."""
    con = duckdb.connect()
    process = vgi_vision.attach(con).client.pool.members[0].transport._process
    with vgi_vision.client.binding._lock:
        del con
        gc.collect()
    assert process.wait(timeout=10) == 0


@pytest.mark.timeout(120)
def test_a_connection_collected_in_a_thread_attach_waits_for_does_not_deadlock(inprocess
                                                                               ) -> None:
    """attach() holds the lock while it waits for the threads starting private workers; a
    connection collected in one of those threads must not wait for that lock."""
    held = [duckdb.connect()]
    attachment = vgi_vision.attach(held[0], transport=inprocess())
    collected = threading.Event()

    def collect_elsewhere() -> None:
        held.clear()
        gc.collect()
        collected.set()

    with vgi_vision.client.binding._lock:  # as attach() holds it while a worker starts
        worker_start = threading.Thread(target=collect_elsewhere)
        worker_start.start()
        assert collected.wait(timeout=30), "the collecting thread waited for attach's lock"
        worker_start.join()
    deadline = time.monotonic() + 30
    while not attachment.closed:  # unregistered and stopped once the lock is free
        assert time.monotonic() < deadline, "the collected connection was never detached"
        time.sleep(0.05)


def test_two_attachments_under_different_names(inprocess) -> None:
    con = duckdb.connect()
    vgi_vision.attach(con, name="a", transport=inprocess())
    vgi_vision.attach(con, name="b", transport=inprocess())
    assert con.execute("SELECT (SELECT count(*) FROM a.image_classes()) + "
                   "(SELECT count(*) FROM b.image_classes())").fetchone() == (2000,)
    with pytest.raises(ValueError, match="already attached"):
        vgi_vision.attach(con, name="a", transport=inprocess())
    vgi_vision.detach(con, "a")
    vgi_vision.detach(con, "b")


def test_nullary_table_function_in_a_correlated_subquery(con: duckdb.DuckDBPyConnection
                                                         ) -> None:
    """DuckDB asks for one result per outer row; each gets the whole table."""
    rows = con.execute("SELECT t.x, (SELECT count(*) FROM vision.image_classes() i "
                       "WHERE i.idx <= t.x) FROM range(3) t(x) ORDER BY t.x").fetchall()
    assert rows == [(0, 1), (1, 2), (2, 3)]
    assert con.execute("SELECT c.name, (SELECT count(*) FROM vision.image_classes() i "
                       "WHERE list_contains(i.ancestor_wnids, c.wnid)) FROM vision.categories() c "
                       "WHERE c.name IN ('dog', 'cat') ORDER BY 1").fetchall() == \
        [("cat", 7), ("dog", 118)]


#: Attach through a cursor, then lose the cursor one way or another, then query the connection.
#: Run in a child interpreter: the failure this guards against is a crash (SIGSEGV), which
#: would take the test process with it.
CURSOR_SCRIPT = """
import gc, sys, duckdb, vgi_vision
con = duckdb.connect()
cur = con.cursor()
vgi_vision.attach(cur)
for step in sys.argv[1].split(","):
    if step == "close":
        cur.close()
    elif step == "detach":
        vgi_vision.detach(cur)
    elif step == "collect":
        del cur
        gc.collect()
try:
    print(con.execute("SELECT vision.top_label('{image}')").fetchone()[0])
except duckdb.Error as exc:
    print("error:", exc)
"""


@pytest.mark.parametrize(("steps", "expected"), [
    ("close", "espresso"),  # the attachment lives on: its functions keep working
    ("collect", "does not exist"),  # collected: unregistered, worker stopped
    ("close,collect", "was detached"),  # closed, then collected: a clear error
    ("close,detach", "was detached"),
])
def test_attach_through_a_cursor_survives_losing_the_cursor(steps: str, expected: str) -> None:
    script = CURSOR_SCRIPT.format(image=DATA / "coffee.png")
    result = subprocess.run([sys.executable, "-c", script, steps], capture_output=True,
                            text=True, timeout=240)
    assert result.returncode == 0, f"rc {result.returncode}: {result.stderr[-2000:]}"
    assert expected in result.stdout, result.stdout + result.stderr[-2000:]
