"""The gallery without a browser: access rules over a real socket, hostile requests, the
path rule, and a snapshot that follows the store. Real store, real model, real LanceDB."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import httpx
import lancedb
import pyarrow as pa
import pytest
from gallery_store import (
    REPO,
    GalleryStore,
    classified_store,
    classify_into,
    responses,
    running_gallery,
)
from PIL import Image

from vgi_vision.gallery.app import TOKEN_COOKIE, make_app
from vgi_vision.gallery.catalog import Catalog, Filter
from vgi_vision.gallery.facts import FilePolicy, image_facts
from vgi_vision.worker.lance.kinds import IMAGES, STAGED
from vgi_vision.worker.lance.writeback import WriteBack

TOKEN = "a-long-enough-gallery-token-0123"


@pytest.fixture(scope="module")
def guarded(store: GalleryStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gallery(store.uri, tmp_path_factory.mktemp("browse"),
                         env={"VGI_VISION_AUTH_TOKEN": TOKEN}) as url:
        yield url


def test_a_token_protects_every_page_and_a_link_with_it_logs_in(guarded: str) -> None:
    with httpx.Client(base_url=guarded, timeout=60) as client:
        for path in ("/", "/static/gallery.css", "/image/" + "0" * 64, "/?token=wrong-token"):
            assert client.get(path).status_code == 401, path
        login = client.get("/?order=uncertain&token=" + TOKEN)
        assert login.status_code == 303
        assert login.headers["location"] == "/?order=uncertain"  # the token leaves the URL
        cookie = login.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        page = client.get("/")  # the cookie now rides along
        assert page.status_code == 200 and 'class="tile"' in page.text
    bearer = httpx.get(guarded + "/", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert bearer.status_code == 200
    for cookie in ("wrong-token", TOKEN[:-1], TOKEN + "x", ""):
        stale = httpx.get(guarded + "/", cookies={TOKEN_COOKIE: cookie}, timeout=60)
        assert stale.status_code == 401, cookie


def raw_get(url: str, target: str) -> str:
    """The status line and headers of ``GET target`` sent byte for byte (no client library
    normalizing the path on the way)."""
    with socket.create_connection(("127.0.0.1", urlsplit(url).port), timeout=60) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     f"Connection: close\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer.split(b"\r\n\r\n", 1)[0].decode("latin-1")


@pytest.mark.parametrize("path", ["/%2Fevil.example", "//evil.example", "/%5Cevil.example",
                                  "/%2F%2Fevil.example/x", "/\\evil.example", "///evil.example"])
def test_the_login_redirect_stays_on_the_gallery(guarded: str, path: str) -> None:
    """A login link whose path decodes to ``//host`` must not send the browser elsewhere."""
    head = raw_get(guarded, f"{path}?token={TOKEN}&order=margin")
    assert head.startswith("HTTP/1.1 303"), head
    location = re.search(r"(?im)^location: (.*)$", head)
    assert location is not None, head
    target = location.group(1).strip()
    assert urlsplit(urljoin("http://127.0.0.1/", target)).netloc == "127.0.0.1", target
    assert target.startswith("/") and target[1:2] not in ("/", "\\"), target
    assert target.endswith("?order=margin")


@pytest.mark.parametrize("host", ["evil.example", "localhost:1@evil.com", "localhost:x",
                                  "127.0.0.1:80:81", "localhost.evil.example", "[::1]x", ""])
