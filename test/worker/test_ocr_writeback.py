"""OCR write-back: the lines of every image read stored once per (image, OCR model) in the
LanceDB ``ocr`` table, in all-or-nothing runs, unchanged by replays.

Real LanceDB in tmp folders, the real OCR models, images rendered with Pillow's font.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
from lance_tables import assert_replayed_mid_state_stages_nothing, read_tables
from test_lance import registry_with
from text_images import INVOICE, MANY_LINES, SIGN, SQL_TEXT, encode, render

from vgi_vision.client.client import Client
from vgi_vision.protocol import argument_rows
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.testing.launch import running_worker
from vgi_vision.worker.functions.ocr import OcrState
from vgi_vision.worker.lance.kinds import OCR, OCR_STAGED, RUNS
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.ticks import run_ticks
from vgi_vision.worker.vision.ocr import OCR_MODEL

BLANK = encode(render([" "], 24))
INVOICE_PNG = (SQL_TEXT / "invoice.png").read_bytes()
SIGN_PNG = (SQL_TEXT / "sign.png").read_bytes()


#: The tables this write-back fills.
TABLES = (OCR, OCR_STAGED, RUNS)


def stored_text(uri: Path) -> dict[tuple[str | None, float], list[str]]:
    """(path, min_confidence) -> lines, for every stored image."""
    rows = read_tables(uri, TABLES)[OCR].to_pylist()
    assert all(r["model"] == OCR_MODEL for r in rows)
    return {(r["path"], r["min_confidence"]): r["text"] for r in rows}


def ocr_args(images: list[bytes | None], min_confidence: float = 0.5) -> pa.RecordBatch:
    return argument_rows([pa.array(images, pa.binary()),
                          pa.array([min_confidence] * len(images), pa.float64())])


def path_args(paths: list[str], min_confidence: float = 0.5) -> pa.RecordBatch:
    """OCR arguments; a missing path gives no rows (``missing := 'null'``)."""
    return argument_rows([pa.array(paths, pa.string()),
                          pa.array([min_confidence] * len(paths), pa.float64()),
                          pa.array(["null"] * len(paths))])


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[WriteBack]:
    sink = WriteBack(str(tmp_path / "db"), embedding_dim=1280)
    yield sink
    sink.close()


def test_a_scan_stores_one_row_per_image_read_once_it_finishes(tmp_path: Path,
                                                                sink: WriteBack) -> None:
    spec = registry_with(sink).get("ocr")
    paths = [str(SQL_TEXT / name) for name in ("invoice.png", "sign.png", "blank.png",
                                               "no-such.png", "invoice.png")]
    rows = invoke_table_function(spec, path_args(paths))
    assert rows.num_rows == 2 + 1 + 2
    tables = read_tables(tmp_path / "db", TABLES)
    assert tables[OCR_STAGED].num_rows == 0 and tables[RUNS].num_rows == 1
    assert stored_text(tmp_path / "db") == {(paths[0], 0.5): INVOICE, (paths[1], 0.5): SIGN,
                                            (paths[2], 0.5): []}  # read, and no text
    stored = {r["path"]: r for r in tables[OCR].to_pylist()}
    invoice = stored[paths[0]]
    emitted = rows.filter(pa.compute.equal(rows["input_row"], 0)).to_pylist()
    for edge in ("x0", "y0", "x1", "y1", "confidence"):
        assert invoice[edge] == [row[edge] for row in emitted]
    # stored_text(): the same lines back, one row per image and line, in pages
    read_back = invoke_table_function(registry_with(sink).get("stored_text"),
                                      argument_rows([], 1))
    assert sorted((r["path"], r["line"], r["text"]) for r in read_back.to_pylist()) == \
        sorted([(paths[0], 1, INVOICE[0]), (paths[0], 2, INVOICE[1]), (paths[1], 1, SIGN[0])])


def test_rereading_stores_each_image_once_keeping_the_fullest_reading(tmp_path: Path,
                                                                      sink: WriteBack) -> None:
    spec = registry_with(sink).get("ocr")
    images = [INVOICE_PNG, SIGN_PNG]
    invoke_table_function(spec, ocr_args(images))
    invoke_table_function(spec, ocr_args(images))  # a re-run query
    assert {k[1] for k in stored_text(tmp_path / "db")} == {0.5}
    assert read_tables(tmp_path / "db", TABLES)[OCR].num_rows == 2
    invoke_table_function(spec, ocr_args(images[:1], 0.0))  # keeps more lines: replaces
    invoke_table_function(spec, ocr_args(images, 0.9))  # keeps fewer: stored rows stay
    assert sorted(stored_text(tmp_path / "db").items()) == \
        sorted([((None, 0.0), INVOICE), ((None, 0.5), SIGN)])
    assert read_tables(tmp_path / "db", TABLES)[RUNS].num_rows == 4


def test_ocr_text_calls_are_runs_too(tmp_path: Path, sink: WriteBack) -> None:
    call = registry_with(sink).get("ocr_text").impl
    spec = registry_with(sink).get("ocr_text")
    result = call(spec.resolve(ocr_args([SIGN_PNG, None, b"junk"])))
    assert result.to_pylist() == [SIGN[0], None, None]
    assert stored_text(tmp_path / "db") == {(None, 0.5): SIGN}


def test_an_unfinished_scan_stores_nothing_and_recovery_clears_it(tmp_path: Path) -> None:
    uri = tmp_path / "db"
    sink = WriteBack(str(uri), embedding_dim=1280)
    spec = registry_with(sink).get("ocr")
    args = spec.resolve(ocr_args([INVOICE_PNG] * 4 + [SIGN_PNG]))  # two ticks of images
    state = spec.impl.initial_state(args)
    assert run_ticks(spec, args, state, max_ticks=1).batch is not None  # then abandoned
    sink.close()
    tables = read_tables(uri, TABLES)
    assert tables[OCR].num_rows == 0 and tables[RUNS].num_rows == 0
    assert tables[OCR_STAGED].num_rows == 4
    WriteBack(str(uri), embedding_dim=1280).close()  # a restart recovers
    assert read_tables(uri, TABLES)[OCR_STAGED].num_rows == 0


def test_a_replayed_state_leaves_the_committed_run_unchanged(tmp_path: Path,
                                                             sink: WriteBack) -> None:
    spec = registry_with(sink).get("ocr")
    many = (SQL_TEXT / "many_lines.png").read_bytes()
    args = spec.resolve(ocr_args([many, INVOICE_PNG]))
    state = spec.impl.initial_state(args)
    saved: list[bytes] = []
    while True:
        saved.append(state.to_bytes())
        out = run_ticks(spec, args, state, max_ticks=1)
        if out.finished:
            break
    assert len(saved) == 2  # 80 + 2 lines read in one tick, emitted in two
    before = read_tables(tmp_path / "db", TABLES)[OCR].sort_by("image_key")
    assert before.num_rows == 2
    for data in saved:  # every state, replayed after the commit
        state = OcrState.from_bytes(data)
        while not run_ticks(spec, args, state, max_ticks=1).finished:
            pass
    after = read_tables(tmp_path / "db", TABLES)
    assert after[OCR].sort_by("image_key").equals(before)
    assert after[OCR_STAGED].num_rows == 0 and after[RUNS].num_rows == 1


def test_a_mid_scan_state_replayed_last_stages_nothing(tmp_path: Path) -> None:
    """After the commit, the state that reads the last image is resumed for one tick (one
    request) and nothing follows: that tick leaves lines pending, so the run does not finish
    and nothing clears what it would stage. A replay that wrote again would leave its rows
    behind for a committed run."""
    uri = tmp_path / "db"
    sink = WriteBack(str(uri), embedding_dim=1280)
    spec = registry_with(sink).get("ocr")
    many = (SQL_TEXT / "many_lines.png").read_bytes()
    args = spec.resolve(ocr_args([INVOICE_PNG] * 4 + [many]))  # 4 images per tick, then 1
    assert_replayed_mid_state_stages_nothing(spec, args, sink, TABLES)


def test_over_http_replayed_tokens_answer_the_same_page_and_write_nothing(
        tmp_path: Path) -> None:
    many = (SQL_TEXT / "many_lines.png").read_bytes()
    args = ocr_args([many])
    with running_worker("http", "--lance", str(tmp_path / "db"), workdir=tmp_path) as worker:
        with Client(worker.location) as client:
            def scan(token: str | None) -> tuple[dict, pa.RecordBatch | None]:
                return client.request({"op": "scan", "function": "ocr", "token": token}, args)

            first, page1 = scan(None)
            last, page2 = scan(first["token"])
            assert not first["done"] and last["done"]
            assert page1 is not None and page2 is not None
            assert page1.num_rows + page2.num_rows == len(MANY_LINES)
            before = read_tables(tmp_path / "db", TABLES)[OCR]
            assert before.num_rows == 1 and len(before["text"][0]) == len(MANY_LINES)
            again, replayed = scan(first["token"])
            assert again["done"] and replayed == page2
    after = read_tables(tmp_path / "db", TABLES)
    assert after[OCR].equals(before) and after[RUNS].num_rows == 1
