"""The gallery in a real browser: Debian's chromium, headless, driven by Selenium.

Against a real ``vgi-vision browse`` process over a store filled by classifying the test
photos. A screenshot of the grid is kept under ``artifacts/`` for CI.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import lancedb
import numpy as np
import pytest
from gallery_store import (
    HOSTILE_LABEL,
    HOSTILE_PATH,
    REPO,
    GalleryStore,
    running_gallery,
)
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from vgi_vision.worker.lance.kinds import IMAGES
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.categories import load_taxonomy
from vgi_vision.worker.vision.detection import load_object_detector
from vgi_vision.worker.vision.model import load_classifier

ARTIFACTS = REPO / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def gallery(store: GalleryStore, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gallery(store.uri, tmp_path_factory.mktemp("browse"),
                         "--data-root", str(REPO)) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.fail("chromium and chromedriver are required: apt-get install chromium "
                    "chromium-driver (.ci/run does)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000", "--disable-extensions"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser: WebDriver, url: str) -> None:
    browser.get(url)
    WebDriverWait(browser, 60).until(lambda d: d.execute_script(
        "return document.readyState === 'complete' && "
        "[...document.images].every(i => i.complete)"))


def tiles(browser: WebDriver) -> dict[str, str]:
    """image_key -> label text of every tile on the page."""
    return {t.get_attribute("data-key"): t.find_element(By.CSS_SELECTOR, ".label")
            .get_attribute("textContent") for t in browser.find_elements(By.CSS_SELECTOR, ".tile")}


def test_grid_shows_every_image_with_its_label(browser: WebDriver, gallery: str,
                                               store: GalleryStore) -> None:
    open_page(browser, gallery + "/")
    assert tiles(browser) == store.labels
    broken = browser.execute_script(
        "return [...document.querySelectorAll('.tile img')].filter(i => !i.naturalWidth)"
        ".map(i => i.src)")
    assert broken == []  # every thumbnail, BLOB-classified ones too, decoded in the browser
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)")
    assert fetched and all(url.startswith(gallery + "/") for url in fetched)  # works offline
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "gallery-grid.png"
    browser.save_screenshot(str(shot))
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("RGB"))
    assert pixels.shape[0] > 500 and pixels.shape[1] > 1000
    assert pixels.std() > 20  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1000  # photos, not flat boxes


def test_label_facet_filters(browser: WebDriver, gallery: str, store: GalleryStore) -> None:
    open_page(browser, gallery + "/")
    wanted = next(label for key, label in store.labels.items() if key != store.hostile_key)
    link = next(a for a in browser.find_elements(By.CSS_SELECTOR, "a.facet-label")
                if a.get_attribute("data-label") == wanted)
    link.click()
    WebDriverWait(browser, 60).until(lambda d: "label=" in d.current_url)
    shown = tiles(browser)
    assert shown == {k: v for k, v in store.labels.items() if v == wanted}
    assert browser.find_element(By.ID, "summary").text.startswith(f"{len(shown)} of ")
    # a detail and back: the grid comes back filtered as it was
    browser.find_element(By.CSS_SELECTOR, ".tile a").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "detail"))
    browser.find_element(By.CSS_SELECTOR, "a.back").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "grid"))
    assert tiles(browser) == shown


def test_category_facet_counts_and_filters(browser: WebDriver, gallery: str,
                                           store: GalleryStore) -> None:
    classifier = load_classifier()
    info = classifier.info
    taxonomy = load_taxonomy(info.directory, info.metadata["categories"]["file"], info.wnids)
    index = {label: i for i, label in enumerate(info.labels)}

    def under(wnid: str) -> dict[str, str]:
        return {k: v for k, v in store.labels.items()
                if v in index and wnid in taxonomy.ancestors[index[v]]}

    open_page(browser, gallery + "/")
    facet = {a.get_attribute("data-category"): a for a in
             browser.find_elements(By.CSS_SELECTOR, "a.facet-category")}
    assert facet  # the shipped model has WordNet categories
    for wnid, link in facet.items():
        count = link.find_element(By.XPATH, "following-sibling::span[@class='count']").text
        assert int(count) == len(under(wnid)), taxonomy.name(wnid)
    cat = next(k for k, name in store.names.items() if name == "cat.png")
    domestic_cat = next(w for w in taxonomy.ancestors[index[store.labels[cat]]]
                        if taxonomy.name(w) == "domestic cat")
    facet[domestic_cat].click()
    WebDriverWait(browser, 60).until(lambda d: "category=" in d.current_url)
    assert tiles(browser) == under(domestic_cat) == {cat: store.labels[cat]}


def test_uncertain_first_orders_by_confidence(browser: WebDriver, gallery: str,
                                              store: GalleryStore) -> None:
    open_page(browser, gallery + "/?order=uncertain")
    confidences = [float(t.get_attribute("data-confidence"))
                   for t in browser.find_elements(By.CSS_SELECTOR, ".tile")]
    assert len(confidences) == len(store.labels)
    assert confidences == sorted(confidences)


def stored_vectors(store: GalleryStore) -> dict[str, np.ndarray]:
    async def read() -> dict[str, np.ndarray]:
        db = await lancedb.connect_async(str(store.uri))
        table = await db.open_table(IMAGES)
        rows = await table.query().select(["image_key", "vector"]).to_arrow()
        table.close()
        db.close()
        return {k: np.asarray(v) for k, v in zip(rows.column("image_key").to_pylist(),
                                                 rows.column("vector").to_pylist(), strict=True)}

    return asyncio.run(read())


def test_detail_lists_neighbours_in_distance_order(browser: WebDriver, gallery: str,
                                                   store: GalleryStore) -> None:
    cat = next(k for k, name in store.names.items() if name == "cat.png")
    open_page(browser, gallery + "/")
    browser.find_element(By.CSS_SELECTOR, f".tile[data-key='{cat}'] a").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "detail"))
    assert browser.find_element(By.ID, "top-label").text == store.labels[cat]
    bars = browser.find_elements(By.CSS_SELECTOR, "#top-k .prediction")
    assert len(bars) == 5
    facts = [d.text for d in browser.find_elements(By.CSS_SELECTOR, "#facts dd.fact")]
    assert "PNG" in facts  # the file is under the data root: its facts are read
    neighbours = browser.find_elements(By.CSS_SELECTOR, "#neighbours .neighbour")
    keys = [n.get_attribute("data-key") for n in neighbours]
    distances = [float(n.get_attribute("data-distance")) for n in neighbours]
    assert distances == sorted(distances)
    # the same order computed here, from the stored vectors
    vectors = stored_vectors(store)
    expected = sorted((k for k in vectors if k != cat),
                      key=lambda k: 1 - float(vectors[k] @ vectors[cat]))
    assert keys == expected
    assert distances == pytest.approx([1 - float(vectors[k] @ vectors[cat]) for k in keys],
                                      abs=1e-4)
    neighbours[0].find_element(By.TAG_NAME, "a").click()  # each neighbour is clickable
    WebDriverWait(browser, 60).until(
        lambda d: d.find_element(By.ID, "detail").get_attribute("data-key") == keys[0])


def test_paging_walks_every_image_once(browser: WebDriver, gallery: str,
                                       store: GalleryStore) -> None:
    open_page(browser, gallery + "/?" + urlencode({"per_page": 2, "order": "confident"}))
    seen: list[str] = []
    pages = 0
    while True:
        pages += 1
        page = tiles(browser)
        assert 1 <= len(page) <= 2
        seen += page
        nexts = browser.find_elements(By.ID, "next")
        if not nexts:
            break
        nexts[0].click()
        wanted = f"page={pages + 1}"
        WebDriverWait(browser, 60).until(lambda d, wanted=wanted: wanted in d.current_url)
        assert browser.find_elements(By.ID, "prev")
    assert pages == (len(store.labels) + 1) // 2
    assert sorted(seen) == sorted(store.labels)


def test_hostile_store_data_is_escaped(browser: WebDriver, gallery: str,
                                       store: GalleryStore) -> None:
    for url in (gallery + "/?" + urlencode({"search": "<script>"}),
                f"{gallery}/image/{store.hostile_key}"):
        open_page(browser, url)
        assert browser.execute_script("return window.__xss") is None
        scripts = [s.get_attribute("src")
                   for s in browser.find_elements(By.TAG_NAME, "script")]
        assert scripts == [gallery + "/static/gallery.js"]
        assert not browser.find_elements(By.CSS_SELECTOR, "b, img[src='x']")
    # shown as text, exactly as stored
    assert browser.find_element(By.ID, "top-label").get_attribute("textContent") == HOSTILE_LABEL
    assert browser.find_element(By.CSS_SELECTOR, "#facts dd.path").text == HOSTILE_PATH
    labels = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#top-k td.label")]
    assert labels[1] == "'; DROP TABLE x; --"
    box, = browser.find_elements(By.CSS_SELECTOR, "#boxes .box")  # the stored detection
    assert box.get_attribute("data-label") == HOSTILE_LABEL
    assert box.find_element(By.TAG_NAME, "text").get_attribute("textContent") == \
        f"{HOSTILE_LABEL} 90.0%"
    open_page(browser, gallery + "/?" + urlencode({"search": "<script>"}))
    assert tiles(browser) == {store.hostile_key: HOSTILE_LABEL}


def test_search_finds_a_categorys_images_by_its_words(browser: WebDriver, gallery: str,
                                                      store: GalleryStore) -> None:
    """"cat" finds the cat photo whatever cat breed it was labelled (Egyptian Mau, tabby...):
    the search reads the WordNet lemmas of the categories above each label, whole words."""
    cat = next(k for k, name in store.names.items() if name == "cat.png")
    open_page(browser, gallery + "/")
    box = browser.find_element(By.ID, "search")
    box.send_keys("Cat")
    box.submit()
    WebDriverWait(browser, 60).until(lambda d: "search=Cat" in d.current_url)
    assert tiles(browser) == {cat: store.labels[cat]}
    open_page(browser, gallery + "/?" + urlencode({"search": "domestic cat"}))
    assert tiles(browser) == {cat: store.labels[cat]}
    assert "omestic" not in store.labels[cat].lower()
    open_page(browser, gallery + "/?" + urlencode({"search": "omestic"}))  # not a whole word
    assert cat not in tiles(browser)


def test_label_histogram_is_folded_until_opened(browser: WebDriver, gallery: str) -> None:
    open_page(browser, gallery + "/")
    histogram = browser.find_element(By.ID, "histogram")
    rows = browser.find_elements(By.CSS_SELECTOR, "#histogram .bar-row")
    assert rows and not any(r.is_displayed() for r in rows)
    grid_top = browser.find_element(By.ID, "grid").location["y"]
    histogram.find_element(By.TAG_NAME, "summary").click()
    WebDriverWait(browser, 10).until(lambda d: rows[0].is_displayed())
    assert browser.find_element(By.ID, "grid").location["y"] > grid_top


def test_export_holds_every_page_of_the_current_view(browser: WebDriver, gallery: str,
                                                     store: GalleryStore) -> None:
    """The export links carry the page's filter and order; what they serve is every image of
    the view across pages, in the page's order, as CSV and as JSON."""
    import csv
    import io
    import json
    import urllib.request

    open_page(browser, gallery + "/?" + urlencode({"per_page": 2, "order": "uncertain"}))
    shown = list(tiles(browser))
    csv_link = browser.find_element(By.ID, "export-csv").get_attribute("href")
    json_link = browser.find_element(By.ID, "export-json").get_attribute("href")
    assert "order=uncertain" in csv_link and "order=uncertain" in json_link
    with urllib.request.urlopen(csv_link, timeout=60) as response:
        rows = list(csv.DictReader(io.StringIO(response.read().decode())))
    with urllib.request.urlopen(json_link, timeout=60) as response:
        records = json.loads(response.read())
    assert len(rows) == len(records) == len(store.labels) > len(shown)
    assert [r["image_key"] for r in rows] == [r["image_key"] for r in records]
    assert [r["image_key"] for r in rows][:2] == shown
    assert {r["image_key"]: r["label"] for r in records} == store.labels
    assert all(0 <= float(r["confidence"]) <= 1 for r in rows)