def test_only_loopback_host_names_are_served(guarded: str, host: str) -> None:
    response = httpx.get(guarded + "/", headers={"Host": host,
                                                 "Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert response.status_code == 421
    assert "Content-Security-Policy" in response.headers


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8766", "127.0.0.1:1", "[::1]:8766"])
def test_loopback_host_names_with_any_port_are_served(guarded: str, host: str) -> None:
    response = httpx.get(guarded + "/", headers={"Host": host,
                                                 "Authorization": f"Bearer {TOKEN}"}, timeout=60)
    assert response.status_code == 200


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vgi_vision", "browse", *args],
                          capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", **(env or {})})


def test_refuses_what_serve_http_refuses(tmp_path: Path, store: GalleryStore) -> None:
    open_net = run_cli("--lance", str(store.uri), "--host", "0.0.0.0", "--port", "0")
    assert open_net.returncode == 2 and "bearer token" in open_net.stderr
    short = run_cli("--lance", str(store.uri), "--host", "0.0.0.0", "--port", "0",
                    env={"VGI_VISION_AUTH_TOKEN": "short"})
    assert short.returncode == 2 and "fewer than 16" in short.stderr
    missing = run_cli("--lance", str(tmp_path / "nothing"), "--port", "0")
    assert missing.returncode == 2 and "holds no write-back store" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_hostile_requests_get_a_page_or_a_404(store: GalleryStore) -> None:
    grid = ["/?page=abc&per_page=-1", "/?per_page=100000&page=99999999999",
            "/?min_confidence=nan&max_confidence=-3", "/?order=<script>&run=' OR 1=1 --",
            "/?label=" + "x" * 60_000, "/?search=%00%27%22;--", "/?min_confidence=0.9"
            "&max_confidence=0.1", "/?label=%E2%80%AE&search=%F0%9F%90%88",
            "/?category=n0' OR 1=1", "/?category=n99999999", "/?faces=-1e9&has=' OR 1=1 --",
            "/?faces=3%2B%27", "/?has=" + "x" * 60_000]
    grid += [f"/image/{store.hostile_key}?from=javascript:alert(1)",
             f"/image/{store.hostile_key}?from=%2F%2Fevil.example%2F&run=x"]
    missing = ["/image/not-a-key", "/image/" + "0" * 64, "/image/" + "0" * 64 + "?run=zz",
               "/thumb/..%2F..%2Fetc%2Fpasswd", "/thumb/" + "A" * 64, "/static/../cli.py"]
    got = asyncio.run(responses(store.uri, grid + missing))
    for url, response in zip(grid, got, strict=False):
        assert response.status_code == 200, url
        assert "Content-Security-Policy" in response.headers
        back = re.findall(r'<a class="back" href="([^"]*)"', response.text)
        assert all(link.startswith("/?") for link in back), (url, back)  # never elsewhere
    for url, response in zip(missing, got[len(grid):], strict=True):
        assert response.status_code == 404, url
    # stored thumbnail bytes are data: always served as a JPEG the browser may not sniff
    thumb, = asyncio.run(responses(store.uri, [f"/thumb/{store.hostile_key}"]))
    assert thumb.headers["content-type"] == "image/jpeg"
    assert thumb.headers["x-content-type-options"] == "nosniff"


def test_malformed_stored_rows_never_break_a_page(tmp_path: Path,
                                                  store: GalleryStore) -> None:
    """Rows write-back would never store: a run id that is SQL, empty and NULL predictions."""
    uri = tmp_path / "odd.lance"
    sink = WriteBack(str(uri), 1280)
    sink.close()  # an empty store with the current schema
    base = {"model": "efficientnet-lite0", "path": None, "top_k": 2, "idx": [0, 1],
            "created_at": None, "vector": [0.03] * 1280, "thumbnail": None}
    odd = {"sql-run": {"run_id": "'; DROP TABLE images; --", "label": ["tench", "goldfish"],
                       "confidence": [0.6, 0.3]},
           "empty": {"run_id": "1" * 32, "label": [], "confidence": []},
           "nulls": {"run_id": None, "label": None, "confidence": None}}
    keys = {name: hashlib.sha256(name.encode()).hexdigest() for name in odd}

    async def write() -> None:
        db = await lancedb.connect_async(str(uri))
        table = await db.open_table(IMAGES)
        await table.add(pa.Table.from_pylist(
            [{**base, "image_key": keys[name], **row} for name, row in odd.items()],
            schema=await table.schema()))
        table.close()
        db.close()

    asyncio.run(write())
    grid, detail, empty = asyncio.run(responses(uri, [
        "/", f"/image/{keys['sql-run']}?run='; DROP TABLE images; --", f"/image/{keys['empty']}"]))
    assert grid.status_code == 200
    assert re.findall(r'class="tile" data-key="([0-9a-f]{64})"', grid.text) == [keys["sql-run"]]
    assert detail.status_code == 200
    assert re.findall(r'<td class="label">([^<]*)</td>', detail.text) == ["tench", "goldfish"]
    assert empty.status_code == 404


def add_rows(uri: Path, rows: list[dict]) -> list[str]:
    """Rows written straight into ``images`` (with defaults for what they leave out); their
    image keys."""
    base = {"model": "efficientnet-lite0", "path": None, "top_k": 2, "idx": [0, 1],
            "label": ["tench", "goldfish"], "confidence": [0.6, 0.3], "run_id": "3" * 32,
            "created_at": None, "vector": [0.03] * 1280, "thumbnail": None}
    keys = [hashlib.sha256(repr(row).encode()).hexdigest() for row in rows]

    async def write() -> None:
        db = await lancedb.connect_async(str(uri))
        table = await db.open_table(IMAGES)
        await table.add(pa.Table.from_pylist(
            [{**base, "image_key": key, **row} for key, row in zip(keys, rows, strict=True)],
            schema=await table.schema()))
        table.close()
        db.close()

    asyncio.run(write())
    return keys


def test_null_predictions_and_vectors_show_as_missing(tmp_path: Path) -> None:
    """A NULL inside the stored top-k lists, or no stored vector: the page shows what there
    is and marks what is missing."""
    uri = tmp_path / "holes.lance"
    WriteBack(str(uri), 1280).close()
    holes, no_vector, holed_vector, neighbour = add_rows(uri, [
        {"label": ["tench", None, "hen"], "confidence": [0.6, None, 0.1], "idx": [0, 1, 8],
         "top_k": 3},
        {"vector": None},
        {"vector": [None] + [0.03] * 1279},
        {"label": ["goldfish"], "confidence": [0.5], "top_k": 1, "vector": [0.02] * 1280}])
    got = asyncio.run(responses(uri, [f"/image/{holes}", f"/image/{no_vector}",
                                      f"/image/{holed_vector}"]))
    for response in got:
        assert response.status_code == 200, response.text[:500]
        assert "Content-Security-Policy" in response.headers
    rows = re.findall(r'<td class="label">([^<]*)</td>.*?<td class="confidence">([^<]*)</td>',
                      got[0].text, re.DOTALL)
    assert rows == [("tench", "60.0%"), ("missing", "missing"), ("hen", "10.0%")]
    assert f'data-key="{neighbour}"' in got[0].text  # its vector still finds neighbours
    for without in got[1:]:
        assert 'class="neighbour"' not in without.text
        assert "no stored embedding" in without.text


def test_a_failing_page_still_carries_the_security_headers(tmp_path: Path) -> None:
    """The store's files vanish under an open gallery: the 500 is sent with the same
    Content-Security-Policy and companions as every page."""
    uri = tmp_path / "vanishing.lance"
    WriteBack(str(uri), 1280).close()
    key, = add_rows(uri, [{"thumbnail": b"\xff\xd8 not really a jpeg"}])

    async def scenario() -> list[httpx.Response]:
        catalog = await Catalog.open(str(uri), refresh_seconds=3600)
        app = make_app(catalog, FilePolicy(None))
        try:
            async with httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                    base_url="http://127.0.0.1") as client:
                ok = await client.get(f"/thumb/{key}")
                for data in (uri / f"{IMAGES}.lance" / "data").iterdir():
                    data.unlink()
                return [ok, await client.get(f"/thumb/{key}")]
        finally:
            catalog.close()

    ok, failed = asyncio.run(scenario())
    assert ok.status_code == 200
    assert failed.status_code == 500
    for name in ("Content-Security-Policy", "X-Content-Type-Options", "Referrer-Policy"):
        assert failed.headers.get(name) == ok.headers[name], name


def test_hostile_exif_is_shown_escaped(tmp_path: Path) -> None:
    """Camera make and model are text from the file: markup in them is shown, never run."""
    photos = tmp_path / "photos"
    photos.mkdir()
    exif = Image.Exif()
    exif[0x010F] = "<script>window.__xss = 5</script>"  # Make
    exif[0x0110] = "<img src=x onerror=\"window.__xss = 6\">"  # Model
    picture = photos / "hostile-exif.jpg"
    Image.new("RGB", (64, 48), (120, 30, 200)).save(picture, "JPEG", exif=exif)
    uri = tmp_path / "exif.lance"
    classified_store(uri, [str(picture)])
    key = hashlib.sha256(picture.read_bytes()).hexdigest()
    page, = asyncio.run(responses(uri, [f"/image/{key}"], data_root=photos))
    assert page.status_code == 200
    camera = re.findall(r"<dt>camera</dt><dd class=\"fact\">([^<]*)</dd>", page.text)
    assert camera == ["&lt;script&gt;window.__xss = 5&lt;/script&gt; "
                      "&lt;img src=x onerror=&#34;window.__xss = 6&#34;&gt;"]
    assert "<script>" not in page.text and "<img src=x" not in page.text


def test_thumbnails_stay_right_when_the_store_is_compacted(tmp_path: Path) -> None:
    """Compaction renumbers rows: a reader must never serve one image's thumbnail for
    another's, whether its snapshot is refreshed or still pinned to the old version."""
    uri = tmp_path / "compact.lance"
    sink = WriteBack(str(uri), 1280)
    sink.close()
    pictures = {}
    for shade in range(0, 250, 50):
        out = io.BytesIO()
        Image.new("RGB", (32, 24), (shade, 100, 200)).save(out, "JPEG")
        pictures[hashlib.sha256(out.getvalue()).hexdigest()] = out.getvalue()

    async def scenario(refresh_seconds: float) -> None:
        db = await lancedb.connect_async(str(uri))
        table = await db.open_table(IMAGES)
        for key, jpeg in pictures.items():  # one fragment per image
            await table.add(pa.Table.from_pylist([{
                "image_key": key, "model": "m", "path": None, "top_k": 1, "idx": [0],
                "label": ["tench"], "confidence": [0.5], "run_id": "2" * 32,
                "created_at": None, "vector": [0.1] * 1280, "thumbnail": jpeg}],
                schema=await table.schema()))
        catalog = await Catalog.open(str(uri), refresh_seconds=refresh_seconds)
        try:
            assert {k: await catalog.thumbnail(k) for k in pictures} == pictures
            await table.delete(f"image_key = '{next(iter(pictures))}'")
            await table.optimize()
            survivors = dict(list(pictures.items())[1:])
            got = {k: await catalog.thumbnail(k) for k in survivors}
            assert got == survivors
        finally:
            catalog.close()
            await table.delete("true")
            table.close()
            db.close()

    asyncio.run(scenario(0))
    asyncio.run(scenario(3600))


def test_per_page_and_confidence_range_bound_the_page(store: GalleryStore) -> None:
    flt = Filter.from_query({"per_page": "100000", "min_confidence": "0.5",
                             "max_confidence": "0.2", "page": "-4"})
    assert (flt.per_page, flt.page) == (200, 1)
    assert (flt.min_confidence, flt.max_confidence) == (0.2, 0.5)
    confident = [k for k, v in store.labels.items() if k != store.hostile_key]
    page, = asyncio.run(responses(store.uri, ["/?min_confidence=0.9"]))
    shown = {k for k in confident if f'data-key="{k}"' in page.text}
    assert shown == {k for k, name in store.names.items() if name == "coffee.png"}


def test_smallest_margin_first_follows_the_stored_top_two(store: GalleryStore) -> None:
    async def margins() -> dict[str, float]:
        db = await lancedb.connect_async(str(store.uri))
        table = await db.open_table(IMAGES)
        rows = (await table.query().select(["image_key", "confidence"]).to_arrow()).to_pylist()
        table.close()
        db.close()
        return {r["image_key"]: r["confidence"][0] - r["confidence"][1] for r in rows}

    expected = sorted((margin, key) for key, margin in asyncio.run(margins()).items())
    page, = asyncio.run(responses(store.uri, ["/?order=margin"]))
    shown = re.findall(r'class="tile" data-key="([0-9a-f]{64})"', page.text)
    assert shown == [key for _, key in expected]


def test_paths_and_files_only_under_the_data_root(store: GalleryStore, tmp_path: Path) -> None:
    cat = next(k for k, name in store.names.items() if name == "cat.png")
    inside, elsewhere, nowhere = (asyncio.run(responses(store.uri, [f"/image/{cat}"], root))[0]
                                  for root in (REPO, tmp_path, None))
    assert ">test/sql/data/cat.png<" in inside.text and "PNG" in inside.text
    assert "cat.png" not in elsewhere.text and "PNG" not in elsewhere.text
    assert f">{REPO}/test/sql/data/cat.png<" in nowhere.text  # shown as stored, never read
    assert "PNG" not in nowhere.text
    policy = FilePolicy(str(tmp_path))
    assert policy.shown_path("../../etc/passwd") is None
    assert policy.facts("/etc/passwd") == []


def test_the_full_size_file_is_served_only_while_it_holds_the_stored_image(
        tmp_path: Path) -> None:
    """/full/ serves the file under the data root only when its bytes still hash to the image
    key; a file replaced since, or one outside the root, is never shown as the image."""
    photo = tmp_path / "photo.png"
    photo.write_bytes((REPO / "test/sql/data/coffee.png").read_bytes())
    key = hashlib.sha256(photo.read_bytes()).hexdigest()
    policy = FilePolicy(str(tmp_path))
    assert policy.original(str(photo), key) == (photo.read_bytes(), "image/png")
    assert FilePolicy(str(REPO)).original(str(photo), key) is None  # outside the root
    photo.write_bytes((REPO / "test/sql/data/cat.png").read_bytes())  # replaced since
    assert policy.original(str(photo), key) is None


def test_image_facts_read_exif_and_survive_garbage() -> None:
    exif = Image.Exif()
    exif[0x010F] = "Acme <Camera>"  # Make
    exif[0x0110] = "Model\x00 9"  # Model, with a NUL
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 200, 30)).save(out, "JPEG", exif=exif)
    facts = dict(image_facts(out.getvalue()))
    assert facts["format"] == "JPEG" and facts["size"] == "64 x 48 px"
    assert facts["camera"] == "Acme <Camera> Model 9"
    assert image_facts(b"\xff\xd8\xff\xe1 broken") == []
    assert image_facts(out.getvalue()[:40]) == []


