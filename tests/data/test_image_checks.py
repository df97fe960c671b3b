"""One image check for training, test and tools/check_dataset.py, on real faults: an EXIF-rotated
JPEG whose annotation has the unrotated size, swapped width/height, a truncated JPEG (an error naming
the file by default, a counted skip when opted in), and labelled keypoints outside the image."""
import logging

import numpy as np
import pytest

from detectron2.data import DatasetCatalog

from hrnext_d2.data.build import TopDownInstanceDataset, build_topdown_instance_dicts, build_topdown_train_loader
from hrnext_d2.data.image_checks import ImageSizeMismatchError, UnreadableImageError, find_image_problems
from hrnext_d2.data.mapper import TopDownDatasetMapper
from hrnext_d2.data.unreadable_images import SKIPPED_IMAGES_KEY
from tests.data.topdown_fixtures import tiny_cfg
from tests.fault_injection import (
    captured_logs,
    copy_coco_fixture,
    edit_json,
    registered_coco_dataset,
    truncate,
    write_exif_rotated,
)


def _set_size(image_id, width, height):
    def edit(data):
        for img in data["images"]:
            if img["id"] == image_id:
                img["width"], img["height"] = width, height

    return edit


def _mappers(name):
    cfg = tiny_cfg(train=(name,), test=(name,))
    return cfg, TopDownDatasetMapper(cfg, True), TopDownDatasetMapper(cfg, False, dataset_name=name)


def _instances(name):
    return build_topdown_instance_dicts(name, num_keypoints=17, image_size=(48, 64))


def test_exif_rotated_image_is_refused_in_training_and_test_naming_the_file(tmp_path):
    files = copy_coco_fixture(tmp_path)
    image = files["images"] / "000000000785.jpg"  # 640x425 in the json
    write_exif_rotated(image, image, orientation=6)  # decodes as 425x640
    with registered_coco_dataset("reliability_exif", files["json"], files["images"]) as name:
        _, train, test = _mappers(name)
        instance = next(i for i in _instances(name) if i["image_id"] == 785)
        record = next(d for d in DatasetCatalog.get(name) if d["image_id"] == 785)
        for mapper, d in ((train, instance), (test, record)):
            with pytest.raises(ImageSizeMismatchError) as e:
                mapper(d)
            assert str(image) in str(e.value)
            assert "EXIF orientation tag (6) rotates it to 425x640" in str(e.value)
            assert "the annotation says 640x425" in str(e.value)


def test_swapped_width_and_height_are_refused(tmp_path):
    files = copy_coco_fixture(tmp_path)
    edit_json(files["json"], _set_size(40083, 333, 500))  # the image is 500x333
    with registered_coco_dataset("reliability_swapped", files["json"], files["images"]) as name:
        _, train, test = _mappers(name)
        instance = next(i for i in _instances(name) if i["image_id"] == 40083)
        record = next(d for d in DatasetCatalog.get(name) if d["image_id"] == 40083)
        for mapper, d in ((train, instance), (test, record)):
            with pytest.raises(ImageSizeMismatchError, match=r"000000040083\.jpg'?: decoded to 500x333 pixels, the annotation says 333x500 \(width and height swapped\)"):
                mapper(d)


def test_corrupt_image_stops_by_default_and_is_a_counted_skip_when_opted_in(tmp_path):
    files = copy_coco_fixture(tmp_path)
    corrupt = files["images"] / "000000197388.jpg"  # 5 of the 8 training persons
    truncate(corrupt, 0.3)
    with registered_coco_dataset("reliability_corrupt", files["json"], files["images"]) as name:
        cfg, train, _ = _mappers(name)
        instances = _instances(name)
        stop = TopDownInstanceDataset(instances, train)
        bad = next(i for i, inst in enumerate(instances) if inst["image_id"] == 197388)
        with pytest.raises(UnreadableImageError, match=rf"Cannot read image '{corrupt}'"):
            stop[(bad, (7, 0))]

        skip = TopDownInstanceDataset(instances, train, skip_unreadable=True)
        with captured_logs("hrnext_d2.data.build", logging.WARNING) as logs:
            outs = [skip[(i, (7, i))] for i in range(len(instances))]
        skipped = [o.get(SKIPPED_IMAGES_KEY, []) for o in outs]
        assert sum(len(s) for s in skipped) == 5 + 4 + 3 + 2 + 1  # each bad draw walks to the next readable one
        assert all(o["image_id"] != 197388 for o in outs)
        assert logs == [f"Cannot read image '{corrupt}': " + logs[0].split(": ", 1)[1]] and "skipped" in logs[0]
        # the replacement is a function of the position only: the same in every run
        again = skip[(bad, (7, bad))]
        np.testing.assert_array_equal(again["image"].numpy(), outs[bad]["image"].numpy())

        cfg.DATALOADER.SKIP_UNREADABLE_IMAGES = True
        loader = build_topdown_train_loader(cfg, instances=instances)
        it = iter(loader)
        for _ in range(20):
            batch = next(it)
            assert all(SKIPPED_IMAGES_KEY not in d for d in batch)  # moved into the counter
        assert loader.unreadable_counter.replaced > 0 and loader.unreadable_counter.files == [str(corrupt)]
        assert loader.topdown_sampler is not None


def test_find_image_problems_reports_unreadable_and_mis_sized_images(tmp_path):
    files = copy_coco_fixture(tmp_path)
    truncate(files["images"] / "000000197388.jpg", 0.0)
    write_exif_rotated(files["images"] / "000000000785.jpg", files["images"] / "000000000785.jpg")
    with registered_coco_dataset("reliability_check", files["json"], files["images"]) as name:
        problems = find_image_problems(DatasetCatalog.get(name), num_workers=2)
    assert [(p.file_name.rsplit("/", 1)[1], p.kind) for p in problems] == [
        ("000000000785.jpg", "size"),
        ("000000197388.jpg", "unreadable"),
    ]
    assert "EXIF orientation tag (6)" in problems[0].message


def test_keypoints_outside_the_image_are_counted(tmp_path):
    files = copy_coco_fixture(tmp_path)

    def move_keypoint(data):
        ann = next(a for a in data["annotations"] if a["image_id"] == 785)
        ann["keypoints"][15:18] = [-7, 200, 2]  # a labelled keypoint 7 pixels left of the image

    edit_json(files["json"], move_keypoint)
    with registered_coco_dataset("reliability_outside", files["json"], files["images"]) as name:
        with captured_logs("hrnext_d2.data.build", logging.INFO) as logs:
            instances = _instances(name)
    assert len(instances) == 8  # kept, as mmpose keeps them
    assert any(
        "8 persons in 3 images; dropped 1 annotations (1 no_keypoints); "
        "1 of the kept persons have labelled keypoints outside the image (kept, as mmpose does)" in m
        for m in logs
    ), logs
