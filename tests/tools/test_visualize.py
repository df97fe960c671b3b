"""The prediction visualiser (library function and tools/visualize.py) on a tiny synthetic split."""
import importlib.util

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from hrnext_d2.config import add_hrnext_config
from hrnext_d2.data.datasets.synthetic import SyntheticCrowdSpec, register_synthetic_crowd
from hrnext_d2.engine import Trainer
from hrnext_d2.utils.visualizer import draw_pose_predictions, visualize_predictions

from ..conftest import REPO_ROOT

QUICKSTART = REPO_ROOT / "configs" / "quickstart" / "hrnext_small_synthetic.yaml"
NAME = "synthetic_crowd_test_visualize"


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    spec = SyntheticCrowdSpec(split="val", num_images=2, seed=21, image_size=(128, 128), min_people=2, max_people=3)
    register_synthetic_crowd(NAME, spec, root=str(tmp_path_factory.mktemp("synthetic")))
    yield NAME
    DatasetCatalog.remove(NAME)
    MetadataCatalog.remove(NAME)


def _cfg(dataset):
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(str(QUICKSTART))
    cfg.DATASETS.TEST = (dataset,)
    cfg.DATALOADER.NUM_WORKERS = 0
    return cfg


def _changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.abs(a.astype(int) - b.astype(int)).max(axis=2) > 40).mean())


def test_draw_pose_predictions_draws_skeletons():
    image = np.full((100, 80, 3), 128, dtype=np.uint8)
    meta = MetadataCatalog.get("synthetic_crowd_val")
    inst = Instances((100, 80))
    inst.pred_boxes = Boxes(torch.tensor([[10.0, 10.0, 70.0, 90.0]]))
    inst.scores = torch.tensor([0.9])
    inst.pred_classes = torch.tensor([0])
    kpts = torch.zeros(1, 17, 3)
    kpts[0, :, 0] = torch.linspace(20, 60, 17)
    kpts[0, :, 1] = torch.linspace(15, 85, 17)
    kpts[0, :, 2] = 0.9
    inst.pred_keypoints = kpts
    drawn = draw_pose_predictions(image, inst, meta)
    plain = cv2.resize(image, (drawn.shape[1], drawn.shape[0]))
    assert min(drawn.shape[:2]) == 480  # small images are drawn enlarged
    assert _changed_fraction(drawn, plain) > 0.01
    # Below the keypoint threshold only the box and label remain: fewer pixels change.
    inst.pred_keypoints = torch.cat([kpts[:, :, :2], torch.zeros(1, 17, 1)], dim=2)
    box_only = draw_pose_predictions(image, inst, meta)
    assert _changed_fraction(box_only, plain) < _changed_fraction(drawn, plain)


def test_visualize_predictions_writes_gt_and_prediction_panels(tiny_dataset, tmp_path):
    cfg = _cfg(tiny_dataset)
    model = Trainer.build_model(cfg)
    model.train()
    paths = visualize_predictions(cfg, model, tiny_dataset, str(tmp_path), num=1)
    assert model.training, "the model's mode is restored"
    assert len(paths) == 1 and paths[0].endswith(".png")
    panel = cv2.imread(paths[0])[:, :, ::-1]
    assert panel.shape == (480, 2 * 480 + 8, 3)
    raw = cv2.imread(DatasetCatalog.get(tiny_dataset)[0]["file_name"])[:, :, ::-1]
    plain = cv2.resize(raw, (480, 480))
    gt, pred = panel[:, :480], panel[:, 488:]
    assert _changed_fraction(gt, plain) > 0.01  # ground-truth skeletons and boxes
    assert _changed_fraction(pred, plain) > 0.002  # at least the person boxes
    assert not np.array_equal(gt, pred)


def test_visualize_tool_on_image_files(tiny_dataset, tmp_path):
    spec = importlib.util.spec_from_file_location("visualize_tool", REPO_ROOT / "tools" / "visualize.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    image = DatasetCatalog.get(tiny_dataset)[1]["file_name"]
    out = tmp_path / "vis"
    paths = tool.main(["--config-file", str(QUICKSTART), "--input", image, "--output", str(out), "DATALOADER.NUM_WORKERS", "0"])
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["000002.png"]
    drawn = cv2.imread(paths[0])
    assert drawn.shape == (480, 480, 3)
    assert len(np.unique(drawn.reshape(-1, 3), axis=0)) > 100
    with pytest.raises(SystemExit):
        tool.main(["--config-file", str(QUICKSTART), "--dataset", "x", "--input", image])
