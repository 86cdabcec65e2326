"""embed, image_info and phash on real photographs, EXIF written by Pillow, and hostile bytes.

The SQL surface of each function is tested in test/sql/*.test over every transport; here are
the properties that need images built on the fly.
"""

from __future__ import annotations

import asyncio
import io
import struct
from datetime import datetime
from itertools import combinations
from pathlib import Path

import imagehash
import lancedb
import numpy as np
import pyarrow as pa
import pytest
from PIL import ExifTags, Image, ImageFile

from vgi_vision.gallery.facts import image_facts
from vgi_vision.protocol import argument_rows
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.lance.kinds import IMAGES
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.registry import Registry
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.facts import perceptual_hash, read_info
from vgi_vision.worker.vision.model import load_classifier

DATA = Path(__file__).resolve().parents[1] / "sql" / "data"
NEAR = 6  # docs/images.md's near-duplicate threshold, in differing bits


def photo(name: str) -> Image.Image:
    with Image.open(DATA / name) as image:
        return image.convert("RGB")


def jpeg(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", **options)
    return out.getvalue()


def distance(a: int | None, b: int | None) -> int:
    assert a is not None and b is not None
    return bin(a ^ b).count("1")


@pytest.fixture(scope="module")
def registry() -> Registry:
    return build_registry(VisionContext(load_classifier(), PathPolicy.unrestricted()))


def call(registry: Registry, name: str, values: list, arrow_type: pa.DataType | None = None
         ) -> list:
    spec = registry.get(name)
    column = pa.array(values, arrow_type or pa.binary())
    return spec.impl(spec.resolve(argument_rows([column]))).to_pylist()


# --- phash ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cat.png", "coffee.png", "grace_hopper.jpg", "rocket.jpg"])
@pytest.mark.parametrize(("scale", "resample"), [(0.75, Image.Resampling.LANCZOS),
                                                 (0.5, Image.Resampling.BILINEAR)])
def test_an_edited_copy_stays_a_near_duplicate(name: str, scale: float, resample) -> None:
    """Cropped by 2 pixels on every side, resized and re-encoded as JPEG.

    pHash is not crop-invariant: on rocket.jpg a 4-pixel crop already moves 6-10 bits.
    """
    original = photo(name)
    width, height = original.size
    edited = original.crop((2, 2, width - 2, height - 2))
    edited = edited.resize((int(edited.width * scale), int(edited.height * scale)), resample)
    copy = jpeg(edited, quality=80)
    assert distance(perceptual_hash((DATA / name).read_bytes()), perceptual_hash(copy)) <= NEAR


def test_different_photos_are_not_near_duplicates() -> None:
    hashes = {p.name: perceptual_hash(p.read_bytes()) for p in sorted(DATA.glob("*.*"))}
    for a, b in combinations(hashes, 2):
        assert distance(hashes[a], hashes[b]) > NEAR, (a, b)


def test_the_hash_is_imagehash_phash_of_the_upright_picture() -> None:
    upright = photo("rocket.jpg")
    rotated = io.BytesIO()
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # stored turned: shown after a 90 degree turn
    upright.transpose(Image.Transpose.ROTATE_90).save(rotated, "PNG", exif=exif)
    expected = int(str(imagehash.phash(upright)), 16)
    png = io.BytesIO()
    upright.save(png, "PNG")
    assert perceptual_hash(png.getvalue()) == expected
    assert perceptual_hash(rotated.getvalue()) == expected


def test_phash_overloads_agree_and_bad_rows_are_null(registry: Registry) -> None:
    paths = [str(DATA / "cat.png"), str(DATA.parent / "classify.test"), None]  # not images
    by_path = call(registry, "phash", paths, pa.string())
    by_bytes = call(registry, "phash", [(DATA / "cat.png").read_bytes(), b"", b"junk", None])
    assert by_path[0] == by_bytes[0] and 0 <= by_path[0] < 2**64
    assert by_path[1:] == [None, None] and by_bytes[1:] == [None, None, None]


# --- image_info ----------------------------------------------------------------------------

def with_exif(image: Image.Image, fmt: str = "JPEG",
              position: tuple[str, tuple[float, ...], str, tuple[float, ...]] = (
                  "S", (33.0, 51.0, 54.0), "E", (151.0, 12.0, 36.0))) -> bytes:
    """``image`` encoded as ``fmt`` with camera EXIF and a GPS ``position`` (latitude
    reference and degrees/minutes/seconds, then longitude's): Sydney unless told."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "Acme\x00"
    exif[ExifTags.Base.Model] = "Pinhole 2"
    exif[ExifTags.Base.DateTime] = "2001:01:01 00:00:00"
    exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = "2024:05:17 08:30:15"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    for tag, value in zip((ExifTags.GPS.GPSLatitudeRef, ExifTags.GPS.GPSLatitude,
                           ExifTags.GPS.GPSLongitudeRef, ExifTags.GPS.GPSLongitude),
                          position, strict=True):
        gps[tag] = value
    out = io.BytesIO()
    image.save(out, fmt, exif=exif)
    return out.getvalue()


def test_exif_fields_are_read() -> None:
    info = read_info(with_exif(photo("rocket.jpg")))
    assert info is not None
    assert (info.format, info.width, info.height, info.mode, info.frames) == \
        ("JPEG", 640, 427, "RGB", 1)
    assert (info.orientation, info.make, info.model) == (6, "Acme", "Pinhole 2")
    assert info.taken_at == datetime(2024, 5, 17, 8, 30, 15)  # the original, not DateTime
    assert info.latitude == pytest.approx(-(33 + 51 / 60 + 54 / 3600))
    assert info.longitude == pytest.approx(151 + 12 / 60 + 36 / 3600)


def test_north_and_west_give_a_positive_latitude_and_a_negative_longitude() -> None:
    """New York: west of Greenwich, so its longitude is negative (in image_info and in the
    gallery's facts alike)."""
    data = with_exif(photo("rocket.jpg"), position=("N", (40.0, 41.0, 21.0),
                                                    "W", (74.0, 2.0, 40.0)))
    info = read_info(data)
    assert info is not None
    assert info.latitude == pytest.approx(40 + 41 / 60 + 21 / 3600)
    assert info.longitude == pytest.approx(-(74 + 2 / 60 + 40 / 3600))
    assert ("position", "40.68917, -74.04444") in image_facts(data)


def test_no_exif_gives_null_fields_and_header_facts() -> None:
    info = read_info((DATA / "rocket.jpg").read_bytes())
    assert info is not None and (info.format, info.width, info.height) == ("JPEG", 640, 427)
    assert (info.taken_at, info.make, info.latitude, info.longitude) == (None,) * 4
    frames = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(frames, "GIF", save_all=True, append_images=[
        Image.new("RGB", (8, 8), colour) for colour in ("green", "blue")])
    gif = read_info(frames.getvalue())  # counting frames skips their pixel data
    assert gif is not None and (gif.format, gif.mode, gif.frames) == ("GIF", "P", 3)


def test_malformed_exif_fields_are_null_one_by_one() -> None:
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 42
    exif[ExifTags.Base.Make] = "Acme"
    exif[ExifTags.Base.DateTime] = "yesterday"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitude] = (95.0, 0.0, 0.0)  # beyond a pole
    gps[ExifTags.GPS.GPSLongitude] = (1.0, 2.0)  # two parts, not three
    out = io.BytesIO()
    Image.new("RGB", (32, 16)).save(out, "JPEG", exif=exif)
    info = read_info(out.getvalue())
    assert info is not None and info.make == "Acme" and info.width == 32
    assert (info.orientation, info.taken_at, info.latitude, info.longitude) == (None,) * 4


def handmade_png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, payload: bytes) -> bytes:
        import zlib
        return struct.pack(">I", len(payload)) + kind + payload + \
            struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                              8, 2, 0, 0, 0))
            + chunk(b"IDAT", b"") + chunk(b"IEND", b""))


