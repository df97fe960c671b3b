"""Top-down pose estimation as a Detectron2 meta-architecture.

boxes (input / person detector / whole image) -> one batched on-device crop per image ->
HRNeXt backbone -> heatmap head -> flip test -> codec decode -> back to the image ->
rescoring + OKS-NMS -> ``Instances`` with ``pred_keypoints`` in Detectron2's convention.
All geometry, decoding and NMS come from ``hrnext_d2.geometry``, ``modeling.codecs`` and
``modeling.postprocess``, so training crops, inference crops and decoding share one implementation.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from detectron2.config import configurable
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import Boxes, Instances

from hrnext_d2 import geometry
from hrnext_d2.data.datasets.keypoint_metadata import (
    COCO_KEYPOINT_OKS_SIGMAS,
    COCO_PERSON_KEYPOINT_FLIP_MAP,
    COCO_PERSON_KEYPOINT_NAMES,
    flip_map_to_flip_pairs,
)
from hrnext_d2.modeling import postprocess
from hrnext_d2.modeling.codecs import HeatmapCodec
from hrnext_d2.modeling.crops import crop_output_size, normalize_crops, warp_affine_crops
from hrnext_d2.modeling.heads.heatmap_head import build_topdown_keypoint_head
from hrnext_d2.modeling.meta_arch.person_detector import PersonDetector, build_person_detector

__all__ = ["TopDownPoseEstimator", "COCO_OKS_SIGMAS", "COCO_FLIP_PAIRS", "resolve_keypoint_meta"]

# Fallbacks for 17 keypoints without dataset metadata (one definition, in the dataset metadata module).
COCO_OKS_SIGMAS = [float(s) for s in COCO_KEYPOINT_OKS_SIGMAS]
COCO_FLIP_PAIRS = [list(p) for p in flip_map_to_flip_pairs(COCO_PERSON_KEYPOINT_NAMES, COCO_PERSON_KEYPOINT_FLIP_MAP)]


def _dataset_metadata(cfg):
    """Metadata of DATASETS.TEST[0], else DATASETS.TRAIN[0], when that dataset is registered."""
    registered = set(DatasetCatalog.list()) | set(MetadataCatalog.list())
    for names in (cfg.DATASETS.TEST, cfg.DATASETS.TRAIN):
        if len(names) and names[0] in registered:
            return names[0], MetadataCatalog.get(names[0])
    return None, None


def resolve_keypoint_meta(cfg) -> Tuple[List[List[int]], List[float]]:
    """Flip pairs and OKS sigmas: MODEL.TOPDOWN.* if set, else dataset metadata, else COCO's (K=17)."""
    k = cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS
    name, meta = _dataset_metadata(cfg)
    where = f"metadata of dataset {name!r}" if name else "COCO defaults"

    sigmas = list(cfg.MODEL.TOPDOWN.OKS_SIGMAS)
    sigma_src = "MODEL.TOPDOWN.OKS_SIGMAS"
    if not sigmas and meta is not None and meta.get("keypoint_oks_sigmas") is not None:
        sigmas, sigma_src = list(meta.get("keypoint_oks_sigmas")), f"keypoint_oks_sigmas of {where}"
    if not sigmas and k == len(COCO_OKS_SIGMAS):
        sigmas, sigma_src = list(COCO_OKS_SIGMAS), "COCO defaults"
    if len(sigmas) != k:
        raise ValueError(
            f"MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS={k} but {sigma_src} has {len(sigmas)} OKS sigmas; "
            "set MODEL.TOPDOWN.OKS_SIGMAS or register the dataset of DATASETS.TEST[0] with keypoint_oks_sigmas"
        )

    pairs = [list(p) for p in cfg.MODEL.TOPDOWN.FLIP_PAIRS]
    pair_src = "MODEL.TOPDOWN.FLIP_PAIRS"
    if not pairs and meta is not None:
        if meta.get("keypoint_flip_pairs") is not None:
            pairs, pair_src = [list(p) for p in meta.get("keypoint_flip_pairs")], f"keypoint_flip_pairs of {where}"
        elif meta.get("keypoint_flip_map") is not None and meta.get("keypoint_names") is not None:
            pairs = [list(p) for p in flip_map_to_flip_pairs(meta.get("keypoint_names"), meta.get("keypoint_flip_map"))]
            pair_src = f"keypoint_flip_map of {where}"
    if not pairs and k == 17:
        pairs, pair_src = [list(p) for p in COCO_FLIP_PAIRS], "COCO defaults"
    if not pairs and k != 17:
        raise ValueError(
            f"MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS={k}: no flip pairs; set MODEL.TOPDOWN.FLIP_PAIRS or "
            "register the dataset of DATASETS.TEST[0] with keypoint_flip_pairs"
        )
    for p in pairs:
        if len(p) != 2 or not all(0 <= int(i) < k for i in p):
            raise ValueError(f"{pair_src}: flip pair {p} is not two keypoint indices in [0, {k})")
    return [[int(a), int(b)] for a, b in pairs], [float(s) for s in sigmas]


