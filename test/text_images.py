"""Images of known text, drawn with Pillow's bundled font, for the OCR tests.

The OCR tests render what they read in the test itself; the SQL suite reads the same kind of
images from ``test/sql/text/``, which ``python test/text_images.py`` (re)writes.
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

SQL_TEXT = Path(__file__).resolve().parent / "sql" / "text"

INVOICE = ["INVOICE No. 4711", "Total: 129.95 EUR"]
SIGN = ["EXIT 7 -> Platform 3"]
#: Enough lines that one image's rows take more than one tick (64 lines each).
MANY_LINES = [f"Item {n}: {n * 7} pcs" for n in range(1, 81)]


def render(lines: list[str], size: int = 24, fg: str = "black", bg: str = "white",
           pad: int | None = None, line_gap: float = 1.6) -> Image.Image:
    """``lines`` drawn top to bottom, left-aligned, with a margin of ``pad`` (default: size)."""
    font = ImageFont.load_default(size=size)
    pad = size if pad is None else pad
    step = round(size * line_gap)
    width = max(round(font.getlength(line)) for line in lines) + 2 * pad
    image = Image.new("RGB", (width, len(lines) * step + 2 * pad), bg)
    draw = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        draw.text((pad, pad + i * step), line, font=font, fill=fg)
    return image


def text_boxes(lines: list[str], size: int = 24, pad: int | None = None,
               line_gap: float = 1.6) -> list[tuple[int, int, int, int]]:
    """Where :func:`render` puts the ink of each line: (x0, y0, x1, y1)."""
    font = ImageFont.load_default(size=size)
    pad = size if pad is None else pad
    step = round(size * line_gap)
    boxes = []
    for i, line in enumerate(lines):
        x0, y0, x1, y1 = font.getbbox(line)
        boxes.append((pad + x0, pad + i * step + y0, pad + x1, pad + i * step + y1))
    return boxes


def encode(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def write_sql_fixtures(folder: Path = SQL_TEXT) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    fixtures = {
        "invoice.png": render(INVOICE, 24),
        "sign.png": render(SIGN, 40, fg="white", bg="#102040"),
        "many_lines.png": render(MANY_LINES, 18, line_gap=1.8),
        "blank.png": Image.new("RGB", (320, 200), "#f0f0f0"),
    }
    for name, image in fixtures.items():
        (folder / name).write_bytes(encode(image, optimize=True))


if __name__ == "__main__":
    write_sql_fixtures()