def test_image_info_reads_a_bomb_header_without_decoding(monkeypatch) -> None:
    png_with_exif = with_exif(photo("cat.png"), "PNG")  # eXIf before IDAT
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self.size))
    info = read_info(handmade_png(100_000, 100_000))
    assert info is not None and (info.width, info.height) == (100_000, 100_000)
    for name in ("coffee.png", "cat.png", "rocket.jpg"):
        assert read_info((DATA / name).read_bytes()) is not None
    assert read_info(png_with_exif).orientation == 6
    assert loads == []
    monkeypatch.undo()
    assert perceptual_hash(handmade_png(100_000, 100_000)) is None  # over the pixel limit
    huge = read_info(handmade_png(2**32 - 1, 7))  # more than SQL INTEGER holds
    assert huge is not None and (huge.width, huge.height) == (None, 7)


@pytest.mark.parametrize("data", [b"", b"junk", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe1" * 50,
                                  None])
def test_hostile_bytes_give_none(data: bytes | None) -> None:
    assert read_info(data) is None
    assert perceptual_hash(data) is None


def test_truncated_exif_keeps_the_header_facts() -> None:
    data = with_exif(photo("cat.png"))
    app1 = data.index(b"Exif\x00\x00")
    damaged = data[:app1 + 40] + b"\x00" * 200 + data[app1 + 240:]
    info = read_info(damaged)
    assert info is None or info.width == 451  # never an exception
    assert read_info(data, DecodeLimits(max_bytes=100)) is None  # over the byte limit


