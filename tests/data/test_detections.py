"""load_person_detections on the real detector outputs of the fixtures, and on bad files."""
import json
from collections import Counter

import numpy as np
import pytest

from hrnext_d2.data.datasets import load_person_detections
from tests.conftest import shared_path


@pytest.mark.parametrize(
    "folder,name",
    [("coco", "test_coco_det_AP_H_56.json"), ("crowdpose", "test_crowdpose_det_AP_40.json")],
)
def test_fixture_detections_are_read_exactly(folder, name):
    path = shared_path("fixtures", folder, "annotations", name)
    raw = json.loads(path.read_text())
    dets = load_person_detections(str(path))
    persons = [d for d in raw if d.get("category_id", 1) == 1]
    assert dict(Counter(d["image_id"] for d in persons)) == {k: len(v[1]) for k, v in dets.items()}
    for img_id, (boxes, scores) in dets.items():
        assert boxes.dtype == np.float32 and scores.dtype == np.float32
        assert boxes.shape == (len(scores), 4)
        mine = [d for d in persons if d["image_id"] == img_id]  # order of the file is kept
        np.testing.assert_array_equal(boxes, np.asarray([d["bbox"] for d in mine], dtype=np.float32))
        np.testing.assert_array_equal(scores, np.asarray([d["score"] for d in mine], dtype=np.float32))


def test_coco_fixture_counts_and_threshold():
    path = str(shared_path("fixtures", "coco", "annotations", "test_coco_det_AP_H_56.json"))
    dets = load_person_detections(path)
    assert {k: len(v[1]) for k, v in dets.items()} == {785: 22, 40083: 26, 197388: 37}
    raw = json.loads(open(path).read())
    high = load_person_detections(path, score_thresh=0.5)
    for img_id, (boxes, scores) in high.items():
        assert len(scores) == sum(1 for d in raw if d["image_id"] == img_id and d["score"] >= 0.5)
        assert (scores >= 0.5).all()


def test_only_persons_are_kept(tmp_path):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps([
        {"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.9},
        {"image_id": 1, "category_id": 3, "bbox": [5, 6, 7, 8], "score": 0.8},
        {"image_id": 2, "category_id": 18, "bbox": [5, 6, 7, 8], "score": 0.8},
        {"image_id": 4, "bbox": [9, 9, 9, 9], "score": 0.1},  # no category: a person
    ]))
    dets = load_person_detections(str(path))
    assert sorted(dets) == [1, 4]
    np.testing.assert_array_equal(dets[1][0], [[1, 2, 3, 4]])
    np.testing.assert_allclose(dets[4][1], [0.1])


@pytest.mark.parametrize(
    "content,message",
    [
        ({"annotations": []}, "expected a list of detections"),
        ([{"image_id": 1, "bbox": [1, 2, 3, 4]}], "detection #0 lacks"),
        ([{"image_id": 1, "bbox": [1, 2, 3], "score": 1.0}], r"detection #0 \(image id 1\) needs a bbox of 4"),
        ([{"image_id": 1, "bbox": [1, 2, 3, 4], "score": 1.0}, {"image_id": 2, "bbox": [1, 2, -3, 4], "score": 1.0}],
         r"detection #1 \(image id 2\) has a negative size"),
    ],
)
def test_malformed_detections_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad_dets.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message) as e:
        load_person_detections(str(path))
    assert str(path) in str(e.value)


def test_missing_detections_file(tmp_path):
    path = str(tmp_path / "none.json")
    with pytest.raises(FileNotFoundError, match="person detections file not found") as e:
        load_person_detections(path)
    assert path in str(e.value)
