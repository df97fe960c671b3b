"""Dataset registration, metadata and COCO-format loading on the real fixtures (../shared/fixtures)."""
import json
import os

import numpy as np
import pytest
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import KEYPOINT_CONNECTION_RULES, _get_builtin_metadata
from detectron2.structures import BoxMode

import hrnext_d2  # noqa: F401  (registers the datasets)
from hrnext_d2.data.datasets import register_topdown_keypoint_dataset, sanitize_box_xywh
from hrnext_d2.data.instances import select_pose_annotations
from hrnext_d2.engine import Trainer
from hrnext_d2.evaluation import TopDownKeypointEvaluator
from hrnext_d2.data.datasets.coco import datasets_root
from hrnext_d2.data.datasets.keypoint_metadata import (
    COCO_KEYPOINT_OKS_SIGMAS,
    CROWDPOSE_KEYPOINT_CONNECTION_RULES,
    CROWDPOSE_KEYPOINT_OKS_SIGMAS,
    get_coco_keypoint_metadata,
    get_crowdpose_keypoint_metadata,
)
from tests.conftest import shared_path

METADATA_KEYS = (
    "keypoint_names",
    "keypoint_flip_map",
    "keypoint_flip_pairs",
    "keypoint_connection_rules",
    "keypoint_oks_sigmas",
    "keypoint_upper_body_ids",
    "keypoint_lower_body_ids",
    "evaluator_type",
    "keypoint_protocol",
    "json_file",
    "image_root",
    "test_box_source",
)

FIXTURES = {
    # name: (folder, json, protocol, keypoint metadata, images, persons)
    "coco": ("coco", "test_coco.json", "coco", get_coco_keypoint_metadata, 3, 9),
    "crowdpose": ("crowdpose", "test_crowdpose.json", "crowdpose", get_crowdpose_keypoint_metadata, 2, 5),
    "ochuman": ("ochuman", "test_ochuman.json", "coco", get_coco_keypoint_metadata, 2, 3),
}


def _keypoint_args(meta: dict) -> dict:
    keys = ("keypoint_names", "keypoint_flip_map", "keypoint_connection_rules", "keypoint_oks_sigmas",
            "keypoint_upper_body_ids", "keypoint_lower_body_ids")
    return {k: meta[k] for k in keys}


def register_fixture(kind: str) -> str:
    """Register a fixture under 'test_kp_<kind>' with the public call (once per process)."""
    folder, json_name, protocol, meta_fn, _, _ = FIXTURES[kind]
    root = shared_path("fixtures", folder)
    name = f"test_kp_{kind}"
    if name not in DatasetCatalog.list():
        register_topdown_keypoint_dataset(
            name,
            str(root / "annotations" / json_name),
            str(root / "images"),
            protocol=protocol,
            **_keypoint_args(meta_fn()),
        )
    return name


@pytest.fixture
def temp_dataset():
    """Register throwaway datasets; removed again after the test."""
    names = []

    def _register(name, json_file, **kwargs):
        meta = get_coco_keypoint_metadata()
        args = dict(_keypoint_args(meta), protocol="coco")
        args.update(kwargs)
        register_topdown_keypoint_dataset(name, json_file, "/images", **args)
        names.append(name)
        return name

    yield _register
    for n in names:
        DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)


