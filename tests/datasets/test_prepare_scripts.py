"""datasets/prepare_ochuman.py and datasets/prepare_crowdpose.py on small inputs shaped like the official files."""
import importlib.util
import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_util

from hrnext_d2.data.datasets import load_topdown_coco_json
from tests.conftest import REPO_ROOT, shared_path


def _load_script(name):
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "datasets" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# OCHuman's own keypoint order (19 names; the converter looks them up by name).
OCHUMAN_NAMES = ["right_shoulder", "right_elbow", "right_wrist", "left_shoulder", "left_elbow", "left_wrist",
                 "right_hip", "right_knee", "right_ankle", "left_hip", "left_knee", "left_ankle", "head", "neck",
                 "right_ear", "left_ear", "nose", "right_eye", "left_eye"]


def _ochuman_person(i, max_iou=0.6, keypoints=True, segms=True):
    kpts = []
    for j, _ in enumerate(OCHUMAN_NAMES):
        kpts += [10 + j, 20 + i % 7, j % 4]  # visibility cycles through missing/vis/self/others-occluded
    outer = [[2, 2, 12, 2, 12, 14, 2, 14]]
    inner = [[4, 4, 6, 4, 6, 6, 4, 6]]
    return {
        "bbox": [2, 2, 12, 14],  # x1 y1 x2 y2
        "keypoints": kpts if keypoints else None,
        "segms": {"outer": outer, "inner": inner, "height": 16, "width": 16} if segms else None,
        "max_iou": max_iou,
    }


def _ochuman_json(num_images):
    images = []
    for i in range(num_images):
        annos = [_ochuman_person(i)]
        if i == 3:
            annos.append(_ochuman_person(i, keypoints=False))  # box only: filtered out
            annos.append(_ochuman_person(i, max_iou=1.0))  # outside [0, 1): skipped, as OCHumanApi
        images.append({"image_id": f"{num_images - i:06d}", "file_name": f"{num_images - i:06d}.jpg",
                       "height": 16, "width": 16, "annotations": annos})
    # An image whose persons all lack a mask: not part of the kpt&segm subset.
    images.append({"image_id": "999999", "file_name": "999999.jpg", "height": 16, "width": 16,
                   "annotations": [_ochuman_person(0, segms=False)]})
    return {"images": images, "keypoint_names": OCHUMAN_NAMES,
            "keypoint_visible": {"missing": 0, "vis": 1, "self_occluded": 2, "others_occluded": 3}}


def test_prepare_ochuman_splits_and_converts(tmp_path):
    script = _load_script("prepare_ochuman")
    src = tmp_path / "ochuman.json"
    src.write_text(json.dumps(_ochuman_json(2503)))
    out = tmp_path / "annotations"
    assert script.main(["--ochuman-json", str(src), "--output-dir", str(out), "--images-dir", ""]) == 0

    val = json.loads((out / "ochuman_coco_format_val_range_0.00_1.00.json").read_text())
    test = json.loads((out / "ochuman_coco_format_test_range_0.00_1.00.json").read_text())
    assert (len(val["images"]), len(test["images"])) == (2500, 3)
    assert len(val["annotations"]) == 2500 and len(test["annotations"]) == 3
    # Sorted by OCHuman image id; ids restart at 1 in each file.
    assert val["images"][0] == {"id": 1, "file_name": "000001.jpg", "height": 16, "width": 16}
    assert [img["file_name"] for img in test["images"]] == ["002501.jpg", "002502.jpg", "002503.jpg"]
    assert [img["id"] for img in test["images"]] == [1, 2, 3]

    ann = val["annotations"][0]
    assert ann["bbox"] == [2, 2, 10, 12] and ann["area"] == 120 and ann["iscrowd"] == 0
    kpts = np.asarray(ann["keypoints"]).reshape(17, 3)
    for coco_idx, name in enumerate(script.COCO_KEYPOINTS):
        j = OCHUMAN_NAMES.index(name)
        assert kpts[coco_idx, 0] == 10 + j
        assert kpts[coco_idx, 2] == {0: 0, 1: 2, 2: 2, 3: 1}[j % 4]
    assert ann["num_keypoints"] == int((kpts[:, 2] > 0).sum())
    mask = mask_util.decode(ann["segmentation"])
    assert mask.shape == (16, 16) and mask[10, 10] == 1 and mask[5, 5] == 0  # the hole is cut out
    assert mask.sum() == mask_util.area(ann["segmentation"])

    # Same layout as the distributed COCO-format file (the fixture is a subset of it).
    official = json.loads(shared_path("fixtures", "ochuman", "annotations", "test_ochuman.json").read_text())
    assert set(ann) == set(official["annotations"][0])
    assert set(val["categories"][0]) == set(official["categories"][0])
    assert val["categories"][0]["keypoints"] == official["categories"][0]["keypoints"]

    dicts = load_topdown_coco_json(str(out / "ochuman_coco_format_test_range_0.00_1.00.json"), str(tmp_path))
    assert len(dicts) == 3 and dicts[0]["annotations"][0]["keypoints"][0] == kpts[0, 0] + 0.5