def test_runs_committed_while_open_appear_and_unfinished_ones_do_not(
        tmp_path: Path, store: GalleryStore) -> None:
    uri = tmp_path / "live.lance"
    first = Image.new("RGB", (96, 96), (200, 200, 20))
    second = Image.new("RGB", (96, 96), (20, 40, 220))
    pictures = []
    for image in (first, second):
        out = io.BytesIO()
        image.save(out, "PNG")
        pictures.append(out.getvalue())
    sink = WriteBack(str(uri), 1280)
    try:
        classify_into(sink, pictures[:1])

        async def scenario() -> tuple[int, int, int]:
            catalog = await Catalog.open(str(uri), refresh_seconds=0)
            try:
                before, _ = await catalog.page(Filter())
                # rows of a run not yet committed stay invisible
                db = await lancedb.connect_async(str(uri))
                staged = await db.open_table(STAGED)
                await staged.add(pa.Table.from_pylist([{
                    "image_key": hashlib.sha256(b"x").hexdigest(), "model": "m", "path": None,
                    "top_k": 1, "idx": [0], "label": ["pending"], "confidence": [0.5],
                    "run_id": "e" * 32, "created_at": None, "vector": [0.0] * 1280,
                    "thumbnail": None, "input_row": 0}], schema=await staged.schema()))
                staged.close()
                db.close()
                pending, _ = await catalog.page(Filter())
                await asyncio.to_thread(classify_into, sink, pictures[1:])
                after, _ = await catalog.page(Filter())
                return before, pending, after
            finally:
                catalog.close()

        assert asyncio.run(scenario()) == (1, 1, 2)
    finally:
        sink.close()


