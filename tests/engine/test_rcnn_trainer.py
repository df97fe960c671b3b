"""The Trainer with Detectron2 detectors: Detectron2's loaders, evaluation by the dataset's keypoint
protocol (box / mask / keypoint AP), DefaultPredictor and the visualiser on R-CNN outputs."""
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import DefaultPredictor
from detectron2.evaluation import COCOEvaluator, DatasetEvaluators
from detectron2.structures import Boxes, BoxMode, Instances

from hrnext_d2.data.datasets.synthetic import SyntheticCrowdSpec, register_synthetic_crowd
from hrnext_d2.engine import Trainer
from hrnext_d2.evaluation import BoxAreaCOCOEvaluator, TopDownKeypointEvaluator
from hrnext_d2.utils.visualizer import draw_pose_predictions, visualize_predictions
from tests.data.topdown_fixtures import COCO_FIXTURE, CROWDPOSE_FIXTURE, register_fixture_datasets
from tests.rcnn_configs import d2_keypoint_rcnn_cfg, project_cfg, shrink


def _kprcnn_cfg(dataset, num_keypoints=17, output_dir=""):
    cfg = shrink(d2_keypoint_rcnn_cfg())
    cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = num_keypoints
    cfg.DATASETS.TRAIN = cfg.DATASETS.TEST = (dataset,)
    cfg.SOLVER.IMS_PER_BATCH = 2
    cfg.SOLVER.BASE_LR = 0.001
    cfg.SOLVER.MAX_ITER = 2
    cfg.SOLVER.STEPS = ()
    cfg.SOLVER.WARMUP_ITERS = 1
    cfg.SOLVER.CHECKPOINT_PERIOD = 1000
    cfg.TEST.EVAL_PERIOD = 0
    cfg.SEED = 3
    cfg.OUTPUT_DIR = output_dir
    return cfg


