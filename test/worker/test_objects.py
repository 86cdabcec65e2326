"""Images named by ``s3://`` URLs, read from a real S3-protocol server on loopback.

Every transport is exercised: a URL must give what the same image gives as a local file, a
URL outside the worker's prefixes is refused, a missing object is a missing file, an object
over the size limit is refused from its metadata (the server's tap shows no byte of it was
sent), and a throttling server is waited out.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import duckdb
import pytest
from conftest import DATA, EXPECTED_TOP5

import vgi_vision
from vgi_vision.objects import ObjectPrefixes, ObjectStoreError, ObjectUrl, is_object_url
from vgi_vision.protocol import ErrorKind
from vgi_vision.testing.launch import TRANSPORTS, RunningWorker, running_worker
from vgi_vision.testing.s3server import LocalS3

pytestmark = pytest.mark.slow

BUCKET = "images"
PHOTOS = f"s3://{BUCKET}/photos/"
MAX_IMAGE_MB = 1
ROOTS = [str(DATA), PHOTOS]


@pytest.fixture(scope="module")
def bucket(s3: LocalS3) -> LocalS3:
    """The photos under ``photos/``, a secret beside them and in a sibling prefix, and an
    object larger than the workers' image limit."""
    s3.create_bucket(BUCKET)
    for name in EXPECTED_TOP5:
        s3.put(BUCKET, f"photos/{name}", (DATA / name).read_bytes())
    s3.put(BUCKET, "private/secret.png", (DATA / "cat.png").read_bytes())
    s3.put(BUCKET, "photos-private/secret.png", (DATA / "cat.png").read_bytes())
    s3.put(BUCKET, "photos/huge.jpg", os.urandom((MAX_IMAGE_MB << 20) + 1))
    return s3


@pytest.fixture(scope="module")
def servers(bucket: LocalS3, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Callable[[str], RunningWorker]]:
    """``servers(transport)``: a unix or HTTP worker confined to the fixture folder and the
    photos prefix, configured for the server by the standard AWS variables only."""
    started: dict[str, RunningWorker] = {}
    with contextlib.ExitStack() as stack:
        def get(transport: str) -> RunningWorker:
            if transport not in started:
                flags = [a for root in ROOTS for a in ("--data-root", root)]
                started[transport] = stack.enter_context(running_worker(
                    transport, *flags, "--max-image-mb", str(MAX_IMAGE_MB), env=bucket.env(),
                    workdir=tmp_path_factory.mktemp(f"objects-{transport}")))
            return started[transport]

        yield get