def _write_image(path, width, height):
    cv2.imwrite(str(path), np.full((height, width, 3), 128, np.uint8))


def _crowdpose_split(first_id, sizes, with_index=True):
    images, annotations = [], []
    for i, (w, h) in enumerate(sizes):
        img = {"file_name": f"{first_id + i}.jpg", "id": first_id + i, "height": h, "width": w}
        if with_index:
            img["crowdIndex"] = round(0.1 + 0.3 * i, 2)
        images.append(img)
        annotations.append({"num_keypoints": 12, "iscrowd": 0, "keypoints": [3, 4, 2] * 14, "image_id": first_id + i,
                            "bbox": [1.5, 2.5, 5.0, 6.0], "category_id": 1, "id": 10 * (first_id + i)})
    cats = [{"supercategory": "person", "id": 1, "name": "person",
             "keypoints": ["left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist",
                           "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
                           "right_ankle", "head", "neck"], "skeleton": [[16, 14], [14, 12]]}]
    return {"images": images, "annotations": annotations, "categories": cats}


@pytest.fixture
def crowdpose_src(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    src = tmp_path / "src"
    src.mkdir()
    train = _crowdpose_split(100, [(20, 12), (16, 16)])
    val = _crowdpose_split(200, [(12, 20)])
    # The test split is the real fixture file, its images beside it.
    fixture = shared_path("fixtures", "crowdpose")
    test = json.loads((fixture / "annotations" / "test_crowdpose.json").read_text())
    for img in test["images"]:
        (images / img["file_name"]).write_bytes((fixture / "images" / img["file_name"]).read_bytes())
    for split in (train, val):
        for img in split["images"]:
            _write_image(images / img["file_name"], img["width"], img["height"])
    train["images"][0]["width"], train["images"][0]["height"] = 12, 20  # swapped, as in the official release
    for name, data in (("train", train), ("val", val), ("test", test)):
        (src / f"crowdpose_{name}.json").write_text(json.dumps(data))
    return tmp_path


def test_prepare_crowdpose_layout_and_fixes(crowdpose_src):
    script = _load_script("prepare_crowdpose")
    out = crowdpose_src / "out"
    dets = shared_path("fixtures", "crowdpose", "annotations", "test_crowdpose_det_AP_40.json")
    rc = script.main(["--src", str(crowdpose_src / "src"), "--images-dir", str(crowdpose_src / "images"),
                      "--output-dir", str(out), "--detections", str(dets)])
    assert rc == 0
    files = {p.name for p in out.iterdir()}
    assert files == {f"mmpose_crowdpose_{s}.json" for s in ("train", "val", "test", "trainval")} | {
        "det_for_crowd_test_0.1_0.5.json"}
    train = json.loads((out / "mmpose_crowdpose_train.json").read_text())
    assert (train["images"][0]["width"], train["images"][0]["height"]) == (20, 12)  # fixed from the file
    trainval = json.loads((out / "mmpose_crowdpose_trainval.json").read_text())
    assert [img["id"] for img in trainval["images"]] == [100, 101, 200]
    assert len(trainval["annotations"]) == 3
    test = json.loads((out / "mmpose_crowdpose_test.json").read_text())
    original = json.loads(shared_path("fixtures", "crowdpose", "annotations", "test_crowdpose.json").read_text())
    assert test == original  # already correct: written unchanged
    dicts = load_topdown_coco_json(str(out / "mmpose_crowdpose_trainval.json"), str(crowdpose_src / "images"),
                                   image_extra_keys=("crowdIndex",))
    assert [d["crowdIndex"] for d in dicts] == [0.1, 0.4, 0.1]


@pytest.mark.parametrize("defect,message", [
    ("no_index", "images have no crowdIndex"),
    ("keypoints", "39 keypoint values, expected 42"),
    ("image", "images missing under"),
])
def test_prepare_crowdpose_rejects_bad_input(crowdpose_src, capsys, defect, message):
    script = _load_script("prepare_crowdpose")
    src = crowdpose_src / "src"
    data = json.loads((src / "crowdpose_val.json").read_text())
    if defect == "no_index":
        del data["images"][0]["crowdIndex"]
    elif defect == "keypoints":
        data["annotations"][0]["keypoints"] = data["annotations"][0]["keypoints"][:39]
    else:
        data["images"][0]["file_name"] = "nowhere.jpg"
    (src / "crowdpose_val.json").write_text(json.dumps(data))
    out = crowdpose_src / "out"
    rc = script.main(["--src", str(src), "--images-dir", str(crowdpose_src / "images"), "--output-dir", str(out)])
    assert rc == 1
    assert message in capsys.readouterr().err
    assert not (out / "mmpose_crowdpose_val.json").exists()
    assert (out / "mmpose_crowdpose_train.json").exists()