def _ground_truth_as_predictions(dataset):
    """Model outputs that repeat the ground truth (keypointed persons first by score)."""
    outputs, inputs = [], []
    for d in DatasetCatalog.get(dataset):
        anns = [a for a in d["annotations"] if not a.get("iscrowd", 0)]
        inst = Instances((d["height"], d["width"]))
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.tensor([1.0 if a.get("num_keypoints", 0) > 0 else 0.5 for a in anns])
        inst.pred_classes = torch.zeros(len(anns), dtype=torch.int64)
        kpts = torch.tensor([a["keypoints"] for a in anns], dtype=torch.float32).reshape(len(anns), -1, 3)
        kpts[..., 2] = 1.0
        inst.pred_keypoints = kpts
        inputs.append({"image_id": d["image_id"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def _evaluate(evaluator, dataset):
    inputs, outputs = _ground_truth_as_predictions(dataset)
    evaluator.reset()
    evaluator.process(inputs, outputs)
    return evaluator.evaluate()


def test_coco_protocol_box_and_keypoint_ap_with_the_dataset_sigmas(tmp_path):
    register_fixture_datasets()
    cfg = _kprcnn_cfg(COCO_FIXTURE)
    evaluator = Trainer.build_evaluator(cfg, COCO_FIXTURE, str(tmp_path))
    assert type(evaluator) is COCOEvaluator
    assert evaluator._tasks == ("bbox", "keypoints")
    assert list(evaluator._kpt_oks_sigmas) == list(MetadataCatalog.get(COCO_FIXTURE).keypoint_oks_sigmas)
    res = _evaluate(evaluator, COCO_FIXTURE)
    assert res["bbox"]["AP"] == pytest.approx(100.0) and res["keypoints"]["AP"] == pytest.approx(100.0)
    # Detectron2's TEST.KEYPOINT_OKS_SIGMAS wins over the metadata.
    cfg.TEST.KEYPOINT_OKS_SIGMAS = [0.05] * 17
    assert list(Trainer.build_evaluator(cfg, COCO_FIXTURE, str(tmp_path))._kpt_oks_sigmas) == [0.05] * 17


def test_crowdpose_protocol_box_ap_without_area_and_official_keypoint_numbers(tmp_path):
    register_fixture_datasets()
    cfg = _kprcnn_cfg(CROWDPOSE_FIXTURE, num_keypoints=14)
    evaluator = Trainer.build_evaluator(cfg, CROWDPOSE_FIXTURE, str(tmp_path))
    assert isinstance(evaluator, DatasetEvaluators)
    kinds = [type(e) for e in evaluator._evaluators]
    assert kinds == [BoxAreaCOCOEvaluator, TopDownKeypointEvaluator]
    assert evaluator._evaluators[0]._tasks == ("bbox",)
    res = _evaluate(evaluator, CROWDPOSE_FIXTURE)
    assert res["bbox"]["AP"] == pytest.approx(100.0)
    assert res["keypoints"]["AP"] == pytest.approx(100.0) and res["keypoints"]["AP(medium)"] == pytest.approx(100.0)
    # A box off by a quarter of its size is no longer a match at IoU 0.75.
    inputs, outputs = _ground_truth_as_predictions(CROWDPOSE_FIXTURE)
    for out in outputs:
        b = out["instances"].pred_boxes.tensor
        b[:, 2:] += (b[:, 2:] - b[:, :2]) * 0.25
    evaluator.reset()
    evaluator.process(inputs, outputs)
    assert evaluator.evaluate()["bbox"]["AP75"] == pytest.approx(0.0)


@pytest.mark.slow
def test_trainer_trains_and_evaluates_a_detectron2_keypoint_config(tmp_path):
    """Detectron2's Keypoint R-CNN config with our backbone and head names: Detectron2's loader,
    two training steps, then box and keypoint AP."""
    register_fixture_datasets()
    cfg = _kprcnn_cfg(COCO_FIXTURE, output_dir=str(tmp_path))
    trainer = Trainer(cfg)
    batch = next(iter(trainer.data_loader))
    assert len(batch) == 2 and all("instances" in d and "image" in d for d in batch)
    kp = batch[0]["instances"].gt_keypoints.tensor
    assert kp.shape[1:] == (17, 3) and (kp[..., 2] > 0).any()
    h, w = batch[0]["image"].shape[1:]  # Detectron2's resize: short side 96, long side at most 128
    assert (min(h, w) == 96 or max(h, w) == 128) and max(h, w) <= 128
    trainer.resume_or_load(resume=False)
    res = trainer.train()
    assert trainer.iter == cfg.SOLVER.MAX_ITER == 2
    assert set(res) == {"bbox", "keypoints"}
    assert all(0.0 <= v <= 100.0 for v in res["bbox"].values() if v == v)
    assert os.path.isfile(tmp_path / "model_final.pth")


@pytest.mark.slow
def test_mask_rcnn_config_trains_on_synthetic_masks(tmp_path):
    name = "synthetic_crowd_test_mask_rcnn"
    register_synthetic_crowd(name, SyntheticCrowdSpec(split="train", num_images=4, seed=2, image_size=(128, 96),
                                                      with_masks=True), root=str(tmp_path / "data"))
    try:
        cfg = shrink(project_cfg("configs/keypoint_rcnn/mask_rcnn_hrnext_s_fpn_synthetic.yaml"))
        assert cfg.MODEL.MASK_ON and not cfg.MODEL.KEYPOINT_ON
        cfg.DATASETS.TRAIN = cfg.DATASETS.TEST = (name,)
        cfg.SOLVER.IMS_PER_BATCH = 2
        cfg.SOLVER.MAX_ITER = 2
        cfg.SOLVER.WARMUP_ITERS = 1
        cfg.OUTPUT_DIR = str(tmp_path / "out")
        trainer = Trainer(cfg)
        masks = next(iter(trainer.data_loader))[0]["instances"].gt_masks.tensor
        assert masks.dtype == torch.bool and masks.any()
        trainer.resume_or_load(resume=False)
        res = trainer.train()
        assert set(res) == {"bbox", "segm"}
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def test_default_predictor_and_visualiser_on_a_raw_image(tmp_path):
    register_fixture_datasets()
    cfg = _kprcnn_cfg(COCO_FIXTURE, output_dir=str(tmp_path))
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    torch.manual_seed(0)
    model = Trainer.build_model(cfg)
    DetectionCheckpointer(model, str(tmp_path)).save("model")
    cfg.MODEL.WEIGHTS = str(tmp_path / "model.pth")
    predictor = DefaultPredictor(cfg)
    d = DatasetCatalog.get(COCO_FIXTURE)[0]
    image = cv2.imread(d["file_name"])  # BGR, full size
    inst = predictor(image)["instances"]
    n = len(inst)
    assert 0 < n <= cfg.TEST.DETECTIONS_PER_IMAGE
    assert inst.pred_boxes.tensor.shape == (n, 4) and inst.pred_keypoints.shape == (n, 17, 3)
    # Outputs are in the raw image's pixels (the model resized it to 96 pixels and back).
    xy = inst.pred_keypoints[..., :2]
    assert xy[..., 0].max() <= image.shape[1] + 1 and xy[..., 1].max() <= image.shape[0] + 1
    assert inst.pred_boxes.tensor[:, 2:].max() > 200

    rgb = np.ascontiguousarray(image[:, :, ::-1])
    drawn = draw_pose_predictions(rgb, inst, MetadataCatalog.get(COCO_FIXTURE), keypoint_threshold=0.0, scale=1.0)
    assert drawn.shape == rgb.shape and (np.abs(drawn.astype(int) - rgb).sum(axis=2) > 30).mean() > 0.01
    paths = visualize_predictions(cfg, predictor.model, COCO_FIXTURE, str(tmp_path / "vis"), 1)
    assert len(paths) == 1 and os.path.isfile(paths[0])
