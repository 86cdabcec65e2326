"""``vgi-vision classify`` as a user meets it: mistakes refused before the worker starts,
the format taken from ``-o``, results written chunk by chunk and kept on Ctrl-C, a store
resumed with ``--skip-existing``, and a closing summary line."""

from __future__ import annotations

import csv
import io
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import DATA, REPO

import vgi_vision.client.client
from vgi_vision.cli import main

pytestmark = pytest.mark.slow


def cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vgi_vision", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """The four photographs, a byte-identical copy of one, and a corrupt file."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for source in DATA.iterdir():
        shutil.copy(source, folder / "sub" / source.name)
    shutil.copy(DATA / "cat.png", folder / "copy-of-cat.png")
    (folder / "sub" / "broken.jpg").write_bytes(b"not a jpeg")
    return folder


class NoWorker(Exception):
    """Raised if a refused command got as far as starting a worker."""


@pytest.mark.parametrize(("argv", "status", "message"), [
    (["{photos}", "--format", "parquet"], 2, "--format parquet writes a file"),
    (["{photos}", "-o", "{tmp}/no/such/folder/out.csv"], 1, "does not exist"),
    (["{photos}", "-o", "{tmp}"], 1, "is a folder"),
    (["{photos}", "-o", "{tmp}/out.parquet", "--format", "csv"], 2,
     "--format csv does not match the extension of -o"),
    (["{photos}", "{tmp}/typo.jpg"], 1, "typo.jpg does not exist"),
    (["{tmp}/empty"], 1, "holds no image file"),
    (["{tmp}/nothing/*.png"], 1, "matches no file"),
    (["{photos}", "--skip-existing"], 2, "--skip-existing needs --lance"),
])
def test_mistakes_are_refused_in_one_line_before_a_worker_starts(
        argv: list[str], status: int, message: str, photos: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "empty").mkdir()

    def no_worker(*args: object, **kwargs: object) -> None:
        raise NoWorker

    monkeypatch.setattr(vgi_vision.client.client.Client, "__init__", no_worker)
    filled = [a.format(photos=photos, tmp=tmp_path) for a in argv]
    assert main(["classify", *filled]) == status
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize(("argv", "message"), [
    (["classify", "x.png", "--top-k", "0"], "--top-k: must be between 1 and 1000, got 0"),
    (["classify", "x.png", "--limit", "0"], "--limit: must be greater than 0"),
    (["serve", "--http", "--port", "99999"], "--port: must be between 0 and 65535, got 99999"),
    (["browse", "--lance", "db", "--port", "-1"], "--port: must be between 0 and 65535, got -1"),
])
def test_out_of_range_options_are_usage_errors(argv: list[str], message: str,
                                                capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err


def test_format_from_the_output_extension(photos: Path, tmp_path: Path) -> None:
    parquet = tmp_path / "out.parquet"
    result = cli("classify", str(photos), "-o", str(parquet), "--top-k", "2")
    assert result.returncode == 0, result.stderr
    table = pq.read_table(parquet)
    assert table.num_rows == 5 * 2 and table.column_names[0] == "path"
    lines = tmp_path / "out.jsonl"
    assert cli("classify", str(photos / "sub" / "coffee.png"), "-o", str(lines),
               "--top-k", "1").returncode == 0
    assert json.loads(lines.read_text())["label"] == "espresso"


def test_summary_line_counts_files_distinct_images_and_unreadable(photos: Path) -> None:
    result = cli("classify", str(photos), "--format", "csv", "--top-k", "1")
    assert result.returncode == 0, result.stderr
    summary = result.stderr.strip().splitlines()[-1]
    assert summary.startswith("6 files, 4 distinct images, 1 unreadable in "), summary
    assert summary.endswith(" images/s)")
    assert len(list(csv.DictReader(io.StringIO(result.stdout)))) == 5


def test_limit_classifies_the_first_files(photos: Path) -> None:
    result = cli("classify", str(photos), "--format", "csv", "--top-k", "1", "--limit", "2")
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [Path(r["path"]).name for r in rows] == ["copy-of-cat.png"]  # then broken.jpg
    assert result.stderr.strip().splitlines()[-1].startswith(
        "2 files, 1 distinct images, 1 unreadable")


def interrupted_classify(args: list[str], ready: Callable[[], bool]) -> str:
    """Run ``vgi-vision classify ARGS``, interrupt it (SIGINT) once ``ready()`` holds, check
    it exited with 130, and return what it said on stderr."""
    process = subprocess.Popen([sys.executable, "-m", "vgi_vision", "classify", *args],
                               cwd=REPO, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while not ready():
            assert process.poll() is None and time.monotonic() < deadline, "never ready"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, err
    return err


def test_interrupt_keeps_the_finished_chunks(tmp_path: Path) -> None:
    """SIGINT mid-run: one line, exit 130, and the output holds whole rows of every chunk
    finished before it."""
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(60):
        shutil.copy(DATA / "coffee.png", folder / f"coffee-{i:02}.png")
    out = tmp_path / "out.csv"
    err = interrupted_classify([str(folder), "-o", str(out), "--top-k", "1", "--chunk-files", "4"],
                               lambda: out.exists() and out.read_text().count("\n") >= 5)
    assert "Traceback" not in err
    assert "vgi-vision: interrupted after " in err and f"are in {out}" in err
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert 4 <= len(rows) < 60 and len(rows) % 4 == 0
    assert {r["label"] for r in rows} == {"espresso"}


def test_interrupt_before_any_chunk_leaves_no_empty_file(tmp_path: Path) -> None:
    out = tmp_path / "out.parquet"
    interrupted_classify([str(DATA), "-o", str(out)],
                         out.exists)  # the output is opened before the worker starts
    assert not out.exists()


def test_skip_existing_classifies_nothing_the_second_time(photos: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    first = cli("classify", str(photos), "--lance", "db", "--top-k", "2", "--format", "csv",
                "--skip-existing", cwd=tmp_path)  # a bare folder name is a local store
    assert first.returncode == 0, first.stderr
    assert len(list(csv.DictReader(io.StringIO(first.stdout)))) == 5 * 2
    second = cli("classify", str(photos), "--lance", str(db), "--top-k", "2", "--format",
                 "csv", "--skip-existing")
    assert second.returncode == 0, second.stderr
    assert list(csv.DictReader(io.StringIO(second.stdout))) == []
    # Only the unreadable file is sent again: nothing was stored for it.
    assert "1 files, 0 distinct images, 1 unreadable, 5 skipped (already stored)" \
        in second.stderr
    wider = cli("classify", str(photos), "--lance", str(db), "--top-k", "3", "--format",
                "csv", "--skip-existing")
    assert len(list(csv.DictReader(io.StringIO(wider.stdout)))) == 5 * 3  # more classes wanted


def test_a_file_gone_after_listing_is_one_more_unreadable_file(tmp_path: Path) -> None:
    """A file listed, then moved or deleted before its chunk is sent, does not fail the
    chunk: it is reported with the unreadable files, and the rest is classified."""
    from vgi_vision.client.classify_command import ContentKeys, classify_chunks
    from vgi_vision.client.client import Client

    gone = tmp_path / "gone.png"
    with Client(None) as client:
        chunks = list(classify_chunks(client, [DATA / "cat.png", gone], 1, ContentKeys()))
    assert [Path(p).name for p in chunks[0].table.column("path").to_pylist()] == ["cat.png"]
    assert chunks[0].failed == [gone]
