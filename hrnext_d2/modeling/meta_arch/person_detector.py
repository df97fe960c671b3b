"""Person boxes from any Detectron2 detection model, for top-down inference without given boxes.

``DefaultPredictor`` hands the model only the image, so a top-down pose model needs its own source
of person boxes. This wraps a separately configured Detectron2 detector (its own config file and
weights) and keeps it out of the pose model's module tree, so pose checkpoints neither contain nor
expect detector weights.
"""
import os
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch

from detectron2 import model_zoo
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import CfgNode, get_cfg
from detectron2.data import transforms as T
from detectron2.modeling import build_model

from ...config import add_hrnext_config

__all__ = ["PersonDetector", "build_person_detector"]


class PersonDetector:
    """Runs a Detectron2 detector on Detectron2 input dicts and keeps one class above a score."""

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        input_format: str,
        person_class: int = 0,
        score_thresh: float = 0.5,
        min_size_test: int = 800,
        max_size_test: int = 1333,
    ):
        self.model = model.eval()
        self.input_format = input_format
        self.person_class = int(person_class)
        self.score_thresh = float(score_thresh)
        self.aug = T.ResizeShortestEdge([min_size_test, min_size_test], max_size_test)

    def _prepare(self, inp: Dict, source_format: str, device: torch.device) -> Dict:
        """The detector's own preprocessing: its channel order and its test-time resize."""
        image = inp["image"]
        if source_format != self.input_format:
            image = image.flip(0)
        height = int(inp.get("height", image.shape[1]))
        width = int(inp.get("width", image.shape[2]))
        array = image.permute(1, 2, 0).cpu().numpy()
        transform = self.aug.get_transform(array)
        array = transform.apply_image(array)
        tensor = torch.as_tensor(np.ascontiguousarray(array.transpose(2, 0, 1)).astype("float32"))
        return {"image": tensor.to(device), "height": height, "width": width}

    @torch.no_grad()
    def __call__(
        self, batched_inputs: List[Dict], source_format: str, device: torch.device
    ) -> List[Tuple[np.ndarray, np.ndarray]]:
        """Per input: (boxes XYXY float64 (N, 4) in the input's height/width frame, scores (N,))."""
        self.model.to(device)
        outputs = self.model([self._prepare(inp, source_format, device) for inp in batched_inputs])
        results = []
        for out in outputs:
            inst = out["instances"].to("cpu")
            keep = (inst.pred_classes == self.person_class) & (inst.scores > self.score_thresh)
            inst = inst[keep]
            results.append(
                (inst.pred_boxes.tensor.numpy().astype(np.float64), inst.scores.numpy().astype(np.float64))
            )
        return results


def _resolve_config_file(path: str) -> str:
    """A file path, or a Detectron2 model-zoo name such as 'COCO-Detection/faster_rcnn_R_50_FPN_3x.yaml'."""
    if os.path.isfile(path):
        return path
    try:
        return model_zoo.get_config_file(path)
    except RuntimeError as e:
        raise FileNotFoundError(
            f"MODEL.TOPDOWN.PERSON_DETECTOR.CONFIG_FILE={path!r} is neither a file nor a model-zoo config"
        ) from e


def build_person_detector(cfg: CfgNode) -> Optional[PersonDetector]:
    """The detector of MODEL.TOPDOWN.PERSON_DETECTOR, or None when CONFIG_FILE is empty."""
    det = cfg.MODEL.TOPDOWN.PERSON_DETECTOR
    if not det.CONFIG_FILE:
        return None
    det_cfg = get_cfg()
    add_hrnext_config(det_cfg)  # detector configs may use an HRNeXt backbone
    det_cfg.set_new_allowed(True)
    det_cfg.merge_from_file(_resolve_config_file(det.CONFIG_FILE))
    if det.OPTS:
        if len(det.OPTS) % 2:
            raise ValueError(f"MODEL.TOPDOWN.PERSON_DETECTOR.OPTS must be KEY VALUE pairs, got {list(det.OPTS)}")
        det_cfg.merge_from_list(list(det.OPTS))
    det_cfg.MODEL.DEVICE = cfg.MODEL.DEVICE
    model = build_model(det_cfg)
    if det.WEIGHTS:
        DetectionCheckpointer(model).load(det.WEIGHTS)
    return PersonDetector(
        model,
        input_format=det_cfg.INPUT.FORMAT,
        person_class=det.PERSON_CLASS,
        score_thresh=det.SCORE_THRESH,
        min_size_test=det_cfg.INPUT.MIN_SIZE_TEST,
        max_size_test=det_cfg.INPUT.MAX_SIZE_TEST,
    )