def test_detail_steps_through_the_view_in_its_order_by_keyboard(
        browser: WebDriver, gallery: str, store: GalleryStore) -> None:
    """From the first image of a view, the right arrow walks every image of the view in the
    grid's order (across its pages), left walks back, Escape returns to the grid page."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    view = {"per_page": 2, "order": "confident"}
    order: list[str] = []
    for page in range(1, len(store.labels) // 2 + 2):
        open_page(browser, gallery + "/?" + urlencode({**view, "page": page}))
        order += [k for k in tiles(browser) if k not in order]
    open_page(browser, gallery + "/?" + urlencode(view))
    browser.find_element(By.CSS_SELECTOR, f".tile[data-key='{order[0]}'] a").click()

    def shown() -> str:
        WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "detail"))
        return browser.find_element(By.ID, "detail").get_attribute("data-key")

    walked = [shown()]
    assert not browser.find_elements(By.ID, "prev")
    while browser.find_elements(By.ID, "next"):
        ActionChains(browser).send_keys(Keys.ARROW_RIGHT).perform()
        WebDriverWait(browser, 60).until(lambda d: shown() != walked[-1])
        walked.append(shown())
    assert walked == order
    ActionChains(browser).send_keys(Keys.ARROW_LEFT).perform()
    WebDriverWait(browser, 60).until(lambda d: shown() == order[-2])
    ActionChains(browser).send_keys(Keys.ESCAPE).perform()
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "grid"))
    assert "order=confident" in browser.current_url


def test_detail_shows_the_file_full_size_else_the_thumbnail(browser: WebDriver, gallery: str,
                                                            store: GalleryStore) -> None:
    """An image stored by path under --data-root shows its file at full size; one stored from
    bytes (no path) shows its thumbnail."""
    by_path = next(k for k, name in store.names.items() if name == "cat.png")
    from_bytes = next(k for k, name in store.names.items() if name == "rocket.jpg")
    sizes = {}
    for key in (by_path, from_bytes):
        open_page(browser, f"{gallery}/image/{key}")
        picture = browser.find_element(By.ID, "picture")
        sizes[key] = (browser.execute_script("return arguments[0].naturalWidth", picture),
                      browser.execute_script("return arguments[0].naturalHeight", picture))
    assert sizes[by_path] == Image.open(REPO / "test/sql/data/cat.png").size  # (451, 300)
    assert max(sizes[from_bytes]) <= 256  # the stored thumbnail
def test_stored_detections_are_drawn_and_faceted(browser: WebDriver, gallery: str,
                                                 store: GalleryStore) -> None:
    """Grace Hopper's photograph: a person and a face stored; their boxes drawn over the
    picture where the stored pixels say, labelled; the facets find her photo only."""
    hopper = next(k for k, name in store.names.items() if name == "grace_hopper.jpg")
    open_page(browser, f"{gallery}/image/{hopper}")
    boxes = browser.find_elements(By.CSS_SELECTOR, "#boxes .box")
    labels = {b.get_attribute("data-label") for b in boxes}
    assert {"person", "face"} <= labels
    picture = browser.find_element(By.ID, "picture").rect
    stored = load_object_detector().detect([(REPO / "test/sql/data/grace_hopper.jpg")
                                            .read_bytes()], DecodeLimits(), 0.5)[0]
    person = next(d for d in stored if d.label == "person")
    drawn = next(b for b in boxes if b.get_attribute("data-label") == "person")
    rect = drawn.find_element(By.TAG_NAME, "rect").rect
    scale = picture["width"] / 512  # the photograph is 512 x 600
    assert rect["width"] > 0 and rect["height"] > 0
    for edge, drawn_at in (("x0", rect["x"] - picture["x"]), ("y0", rect["y"] - picture["y"]),
                           ("x1", rect["x"] + rect["width"] - picture["x"]),
                           ("y1", rect["y"] + rect["height"] - picture["y"])):
        assert abs(drawn_at - getattr(person, edge) * scale) <= 4, edge
    assert "person" in drawn.find_element(By.TAG_NAME, "text").text
    open_page(browser, gallery + "/?has=person")
    assert set(tiles(browser)) == {hopper}
    open_page(browser, gallery + "/?faces=1")
    assert set(tiles(browser)) == {hopper}

    def face_facet() -> dict[str, str]:
        return {a.get_attribute("data-faces"): a.find_element(
            By.XPATH, "following-sibling::span[@class='count']").text
            for a in browser.find_elements(By.CSS_SELECTOR, "a.facet-faces")}

    assert face_facet() == {"0": "3", "1": "1"}  # a facet is counted without its own filter
    open_page(browser, gallery + "/?has=person")
    assert face_facet() == {"1": "1"}  # ... but under the others


def test_a_classify_command_is_one_run_entry_and_copies_are_badged(
        browser: WebDriver, tmp_path: Path) -> None:
    """A folder classified by `vgi-vision classify` one file per request: one Run facet
    entry, which selects every image; the photo stored under two names carries "2 paths" and
    is what *has copies* selects."""
    folder = tmp_path / "photos"
    folder.mkdir()
    data = REPO / "test" / "sql" / "data"
    for name, source in (("cat.png", "cat.png"), ("copy-of-cat.png", "cat.png"),
                         ("coffee.png", "coffee.png"), ("rocket.jpg", "rocket.jpg")):
        shutil.copy(data / source, folder / name)
    uri = tmp_path / "store.lance"
    done = subprocess.run([sys.executable, "-m", "vgi_vision", "classify", str(folder),
                           "--lance", str(uri), "--chunk-files", "1", "--format", "csv"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    with running_gallery(uri, tmp_path, "--data-root", str(folder)) as url:
        open_page(browser, url + "/")
        entries = browser.find_elements(By.CSS_SELECTOR, "a.facet-run")
        # Four runs; the copy's stored nothing new (its image was stored by another).
        assert [e.get_attribute("title") for e in entries] == ["stored by 3 runs"]
        badges = [b.text for b in browser.find_elements(By.CSS_SELECTOR, ".tile .copies")]
        assert badges == ["2 paths"]
        entries[0].click()
        WebDriverWait(browser, 60).until(lambda d: "run=" in d.current_url)
        assert len(tiles(browser)) == 3
        open_page(browser, url + "/")
        browser.find_element(By.CSS_SELECTOR, "a.facet-copies").click()
        WebDriverWait(browser, 60).until(lambda d: "copies=" in d.current_url)
        (only,) = browser.find_elements(By.CSS_SELECTOR, ".tile")
        assert only.find_element(By.CSS_SELECTOR, ".copies").text == "2 paths"