# ---- builtin registrations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,json_rel,protocol,boxes_rel,num_kpts",
    [
        ("crowdpose_train", "crowdpose/annotations/mmpose_crowdpose_train.json", "crowdpose", None, 14),
        ("crowdpose_val", "crowdpose/annotations/mmpose_crowdpose_val.json", "crowdpose", None, 14),
        ("crowdpose_trainval", "crowdpose/annotations/mmpose_crowdpose_trainval.json", "crowdpose", None, 14),
        ("crowdpose_test", "crowdpose/annotations/mmpose_crowdpose_test.json", "crowdpose",
         "crowdpose/annotations/det_for_crowd_test_0.1_0.5.json", 14),
        ("ochuman_val", "ochuman/annotations/ochuman_coco_format_val_range_0.00_1.00.json", "coco", None, 17),
        ("ochuman_test", "ochuman/annotations/ochuman_coco_format_test_range_0.00_1.00.json", "coco", None, 17),
        ("keypoints_coco_2017_train", "coco/annotations/person_keypoints_train2017.json", "coco", None, 17),
        ("keypoints_coco_2017_val", "coco/annotations/person_keypoints_val2017.json", "coco",
         "coco/person_detection_results/COCO_val2017_detections_AP_H_56_person.json", 17),
    ],
)
def test_builtin_registration_and_metadata(name, json_rel, protocol, boxes_rel, num_kpts):
    root = datasets_root()
    assert name in DatasetCatalog.list()
    meta = MetadataCatalog.get(name)
    for key in METADATA_KEYS:
        assert meta.get(key) is not None, f"{name} lacks metadata {key}"
    # Detectron2's own COCO builtins keep their evaluator_type; the trainer dispatches on the protocol.
    assert meta.evaluator_type == ("coco" if name.startswith("keypoints_coco") else "topdown_keypoints")
    assert meta.keypoint_protocol == protocol
    assert meta.json_file == os.path.join(root, json_rel)
    assert meta.test_box_source == (os.path.join(root, boxes_rel) if boxes_rel else "gt")
    assert len(meta.keypoint_names) == num_kpts == len(meta.keypoint_oks_sigmas)
    assert sorted(meta.keypoint_upper_body_ids + meta.keypoint_lower_body_ids) == list(range(num_kpts))
    for a, b in meta.keypoint_flip_pairs:
        assert meta.keypoint_names[a].replace("left", "right") == meta.keypoint_names[b]


def test_builtin_roots_agree_with_detectron2():
    # Detectron2's own COCO registration and ours read the same DETECTRON2_DATASETS root.
    coco_json = MetadataCatalog.get("keypoints_coco_2017_val").json_file
    cp_json = MetadataCatalog.get("crowdpose_val").json_file
    assert os.path.dirname(os.path.dirname(os.path.dirname(coco_json))) == datasets_root()
    assert os.path.dirname(os.path.dirname(os.path.dirname(cp_json))) == datasets_root()


def test_coco_builtin_keeps_detectron2_keys():
    meta = MetadataCatalog.get("keypoints_coco_2017_val")
    # every key Detectron2 set is still there with its value (the entry was extended, not rebuilt)
    for key, value in _get_builtin_metadata("coco_person").items():
        assert meta.get(key) == value, key
    cfg = get_cfg()
    hrnext_d2.add_hrnext_config(cfg)
    cfg.MODEL.META_ARCHITECTURE = "TopDownPoseEstimator"  # detectors get Detectron2's COCOEvaluator
    assert isinstance(Trainer.build_evaluator(cfg, "keypoints_coco_2017_val"), TopDownKeypointEvaluator)
    assert meta.thing_classes == ["person"]
    assert meta.keypoint_connection_rules == KEYPOINT_CONNECTION_RULES
    assert list(meta.keypoint_oks_sigmas) == list(COCO_KEYPOINT_OKS_SIGMAS)
    assert meta.keypoint_flip_pairs[0] == (1, 2)  # left_eye <-> right_eye


def test_crowdpose_metadata_uses_its_own_skeleton():
    meta = MetadataCatalog.get("crowdpose_test")
    assert meta.keypoint_names[12:] == ("top_head", "neck")
    assert meta.keypoint_connection_rules == CROWDPOSE_KEYPOINT_CONNECTION_RULES
    assert ("top_head", "neck", (51, 153, 255)) in meta.keypoint_connection_rules
    assert meta.keypoint_flip_pairs == [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)]
    assert list(meta.keypoint_oks_sigmas) == list(CROWDPOSE_KEYPOINT_OKS_SIGMAS)
    assert meta.keypoint_upper_body_ids == [0, 1, 2, 3, 4, 5, 12, 13]


