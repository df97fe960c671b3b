"""The synthetic crowd dataset: determinism, keypoint visibility against the drawn pixels, loading."""
import json
import multiprocessing as mp
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.builtin_meta import COCO_PERSON_KEYPOINT_NAMES
from detectron2.structures import BoxMode

from hrnext_d2.data.datasets.synthetic import (
    SyntheticCrowdSpec,
    ensure_synthetic_crowd_split,
    generate_synthetic_crowd_split,
    register_synthetic_crowd,
    render_synthetic_crowd_image,
)

TINY = SyntheticCrowdSpec(split="train", num_images=3, seed=7, image_size=(160, 128))


def _files(folder: Path):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    generate_synthetic_crowd_split(TINY, str(tmp_path / "a"))
    generate_synthetic_crowd_split(TINY, str(tmp_path / "b"))
    a, b = _files(tmp_path / "a"), _files(tmp_path / "b")
    assert sorted(a) == ["annotations.json", "images/000001.jpg", "images/000002.jpg", "images/000003.jpg"]
    assert a == b

    other = SyntheticCrowdSpec(split="train", num_images=3, seed=8, image_size=(160, 128))
    generate_synthetic_crowd_split(other, str(tmp_path / "c"))
    c = _files(tmp_path / "c")
    assert c["annotations.json"] != a["annotations.json"]
    assert all(c[k] != a[k] for k in a if k.startswith("images/"))
    # The split name is part of the seed: val is not a copy of train.
    val = SyntheticCrowdSpec(split="val", num_images=3, seed=7, image_size=(160, 128))
    img_train, _, _ = render_synthetic_crowd_image(TINY, 0)
    img_val, _, _ = render_synthetic_crowd_image(val, 0)
    assert not np.array_equal(img_train, img_val)


def test_visibility_matches_the_painted_figures():
    """v=2: the keypoint's pixel belongs to its figure; v=1: to a figure painted later; v=0: outside."""
    spec = SyntheticCrowdSpec(split="val", num_images=40, seed=3, image_size=(192, 160))
    counts = np.zeros(3, dtype=int)
    for index in range(40):
        image, instance_map, persons = render_synthetic_crowd_image(spec, index)
        h, w = instance_map.shape
        assert image.shape == (h, w, 3) and image.dtype == np.uint8
        assert spec.min_people <= len(persons) + 1 and len(persons) <= spec.max_people
        for p in persons:
            kp, own = p["keypoints"], p["figure"] + 1
            for x, y, v in kp:
                counts[int(v)] += 1
                if v == 0:
                    assert x == 0 and y == 0
                    continue
                xi, yi = int(round(x)), int(round(y))
                assert 0 <= xi < w and 0 <= yi < h
                assert p["mask"][yi, xi], "every keypoint lies on its own figure's silhouette"
                if v == 2:
                    assert instance_map[yi, xi] == own
                else:
                    assert instance_map[yi, xi] > own, "an occluded keypoint is under a later figure"
    # The set really is crowded and truncated: all three visibility states occur.
    assert counts[1] > 0.02 * counts.sum() and counts[0] > 0 and counts[2] > 0.7 * counts.sum()


def test_left_right_follow_the_coco_flip_map():
    """Figures face the camera: each left keypoint is right of its right partner in the image."""
    flip_pairs = MetadataCatalog.get("synthetic_crowd_train").keypoint_flip_pairs
    names = COCO_PERSON_KEYPOINT_NAMES
    torso_and_face = [(a, b) for a, b in flip_pairs if names[a].split("_")[1] in ("eye", "ear", "shoulder", "hip")]
    assert len(torso_and_face) == 4
    spec = SyntheticCrowdSpec(split="train", num_images=20, seed=1, image_size=(192, 160))
    checked = 0
    for index in range(20):
        _, _, persons = render_synthetic_crowd_image(spec, index)
        for p in persons:
            kp = p["keypoints"]
            for a, b in torso_and_face:
                assert names[a].startswith("left_") and names[b].startswith("right_")
                if kp[a, 2] > 0 and kp[b, 2] > 0:
                    assert kp[a, 0] > kp[b, 0], (index, names[a])
                    checked += 1
    assert checked > 100


