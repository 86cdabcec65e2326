"""The shipped int8 EfficientNet-Lite0 against the fp32 model it was quantized from.

Real photographs only: the committed fixtures and fixed crops, mirror images, half-size
copies and re-encodes of them (``bench/images.py``). The int8 model must keep the expected
class of every fixture in its top 3 and agree with fp32 on most images; the measured numbers
are printed by ``bench/bench_int8.py`` and recorded in docs/models.md.
"""

from __future__ import annotations

import json

import duckdb
import pytest
from conftest import DATA, EXPECTED_TOP5

import vgi_vision
from bench.images import photo_variants
from vgi_vision.worker.vision.model import Classifier, load_classifier
from vgi_vision.worker.vision.model_files import models_root

INT8 = "efficientnet-lite0-int8"
FP32 = "efficientnet-lite0"


@pytest.fixture(scope="module")
def models() -> tuple[Classifier, Classifier]:
    return load_classifier(FP32), load_classifier(INT8)


@pytest.fixture(scope="module")
def variants() -> dict[str, bytes]:
    return photo_variants(DATA)


def test_int8_metadata_describes_the_quantized_model() -> None:
    fp32 = json.loads((models_root() / FP32 / "metadata.json").read_text())
    int8 = json.loads((models_root() / INT8 / "metadata.json").read_text())
    assert int8["precision"] == "int8" and fp32["precision"] == "fp32"
    assert int8["quantization"]["source_sha256"] == fp32["sha256"]
    assert int8["sha256"] != fp32["sha256"]
    assert int8["input"] == fp32["input"] and int8["license"] == fp32["license"]
    assert (models_root() / INT8 / "labels.tsv").read_bytes() == \
        (models_root() / FP32 / "labels.tsv").read_bytes()
    assert (models_root() / INT8 / "model.onnx").stat().st_size < \
        (models_root() / FP32 / "model.onnx").stat().st_size / 3


@pytest.mark.parametrize("name", sorted(EXPECTED_TOP5))
def test_int8_keeps_the_expected_class_in_the_top_3(models, name: str) -> None:
    _, int8 = models
    result = int8.classify([(DATA / name).read_bytes()], top_k=3)[0]
    assert result is not None
    top3 = {int8.info.labels[i] for i in result.indices}
    assert top3 & EXPECTED_TOP5[name], (name, top3)


def test_int8_agrees_with_fp32_on_real_photographs(models, variants) -> None:
    fp32, int8 = models
    images = list(variants.values())
    assert len(images) >= 40
    a, b = fp32.classify(images, top_k=5), int8.classify(images, top_k=5)
    assert all(r is not None for r in a + b)
    same_top1 = sum(int(x.indices[0] == y.indices[0]) for x, y in zip(a, b, strict=True))
    overlap = sum(len(set(x.indices) & set(y.indices)) for x, y in zip(a, b, strict=True))
    assert same_top1 / len(images) >= 0.8, f"top-1 agreement {same_top1}/{len(images)}"
    assert overlap / (5 * len(images)) >= 0.8, f"top-5 overlap {overlap / 5 / len(images)}"
    # where they disagree at top-1, fp32's answer is still among int8's top 5
    for x, y in zip(a, b, strict=True):
        assert x.indices[0] in y.indices


def test_attach_int8_classifies_the_photographs() -> None:
    con = duckdb.connect()
    vgi_vision.attach(con, model=INT8)
    try:
        serving = con.execute("SELECT name, precision, classes FROM vision.models() "
                              "WHERE serving").fetchone()
        assert serving == (INT8, "int8", 1000)
        names = {r[0] for r in con.execute("SELECT name FROM vision.models()").fetchall()}
        assert {FP32, INT8} <= names
        rows = con.execute(
            "SELECT regexp_extract(filename, '[^/]+$'), list(label ORDER BY rank) "
            "FROM read_blob('test/sql/data/*') p, vision.classify(p.content, 3) c "
            "GROUP BY ALL").fetchall()
    finally:
        vgi_vision.detach(con)
    assert len(rows) == 4
    for name, top3 in rows:
        assert set(top3) & EXPECTED_TOP5[name], (name, top3)


def test_a_replica_serving_another_model_refuses_the_continuation(tmp_path) -> None:
    """Replicas share a token key; one serving int8 must not resume an fp32 scan."""
    import httpx

    from vgi_vision.protocol import argument_rows, decode, encode
    from vgi_vision.testing.launch import running_worker

    env = {"VGI_VISION_TOKEN_KEY": "6b6579206f66207468652074657374207265706c69636173"}
    with running_worker("http", env=env, workdir=tmp_path / "a") as fp32, \
            running_worker("http", "--model", INT8, env=env, workdir=tmp_path / "b") as int8, \
            running_worker("http", env=env, workdir=tmp_path / "c") as same:
        def post(location: str | None, token: str | None) -> dict:
            request = encode({"op": "scan", "function": "image_classes", "token": token},
                             argument_rows([], 1))
            return decode(httpx.post(f"{location}/v1/rpc", content=request).content).header

        token = post(fp32.location, None)["token"]
        assert token
        refused = post(int8.location, token)
        assert refused["ok"] is False and refused["error"]["kind"] == "invalid_token"
        assert post(same.location, token)["ok"] is True  # a replica of the same model resumes
