"""Exported reduced models shared by the export tests (each export takes seconds: made once per run).

Reduced = HRNeXt-S widths with one module per stage at 128x96 (`tests.modeling.test_top_down.topdown_cfg`)
and one block per branch (every op of the network is still there), trained-like weights from the
golden fill rule with a seed of their own, inside a `TopDownPredictor` so that the predictor and the
exported model hold the same weights. The full HRNeXt-S and -B are exported in test_export_golden.py.
"""
from typing import NamedTuple

import pytest
import torch

from hrnext_d2.checkpoint.synthetic_weights import fill_like_official
from hrnext_d2.engine import TopDownPredictor
from hrnext_d2.export.exporter import export_model
from tests.modeling.test_top_down import topdown_cfg

CROWDPOSE_CONFIG = "configs/crowdpose/hrnext_small_crowdpose_256x192.yaml"


class Exported(NamedTuple):
    predictor: TopDownPredictor
    cfg: object
    model_dir: object
    fmt: str
    flip_test: bool


def _predictor(config: str, dataset: str, seed: int):
    cfg = topdown_cfg(config) if config else topdown_cfg()
    for k, stage in enumerate(("STAGE1", "STAGE2", "STAGE3", "STAGE4"), 1):
        getattr(cfg.MODEL.HRNEXT, stage).NUM_BLOCKS = [1] * k
    if dataset:
        cfg.DATASETS.TEST = (dataset,)  # keypoint metadata (flip pairs, sigmas, names) of a builtin dataset
    torch.manual_seed(0)
    predictor = TopDownPredictor(cfg)
    fill_like_official(predictor.model, seed)
    predictor.model.eval()
    return predictor, cfg


def _export(tmp_path_factory, name, config, dataset, seed, fmt, flip_test) -> Exported:
    predictor, cfg = _predictor(config, dataset, seed)
    out = tmp_path_factory.mktemp(name)
    export_model(predictor.model, out, fmt, flip_test=flip_test, cfg=cfg)
    return Exported(predictor, cfg, out, fmt, flip_test)


@pytest.fixture(scope="session")
def coco_onnx(tmp_path_factory) -> Exported:
    """Reduced COCO model as ONNX without the flip in the graph (the runtime flips)."""
    return _export(tmp_path_factory, "coco_onnx", None, "", 5, "onnx", False)


@pytest.fixture(scope="session")
def coco_torchscript(coco_onnx, tmp_path_factory) -> Exported:
    """The same model as TorchScript with the flip test in the graph."""
    out = tmp_path_factory.mktemp("coco_ts")
    export_model(coco_onnx.predictor.model, out, "torchscript", flip_test=True, cfg=coco_onnx.cfg)
    return Exported(coco_onnx.predictor, coco_onnx.cfg, out, "torchscript", True)


@pytest.fixture(scope="session")
def crowdpose_onnx_flip(tmp_path_factory) -> Exported:
    """Reduced CrowdPose (14 keypoints) model as ONNX with the flip test in the graph."""
    return _export(tmp_path_factory, "crowdpose_onnx", CROWDPOSE_CONFIG, "crowdpose_test", 6, "onnx", True)