def test_the_csv_export_never_hands_a_spreadsheet_a_formula(tmp_path: Path) -> None:
    """A file named like a formula, and labels starting with every character a spreadsheet
    evaluates: each such CSV cell starts with ``'``; the JSON export keeps them as stored."""
    folder = tmp_path / "photos"
    folder.mkdir()
    named = folder / "=cmd.png"
    named.write_bytes((REPO / "test" / "sql" / "data" / "coffee.png").read_bytes())
    uri = tmp_path / "formulas.lance"
    classified_store(uri, [str(named)])
    hostile = ["=HYPERLINK(\"http://evil.example\")", "+1+2", "-3+4", "@SUM(A1)", "\tcmd",
               "\rcmd"]
    add_rows(uri, [{"label": [label, "tench"], "path": f"{folder}/plain{i}.png"}
                   for i, label in enumerate(hostile)])
    as_csv, as_json = asyncio.run(responses(uri, ["/export.csv", "/export.json"],
                                            data_root=folder))
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    by_path = {row["path"]: row for row in rows}
    assert by_path["'=cmd.png"]["label"] == "espresso"
    assert sorted(row["label"] for row in rows if row["path"] != "'=cmd.png") \
        == sorted("'" + label for label in hostile)
    stored = json.loads(as_json.text)
    assert {row["path"] for row in stored} == {"=cmd.png", *(f"plain{i}.png"
                                                            for i in range(len(hostile)))}
    assert sorted(row["label"] for row in stored if row["path"] != "=cmd.png") \
        == sorted(hostile)


