"""Every function's catalog ``example`` runs, over every transport.

The examples are what ``describe()``, ``docs/functions.md`` and DuckDB's function comments
show people; each must run as written. The function list comes from the live catalog, so a
new function is covered the moment it is registered. The workers write back to a LanceDB
folder of their own (the functions reading the store need one), not the SQL suite's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from conftest import REPO, serve_flags
from PIL import Image

import vgi_vision
from vgi_vision.testing.launch import TRANSPORTS, running_worker

pytestmark = pytest.mark.slow


@pytest.fixture(params=(*TRANSPORTS, "inprocess"))
def con(request: pytest.FixtureRequest, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection attached over one transport to a worker with write-back."""
    transport = request.param
    monkeypatch.chdir(REPO)  # the examples name files relative to the repository
    lance = str(tmp_path / "examples.lance")
    connection = duckdb.connect()
    with contextlib.ExitStack() as stack:
        if transport == "subprocess":
            vgi_vision.attach(connection, lance=lance)
        elif transport == "inprocess":
            from vgi_vision.transports.inprocess import InProcessTransport

            vgi_vision.attach(connection, transport=InProcessTransport.start(lance=lance))
        else:
            worker = stack.enter_context(running_worker(
                transport, *serve_flags(transport), "--lance", lance,
                workdir=tmp_path / "worker"))
            vgi_vision.attach(connection, worker.location)
        stack.callback(vgi_vision.detach, connection)
        yield connection


def test_every_catalog_example_runs(con: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    attachment = vgi_vision.client.binding._attachments[(id(con), "vision")]
    catalog = attachment.client.describe()
    examples = {f["name"]: f["example"] for f in catalog}
    assert len(examples) == len(catalog) and all(examples.values()), \
        "every function declares an example"
    failed, empty = {}, []
    for name, sql in examples.items():  # catalog order: writers before the store's readers
        try:
            rows = con.execute(sql).fetchall()
        except duckdb.Error as exc:
            failed[name] = f"{sql}\n  -> {exc}"
            continue
        if not rows:
            empty.append(name)
    assert not failed, "examples that fail:\n" + "\n".join(failed.values())
    # An example reading the write-back store may have run before the one that fills it:
    # after every example has run once, and the store holds a collection's usual resized
    # copy of one photograph (for duplicates()), each must return rows.
    copy = tmp_path / "coffee_small.jpg"
    with Image.open(REPO / "test/sql/data/coffee.png") as photo:
        photo.convert("RGB").resize((photo.width // 2, photo.height // 2)).save(copy)
    con.execute("SELECT vision.top_label(content) FROM read_blob(?)", [str(copy)]).fetchall()
    still_empty = [name for name in empty if not con.execute(examples[name]).fetchall()]
    assert not still_empty, f"examples returning no rows: {still_empty}"
