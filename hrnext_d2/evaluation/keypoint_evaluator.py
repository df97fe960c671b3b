"""OKS keypoint evaluation of top-down pose results with each dataset's official protocol.

Detectron2's COCOEvaluator cannot score CrowdPose (no `area`, AP easy/medium/hard by crowd index),
and its results carry a box, from which pycocotools then takes each detection's area (this moves
APm/APl). This evaluator writes results the way mmpose and the official tools do (image_id,
category_id, keypoints, score; no box, so a detection's area is its keypoints' extent) and scores
them with:

- protocol "coco" (COCO, OCHuman): pycocotools COCOeval, iouType 'keypoints', the dataset's sigmas;
- protocol "crowdpose": xtcocotools COCOeval, iouType 'keypoints_crowd', the dataset's sigmas,
  use_area=False (area = 0.53 w h), easy/medium/hard by `images[].crowdIndex` (< 0.2, < 0.8, rest);
  it re-reads the ground truth from the json file, so the metadata's `json_file` is used as is.

Persons with no labelled keypoint (CrowdPose: `num_keypoints` 0) and crowd regions are ignored by
both tools. Results are in percent, like COCOEvaluator.

Non-finite keypoints or scores are an error naming the image: pycocotools lets a NaN OKS pass every
threshold (NaN predictions would score AP 100), and `keypoints_results.json` is strict json.
"""
import contextlib
import copy
import io
import itertools
import json
import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional

import numpy as np
import pycocotools.coco
import pycocotools.cocoeval
import torch
import xtcocotools.coco
import xtcocotools.cocoeval

import detectron2.utils.comm as comm
from detectron2.data import MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.structures import Boxes, Instances
from detectron2.utils.file_io import PathManager
from detectron2.utils.logger import create_small_table

from ..data.datasets.coco import missing_file_error
from ..data.datasets.keypoint_metadata import resolve_keypoint_metadata

__all__ = ["TopDownKeypointEvaluator", "COCO_KEYPOINT_METRICS", "CROWDPOSE_KEYPOINT_METRICS"]

logger = logging.getLogger(__name__)

# Names of COCOeval's `stats` entries, in order, per protocol.
COCO_KEYPOINT_METRICS = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
CROWDPOSE_KEYPOINT_METRICS = ("AP", "AP50", "AP75", "AR", "AR50", "AR75", "AP(easy)", "AP(medium)", "AP(hard)")


class TopDownKeypointEvaluator(DatasetEvaluator):
    """Collects `pred_keypoints` of every image and reports OKS AP/AR for `dataset_name`.

    The dataset's metadata gives `json_file` (the ground truth), `keypoint_oks_sigmas` and
    `keypoint_protocol` ("coco" or "crowdpose").
    """

    def __init__(self, dataset_name: str, output_dir: Optional[str] = None, distributed: bool = True):
        self._logger = logger
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._distributed = distributed
        meta = MetadataCatalog.get(dataset_name)
        self._json_file = meta.get("json_file")
        if not self._json_file:
            raise ValueError(f"dataset {dataset_name!r} has no 'json_file' in its metadata: nothing to evaluate against")
        self._protocol = meta.get("keypoint_protocol", "coco")
        if self._protocol not in ("coco", "crowdpose"):
            raise ValueError(f"dataset {dataset_name!r}: unknown keypoint_protocol {self._protocol!r}")
        self._sigmas = np.asarray(resolve_keypoint_metadata(dataset_names=[dataset_name]).oks_sigmas, dtype=np.float64)
        self._cpu_device = torch.device("cpu")
        self.reset()

    def reset(self) -> None:
        self._predictions: List[dict] = []

    def process(self, inputs, outputs) -> None:
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                continue
            instances = out["instances"]
            if _num_instances(instances) == 0:
                continue
            instances = _for_coco_json(instances.to(self._cpu_device))
            _check_finite(instances, inp["image_id"], self._dataset_name)
            for res in instances_to_coco_json(instances, inp["image_id"]):
                # Results as the official tools and mmpose write them (no box; category = contiguous
                # id, mapped to the json's id in evaluate()).
                self._predictions.append(
                    {
                        "image_id": res["image_id"],
                        "category_id": res["category_id"],
                        "keypoints": res["keypoints"],
                        "score": res["score"],
                    }
                )

    def evaluate(self) -> Dict[str, Dict[str, float]]:
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            predictions = self._predictions

        gt = _read_json(self._json_file)
        cat_ids = sorted(c["id"] for c in gt.get("categories", []))
        # Contiguous class -> the json's category id (sorted ids, as the dataset loader maps them).
        predictions = [
            dict(p, category_id=cat_ids[p["category_id"]] if 0 <= p["category_id"] < len(cat_ids) else p["category_id"])
            for p in predictions
        ]
        known = {img["id"] for img in gt["images"]}
        unknown = sorted({p["image_id"] for p in predictions} - known)
        if unknown:
            raise ValueError(
                f"predictions name image ids not in {self._json_file} ({self._dataset_name}): {unknown[:10]}"
                + (" ..." if len(unknown) > 10 else "")
            )
        num_kpts = len(self._sigmas)
        for p in predictions:
            if len(p["keypoints"]) != 3 * num_kpts:
                raise ValueError(
                    f"a prediction for image {p['image_id']} has {len(p['keypoints']) // 3} keypoints; "
                    f"dataset {self._dataset_name!r} has {num_kpts}"
                )

        if self._output_dir:
            PathManager.mkdirs(self._output_dir)
            path = os.path.join(self._output_dir, "keypoints_results.json")
            self._logger.info(f"Saving keypoint results to {path}")
            with PathManager.open(path, "w") as f:
                json.dump(predictions, f, allow_nan=False)

        metrics = COCO_KEYPOINT_METRICS if self._protocol == "coco" else CROWDPOSE_KEYPOINT_METRICS
        if len(predictions) == 0:
            self._logger.warning(f"No keypoint predictions for {self._dataset_name}: every metric is 0.")
            stats = [0.0] * len(metrics)
        elif self._protocol == "coco":
            stats = evaluate_coco_protocol(self._json_file, gt, predictions, self._sigmas, self._logger)
        else:
            stats = evaluate_crowdpose_protocol(self._json_file, gt, predictions, self._sigmas, self._logger)

        results = OrderedDict(
            (name, float(s * 100) if s >= 0 else float("nan")) for name, s in zip(metrics, stats)
        )
        self._logger.info(
            f"Evaluation results for keypoints ({self._protocol} protocol, {self._dataset_name}): \n"
            + create_small_table(results)
        )
        return {"keypoints": dict(results)}