def test_images_stored_from_several_paths_carry_a_badge_and_a_facet(tmp_path: Path) -> None:
    """A byte-identical copy under a second name: one tile, badged "2 paths", the only one the
    *has copies* facet selects. A third name stored by a later run, which does not store the
    image again (same classes), still moves the badge once the page follows the store."""
    folder = tmp_path / "photos"
    folder.mkdir()
    data = REPO / "test" / "sql" / "data"
    for name, source in (("a.png", "cat.png"), ("copy of a.png", "cat.png"),
                         ("b.png", "coffee.png")):
        (folder / name).write_bytes((data / source).read_bytes())
    (folder / "third.png").write_bytes((data / "cat.png").read_bytes())
    copied = hashlib.sha256((data / "cat.png").read_bytes()).hexdigest()
    uri = tmp_path / "copies.lance"
    sink = WriteBack(str(uri), 1280)

    def badges(page: str) -> dict[str, str]:
        return dict(re.findall(r'data-key="([0-9a-f]{64})".*?(?:<span class="copies"[^>]*>'
                               r'([^<]*)</span>|</li>)', page, re.DOTALL))

    async def scenario() -> None:
        catalog = await Catalog.open(str(uri), refresh_seconds=0)
        app = make_app(catalog, FilePolicy(str(folder)))
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                         base_url="http://127.0.0.1") as client:
                grid = (await client.get("/")).text
                assert badges(grid) == {copied: "2 paths",
                                        hashlib.sha256((data / "coffee.png").read_bytes())
                                        .hexdigest(): ""}
                assert re.search(r'class="facet-copies" href="\?copies=True">[^<]*</a> '
                                 r'<span class="count">1</span>', grid)
                selected = (await client.get("/?copies=True")).text
                assert re.findall(r'data-key="([0-9a-f]{64})"', selected) == [copied]
                assert ">1 of 2 images<" in selected
                await asyncio.to_thread(classify_into, sink, [str(folder / "third.png")])
                assert badges((await client.get("/?copies=1")).text) == {copied: "3 paths"}
        finally:
            catalog.close()

    try:
        classify_into(sink, [str(folder / n) for n in ("a.png", "copy of a.png", "b.png")])
        asyncio.run(scenario())
    finally:
        sink.close()


