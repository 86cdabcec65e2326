"""OCR with the real PP-OCR models on text rendered here with Pillow's bundled font."""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from conftest import DATA
from PIL import Image
from resumed_ticks import resumed_batches
from text_images import MANY_LINES, SIGN, SQL_TEXT, encode, render, text_boxes

import vgi_vision
from vgi_vision.protocol import INPUT_ROW, argument_rows, decode
from vgi_vision.protocol import encode as encode_message
from vgi_vision.testing.harness import invoke_table_function
from vgi_vision.worker.dispatcher import Dispatcher, LiveStates
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.registry import ROWS_PER_TICK
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.model import load_classifier
from vgi_vision.worker.vision.ocr import (
    INSTALL_HINT,
    LINES_PER_TURN,
    OcrUnavailable,
    TextLine,
    TextReader,
    load_text_reader,
)

LIMITS = DecodeLimits()
PARAGRAPH = ["The quick brown fox jumps over", "the lazy dog; 0123456789 (ok?)",
             "Pack my box with five dozen", "liquor jugs: 42% off, 3/4 @ $1.50!"]


def read(image: Image.Image | bytes, min_confidence: float = 0.5, **encode_options: object
         ) -> list[TextLine]:
    data = image if isinstance(image, bytes) else encode(image, **encode_options)  # type: ignore[arg-type]
    lines = load_text_reader().read([data], LIMITS, min_confidence)[0]
    assert lines is not None
    return lines


def texts(lines: list[TextLine]) -> list[str]:
    return [line.text for line in lines]


def frames(line: TextLine, ink: tuple[int, int, int, int]) -> bool:
    """The line's box holds the drawn ink (give or take a tenth of its height) and is not much
    larger: the detector pads a line's box by a fraction of its height."""
    x0, y0, x1, y1 = ink
    slack = 0.1 * (y1 - y0)
    holds = line.x0 <= x0 + slack and line.y0 <= y0 + slack and \
        line.x1 >= x1 - slack and line.y1 >= y1 - slack
    area = (line.x1 - line.x0) * (line.y1 - line.y0)
    return holds and area <= 2.5 * (x1 - x0) * (y1 - y0)


@pytest.mark.parametrize(("size", "fg", "bg"), [
    (16, "black", "white"), (24, "black", "white"), (40, "black", "white"),
    (16, "white", "black"), (28, "#f0f0a0", "#203060"), (48, "white", "#602020"),
])
def test_reads_one_line_exactly_at_several_sizes_and_polarities(size: int, fg: str, bg: str
                                                                 ) -> None:
    line = "INVOICE No. 4711, Total: 129.95 EUR"
    found = read(render([line], size, fg, bg))
    assert texts(found) == [line]
    assert 0.5 <= found[0].confidence <= 1.0
    assert frames(found[0], text_boxes([line], size)[0])


def test_paragraph_lines_in_reading_order_with_their_boxes() -> None:
    found = read(render(PARAGRAPH, 24))
    assert texts(found) == PARAGRAPH
    for line, box in zip(found, text_boxes(PARAGRAPH, 24), strict=True):
        assert frames(line, box), (line, box)


