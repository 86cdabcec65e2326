"""The gallery over a write-back store on object storage, in headless chromium.

The photos live in one bucket and the store in another, both on the local S3 server; the
``vgi-vision browse`` process finds them through the standard AWS variables alone.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from gallery_store import DATA, classify_into, running_gallery
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from test_gallery_browser import browser, open_page, tiles  # noqa: F401 - the fixture

from vgi_vision.gallery.facts import FilePolicy
from vgi_vision.testing.s3server import LocalS3
from vgi_vision.worker.lance.writeback import WriteBack
from vgi_vision.worker.vision.model import load_classifier

PHOTOS = "s3://gallery-photos/photos/"
STORE = "s3://gallery-store/store"


@pytest.fixture(scope="module")
def object_store(s3: LocalS3) -> Iterator[dict[str, str]]:
    """The photos classified by URL into an s3:// store; yields url -> top-1 label."""
    s3.create_bucket("gallery-photos")
    s3.create_bucket("gallery-store")
    names = sorted(p.name for p in DATA.iterdir() if p.is_file())
    urls = [s3.put("gallery-photos", f"photos/{name}", (DATA / name).read_bytes())
            for name in names]
    with pytest.MonkeyPatch.context() as env:
        for name, value in s3.env().items():
            env.setenv(name, value)
        sink = WriteBack(STORE, 1280)
        try:
            classify_into(sink, urls)
        finally:
            sink.close()
        classifier = load_classifier()
        labels = {}
        for url, name in zip(urls, names, strict=True):
            result = classifier.classify([(DATA / name).read_bytes()], top_k=1)[0]
            assert result is not None
            labels[url] = classifier.info.labels[int(result.indices[0])]
        yield labels


@pytest.fixture(scope="module")
def gallery(object_store: dict[str, str], s3: LocalS3,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gallery(STORE, tmp_path_factory.mktemp("browse-s3"), "--data-root", PHOTOS,
                         env=s3.env()) as url:
        yield url


def test_the_grid_and_details_of_an_object_store(browser: WebDriver,  # noqa: F811
                                                  gallery: str,
                                                  object_store: dict[str, str]) -> None:
    open_page(browser, gallery + "/")
    shown = {t.get_attribute("data-key"): t.find_element(By.CSS_SELECTOR, ".path")
             .get_attribute("textContent") for t in browser.find_elements(By.CSS_SELECTOR, ".tile")}
    assert sorted(shown.values()) == sorted(object_store)  # stored URLs, shown whole
    by_url = {url: key for key, url in shown.items()}
    assert {by_url[url]: label for url, label in object_store.items()} == tiles(browser)
    broken = browser.execute_script(
        "return [...document.querySelectorAll('.tile img')].filter(i => !i.naturalWidth)"
        ".map(i => i.src)")
    assert broken == []
    cat = by_url[f"{PHOTOS}cat.png"]
    browser.find_element(By.CSS_SELECTOR, f".tile[data-key='{cat}'] a").click()
    WebDriverWait(browser, 60).until(lambda d: d.find_elements(By.ID, "detail"))
    assert browser.find_element(By.ID, "top-label").text == object_store[f"{PHOTOS}cat.png"]
    facts = [d.text for d in browser.find_elements(By.CSS_SELECTOR, "#facts dd.fact")]
    assert "PNG" in facts  # the object is under the data root: read from storage
    assert browser.find_element(By.CSS_SELECTOR, "#detail .path").text == f"{PHOTOS}cat.png"


def test_only_urls_under_the_data_root_are_shown() -> None:
    files = FilePolicy(PHOTOS)
    assert files.shown_path(f"{PHOTOS}a/cat.png") == f"{PHOTOS}a/cat.png"
    for path in ["s3://gallery-photos/photos-private/cat.png", "s3://gallery-photos/cat.png",
                 f"{PHOTOS}../cat.png", str(DATA / "cat.png"), "cat.png"]:
        assert files.shown_path(path) is None, path
        assert files.facts(path) == [], path
