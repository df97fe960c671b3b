"""Instance-level training set, resumable sampler, train / test loaders on the real fixtures."""
import json
import itertools
import logging

import numpy as np
import pytest
import torch

from hrnext_d2.topdown import geometry
from hrnext_d2.data.build import (
    TopDownTrainingSampler,
    build_topdown_instance_dicts,
    build_topdown_test_loader,
    build_topdown_train_loader,
)
from tests.conftest import shared_path
from tests.data.topdown_fixtures import (
    COCO_FIXTURE,
    CROWDPOSE_FIXTURE,
    CROWDPOSE_FIXTURE_DET,
    register_fixture_datasets,
    tiny_cfg,
)


@pytest.fixture(autouse=True)
def _registered():
    register_fixture_datasets()


def test_instances_are_persons_with_keypoints(caplog):
    with caplog.at_level(logging.INFO, logger="hrnext_d2.data.build"):
        inst = build_topdown_instance_dicts(COCO_FIXTURE, num_keypoints=17, image_size=(192, 256))
    # 9 persons, one (image 40083) without labelled keypoints.
    assert len(inst) == 8
    assert any("dropped 1 annotations (1 no_keypoints)" in r.getMessage() for r in caplog.records)
    raw = json.load(open(shared_path("fixtures", "coco", "annotations", "test_coco.json")))
    persons = [a for a in raw["annotations"] if a["num_keypoints"] > 0]
    persons.sort(key=lambda a: a["image_id"])  # dataset dicts are in image-id order
    for i, a in zip(inst, persons):
        k = np.asarray(a["keypoints"], np.float32).reshape(17, 3)
        # mmpose coordinates: the json's pixel indices again (Detectron2's +0.5 removed).
        np.testing.assert_allclose(i["joints"][:, :2][k[:, 2] > 0], k[:, :2][k[:, 2] > 0], atol=1e-4)
        np.testing.assert_array_equal(i["joints_visible"][:, 0], np.minimum(1, k[:, 2]))
        c, s = geometry.box_xywh_to_center_scale(np.asarray(i["bbox"]), image_size=(192, 256))
        np.testing.assert_array_equal(i["center"], c)
        np.testing.assert_array_equal(i["scale"], s)
        # mmpose's clean_bbox: clipped to the image, inclusive extent (w - 1, h - 1).
        x, y, w, h = a["bbox"]
        img = next(im for im in raw["images"] if im["id"] == a["image_id"])
        x1, y1 = max(0, x), max(0, y)
        x2 = min(img["width"] - 1, x1 + max(0, w - 1))
        y2 = min(img["height"] - 1, y1 + max(0, h - 1))
        np.testing.assert_allclose(i["bbox"], [x1, y1, x2 - x1, y2 - y1], rtol=1e-12)


def test_crowdpose_person_without_keypoints_dropped():
    inst = build_topdown_instance_dicts(CROWDPOSE_FIXTURE, num_keypoints=14, image_size=(192, 256))
    assert len(inst) == 4 and all(i["joints"].shape == (14, 3) for i in inst)
    with pytest.raises(ValueError, match="NUM_KEYPOINTS=17"):
        build_topdown_instance_dicts(CROWDPOSE_FIXTURE, num_keypoints=17, image_size=(192, 256))


def test_center_jitter_once_and_seeded():
    kw = dict(num_keypoints=17, image_size=(192, 256))
    plain = build_topdown_instance_dicts(COCO_FIXTURE, **kw)
    a = build_topdown_instance_dicts(COCO_FIXTURE, center_jitter_prob=1.0, seed=5, **kw)
    b = build_topdown_instance_dicts(COCO_FIXTURE, center_jitter_prob=1.0, seed=5, **kw)
    c = build_topdown_instance_dicts(COCO_FIXTURE, center_jitter_prob=1.0, seed=6, **kw)
    ca, cb, cc, cp = (np.stack([i["center"] for i in x]) for x in (a, b, c, plain))
    np.testing.assert_array_equal(ca, cb)
    assert not np.array_equal(ca, cc) and not np.array_equal(ca, cp)
    # |jitter| <= 0.2 (w, h) of the box; scale untouched.
    wh = np.array([i["bbox"][2:] for i in plain])
    assert np.all(np.abs(ca - cp) <= 0.2 * wh + 1e-3)
    np.testing.assert_array_equal(np.stack([i["scale"] for i in a]), np.stack([i["scale"] for i in plain]))


def test_sampler_resumes_at_the_stream_position():
    s = TopDownTrainingSampler(5, seed=3)
    full = list(itertools.islice(iter(s), 30))
    assert [p for _, (_, p) in full] == list(range(30))
    assert sorted(i for i, _ in full[:5]) == list(range(5))  # one shuffled epoch
    r = TopDownTrainingSampler(5, seed=3)
    r.set_start_iter(4, 2)
    assert list(itertools.islice(iter(r), 22)) == full[8:30]


def test_train_loader_batches():
    cfg = tiny_cfg()
    loader = build_topdown_train_loader(cfg)
    assert loader.topdown_num_instances == 8
    batch = next(iter(loader))
    assert len(batch) == 2
    for d in batch:
        assert d["image"].dtype == torch.uint8 and d["image"].shape == (3, 64, 48)
        assert d["target"].shape == (17, 16, 12) and d["target_weight"].shape == (17, 1)
        assert float(d["target_weight"].sum()) > 0


def test_test_loader_per_image_with_detection_boxes():
    cfg = tiny_cfg(train=(CROWDPOSE_FIXTURE,), test=(CROWDPOSE_FIXTURE_DET,), num_keypoints=14)
    items = [x for batch in build_topdown_test_loader(cfg, CROWDPOSE_FIXTURE_DET) for x in batch]
    assert sorted(x["image_id"] for x in items) == [103319, 106848]
    assert sum(len(x["instances"]) for x in items) == 6  # the detections file has 6 boxes
    for x in items:
        assert x["image"].shape[1:] == (x["height"], x["width"])
        assert x["instances"].pred_boxes.tensor.shape[1] == 4 and "annotations" not in x


def test_workers_give_the_same_stream():
    """Per-sample seeds and chunked sharding: 2 loader workers yield exactly the batches of 0."""
    cfg = tiny_cfg()
    ref = build_topdown_train_loader(cfg)
    cfg.DATALOADER.NUM_WORKERS = 2
    par = build_topdown_train_loader(cfg)
    for a, b in zip(itertools.islice(ref, 3), itertools.islice(par, 3)):
        for x, y in zip(a, b):
            assert x["file_name"] == y["file_name"] and x["rotation"] == y["rotation"]
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["target"], y["target"])