@pytest.fixture(params=TRANSPORTS)
def con(request: pytest.FixtureRequest, servers: Callable[[str], RunningWorker],
        s3_env: LocalS3) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection attached over one transport; the subprocess worker is confined the same
    way (``data_root`` given twice) and inherits the variables ``s3_env`` set."""
    connection = duckdb.connect()
    if request.param == "subprocess":
        vgi_vision.attach(connection, data_root=ROOTS, max_image_mb=MAX_IMAGE_MB)
    else:
        vgi_vision.attach(connection, servers(request.param).location)
    yield connection
    vgi_vision.detach(connection)
    connection.close()


def outcome(con: duckdb.DuckDBPyConnection, sql: str) -> object:
    """The rows ``sql`` gives, or the type of the error it raises."""
    try:
        return con.execute(sql).fetchall()
    except duckdb.Error as exc:
        return type(exc)


SCALARS = ["vision.top_label({})", "vision.embed({})", "vision.image_info({})",
           "vision.phash({})", "vision.category_score({}, 'feline')"]


def test_a_url_gives_what_the_file_gives(con: duckdb.DuckDBPyConnection) -> None:
    for name in EXPECTED_TOP5:
        url, path = f"'{PHOTOS}{name}'", f"'{DATA / name}'"
        from_url = con.execute(f"SELECT rank, label, confidence FROM vision.classify({url}) "
                               "ORDER BY rank").fetchall()
        assert from_url == con.execute(f"SELECT rank, label, confidence FROM "
                                       f"vision.classify({path}) ORDER BY rank").fetchall()
        assert from_url[0][1] in EXPECTED_TOP5[name]
        for scalar in SCALARS:
            assert con.execute(f"SELECT {scalar.format(url)}").fetchall() == \
                con.execute(f"SELECT {scalar.format(path)}").fetchall(), (name, scalar)


def test_urls_outside_the_prefixes_are_refused(con: duckdb.DuckDBPyConnection) -> None:
    for url in [f"s3://{BUCKET}/private/secret.png", f"s3://{BUCKET}/photos-private/secret.png",
                f"s3://{BUCKET}/private/missing.png", f"s3://other-{BUCKET}/photos/cat.png"]:
        with pytest.raises(duckdb.Error, match="outside the data roots"):
            con.execute(f"SELECT * FROM vision.classify('{url}')").fetchall()
    for url in [f"{PHOTOS}../private/secret.png", f"{PHOTOS}./cat.png",
                f"{PHOTOS}cat.png?versionId=1", f"s3://someone@{BUCKET}/photos/cat.png"]:
        with pytest.raises(duckdb.Error, match="is not of the form"):
            con.execute(f"SELECT vision.top_label('{url}')").fetchall()
    assert con.execute(f"SELECT vision.top_label('{PHOTOS}coffee.png')").fetchall() == \
        [("espresso",)]  # still serving


def test_a_missing_object_is_a_missing_file(con: duckdb.DuckDBPyConnection) -> None:
    for template in ["SELECT * FROM vision.classify({})", *(f"SELECT {s}" for s in SCALARS)]:
        assert outcome(con, template.format(f"'{PHOTOS}missing.png'")) == \
            outcome(con, template.format(f"'{DATA / 'missing.png'}'")), template


def test_an_oversized_object_is_refused_before_download(
        con: duckdb.DuckDBPyConnection, bucket: LocalS3) -> None:
    key = f"/{BUCKET}/photos/huge.jpg"
    before = bucket.tap.bytes_sent[key]
    assert con.execute(f"SELECT count(*) FROM vision.classify('{PHOTOS}huge.jpg')"
                       ).fetchall() == [(0,)]
    assert con.execute(f"SELECT vision.top_label('{PHOTOS}huge.jpg')").fetchall() == [(None,)]
    assert bucket.tap.bytes_sent[key] == before == 0
    fetched = bucket.tap.bytes_sent[f"/{BUCKET}/photos/cat.png"]
    con.execute(f"SELECT vision.top_label('{PHOTOS}cat.png')").fetchall()
    assert bucket.tap.bytes_sent[f"/{BUCKET}/photos/cat.png"] > fetched  # the tap does count


def test_throttling_is_waited_out(con: duckdb.DuckDBPyConnection, bucket: LocalS3) -> None:
    throttled = bucket.tap.throttled
    bucket.tap.throttle(3, f"/{BUCKET}/photos/coffee.png")
    assert con.execute(f"SELECT vision.top_label('{PHOTOS}coffee.png')").fetchall() == \
        [("espresso",)]
    assert bucket.tap.throttled == throttled + 3


def test_plain_http_needs_the_standard_opt_in(bucket: LocalS3, tmp_path: Path) -> None:
    env = {**bucket.env(), "AWS_ALLOW_HTTP": ""}
    with running_worker("unix", "--data-root", PHOTOS, env=env, workdir=tmp_path) as worker:
        con = duckdb.connect()
        vgi_vision.attach(con, worker.location)
        try:
            with pytest.raises(duckdb.Error, match="AWS_ALLOW_HTTP=true"):
                con.execute(f"SELECT vision.top_label('{PHOTOS}coffee.png')").fetchall()
        finally:
            vgi_vision.detach(con)


def test_object_urls_are_told_from_paths() -> None:
    assert is_object_url("s3://bucket/key.jpg") and is_object_url("S3://bucket/key.jpg")
    for path in ["photos/s3://x", "/data/cat.png", "s3:/bucket/key", "file:///etc/passwd"]:
        assert not is_object_url(path), path


def test_a_prefix_admits_only_what_is_below_it() -> None:
    prefixes = ObjectPrefixes.of(["s3://bkt/photos", "/local/folder"])
    assert prefixes.prefixes == ("s3://bkt/photos/",)
    assert prefixes.check("s3://bkt/photos/a/b.jpg") == ObjectUrl("s3", "bkt", "photos/a/b.jpg")
    for url in ["s3://bkt/photos-x/b.jpg", "s3://bkt/photos", "s3://bkt/photos/a/../../x.jpg",
                "s3://bkt/photos//x.jpg", "s3://bkt/other.jpg", "s3://bkt/photos/a\x00.jpg"]:
        with pytest.raises(ObjectStoreError) as info:
            prefixes.check(url)
        assert info.value.kind is ErrorKind.PATH_REFUSED, url


def test_text_is_read_from_an_object(bucket: LocalS3, servers: Callable[[str], RunningWorker]
                                     ) -> None:
    sign = DATA.parent / "text" / "sign.png"
    url = bucket.put(BUCKET, "photos/sign.png", sign.read_bytes())
    con = duckdb.connect()
    vgi_vision.attach(con, servers("unix").location)
    try:
        from_url = con.execute(f"SELECT line, text FROM vision.ocr('{url}') ORDER BY line"
                               ).fetchall()
        assert from_url and from_url == con.execute(
            f"SELECT line, text FROM vision.ocr((SELECT content FROM read_blob('{sign}'))) "
            "ORDER BY line").fetchall()
    finally:
        vgi_vision.detach(con)


def test_storage_that_keeps_failing_is_an_error_not_a_null(
        bucket: LocalS3, servers: Callable[[str], RunningWorker]) -> None:
    con = duckdb.connect()
    vgi_vision.attach(con, servers("unix").location)
    try:
        bucket.tap.throttle(100, f"/{BUCKET}/photos/rocket.jpg")
        with pytest.raises(duckdb.Error, match="reading .* from object storage failed"):
            con.execute(f"SELECT vision.top_label('{PHOTOS}rocket.jpg')").fetchall()
        bucket.tap.throttle(0)
        assert con.execute(f"SELECT vision.top_label('{PHOTOS}coffee.png')").fetchall() == \
            [("espresso",)]  # still serving
    finally:
        vgi_vision.detach(con)


def test_a_missing_object_raises_what_a_missing_file_raises(bucket: LocalS3,
                                                            s3_env: LocalS3) -> None:
    """The reader leaves a missing object to the path policy's missing-file handling, so
    both follow one rule whatever it is."""
    with pytest.raises(FileNotFoundError):
        ObjectPrefixes.of([PHOTOS]).read(f"{PHOTOS}missing.png", 1 << 20)
    with pytest.raises(FileNotFoundError):
        os.open(DATA / "missing.png", os.O_RDONLY)
