"""Evaluation of Detectron2 detectors (Keypoint / Mask / Faster R-CNN, RetinaNet) on our datasets.

Why: the datasets registered here carry a keypoint protocol ("coco" or "crowdpose"). COCO-protocol
datasets are scored by Detectron2's COCOEvaluator: boxes, masks, and keypoints with OKS sigmas from
TEST.KEYPOINT_OKS_SIGMAS, else the dataset's metadata. CrowdPose has no `area` (pycocotools needs
one for its area ranges) and its keypoint numbers are the official tool's: boxes (and masks) go
through COCOEvaluator with each person's box area as its area, keypoints through
TopDownKeypointEvaluator's CrowdPose protocol.
"""
import logging
from typing import List, Optional

from detectron2.data import MetadataCatalog
from detectron2.evaluation import COCOEvaluator, DatasetEvaluator, DatasetEvaluators

from ..data.datasets.keypoint_metadata import resolve_keypoint_metadata
from .keypoint_evaluator import TopDownKeypointEvaluator

__all__ = ["BoxAreaCOCOEvaluator", "build_rcnn_evaluator"]

logger = logging.getLogger(__name__)


class BoxAreaCOCOEvaluator(COCOEvaluator):
    """COCOEvaluator for ground truth without `area` (CrowdPose): each such annotation's area is
    its box's w * h, which is what pycocotools' area ranges (small / medium / large) then use."""

    def __init__(self, dataset_name: str, *args, **kwargs):
        super().__init__(dataset_name, *args, **kwargs)
        missing = [a for a in self._coco_api.anns.values() if "area" not in a]
        for ann in missing:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
        if missing:
            logger.info(f"{dataset_name}: {len(missing)} annotations have no 'area'; using their box areas")


def build_rcnn_evaluator(cfg, dataset_name: str, output_dir: Optional[str] = None) -> DatasetEvaluator:
    """Box AP, plus mask AP (MODEL.MASK_ON) and keypoint AP (MODEL.KEYPOINT_ON) by the dataset's
    `keypoint_protocol` (see the module docstring; "coco" when the metadata has none)."""
    protocol = MetadataCatalog.get(dataset_name).get("keypoint_protocol", "coco")
    tasks = ["bbox"] + (["segm"] if cfg.MODEL.MASK_ON else [])
    evaluators: List[DatasetEvaluator] = []
    if protocol == "crowdpose":
        evaluators.append(BoxAreaCOCOEvaluator(dataset_name, tasks=tuple(tasks), distributed=True,
                                               output_dir=output_dir))
        if cfg.MODEL.KEYPOINT_ON:
            evaluators.append(TopDownKeypointEvaluator(dataset_name, output_dir=output_dir, distributed=True))
    else:
        sigmas = ()
        if cfg.MODEL.KEYPOINT_ON:
            tasks.append("keypoints")
            # Detectron2's TEST.KEYPOINT_OKS_SIGMAS when set, else the dataset's.
            sigmas = tuple(cfg.TEST.KEYPOINT_OKS_SIGMAS) or tuple(
                resolve_keypoint_metadata(dataset_names=[dataset_name]).oks_sigmas)
        evaluators.append(COCOEvaluator(dataset_name, tasks=tuple(tasks), distributed=True,
                                        output_dir=output_dir, kpt_oks_sigmas=sigmas))
    return evaluators[0] if len(evaluators) == 1 else DatasetEvaluators(evaluators)