def test_annotations_are_coco_keypoints(tmp_path):
    json_file = generate_synthetic_crowd_split(TINY, str(tmp_path))
    data = json.loads(Path(json_file).read_text())
    assert data["categories"][0]["keypoints"] == list(COCO_PERSON_KEYPOINT_NAMES)
    assert [im["id"] for im in data["images"]] == [1, 2, 3]
    assert len({a["id"] for a in data["annotations"]}) == len(data["annotations"]) > 0
    for ann in data["annotations"]:
        kp = np.array(ann["keypoints"], dtype=float).reshape(17, 3)
        assert ann["num_keypoints"] == int((kp[:, 2] > 0).sum()) > 0
        x, y, bw, bh = ann["bbox"]
        labelled = kp[kp[:, 2] > 0]
        # Keypoints are pixel indices inside the box of the figure's pixels [x, x + w).
        assert np.all(labelled[:, 0] >= x - 0.5) and np.all(labelled[:, 0] <= x + bw - 0.5)
        assert np.all(labelled[:, 1] >= y - 0.5) and np.all(labelled[:, 1] <= y + bh - 0.5)
        assert 0.2 * bw * bh < ann["area"] <= bw * bh
    for im in data["images"]:
        img = cv2.imread(str(tmp_path / "images" / im["file_name"]))
        assert img.shape == (im["height"], im["width"], 3) == (128, 160, 3)


def test_builtin_registration_and_metadata():
    for name in ("synthetic_crowd_train", "synthetic_crowd_val"):
        assert name in DatasetCatalog.list()
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "topdown_keypoints"
        assert meta.keypoint_protocol == "coco"
        assert meta.test_box_source == "gt"
        assert tuple(meta.keypoint_names) == tuple(COCO_PERSON_KEYPOINT_NAMES)
        assert list(meta.keypoint_flip_pairs) == [(1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)]
        assert meta.keypoint_oks_sigmas[0] == pytest.approx(0.026) and len(meta.keypoint_oks_sigmas) == 17
        assert len(meta.keypoint_connection_rules) > 0
        assert meta.json_file.endswith("annotations.json") and "synthetic_crowd" in meta.json_file
    assert MetadataCatalog.get("synthetic_crowd_train").json_file != MetadataCatalog.get("synthetic_crowd_val").json_file


def test_lazy_generation_through_dataset_catalog(tmp_path):
    name = "synthetic_crowd_test_lazy"
    spec = SyntheticCrowdSpec(split="val", num_images=2, seed=5, image_size=(128, 128))
    register_synthetic_crowd(name, spec, root=str(tmp_path))
    try:
        meta = MetadataCatalog.get(name)
        assert not os.path.exists(meta.json_file), "nothing is generated before the first get"
        dicts = DatasetCatalog.get(name)
        assert os.path.isfile(meta.json_file)
        mtime = os.path.getmtime(meta.json_file)
        assert [d["image_id"] for d in dicts] == [1, 2]
        raw = {a["id"]: a for a in json.loads(Path(meta.json_file).read_text())["annotations"]}
        anns = [a for d in dicts for a in d["annotations"]]
        assert len(anns) == len(raw)
        for d in dicts:
            assert os.path.isfile(d["file_name"]) and d["height"] == d["width"] == 128
        for ann, ref in zip(anns, raw.values()):
            assert ann["bbox_mode"] == BoxMode.XYWH_ABS and ann["bbox"] == ref["bbox"]
            kp, ref_kp = np.array(ann["keypoints"]).reshape(17, 3), np.array(ref["keypoints"]).reshape(17, 3)
            np.testing.assert_allclose(kp[:, :2], ref_kp[:, :2] + 0.5)  # Detectron2's convention
            np.testing.assert_array_equal(kp[:, 2], ref_kp[:, 2])
        DatasetCatalog.get(name)
        assert os.path.getmtime(meta.json_file) == mtime, "the cached split is reused"
        leftovers = [p for p in Path(meta.json_file).parents[1].iterdir() if ".tmp-" in p.name]
        assert leftovers == []
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _ensure(args):
    spec, root = args
    json_file, _ = ensure_synthetic_crowd_split(spec, root)
    return Path(json_file).read_bytes()


