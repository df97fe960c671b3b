"""``DefaultPredictor`` for top-down pose models, able to take person boxes.

Detectron2's ``DefaultPredictor`` hands the model only the image; a top-down model then falls back
to its configured person detector, or to the whole image as one box. ``TopDownPredictor`` keeps that
behaviour and additionally accepts boxes (e.g. from an external detector or annotations).
"""
from typing import Dict, Optional

import numpy as np
import torch

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from hrnext_d2.checkpoint import HRNeXtCheckpointer

__all__ = ["TopDownPredictor"]


class TopDownPredictor(DefaultPredictor):
    """``predictor(image_bgr, boxes_xyxy=None, scores=None)["instances"]``.

    Boxes are XYXY in the pixels of ``image_bgr``; without boxes this is exactly ``DefaultPredictor``.
    Forces MODEL.TOPDOWN.USE_INPUT_BOXES so that supplied boxes are always used. MODEL.WEIGHTS may
    also be an official mmpose HRNeXt checkpoint (converted on the fly by ``HRNeXtCheckpointer``).
    """

    def __init__(self, cfg: CfgNode):
        # DefaultPredictor.__init__ with HRNeXtCheckpointer in place of DetectionCheckpointer.
        self.cfg = cfg.clone()
        self.cfg.defrost()
        self.cfg.MODEL.TOPDOWN.USE_INPUT_BOXES = True
        self.model = build_model(self.cfg)
        self.model.eval()
        if len(self.cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(self.cfg.DATASETS.TEST[0])
        HRNeXtCheckpointer(self.model).load(self.cfg.MODEL.WEIGHTS)
        self.aug = T.ResizeShortestEdge(
            [self.cfg.INPUT.MIN_SIZE_TEST, self.cfg.INPUT.MIN_SIZE_TEST], self.cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {self.input_format!r}")

    def __call__(
        self,
        original_image: np.ndarray,
        boxes_xyxy: Optional[np.ndarray] = None,
        scores: Optional[np.ndarray] = None,
    ) -> Dict[str, Instances]:
        if boxes_xyxy is None:
            if scores is not None:
                raise ValueError("TopDownPredictor: scores given without boxes_xyxy")
            return super().__call__(original_image)
        boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4) if len(boxes_xyxy) else np.zeros((0, 4), np.float32)
        if scores is None:
            scores = np.ones(len(boxes), dtype=np.float32)
        scores = np.asarray(scores, dtype=np.float32).reshape(-1)
        if len(scores) != len(boxes):
            raise ValueError(f"TopDownPredictor: {len(boxes)} boxes but {len(scores)} scores")
        with torch.no_grad():
            if self.input_format == "RGB":
                original_image = original_image[:, :, ::-1]
            height, width = original_image.shape[:2]
            image = self.aug.get_transform(original_image).apply_image(original_image)
            image = torch.as_tensor(image.astype("float32").transpose(2, 0, 1))
            instances = Instances((height, width))
            instances.pred_boxes = Boxes(torch.as_tensor(boxes))
            instances.scores = torch.as_tensor(scores)
            inputs = {"image": image, "height": height, "width": width, "instances": instances}
            return self.model([inputs])[0]
