"""``DefaultPredictor`` for top-down pose models, able to take person boxes.

Detectron2's ``DefaultPredictor`` hands the model only the image; a top-down model then falls back
to its configured person detector, or to the whole image as one box. ``TopDownPredictor`` keeps that
behaviour and additionally accepts boxes (e.g. from an external detector or annotations). Images in
other layouts and types than BGR uint8 (H, W, 3) are converted when their meaning is unambiguous
and refused otherwise, and unusable boxes are dropped with a warning
(``hrnext_d2.engine.image_input``).
"""
import logging
from typing import Dict, Optional

import numpy as np
import torch

from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances

from ..checkpoint import build_checkpointer
from .image_input import to_bgr_uint8, validate_person_boxes

__all__ = ["TopDownPredictor"]

logger = logging.getLogger(__name__)


class TopDownPredictor(DefaultPredictor):
    """``predictor(image, boxes_xyxy=None, scores=None, image_format="BGR")["instances"]``.

    ``image``: BGR uint8 (H, W, 3) as ``DefaultPredictor`` takes it, or (H, W) / (H, W, 1) grey,
    (H, W, 4) with alpha, channels in ``image_format`` order ("RGB" for PIL images), float 0..1 or
    0..255, and other types whose range is unambiguous (``hrnext_d2.engine.image_input``).
    Boxes are XYXY in the image's pixels; boxes that are not finite, have no area or lie entirely
    outside the image are dropped with a warning (an error when none is left); the instances returned
    belong to the kept boxes (their ``pred_boxes``). Without boxes this is ``DefaultPredictor``.
    Forces MODEL.TOPDOWN.USE_INPUT_BOXES so that supplied boxes are always used. MODEL.WEIGHTS may
    also be an official mmpose HRNeXt checkpoint (converted on the fly by ``HRNeXtCheckpointer``),
    and is loaded strictly (MODEL.WEIGHTS_PARTIAL_LOAD, MODEL.WEIGHTS_ALLOW_PICKLE).
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
        if not self.cfg.MODEL.WEIGHTS:
            logger.warning("MODEL.WEIGHTS is empty: the predictor runs a randomly initialised model")
        build_checkpointer(self.cfg, self.model).load(self.cfg.MODEL.WEIGHTS)
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
        image_format: str = "BGR",
    ) -> Dict[str, Instances]:
        try:
            original_image = to_bgr_uint8(original_image, image_format)
        except ValueError as e:
            raise ValueError(f"TopDownPredictor: {e}") from e
        if boxes_xyxy is None:
            if scores is not None:
                raise ValueError("TopDownPredictor: scores given without boxes_xyxy")
            return super().__call__(original_image)
        try:
            boxes, scores = validate_person_boxes(boxes_xyxy, scores, original_image.shape[:2])
        except ValueError as e:
            raise ValueError(f"TopDownPredictor: {e}") from e
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