def test_two_processes_generating_at_once_agree(tmp_path):
    spec = SyntheticCrowdSpec(split="train", num_images=4, seed=11, image_size=(128, 96))
    with mp.get_context("spawn").Pool(2) as pool:
        a, b = pool.map(_ensure, [(spec, str(tmp_path))] * 2)
    assert a == b
    split_parent = tmp_path / spec.tag
    assert [p.name for p in split_parent.iterdir()] == [spec.split_dirname]


def test_bad_spec_is_named():
    with pytest.raises(ValueError, match="image_size"):
        SyntheticCrowdSpec(image_size=(16, 200))
    with pytest.raises(ValueError, match="min_people"):
        SyntheticCrowdSpec(min_people=4, max_people=2)


def test_masks_split_adds_visible_regions_and_leaves_the_rest(tmp_path):
    """with_masks: the same images and annotations plus each person's visible region as RLE; the
    split is cached apart and splits without masks are byte-identical to before."""
    import pycocotools.mask as mask_util

    masked = SyntheticCrowdSpec(split="train", num_images=3, seed=7, image_size=(160, 128), with_masks=True)
    assert masked.tag == TINY.tag + "_seg" and "with_masks" not in TINY.tag
    generate_synthetic_crowd_split(TINY, str(tmp_path / "plain"))
    generate_synthetic_crowd_split(masked, str(tmp_path / "seg"))
    plain, seg = _files(tmp_path / "plain"), _files(tmp_path / "seg")
    assert {k: v for k, v in plain.items() if k != "annotations.json"} == {k: v for k, v in seg.items() if k != "annotations.json"}
    plain_json = json.loads(plain["annotations.json"])
    seg_json = json.loads(seg["annotations.json"])
    assert "with_masks" not in plain_json["info"]["spec"] and seg_json["info"]["spec"]["with_masks"] is True
    assert all("segmentation" not in a for a in plain_json["annotations"])
    assert [{k: v for k, v in a.items() if k != "segmentation"} for a in seg_json["annotations"]] == plain_json["annotations"]

    for image_id in (1, 2, 3):
        _, instance_map, persons = render_synthetic_crowd_image(masked, image_id - 1)
        anns = [a for a in seg_json["annotations"] if a["image_id"] == image_id]
        masks = [mask_util.decode(a["segmentation"]).astype(bool) for a in anns]
        assert len(anns) == len(persons) >= 2
        for p, m, a in zip(persons, masks, anns):
            assert m.shape == instance_map.shape
            np.testing.assert_array_equal(m, instance_map == p["figure"] + 1)
            assert m.sum() > 0 and m.sum() <= a["area"]  # visible part of the silhouette
        assert not np.any(np.sum(masks, axis=0) > 1)  # visible regions never overlap


def test_masks_split_loads_segmentations(tmp_path):
    name = "synthetic_crowd_test_seg"
    spec = SyntheticCrowdSpec(split="val", num_images=2, seed=5, image_size=(128, 96), with_masks=True)
    register_synthetic_crowd(name, spec, root=str(tmp_path))
    try:
        anns = [a for d in DatasetCatalog.get(name) for a in d["annotations"]]
        assert anns and all(set(a["segmentation"]) == {"size", "counts"} for a in anns)
        assert all(a["segmentation"]["size"] == [96, 128] for a in anns)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert "synthetic_crowd_seg_train" in DatasetCatalog.list() and "synthetic_crowd_seg_val" in DatasetCatalog.list()
