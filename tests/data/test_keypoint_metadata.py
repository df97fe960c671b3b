"""resolve_keypoint_metadata: the one place a config's flip pairs, OKS sigmas and upper-body ids are
decided, for the mapper, the model, the evaluator and NMS."""
import logging

import pytest
from detectron2.config import get_cfg

from hrnext_d2 import add_hrnext_config
from hrnext_d2.data.datasets import resolve_keypoint_metadata
from hrnext_d2.data.datasets.keypoint_metadata import (
    COCO_KEYPOINT_OKS_SIGMAS,
    COCO_UPPER_BODY_IDS,
    CROWDPOSE_KEYPOINT_OKS_SIGMAS,
    CROWDPOSE_UPPER_BODY_IDS,
)
from hrnext_d2.data.mapper import TopDownDatasetMapper
from tests.data.topdown_fixtures import COCO_FIXTURE, CROWDPOSE_FIXTURE, register_fixture_datasets

COCO_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
CROWDPOSE_PAIRS = ((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11))


def _cfg(k=17, train=(), test=()):
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = k
    cfg.DATASETS.TRAIN, cfg.DATASETS.TEST = tuple(train), tuple(test)
    return cfg


def test_coco_defaults_without_datasets():
    info = resolve_keypoint_metadata(_cfg())
    assert info.flip_pairs == COCO_PAIRS
    assert info.oks_sigmas == tuple(COCO_KEYPOINT_OKS_SIGMAS)
    assert info.upper_body_ids == tuple(COCO_UPPER_BODY_IDS)
    assert "COCO defaults" in info.source


def test_dataset_metadata_then_config_keys_win():
    register_fixture_datasets()
    info = resolve_keypoint_metadata(_cfg(14, train=(CROWDPOSE_FIXTURE,)))
    assert info.flip_pairs == CROWDPOSE_PAIRS
    assert info.oks_sigmas == tuple(CROWDPOSE_KEYPOINT_OKS_SIGMAS)
    assert info.upper_body_ids == tuple(CROWDPOSE_UPPER_BODY_IDS)
    assert CROWDPOSE_FIXTURE in info.source
    cfg = _cfg(14, train=(CROWDPOSE_FIXTURE,))
    cfg.MODEL.TOPDOWN.FLIP_PAIRS = [[0, 1]]
    cfg.INPUT.TOPDOWN.UPPER_BODY_IDS = [12, 13]
    info = resolve_keypoint_metadata(cfg)
    assert info.flip_pairs == ((0, 1),) and info.upper_body_ids == (12, 13)
    assert info.oks_sigmas == tuple(CROWDPOSE_KEYPOINT_OKS_SIGMAS)  # not set in the config: the dataset's
    # Without a config: a dataset's own facts (the evaluator's call).
    assert resolve_keypoint_metadata(dataset_names=[CROWDPOSE_FIXTURE]).num_keypoints == 14


def test_mapper_and_model_agree_whatever_the_order_of_datasets():
    register_fixture_datasets()
    cfg = _cfg(14, train=(CROWDPOSE_FIXTURE,), test=(CROWDPOSE_FIXTURE,))
    mapper = TopDownDatasetMapper(cfg, True)
    info = resolve_keypoint_metadata(cfg)
    assert tuple(mapper.flip_pairs) == info.flip_pairs
    assert tuple(mapper.upper_body_ids) == info.upper_body_ids


def test_mismatches_are_errors_naming_the_dataset_or_key():
    register_fixture_datasets()
    with pytest.raises(ValueError, match=f"dataset '{CROWDPOSE_FIXTURE}' has 14 keypoints"):
        resolve_keypoint_metadata(_cfg(17, train=(COCO_FIXTURE,), test=(CROWDPOSE_FIXTURE,)))
    with pytest.raises(ValueError, match="NUM_KEYPOINTS=14"):
        resolve_keypoint_metadata(_cfg(14))  # no dataset, not COCO: nothing to fall back on
    cfg = _cfg(17)
    cfg.MODEL.TOPDOWN.FLIP_PAIRS = [[1, 17]]
    with pytest.raises(ValueError, match=r"MODEL.TOPDOWN.FLIP_PAIRS: flip pair \[1, 17\]"):
        resolve_keypoint_metadata(cfg)
    cfg = _cfg(17)
    cfg.MODEL.TOPDOWN.OKS_SIGMAS = [0.1] * 16
    with pytest.raises(ValueError, match="MODEL.TOPDOWN.OKS_SIGMAS has 16 OKS sigmas for 17 keypoints"):
        resolve_keypoint_metadata(cfg)
    with pytest.raises(ValueError, match="no keypoint metadata"):
        resolve_keypoint_metadata(dataset_names=["no_such_dataset"])


def test_datasets_that_disagree_get_a_warning(caplog):
    from detectron2.data import DatasetCatalog, MetadataCatalog

    from hrnext_d2.data.datasets import register_topdown_keypoint_dataset
    from hrnext_d2.data.datasets.keypoint_metadata import coco_keypoint_arguments

    name = "hrnext_test_coco_other_sigmas"
    if name not in DatasetCatalog.list():
        args = coco_keypoint_arguments()
        args["keypoint_oks_sigmas"] = [0.05] * 17
        register_topdown_keypoint_dataset(name, "unused.json", "unused", **args)
    register_fixture_datasets()
    with caplog.at_level(logging.WARNING, logger="hrnext_d2"):
        info = resolve_keypoint_metadata(_cfg(17, train=(COCO_FIXTURE,), test=(name,)))
    assert info.oks_sigmas == tuple(COCO_KEYPOINT_OKS_SIGMAS)
    assert any("OKS sigmas of dataset" in r.message and name in r.message for r in caplog.records)
    assert MetadataCatalog.get(name).keypoint_oks_sigmas == [0.05] * 17