@pytest.mark.parametrize("degrees", [90, 180, 270])
def test_turned_pictures_read_in_the_texts_own_order(degrees: int) -> None:
    found = read(render(PARAGRAPH[:3], 24).rotate(degrees, expand=True))
    assert texts(found) == PARAGRAPH[:3]


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_is_applied_and_boxes_are_upright_pixels(orientation: int) -> None:
    upright = render(PARAGRAPH[:2], 24)
    # what a camera stores: pixels turned, and an EXIF tag saying how to turn them back
    stored = upright.transpose({3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90,
                                8: Image.Transpose.ROTATE_270}[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    found = read(stored, fmt="JPEG", quality=95, exif=exif)
    assert texts(found) == PARAGRAPH[:2]
    for line, box in zip(found, text_boxes(PARAGRAPH[:2], 24), strict=True):
        assert frames(line, box), (line, box)
        assert line.x1 <= upright.width and line.y1 <= upright.height


def test_large_image_is_read_downscaled_with_boxes_in_original_pixels() -> None:
    lines = ["Quarterly report 2026", "Revenue up 12.5%"]
    image = render(lines, 160, pad=400)  # ~2.6k x 1.3k: decoded at 2000 on the long side
    assert max(image.size) > 2000
    found = read(image, fmt="JPEG", quality=90)
    assert texts(found) == lines
    for line, box in zip(found, text_boxes(lines, 160, pad=400), strict=True):
        assert frames(line, box), (line, box)


def test_image_without_text_gives_no_lines() -> None:
    assert read(Image.new("RGB", (640, 480), "white")) == []
    rng = np.random.default_rng(7)
    smooth = Image.fromarray(rng.integers(100, 140, (120, 160, 3), dtype=np.uint8))
    assert read(smooth.resize((640, 480), Image.Resampling.BICUBIC)) == []


def test_min_confidence_filters_lines() -> None:
    image = render(PARAGRAPH, 24)
    everything = read(image, 0.0)
    assert texts(everything) == PARAGRAPH
    lowest = min(line.confidence for line in everything)
    assert texts(read(image, lowest)) == PARAGRAPH
    assert len(read(image, 1.0)) == sum(line.confidence >= 1.0 for line in everything)


def test_hostile_and_oversized_images_give_none() -> None:
    good = encode(render(["fine"], 24))
    reader = load_text_reader()
    assert reader.read([None, b"", b"not an image", good[:100], DATA], LIMITS) == \
        [None] * 5
    tiny_limits = DecodeLimits(max_pixels=1_000)
    assert reader.read([good], tiny_limits) == [None]  # ~8k pixels: over the limit
    assert reader.read([good], DecodeLimits(max_bytes=len(good) - 1)) == [None]
    assert texts(reader.read([good], LIMITS)[0] or []) == ["fine"]


@pytest.mark.parametrize("image", [
    Image.new("L", (60_000, 1)), Image.new("L", (1, 60_000), 255), Image.new("RGB", (1, 1)),
    Image.fromarray(np.full((50, 50), 60_000, np.uint16)), Image.new("RGBA", (90, 90)),
    Image.new("P", (90, 90)),
], ids=["60000x1", "1x60000", "1x1", "16-bit", "transparent", "palette"])
def test_degenerate_images_give_no_lines_without_blowing_up(image: Image.Image) -> None:
    # a 60000 x 1 picture used to be upscaled to a 64-pixel short side: gigabytes, then OOM
    assert read(image) == []


def test_an_image_gives_at_most_max_lines_lines_the_first_in_reading_order() -> None:
    """80 lines with a cap of 10: the first 10, top to bottom, and no more work than that."""
    data = (SQL_TEXT / "many_lines.png").read_bytes()
    reader = TextReader(max_lines=10)
    assert texts(reader.read([data], LIMITS)[0] or []) == MANY_LINES[:10]
    # one detection, then recognition (and any retries of doubtful lines) of 10 boxes only
    assert reader.turns.finished <= 1 + 2 * math.ceil(10 / LINES_PER_TURN)


def test_recognition_stops_at_the_time_bound() -> None:
    """No time at all: the text is found but none of it is recognized; nothing fails."""
    data = encode(render(PARAGRAPH, 24))
    assert TextReader(max_seconds=0).read([data], LIMITS) == [[]]
    assert texts(TextReader(max_seconds=60).read([data], LIMITS)[0] or []) == PARAGRAPH


def until(condition: Callable[[], bool], timeout: float = 120) -> None:
    """Wait for ``condition`` (polled; fails after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never came true"
        time.sleep(0.01)


def test_a_one_image_read_is_not_held_up_by_a_long_page_in_flight() -> None:
    """Two callers share one reader: a one-line image asked for while an 80-line page is
    being recognized is read before the page is done (turns alternate), not after it."""
    reader = TextReader()
    page = (SQL_TEXT / "many_lines.png").read_bytes()
    read_page: list[list[TextLine] | None] = []
    page_done = threading.Event()

    def read_the_page() -> None:
        read_page.extend(reader.read([page], LIMITS))
        page_done.set()

    heavy = threading.Thread(target=read_the_page)
    heavy.start()
    until(lambda: reader.turns.finished >= 1)  # the page's text is found; recognition is next
    sign = reader.read([encode(render(SIGN, 40, fg="white", bg="#102040"))], LIMITS)[0]
    finished_first = not page_done.is_set()
    heavy.join()
    assert texts(sign or []) == SIGN
    assert texts(read_page[0] or []) == MANY_LINES
    assert finished_first


def registry(reader: TextReader | None = None):
    ctx = VisionContext(load_classifier(), PathPolicy.unrestricted())
    if reader is not None:
        ctx = VisionContext(ctx.classifier, ctx.paths, reader=reader)
    return build_registry(ctx)


def test_many_lines_take_bounded_ticks_and_resume_from_serialized_state() -> None:
    spec = registry().get("ocr")
    data = (SQL_TEXT / "many_lines.png").read_bytes()
    args = argument_rows([pa.array([data, None, data], pa.binary())])
    resolved = spec.resolve(args)
    sizes = [b.num_rows for b in resumed_batches(spec, resolved)]  # the HTTP path
    assert max(sizes) <= ROWS_PER_TICK and sum(sizes) == 2 * len(MANY_LINES)
    table = invoke_table_function(spec, args)
    for row in (0, 2):
        mine = table.filter(pa.compute.equal(table[INPUT_ROW], row))
        assert mine["line"].to_pylist() == list(range(1, len(MANY_LINES) + 1))
        assert sum(a == b for a, b in zip(mine["text"].to_pylist(), MANY_LINES,
                                          strict=True)) >= len(MANY_LINES) - 2


@pytest.fixture
def without_rapidocr(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A Python path entry whose ``rapidocr`` cannot be imported, as when the extra is
    missing; for this process (sys.modules) and for workers it spawns (PYTHONPATH)."""
    package = tmp_path / "rapidocr"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('No module named rapidocr')\n")
    monkeypatch.setitem(sys.modules, "rapidocr", None)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    return tmp_path


def test_without_the_extra_a_call_fails_with_one_line_saying_what_to_install(
        without_rapidocr: Path) -> None:
    reader = TextReader()
    with pytest.raises(OcrUnavailable, match=r"pip install 'vgi-vision\[ocr\]'"):
        reader.read([encode(render(["x"], 24))], LIMITS)
    dispatcher = Dispatcher(registry(reader))
    names = [f["name"] for f in decode(dispatcher.handle(
        encode_message({"op": "describe"}), LiveStates())).header["catalog"]]
    assert {"ocr", "ocr_text", "classify"} <= set(names)
    image = pa.array([encode(render(["x"], 24))], pa.binary())
    for op, function in (("scan", "ocr"), ("call", "ocr_text")):
        request = encode_message({"op": op, "function": function}, argument_rows([image]))
        reply = decode(dispatcher.handle(request, LiveStates()))
        assert reply.header["error"]["kind"] == "not_configured"
        assert INSTALL_HINT in reply.header["error"]["message"]
        assert "\n" not in reply.header["error"]["message"]


def test_without_the_extra_sql_gets_the_hint_and_the_worker_keeps_serving(
        without_rapidocr: Path) -> None:
    con = duckdb.connect()
    vgi_vision.attach(con)  # a subprocess worker started with rapidocr unimportable
    try:
        names = {r[0] for r in con.execute(
            "SELECT function_name FROM duckdb_functions() WHERE database_name = 'vision'"
        ).fetchall()}
        assert {"ocr", "ocr_text"} <= names
        for sql in ("SELECT * FROM vision.ocr('test/sql/text/invoice.png')",
                    "SELECT vision.ocr_text('test/sql/text/invoice.png')"):
            with pytest.raises(duckdb.Error) as excinfo:
                con.execute(sql).fetchall()
            assert "pip install 'vgi-vision[ocr]'" in str(excinfo.value)
        assert con.execute("SELECT vision.top_label('test/sql/data/coffee.png')").fetchone() \
            == ("espresso",)
    finally:
        vgi_vision.detach(con)