def test_missing_builtin_files_give_one_clear_error():
    meta = MetadataCatalog.get("crowdpose_test")
    if os.path.exists(meta.json_file):
        pytest.skip(f"CrowdPose is installed at {meta.json_file}")
    with pytest.raises(FileNotFoundError) as e:
        DatasetCatalog.get("crowdpose_test")
    msg = str(e.value)
    assert meta.json_file in msg and "DETECTRON2_DATASETS" in msg


# ---- the fixtures through the public call ---------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(FIXTURES))
def test_fixture_loads_in_detectron2_convention(kind):
    name = register_fixture(kind)
    folder, json_name, protocol, meta_fn, n_images, n_persons = FIXTURES[kind]
    raw = json.loads((shared_path("fixtures", folder, "annotations", json_name)).read_text())
    dicts = DatasetCatalog.get(name)
    meta = MetadataCatalog.get(name)

    assert meta.keypoint_protocol == protocol and meta.evaluator_type == "topdown_keypoints"
    assert meta.keypoint_names == meta_fn()["keypoint_names"]
    assert meta.thing_dataset_id_to_contiguous_id == {1: 0}
    assert len(dicts) == n_images
    assert sum(len(d["annotations"]) for d in dicts) == n_persons
    assert [d["image_id"] for d in dicts] == sorted(img["id"] for img in raw["images"])

    raw_anns = {(a["image_id"], tuple(a["bbox"])): a for a in raw["annotations"]}
    images = {img["id"]: img for img in raw["images"]}
    for d in dicts:
        img = images[d["image_id"]]
        assert d["file_name"] == os.path.join(meta.image_root, img["file_name"])
        assert os.path.isfile(d["file_name"])
        assert (d["height"], d["width"]) == (img["height"], img["width"])
        if protocol == "crowdpose":
            assert d["crowdIndex"] == img["crowdIndex"]
        else:
            assert "crowdIndex" not in d
        for ann in d["annotations"]:
            src = raw_anns[(d["image_id"], tuple(ann["bbox"]))]
            assert ann["bbox_mode"] == BoxMode.XYWH_ABS
            assert ann["category_id"] == 0 and ann["iscrowd"] == src["iscrowd"]
            assert ann["num_keypoints"] == src["num_keypoints"]
            got = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
            want = np.asarray(src["keypoints"], dtype=np.float64).reshape(-1, 3)
            assert got.shape == (len(meta.keypoint_names), 3)
            np.testing.assert_allclose(got[:, :2], want[:, :2] + 0.5, rtol=0, atol=1e-9)
            np.testing.assert_array_equal(got[:, 2], want[:, 2])


def test_crowdpose_fixture_quirks():
    dicts = DatasetCatalog.get(register_fixture("crowdpose"))
    by_image = {d["image_id"]: d for d in dicts}
    assert by_image[106848]["crowdIndex"] == pytest.approx(0.33)
    anns = by_image[106848]["annotations"]
    # num_keypoints counts the 12 body joints only: 5 here although 7 keypoints are labelled.
    first = anns[0]
    assert first["num_keypoints"] == 5 and sum(v > 0 for v in first["keypoints"][2::3]) == 7
    assert sum(a["num_keypoints"] == 0 for a in anns) == 1  # a box without keypoints is kept
    assert all("area" not in a for a in anns)


def _select_all(dicts, num_keypoints=None):
    """select_pose_annotations over images: (kept persons with their image dicts, counts by reason)."""
    kept, stats = [], {"images": len(dicts), "persons": 0, "kept": 0, "crowd": 0, "no_keypoints": 0, "invalid_box": 0}
    for d in dicts:
        k = num_keypoints or len(d["annotations"][0]["keypoints"]) // 3
        persons, dropped = select_pose_annotations(d, k)
        stats["persons"] += len(d["annotations"])
        stats["kept"] += len(persons)
        for reason, n in dropped.items():
            stats[reason] += n
        kept += [(d, p) for p in persons]
    return kept, stats