def _num_instances(instances: Instances) -> int:
    try:
        return len(instances)
    except NotImplementedError:  # Instances without any field
        return 0


def _for_coco_json(instances: Instances) -> Instances:
    """A copy with what `instances_to_coco_json` reads; keypoints cloned (it shifts them in place)."""
    n = len(instances)
    out = Instances(instances.image_size)
    if not instances.has("pred_keypoints"):
        raise ValueError("TopDownKeypointEvaluator needs `pred_keypoints` (N, K, 3) in the model's instances")
    kpts = instances.pred_keypoints
    if not kpts.is_floating_point():
        kpts = kpts.float()
    out.pred_keypoints = kpts.clone()
    if instances.has("pred_boxes"):
        out.pred_boxes = instances.pred_boxes
    else:  # only used for the result's box, which is not written
        xy = kpts[..., :2]
        out.pred_boxes = Boxes(torch.cat([xy.min(dim=1).values, xy.max(dim=1).values], dim=1).float())
    out.scores = instances.scores if instances.has("scores") else torch.ones(n)
    out.pred_classes = instances.pred_classes if instances.has("pred_classes") else torch.zeros(n, dtype=torch.int64)
    return out


def _check_finite(instances: Instances, image_id, dataset_name: str) -> None:
    """Keypoints and scores must be finite (the model never emits anything else)."""
    kpts_ok = torch.isfinite(instances.pred_keypoints).flatten(1).all(dim=1)
    scores_ok = torch.isfinite(torch.as_tensor(instances.scores, dtype=torch.float64)).reshape(-1)
    bad = (~(kpts_ok & scores_ok)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(
            f"{dataset_name}: image id {image_id!r}: {len(bad)} of {len(instances)} predicted persons have non-finite "
            f"keypoints or scores (persons {bad[:10]}); they would pass every OKS threshold in pycocotools"
        )


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise missing_file_error(path, "ground-truth annotation file")
    with open(path) as f:
        return json.load(f)


def evaluate_coco_protocol(json_file: str, gt: dict, predictions: List[dict], sigmas: np.ndarray, logger) -> List[float]:
    """pycocotools COCOeval 'keypoints' with `sigmas`; returns its 10 stats."""
    missing_area = [a.get("id") for a in gt["annotations"] if "area" not in a]
    if missing_area:
        raise ValueError(
            f"{json_file}: the 'coco' keypoint protocol needs 'area' on every person; annotations "
            f"{missing_area[:10]} have none (use protocol 'crowdpose', which uses 0.53 * box area)"
        )
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        coco_gt = pycocotools.coco.COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(predictions))
        coco_eval = pycocotools.cocoeval.COCOeval(coco_gt, coco_dt, "keypoints")
        coco_eval.params.kpt_oks_sigmas = sigmas
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.info("pycocotools COCOeval (keypoints):\n" + buf.getvalue())
    return [float(s) for s in coco_eval.stats]


def evaluate_crowdpose_protocol(json_file: str, gt: dict, predictions: List[dict], sigmas: np.ndarray, logger) -> List[float]:
    """xtcocotools COCOeval 'keypoints_crowd' (the official CrowdPose numbers); returns its 9 stats."""
    no_index = [img.get("id") for img in gt["images"] if "crowdIndex" not in img]
    if no_index:
        raise ValueError(
            f"{json_file}: the 'crowdpose' protocol needs images[].crowdIndex; images {no_index[:10]} have none"
        )
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        # Built from the file: AP easy/medium/hard re-read the ground truth from `anno_file`.
        coco_gt = xtcocotools.coco.COCO(json_file)
        coco_dt = coco_gt.loadRes(copy.deepcopy(predictions))
        coco_eval = xtcocotools.cocoeval.COCOeval(coco_gt, coco_dt, "keypoints_crowd", sigmas, use_area=False)
        coco_eval.params.useSegm = None
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.info("xtcocotools COCOeval (keypoints_crowd):\n" + buf.getvalue())
    return [float(s) for s in coco_eval.stats]