@META_ARCH_REGISTRY.register()
class TopDownPoseEstimator(nn.Module):
    """Top-down heatmap pose model (mmpose 0.23 ``TopDown``) with Detectron2 inputs and outputs.

    Training input: mapper crops ``{"image": uint8 (3, H, W), "target": (K, h, w),
    "target_weight": (K, 1)}``. Inference input: Detectron2 image dicts, optionally with
    ``instances`` holding ``gt_boxes`` / ``pred_boxes`` (+ ``scores``) in the ``height``/``width``
    frame. Output keypoints follow Detectron2 (pixel index + 0.5), so ``instances_to_coco_json``
    writes COCO numbers.
    """

    @configurable
    def __init__(
        self,
        *,
        backbone: Backbone,
        keypoint_head: nn.Module,
        codec: HeatmapCodec,
        in_feature: str,
        image_size: Sequence[int],
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        flip_pairs: Sequence[Sequence[int]],
        oks_sigmas: Sequence[float],
        input_format: str = "RGB",
        box_padding: float = 1.25,
        flip_test: bool = True,
        shift_heatmap: bool = True,
        vis_thr: float = 0.2,
        use_nms: bool = True,
        soft_nms: bool = False,
        oks_thr: float = 0.9,
        max_dets: int = 20,
        use_input_boxes: bool = True,
        person_detector: Optional[PersonDetector] = None,
        crop_batch_size: int = 64,
        return_heatmaps: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.keypoint_head = keypoint_head
        self.codec = codec
        self.in_feature = in_feature
        self.image_size = crop_output_size(image_size)
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR' for the top-down model, got {input_format!r}")
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        if self.pixel_mean.shape != self.pixel_std.shape:
            raise ValueError(f"MODEL.PIXEL_MEAN {list(pixel_mean)} and MODEL.PIXEL_STD {list(pixel_std)} differ in length")
        self.flip_pairs = [[int(a), int(b)] for a, b in flip_pairs]
        self.oks_sigmas = np.asarray(oks_sigmas, dtype=np.float64)
        self.box_padding = float(box_padding)
        self.flip_test = flip_test
        self.shift_heatmap = shift_heatmap
        self.vis_thr = float(vis_thr)
        self.use_nms = use_nms
        self.soft_nms = soft_nms
        self.oks_thr = float(oks_thr)
        self.max_dets = int(max_dets)
        self.use_input_boxes = use_input_boxes
        # A plain attribute, not a submodule: detector weights stay out of pose checkpoints.
        self.person_detector = person_detector
        if crop_batch_size <= 0:
            raise ValueError(f"MODEL.TOPDOWN.CROP_BATCH_SIZE must be > 0, got {crop_batch_size}")
        self.crop_batch_size = int(crop_batch_size)
        self.return_heatmaps = return_heatmaps

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        keypoint_head = build_topdown_keypoint_head(cfg, backbone.output_shape())
        flip_pairs, oks_sigmas = resolve_keypoint_meta(cfg)
        td = cfg.MODEL.TOPDOWN
        if td.IN_FEATURE not in backbone.output_shape():
            raise ValueError(
                f"MODEL.TOPDOWN.IN_FEATURE={td.IN_FEATURE!r} is not a backbone output; "
                f"available: {sorted(backbone.output_shape())}"
            )
        return {
            "backbone": backbone,
            "keypoint_head": keypoint_head,
            "codec": HeatmapCodec.from_config(cfg),
            "in_feature": td.IN_FEATURE,
            "image_size": list(cfg.INPUT.TOPDOWN.IMAGE_SIZE),
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "flip_pairs": flip_pairs,
            "oks_sigmas": oks_sigmas,
            "input_format": cfg.INPUT.FORMAT,
            "box_padding": td.BOX_PADDING,
            "flip_test": td.FLIP_TEST,
            "shift_heatmap": td.SHIFT_HEATMAP,
            "vis_thr": td.VIS_THR,
            "use_nms": td.USE_NMS,
            "soft_nms": td.SOFT_NMS,
            "oks_thr": td.OKS_THR,
            "max_dets": td.MAX_DETS,
            "use_input_boxes": td.USE_INPUT_BOXES,
            "person_detector": build_person_detector(cfg),
            "crop_batch_size": td.CROP_BATCH_SIZE,
            "return_heatmaps": td.RETURN_HEATMAPS,
        }

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    @property
    def num_keypoints(self) -> int:
        return len(self.oks_sigmas)

    # ------------------------------------------------------------------ network
    def forward_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Normalised crops (B, 3, H, W) -> heatmaps (B, K, H/4, W/4)."""
        features = self.backbone(crops)
        return self.keypoint_head(features[self.in_feature])

    def _to_rgb(self, images: torch.Tensor) -> torch.Tensor:
        """Channels in INPUT.FORMAT -> RGB (the order the network and PIXEL_MEAN are defined in)."""
        return images.flip(-3) if self.input_format == "BGR" else images

    def _normalizer(self) -> Tuple[torch.Tensor, torch.Tensor]:
        # MODEL.PIXEL_MEAN/STD are given in INPUT.FORMAT order, as in Detectron2.
        if self.input_format == "BGR":
            return self.pixel_mean.flip(0), self.pixel_std.flip(0)
        return self.pixel_mean, self.pixel_std

    def forward(self, batched_inputs: List[Dict]):
        if self.training:
            return self._forward_train(batched_inputs)
        return self.inference(batched_inputs)

    def _forward_train(self, batched_inputs: List[Dict]) -> Dict[str, torch.Tensor]:
        for key in ("image", "target", "target_weight"):
            if key not in batched_inputs[0]:
                raise KeyError(f"TopDownPoseEstimator training input lacks {key!r} (expects the top-down mapper's dicts)")
        images = torch.stack([x["image"] for x in batched_inputs]).to(self.device, non_blocking=True)
        mean, std = self._normalizer()
        crops = normalize_crops(self._to_rgb(images.float()), mean, std)
        target = torch.stack([torch.as_tensor(x["target"]) for x in batched_inputs]).to(self.device)
        weight = torch.stack([torch.as_tensor(x["target_weight"]) for x in batched_inputs]).to(self.device)
        heatmaps = self.forward_crops(crops)
        if heatmaps.shape != target.shape:
            raise ValueError(
                f"heatmaps {tuple(heatmaps.shape)} and targets {tuple(target.shape)} differ: check "
                "INPUT.TOPDOWN.IMAGE_SIZE against the mapper and MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS"
            )
        return self.keypoint_head.losses(heatmaps, target.float(), weight.float())

    # ------------------------------------------------------------------ inference
    def _input_boxes(self, inp: Dict) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        if not self.use_input_boxes or "instances" not in inp:
            return None
        inst = inp["instances"]
        if inst.has("pred_boxes"):
            boxes = inst.pred_boxes
        elif inst.has("gt_boxes"):
            boxes = inst.gt_boxes
        else:
            raise KeyError("input 'instances' has neither 'pred_boxes' nor 'gt_boxes'")
        boxes = boxes.tensor.detach().cpu().numpy().astype(np.float64).reshape(-1, 4)
        if inst.has("scores"):
            scores = inst.scores.detach().cpu().numpy().astype(np.float64).reshape(-1)
            if len(scores) != len(boxes):
                raise ValueError(f"input 'instances' has {len(boxes)} boxes but {len(scores)} scores")
        else:
            scores = np.ones(len(boxes), dtype=np.float64)
        return boxes, scores

    def _gather_boxes(self, batched_inputs: List[Dict]) -> List[Tuple[np.ndarray, np.ndarray]]:
        """XYXY boxes (height/width frame) and scores per input: input, detector, or whole image."""
        found: List[Optional[Tuple[np.ndarray, np.ndarray]]] = [self._input_boxes(x) for x in batched_inputs]
        missing = [i for i, f in enumerate(found) if f is None]
        if missing and self.person_detector is not None:
            detected = self.person_detector([batched_inputs[i] for i in missing], self.input_format, self.device)
            for i, det in zip(missing, detected):
                found[i] = det
        for i, inp in enumerate(batched_inputs):
            if found[i] is None:
                h, w = self._frame_size(inp)
                found[i] = (np.array([[0.0, 0.0, w, h]]), np.ones(1))
        return found  # type: ignore[return-value]

    @staticmethod
    def _frame_size(inp: Dict) -> Tuple[int, int]:
        image = inp["image"]
        return int(inp.get("height", image.shape[-2])), int(inp.get("width", image.shape[-1]))

    def _crop_matrices(self, inp: Dict, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
        """Forward affines from the image TENSOR's pixels to crop pixels.

        Boxes, centres and scales live in the height/width frame (as mmpose's); when the tensor was
        resized, compose with the tensor -> frame map x = (x' + 0.5) / s - 0.5 (pixel centres).
        """
        if self.codec.use_udp:
            mats = np.stack([geometry.get_udp_warp_matrix(0.0, c, s, self.image_size) for c, s in zip(centers, scales)])
        else:
            mats = geometry.get_affine_transforms(centers, scales, 0.0, self.image_size)
        mats = mats.astype(np.float64)
        h, w = self._frame_size(inp)
        th, tw = inp["image"].shape[-2:]
        if (th, tw) != (h, w):
            sx, sy = tw / w, th / h
            to_frame = np.array([[1.0 / sx, 0.0, 0.5 / sx - 0.5], [0.0, 1.0 / sy, 0.5 / sy - 0.5]])
            lin = mats[:, :, :2]
            mats = np.concatenate(
                [lin @ to_frame[:, :2], (lin @ to_frame[:, 2:] + mats[:, :, 2:])], axis=2
            )
        return mats

    def _heatmaps(self, crops: torch.Tensor) -> torch.Tensor:
        """Flip-tested heatmaps for normalised crops, CROP_BATCH_SIZE crops per backbone call."""
        outs = []
        for start in range(0, crops.shape[0], self.crop_batch_size):
            chunk = crops[start : start + self.crop_batch_size]
            heatmaps = self.forward_crops(chunk)
            if self.flip_test:
                flipped = self.forward_crops(chunk.flip(3))
                heatmaps = self.codec.combine_flip(heatmaps, flipped, self.flip_pairs, self.shift_heatmap)
            outs.append(heatmaps)
        return torch.cat(outs, dim=0)

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        """Detectron2 image dicts -> ``[{"instances": Instances}]`` in each input's height/width frame."""
        boxes_per_image = self._gather_boxes(batched_inputs)
        mean, std = self._normalizer()

        crops, metas = [], []
        for inp, (boxes, scores) in zip(batched_inputs, boxes_per_image):
            # A box without area has no crop (singular affine); mmpose would produce NaNs for it.
            valid = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            if not valid.all():
                boxes, scores = boxes[valid], scores[valid]
            if len(boxes) == 0:
                metas.append((boxes, scores, None, None, 0))
                continue
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
            centers, scales = geometry.box_xywh_to_center_scale(
                xywh, image_size=self.image_size, padding=self.box_padding
            )
            centers = np.asarray(centers, dtype=np.float32).reshape(-1, 2)
            scales = np.asarray(scales, dtype=np.float32).reshape(-1, 2)
            image = inp["image"].to(self.device, non_blocking=True)
            raw = warp_affine_crops(
                image, self._crop_matrices(inp, centers, scales), self.image_size, round_to_uint8=True
            )
            crops.append(normalize_crops(self._to_rgb(raw), mean, std))
            metas.append((boxes, scores, centers, scales, len(boxes)))

        heatmaps = self._heatmaps(torch.cat(crops)) if crops else None

        results, offset = [], 0
        for inp, (boxes, scores, centers, scales, n) in zip(batched_inputs, metas):
            hm = heatmaps[offset : offset + n] if n else None
            offset += n
            results.append({"instances": self._instances(inp, boxes, scores, centers, scales, hm)})
        return results

    def _instances(self, inp, boxes, box_scores, centers, scales, heatmaps) -> Instances:
        """Decode, rescore, OKS-NMS, and pack one image's persons (Detectron2 keypoint convention)."""
        h, w = self._frame_size(inp)
        k = self.num_keypoints
        inst = Instances((h, w))
        if heatmaps is None:
            inst.pred_boxes = Boxes(torch.zeros((0, 4), dtype=torch.float32, device=self.device))
            inst.scores = torch.zeros((0,), dtype=torch.float32, device=self.device)
            inst.pred_classes = torch.zeros((0,), dtype=torch.int64, device=self.device)
            inst.pred_keypoints = torch.zeros((0, k, 3), dtype=torch.float32, device=self.device)
            if self.return_heatmaps:
                hh, ww = self.codec.heatmap_size[1], self.codec.heatmap_size[0]
                inst.pred_keypoint_heatmaps = torch.zeros((0, k, hh, ww), device=self.device)
            return inst

        preds, maxvals = self.codec.decode(heatmaps.float().cpu().numpy(), centers, scales)
        preds = np.asarray(preds, dtype=np.float32)
        maxvals = np.asarray(maxvals, dtype=np.float32).reshape(len(preds), -1)
        kpts = np.concatenate([preds, maxvals[:, :, None]], axis=2)  # (N, K, 3) mmpose coordinates
        scores = postprocess.rescore(maxvals, box_scores, self.vis_thr)
        s200 = (scales * np.float32(200)).astype(np.float32)
        areas = s200[:, 0] * s200[:, 1]
        if self.use_nms:
            if self.soft_nms:
                keep = postprocess.soft_oks_nms(kpts, scores, areas, self.oks_thr, self.oks_sigmas, max_dets=self.max_dets)
            else:
                keep = postprocess.oks_nms(kpts, scores, areas, self.oks_thr, self.oks_sigmas)
            keep = np.asarray(keep, dtype=np.int64).reshape(-1)
        else:
            keep = np.arange(len(kpts))

        out_kpts = kpts[keep].copy()
        out_kpts[:, :, :2] += 0.5  # mmpose pixel index -> Detectron2 (instances_to_coco_json subtracts 0.5)
        inst.pred_boxes = Boxes(torch.as_tensor(boxes[keep], dtype=torch.float32, device=self.device))
        inst.scores = torch.as_tensor(np.asarray(scores)[keep], dtype=torch.float32, device=self.device)
        inst.pred_classes = torch.zeros((len(keep),), dtype=torch.int64, device=self.device)
        inst.pred_keypoints = torch.as_tensor(out_kpts, dtype=torch.float32, device=self.device)
        if self.return_heatmaps:
            inst.pred_keypoint_heatmaps = heatmaps[torch.as_tensor(keep, device=heatmaps.device)]
        return inst