def test_training_person_selection_matches_mmpose_rules():
    coco = DatasetCatalog.get(register_fixture("coco"))
    instances, stats = _select_all(coco)
    assert stats == {"images": 3, "persons": 9, "kept": 8, "crowd": 0, "no_keypoints": 1, "invalid_box": 0}
    # The person at the image border: x clipped at 0.5 stays, w/h lose one pixel (inclusive extent).
    edge = [p for d, p in instances if d["image_id"] == 197388 and p["bbox"][0] == 0.5]
    assert len(edge) == 1
    np.testing.assert_allclose(edge[0]["bbox"], [0.5, 43.74, 89.1, 219.09])

    crowdpose = DatasetCatalog.get(register_fixture("crowdpose"))
    cp_instances, cp_stats = _select_all(crowdpose)
    assert (cp_stats["kept"], cp_stats["no_keypoints"]) == (4, 1)
    assert {d["crowdIndex"] for d, _ in cp_instances} == {0.33, 0.39}


def test_selection_drops_crowd_and_degenerate_boxes():
    kp = [10.5, 10.5, 2] + [0.5, 0.5, 0] * 16
    record = {"file_name": "x.jpg", "image_id": 1, "height": 100, "width": 80, "annotations": [
        {"bbox": [5, 5, 20, 30], "iscrowd": 1, "keypoints": kp, "num_keypoints": 1},
        {"bbox": [90, 5, 20, 30], "iscrowd": 0, "keypoints": kp, "num_keypoints": 1},  # outside the image
        {"bbox": [5, 5, 20, 30], "iscrowd": 0, "keypoints": kp, "num_keypoints": 1, "area": 0},
        {"bbox": [70, 90, 20, 30], "iscrowd": 0, "keypoints": kp, "num_keypoints": 1},  # clipped, kept
    ]}
    instances, stats = _select_all([record], 17)
    assert (stats["crowd"], stats["invalid_box"], stats["kept"]) == (1, 2, 1)
    assert instances[0][1]["bbox"] == [70, 90, 9, 9]
    assert sanitize_box_xywh([10.0, 20.0, 50.0, 60.0], 640, 480) == [10.0, 20.0, 49.0, 59.0]


def test_visualizer_draws_with_the_metadata():
    import cv2
    from detectron2.utils.visualizer import Visualizer

    name = register_fixture("crowdpose")
    record = DatasetCatalog.get(name)[0]
    image = cv2.imread(record["file_name"])[:, :, ::-1]
    out = Visualizer(image, MetadataCatalog.get(name)).draw_dataset_dict(record).get_image()
    assert out.shape == image.shape and not np.array_equal(out, image)


# ---- user datasets and bad input ------------------------------------------------------------------


def _write(tmp_path, data, name="ann.json"):
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return str(path)


def _toy_json(num_kpts=3, **ann_overrides):
    ann = {"id": 7, "image_id": 3, "category_id": 1, "iscrowd": 0, "bbox": [1, 2, 30, 40], "area": 1200,
           "num_keypoints": num_kpts, "keypoints": [5, 6, 2] * num_kpts}
    ann.update(ann_overrides)
    return {
        "images": [{"id": 3, "file_name": "a.jpg", "height": 50, "width": 60}],
        "annotations": [ann],
        "categories": [{"id": 1, "name": "person"}],
    }