# --- embed ---------------------------------------------------------------------------------

def test_embed_is_unit_length_and_overloads_agree(registry: Registry) -> None:
    names = ["cat.png", "coffee.png", "grace_hopper.jpg", "rocket.jpg"]
    by_bytes = call(registry, "embed", [(DATA / n).read_bytes() for n in names] + [b"x", None])
    by_path = call(registry, "embed", [str(DATA / n) for n in names], pa.string())
    assert by_bytes[-2:] == [None, None]
    vectors = np.array(by_bytes[:4], dtype=np.float32)
    assert vectors.shape == (4, 1280)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(vectors, np.array(by_path, dtype=np.float32))
    similarity = vectors @ vectors.T
    assert (similarity[~np.eye(4, dtype=bool)] < 0.9).all()  # different photos differ


def test_embed_is_the_vector_write_back_stores(tmp_path: Path, registry: Registry) -> None:
    images = [(DATA / n).read_bytes() for n in ("cat.png", "rocket.jpg")]
    sink = WriteBack(str(tmp_path / "db"), 1280)
    try:
        storing = build_registry(VisionContext(load_classifier(), PathPolicy.unrestricted(),
                                               sink))
        call(storing, "top_label", images)
    finally:
        sink.close()

    async def stored() -> list:
        db = await lancedb.connect_async(str(tmp_path / "db"))
        table = await db.open_table(IMAGES)
        rows = await table.query().select(["label", "vector"]).to_arrow()
        top = {labels[0]: vector for labels, vector in zip(
            rows.column("label").to_pylist(), rows.column("vector").to_pylist(), strict=True)}
        table.close()
        db.close()
        return [top[label] for label in sorted(top)]

    labels = call(registry, "top_label", images)
    embedded = dict(zip(labels, call(registry, "embed", images), strict=True))
    assert [embedded[label] for label in sorted(labels)] == asyncio.run(stored())