def test_one_classify_command_is_one_entry_of_the_run_facet(tmp_path: Path) -> None:
    """`vgi-vision classify` sends its files a few at a time, each request one run: the
    command's job id puts them under one Run facet entry, which selects every image of the
    command, while a run requested without a job stays an entry of its own."""
    uri = tmp_path / "jobs.lance"
    data = REPO / "test" / "sql" / "data"
    done = subprocess.run([sys.executable, "-m", "vgi_vision", "classify", str(data),
                           "--lance", str(uri), "--chunk-files", "1", "--format", "csv"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    other = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(other, "PNG")
    classified_store(uri, [other.getvalue()])  # a run of its own, without a job

    async def runs() -> dict[str, str | None]:
        db = await lancedb.connect_async(str(uri))
        table = await db.open_table("runs")
        rows = (await table.query().to_arrow()).to_pylist()
        table.close()
        db.close()
        return {r["run_id"]: r["job_id"] for r in rows}

    jobs = asyncio.run(runs())
    files = len([p for p in data.iterdir() if p.is_file()])
    job = next(j for j in jobs.values() if j is not None)
    alone = [run for run, j in jobs.items() if j is None]
    assert sorted(jobs.values(), key=str) == sorted([job] * files + [None], key=str)
    grid, chosen = asyncio.run(responses(uri, ["/", f"/?run={job}"]))
    entries = re.findall(r'class="facet-run" title="([^"]*)" href="\?run=([0-9a-f]{32})">'
                         r'[^<]*</a> <span class="when">[^<]*</span> '
                         r'<span class="count">(\d+)</span>', grid.text)
    assert sorted(entries) == sorted([(f"stored by {files} runs", job, str(files)),
                                      ("stored by 1 run", alone[0], "1")])
    assert len(re.findall(r'data-key="[0-9a-f]{64}"', chosen.text)) == files
    assert f">{files} of {files + 1} images<" in chosen.text


def test_a_malformed_stored_job_id_leaves_its_run_an_entry_of_its_own(tmp_path: Path) -> None:
    """A job id in the store is data: one that is not 32 hex digits groups nothing, and its
    run is listed, and selectable, under its own id."""
    uri = tmp_path / "badjob.lance"
    picture = io.BytesIO()
    Image.new("RGB", (64, 64), (90, 20, 160)).save(picture, "PNG")
    classified_store(uri, [picture.getvalue()])

    async def spoil() -> str:
        db = await lancedb.connect_async(str(uri))
        runs = await db.open_table("runs")
        await runs.update(updates_sql={"job_id": "'\"><b>job</b>'"})
        (run,) = (await runs.query().to_arrow()).column("run_id").to_pylist()
        runs.close()
        db.close()
        return run

    run = asyncio.run(spoil())
    grid, chosen = asyncio.run(responses(uri, ["/", f"/?run={run}"]))
    assert re.findall(r'class="facet-run"[^>]*href="\?run=([0-9a-f]{32})"', grid.text) == [run]
    assert "<b>job</b>" not in grid.text
    assert ">1 of 1 images<" in chosen.text