def test_user_dataset_with_its_own_keypoints(tmp_path):
    path = _write(tmp_path, _toy_json())
    name = "test_kp_user_toy"
    register_topdown_keypoint_dataset(
        name, path, str(tmp_path),
        keypoint_names=["head", "left_foot", "right_foot"],
        keypoint_flip_map=[("left_foot", "right_foot")],
        keypoint_connection_rules=[(0, 1), ("head", "right_foot", (1, 2, 3))],
        keypoint_oks_sigmas=[0.1, 0.2, 0.2],
        protocol="crowdpose",
        test_box_source="/somewhere/dets.json",
    )
    try:
        meta = MetadataCatalog.get(name)
        assert meta.keypoint_flip_pairs == [(1, 2)]
        assert meta.keypoint_connection_rules[0][:2] == ("head", "left_foot")
        assert meta.keypoint_connection_rules[1] == ("head", "right_foot", (1, 2, 3))
        assert (meta.keypoint_upper_body_ids, meta.keypoint_lower_body_ids) == ([0], [1, 2])
        assert meta.test_box_source == "/somewhere/dets.json" and meta.keypoint_protocol == "crowdpose"
        (record,) = DatasetCatalog.get(name)
        assert record["annotations"][0]["keypoints"] == [5.5, 6.5, 2] * 3
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_bad_keypoint_definitions_are_named():
    with pytest.raises(ValueError, match="left_hand"):
        register_topdown_keypoint_dataset("test_kp_bad1", "x.json", "img", ["a", "b"], [("a", "left_hand")])
    with pytest.raises(ValueError, match="3 values for 2 keypoints"):
        register_topdown_keypoint_dataset("test_kp_bad2", "x.json", "img", ["a", "b"], [], keypoint_oks_sigmas=[1, 2, 3])
    with pytest.raises(ValueError, match="protocol"):
        register_topdown_keypoint_dataset("test_kp_bad3", "x.json", "img", ["a", "b"], [], protocol="mpii")
    assert not {"test_kp_bad1", "test_kp_bad2", "test_kp_bad3"} & set(DatasetCatalog.list())


def test_registration_is_lazy_and_missing_file_is_named(tmp_path, temp_dataset):
    path = str(tmp_path / "nowhere" / "ann.json")
    name = temp_dataset("test_kp_missing", path)  # registering reads nothing
    with pytest.raises(FileNotFoundError, match="DETECTRON2_DATASETS") as e:
        DatasetCatalog.get(name)
    assert path in str(e.value)


@pytest.mark.parametrize(
    "override,message",
    [
        ({"keypoints": [5, 6, 2] * 16}, r"annotation id 7 \(image id 3\): 'keypoints' has 48 values, expected 51"),
        ({"bbox": [1, 2, -30, 40]}, r"annotation id 7 \(image id 3\): 'bbox' has a negative size"),
        ({"bbox": [1, 2, 30]}, r"annotation id 7 \(image id 3\): 'bbox' must be 4 finite numbers"),
        ({"keypoints": [float("nan"), 6, 2] + [5, 6, 2] * 16}, r"annotation id 7 \(image id 3\): 'keypoints' contains a non-finite"),
        ({"bbox": [1, float("nan"), 30, 40]}, r"annotation id 7 \(image id 3\): 'bbox' must be 4 finite"),
        ({"category_id": 5}, r"annotation id 7 \(image id 3\): category_id 5"),
    ],
)
def test_malformed_annotation_names_its_ids(tmp_path, temp_dataset, override, message):
    path = _write(tmp_path, _toy_json(num_kpts=17, **override))
    name = temp_dataset("test_kp_malformed", path)
    with pytest.raises(ValueError, match=message) as e:
        DatasetCatalog.get(name)
    assert path in str(e.value)


def test_malformed_image_and_file_are_named(tmp_path, temp_dataset):
    data = _toy_json(num_kpts=17)
    data["images"][0]["width"] = -60
    name = temp_dataset("test_kp_bad_image", _write(tmp_path, data))
    with pytest.raises(ValueError, match=r"image id 3: invalid size"):
        DatasetCatalog.get(name)

    not_json = tmp_path / "broken.json"
    not_json.write_text("{\"images\": [")
    name2 = temp_dataset("test_kp_broken", str(not_json))
    with pytest.raises(ValueError, match="broken.json: not valid json"):
        DatasetCatalog.get(name2)