def test_mutated_headers_never_fail_a_batch(registry: Registry) -> None:
    """Seeded byte flips in EXIF-bearing JPEG, PNG, TIFF and WebP files: every row of every
    batch is a value or NULL, the Arrow result builds, and nothing raises."""
    import random

    base = photo("cat.png").resize((64, 43))
    originals = [with_exif(base, fmt) for fmt in ("JPEG", "PNG", "TIFF", "WEBP")]
    rng = random.Random(7)
    batch = []
    for _ in range(200):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 8)):
            position = rng.randrange(min(len(data), 400))  # the headers and EXIF
            data[position] = rng.randrange(256)
        batch.append(bytes(data))
    for name in ("image_info", "phash"):
        values = call(registry, name, batch)
        assert len(values) == len(batch)
    assert call(registry, "image_info", originals)[2]["orientation"] == 6  # TIFF's own IFD


@pytest.mark.parametrize(("name", "extra"), [("embed", []), ("category_score", ["dog"]),
                                             ("is_a", ["dog"])])
def test_model_runs_in_batches_not_per_row(name: str, extra: list, monkeypatch) -> None:
    """64 images in one call: full model runs of ``run_batch`` images each, as for classify
    (the images reach the model as they finish decoding, never one run per row)."""
    classifier = load_classifier()
    batches: list[int] = []
    real_run = classifier.run

    def counting_run(pixels):
        batches.append(len(pixels))
        return real_run(pixels)

    monkeypatch.setattr(classifier, "run", counting_run)
    registry = build_registry(VisionContext(classifier, PathPolicy.unrestricted()))
    images = [(DATA / n).read_bytes() for n in sorted(p.name for p in DATA.glob("*.*"))] * 16
    spec = registry.get(name)
    columns = [pa.array(images, pa.binary())] + [pa.array(extra * len(images))] * len(extra)
    values = spec.impl(spec.resolve(argument_rows(columns))).to_pylist()
    assert len(values) == 64 and None not in values
    assert classifier.run_batch > 1
    assert batches == [classifier.run_batch] * (64 // classifier.run_batch)


def test_bombs_and_garbage_over_sql_give_null_and_the_worker_serves_on(transport: str,
                                                                          worker_pool) -> None:
    """Through DuckDB and a real worker: per row NULL for what cannot be read, header facts
    for a bomb image_info can describe without decoding it, and good rows unaffected."""
    import duckdb

    import vgi_vision

    jpeg_bomb = bytearray(jpeg(Image.new("RGB", (16, 16), "red")))
    sof = jpeg_bomb.index(b"\xff\xc0")
    jpeg_bomb[sof + 5:sof + 9] = struct.pack(">HH", 60000, 60000)
    rows = [handmade_png(100_000, 100_000), bytes(jpeg_bomb), b"GIF89a" + b"\xff" * 64,
            (DATA / "coffee.png").read_bytes(), with_exif(photo("rocket.jpg"))]
    con = duckdb.connect()
    vgi_vision.attach(con, worker_pool.get(transport).location)
    try:
        con.register("t", pa.table({"id": list(range(len(rows))),
                                    "image": pa.array(rows, pa.binary())}))
        got = con.execute(
            "SELECT id, vision.embed(image) IS NULL, vision.phash(image) IS NULL, "
            "vision.category_score(image, 'beverage') > 0.5, vision.is_a(image, 'cat'), "
            "vision.image_info(image).width FROM t ORDER BY id").fetchall()
        exif = con.execute("SELECT i.taken_at, i.make, i.model, i.orientation, i.latitude, "
                           "i.longitude FROM (SELECT vision.image_info(image) AS i FROM t "
                           "WHERE id = 4)").fetchone()
    finally:
        vgi_vision.detach(con)
        con.close()
    assert got == [(0, True, True, None, None, 100_000), (1, True, True, None, None, 60000),
                   (2, True, True, None, None, None), (3, False, False, True, False, 600),
                   (4, False, False, False, False, 640)]
    assert exif[:4] == (datetime(2024, 5, 17, 8, 30, 15), "Acme", "Pinhole 2", 6)
    assert exif[4:] == (pytest.approx(-33.865), pytest.approx(151.21))
