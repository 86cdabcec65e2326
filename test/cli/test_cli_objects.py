"""``vgi-vision classify s3://bucket/prefix/``: images listed and read from a local S3 server,
results stored in an ``s3://`` store, configured by the standard AWS variables only."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from conftest import DATA, REPO
from test_cli import cli

from vgi_vision.testing.launch import running_worker
from vgi_vision.testing.s3server import LocalS3

BUCKET = "cli-photos"


@pytest.fixture(scope="module")
def bucket(s3: LocalS3) -> LocalS3:
    """The photos under ``photos/nested/``, with an undecodable JPEG and a non-image key."""
    s3.create_bucket(BUCKET)
    s3.create_bucket("cli-stores")
    for source in DATA.iterdir():
        s3.put(BUCKET, f"photos/nested/{source.name}", source.read_bytes())
    s3.put(BUCKET, "photos/nested/broken.jpg", b"not a jpeg")
    s3.put(BUCKET, "photos/notes.txt", b"not an image")
    s3.put(BUCKET, "elsewhere/cat.png", (DATA / "cat.png").read_bytes())
    return s3


def local_results() -> dict[str, str]:
    """file name -> top-1 label, classified from the local copies."""
    lines = cli("classify", str(DATA), "--format", "json", "--top-k", "1").stdout
    return {Path(r["path"]).name: r["label"] for r in map(json.loads, lines.splitlines())}


def test_classify_a_prefix_into_an_object_store(bucket: LocalS3, s3_env: LocalS3) -> None:
    store = f"s3://cli-stores/{uuid.uuid4().hex}"
    result = cli("classify", f"s3://{BUCKET}/photos/", "--format", "json", "--top-k", "1",
                 "--lance", store)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert {r["path"].rsplit("/", 1)[1]: r["label"] for r in records} == local_results()
    assert all(r["path"].startswith(f"s3://{BUCKET}/photos/nested/") for r in records)
    assert "1 file(s) could not be read or decoded" in result.stderr
    assert f"s3://{BUCKET}/photos/nested/broken.jpg" in result.stderr
    stored = subprocess.run(
        [sys.executable, "-c",
         "import duckdb, vgi_vision; con = duckdb.connect(); "
         f"vgi_vision.attach(con, lance={store!r}); "
         "print(con.execute('SELECT count(*), count(DISTINCT path) FROM vision.predictions() "
         f"WHERE path LIKE \\'s3://{BUCKET}/photos/nested/%\\'').fetchone()); "
         "vgi_vision.detach(con)"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert stored.stdout.strip() == "(4, 4)", stored.stderr


def test_classify_objects_through_a_remote_worker(bucket: LocalS3, s3_env: LocalS3,
                                                  tmp_path: Path) -> None:
    """With --location the command reads the objects itself and sends their bytes."""
    with running_worker("unix", workdir=tmp_path) as worker:  # no data root: reads no path
        result = cli("classify", f"s3://{BUCKET}/photos/", f"s3://{BUCKET}/elsewhere/cat.png",
                     "--location", worker.location, "--format", "json", "--top-k", "1")
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    expected = local_results()
    assert [r["path"] for r in records][-1] == f"s3://{BUCKET}/elsewhere/cat.png"
    assert {r["path"].rsplit("/", 1)[1]: r["label"] for r in records} == expected
    assert len(records) == len(expected) + 1


def test_an_empty_or_malformed_prefix(bucket: LocalS3, s3_env: LocalS3) -> None:
    empty = cli("classify", f"s3://{BUCKET}/nothing-here/")
    assert empty.returncode == 1 and "matched no file" in empty.stderr
    malformed = cli("classify", f"s3://{BUCKET}/photos/../elsewhere/")
    assert malformed.returncode == 2 and "is not of the form" in malformed.stderr
    assert "Traceback" not in malformed.stderr


def test_serve_refuses_bad_data_roots_before_starting(tmp_path: Path) -> None:
    socket = str(tmp_path / "w.sock")
    two = cli("serve", "--unix", socket, "--data-root", str(tmp_path), "--data-root",
              str(REPO), "--data-root", "s3://bucket/photos/")
    assert two.returncode == 2 and "at most one local data root" in two.stderr
    dotted = cli("serve", "--unix", socket, "--data-root", "s3://bucket/a/../b/")
    assert dotted.returncode == 2 and "is not of the form" in dotted.stderr
    assert not (tmp_path / "w.sock").exists()


def test_skip_existing_resumes_a_prefix_by_content(bucket: LocalS3, s3_env: LocalS3) -> None:
    """A second run over the same prefix into the same s3:// store sends nothing: every
    object's content is stored already (the unreadable one is tried again and reported)."""
    store = f"s3://cli-stores/{uuid.uuid4().hex}"
    first = cli("classify", f"s3://{BUCKET}/photos/", "--format", "csv", "--top-k", "1",
                "--lance", store)
    assert first.returncode == 0, first.stderr
    again = cli("classify", f"s3://{BUCKET}/photos/", "--format", "csv", "--top-k", "1",
                "--lance", store, "--skip-existing")
    assert again.returncode == 0, again.stderr
    assert len(again.stdout.strip().splitlines()) == 1, again.stdout  # the header alone
    summary = again.stderr.strip().splitlines()[-1]
    assert summary.startswith("1 files, 0 distinct images, 1 unreadable, 4 skipped"), summary
