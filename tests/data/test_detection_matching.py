"""A detections file is matched against the test set's image ids when the run starts: none matching is
an error with examples of both, a partial match a warning with counts, string ids are matched by
value, and the kept category is a config key whose absence from the file is an error."""
import json
import logging

import numpy as np
import pytest

from hrnext_d2.data.datasets import load_person_detections
from hrnext_d2.data.test_boxes import check_test_box_sources, resolve_test_boxes
from hrnext_d2.engine import Trainer
from tests.data.topdown_fixtures import COCO_FIXTURE, register_fixture_datasets, tiny_cfg
from tests.fault_injection import captured_logs, copy_coco_fixture, registered_coco_dataset

LOGGER = "hrnext_d2.data"
IDS = [785, 40083, 197388]  # the COCO fixture's images


def _dets(tmp_path, entries):
    path = tmp_path / "dets.json"
    path.write_text(json.dumps(entries))
    return str(path)


def _box(image_id, **extra):
    return dict({"image_id": image_id, "category_id": 1, "bbox": [10, 20, 30, 40], "score": 0.9}, **extra)


def test_detections_for_other_images_are_an_error_with_examples(tmp_path):
    path = _dets(tmp_path, [_box(1), _box(2), _box(3)])
    with pytest.raises(ValueError) as e:
        load_person_detections(path, image_ids=IDS, dataset_name="coco_fixture")
    msg = str(e.value)
    assert msg.startswith(f"{path}: none of its 3 image ids is an image of 'coco_fixture' (3 images)")
    assert "file ids e.g. [1, 2, 3]" in msg and "dataset ids e.g. [197388, 40083, 785]" in msg


def test_a_partial_match_is_a_warning_with_counts(tmp_path):
    path = _dets(tmp_path, [_box(785), _box(785, bbox=[5, 5, 0, 9]), _box(40083), _box(999), _box(12345)])
    with captured_logs(LOGGER, logging.WARNING) as logs:
        dets = load_person_detections(path, image_ids=IDS, images_with_persons={785, 197388}, dataset_name="fx")
    assert {k: len(v[1]) for k, v in dets.items()} == {785: 2, 40083: 1}
    assert logs == [
        f"{path}: partial match: 2 of 3 images of 'fx' have boxes (score >= 0.0); 1 have none (1 of them with "
        "annotated persons, which count as missed); 2 image ids of the file are not in the dataset (e.g. [12345, 999])",
        f"{path}: 1 kept boxes have no area (zero width or height); the model skips them",
    ]


def test_string_image_ids_are_matched_by_value(tmp_path):
    path = _dets(tmp_path, [_box("785"), _box("40083"), _box(197388)])
    with captured_logs(LOGGER, logging.INFO) as logs:
        dets = load_person_detections(path, image_ids=IDS)
    assert sorted(dets) == IDS and all(isinstance(k, int) for k in dets)
    assert any("2 ids matched by value across str/int" in m for m in logs), logs
    with pytest.raises(ValueError, match=r"detection #0 has an image id 785\.0 that is not an int or str"):
        load_person_detections(_dets(tmp_path, [_box(785.0)]), image_ids=IDS)


def test_the_kept_category_must_be_in_the_file(tmp_path):
    path = _dets(tmp_path, [_box(785, category_id=0), _box(40083, category_id=0)])  # 0-based "person"
    with pytest.raises(ValueError, match=r"no detection has category_id 1 \(DATASETS.DET_CATEGORY_ID\); the file's categories are \[0\]"):
        load_person_detections(path, image_ids=IDS)
    assert sorted(load_person_detections(path, category_id=0, image_ids=IDS)) == [785, 40083]
    with pytest.raises(ValueError, match="the detections list is empty"):
        load_person_detections(_dets(tmp_path, []), image_ids=IDS)


def test_the_test_boxes_are_checked_from_the_config(tmp_path):
    register_fixture_datasets()
    cfg = tiny_cfg(str(tmp_path / "out"))
    cfg.DATASETS.TEST_BOXES = path = _dets(tmp_path, [_box(785, category_id=0), _box(785, category_id=0, bbox=[650, 0, 9, 9])])
    cfg.DATASETS.DET_CATEGORY_ID = 0
    with captured_logs(LOGGER, logging.WARNING) as logs:
        boxes = resolve_test_boxes(cfg, COCO_FIXTURE)
    np.testing.assert_array_equal(boxes[785][0], [[10, 20, 30, 40], [650, 0, 9, 9]])
    assert f"{path}: 1 person boxes lie entirely outside their image; their keypoints will be too" in logs
    cfg.DATASETS.TEST_BOXES = _dets(tmp_path, [_box(7, category_id=0)])
    with pytest.raises(ValueError, match="none of its 1 image ids is an image of 'hrnext_fixture_coco'"):
        check_test_box_sources(cfg)


def test_a_missing_detections_file_stops_the_run_before_training(tmp_path):
    register_fixture_datasets()
    cfg = tiny_cfg(str(tmp_path / "out"))
    cfg.DATASETS.TEST_BOXES = str(tmp_path / "absent_dets.json")
    with pytest.raises(FileNotFoundError, match=r"Person detections for 'hrnext_fixture_coco' not found: .*absent_dets\.json"):
        Trainer(cfg)  # raised while the trainer is built, before any iteration


def test_a_missing_test_annotation_file_stops_the_run_before_training(tmp_path):
    register_fixture_datasets()
    files = copy_coco_fixture(tmp_path)
    absent = tmp_path / "annotations" / "val_absent.json"
    with registered_coco_dataset("reliability_missing_test_json", absent, files["images"]) as name:
        cfg = tiny_cfg(str(tmp_path / "out"), test=(name,))
        with pytest.raises(FileNotFoundError, match=r"annotation file not found: .*val_absent\.json"):
            Trainer(cfg)


def test_the_fixture_detections_match_fully(tmp_path):
    files = copy_coco_fixture(tmp_path)
    with captured_logs(LOGGER, logging.INFO) as logs:
        dets = load_person_detections(str(files["dets"]), image_ids=IDS, images_with_persons=set(IDS))
    assert {k: len(v[1]) for k, v in dets.items()} == {785: 22, 40083: 26, 197388: 37}
    assert any("3 of 3 images" in m and "0 image ids of the file are not in the dataset" in m for m in logs), logs
