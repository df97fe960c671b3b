"""Top-down pose estimation as a Detectron2 meta-architecture.

boxes (input / person detector / whole image) -> on-device crops -> HRNeXt backbone -> heatmap head
-> flip test -> decode + rescoring + OKS-NMS (``hrnext_d2.topdown.pipeline``) -> ``Instances`` with
``pred_keypoints`` in Detectron2's convention. Crops, decoding and NMS are the numerics package's,
so training crops, inference crops, the exported runtime and the tests share one implementation
(quirk numbers refer to docs/mmpose_quirks.md).
"""
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, Backbone, build_backbone
from detectron2.structures import Boxes, Instances

from ...data.datasets.keypoint_metadata import KeypointInfo, resolve_keypoint_metadata
from ...topdown.codec import HeatmapCodec
from ...topdown.crops import normalize_crops, warp_affine_crops
from ...topdown.pipeline import (
    PoseResults,
    TopDownTestSettings,
    boxes_xyxy_to_center_scale,
    crop_matrices,
    decode_keypoints,
    select_poses,
    valid_box_mask,
)
from ..heads import build_topdown_keypoint_head
from .person_detector import PersonDetector, build_person_detector

__all__ = ["TopDownPoseEstimator", "is_topdown_architecture"]


def is_topdown_architecture(cfg) -> bool:
    """True when MODEL.META_ARCHITECTURE is TopDownPoseEstimator (or a subclass): such models train
    on person crops with the top-down loaders and evaluator; any other Detectron2 meta-architecture
    (GeneralizedRCNN, RetinaNet, ...) uses Detectron2's image loaders."""
    return issubclass(META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE), TopDownPoseEstimator)


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
        keypoint_info: KeypointInfo,
        in_feature: str,
        pixel_mean: Sequence[float],
        pixel_std: Sequence[float],
        input_format: str = "RGB",
        test_settings: TopDownTestSettings = TopDownTestSettings(),
        use_input_boxes: bool = True,
        person_detector: Optional[PersonDetector] = None,
        crop_batch_size: int = 64,
        return_heatmaps: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.keypoint_head = keypoint_head
        self.codec = codec
        self.keypoint_info = keypoint_info
        self.in_feature = in_feature
        if input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be 'RGB' or 'BGR' for the top-down model, got {input_format!r}")
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        if self.pixel_mean.shape != self.pixel_std.shape:
            raise ValueError(f"MODEL.PIXEL_MEAN {list(pixel_mean)} and MODEL.PIXEL_STD {list(pixel_std)} differ in length")
        self.test_settings = test_settings
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
        td = cfg.MODEL.TOPDOWN
        if td.IN_FEATURE not in backbone.output_shape():
            raise ValueError(
                f"MODEL.TOPDOWN.IN_FEATURE={td.IN_FEATURE!r} is not a backbone output; "
                f"available: {sorted(backbone.output_shape())}"
            )
        return {
            "backbone": backbone,
            "keypoint_head": build_topdown_keypoint_head(cfg, backbone.output_shape()),
            "codec": HeatmapCodec.from_config(cfg),
            "keypoint_info": resolve_keypoint_metadata(cfg),
            "in_feature": td.IN_FEATURE,
            "pixel_mean": list(cfg.MODEL.PIXEL_MEAN),
            "pixel_std": list(cfg.MODEL.PIXEL_STD),
            "input_format": cfg.INPUT.FORMAT,
            "test_settings": TopDownTestSettings.from_config(cfg),
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
        return self.keypoint_info.num_keypoints

    @property
    def image_size(self) -> Tuple[int, int]:
        """Crop size (w, h)."""
        return self.codec.image_size

    # ------------------------------------------------------------------ network
    def forward_crops(self, crops: torch.Tensor) -> torch.Tensor:
        """Normalised crops (B, 3, H, W) -> heatmaps (B, K, H/4, W/4)."""
        features = self.backbone(crops)
        return self.keypoint_head(features[self.in_feature])

    def crop_heatmaps(self, crops: torch.Tensor) -> torch.Tensor:
        """Normalised crops -> the heatmaps inference decodes: with FLIP_TEST the flip-test average
        (quirk 15), the original and flipped crops in one backbone call; CROP_BATCH_SIZE crops (and
        as many flipped ones) per call."""
        outs = []
        for start in range(0, crops.shape[0], self.crop_batch_size):
            chunk = crops[start : start + self.crop_batch_size]
            if self.test_settings.flip_test:
                both = self.forward_crops(torch.cat([chunk, chunk.flip(3)]))
                heatmaps, flipped = both[: len(chunk)], both[len(chunk) :]
                heatmaps = self.codec.combine_flip(
                    heatmaps, flipped, self.keypoint_info.flip_pairs, self.test_settings.shift_heatmap
                )
            else:
                heatmaps = self.forward_crops(chunk)
            outs.append(heatmaps)
        return torch.cat(outs, dim=0)

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

    @torch.no_grad()
    def inference(self, batched_inputs: List[Dict]) -> List[Dict[str, Instances]]:
        """Detectron2 image dicts -> ``[{"instances": Instances}]`` in each input's height/width frame.

        The persons of all images are cropped, run and decoded CROP_BATCH_SIZE at a time (a chunk may
        span images), so memory is bounded by the chunk, not by the number of boxes; rescoring and
        OKS-NMS then run per image.
        """
        boxes_per_image = self._gather_boxes(batched_inputs)
        settings = self.test_settings
        images = []  # per image: boxes, box scores, centres, scales, crop matrices
        for inp, (boxes, scores) in zip(batched_inputs, boxes_per_image):
            valid = valid_box_mask(boxes)
            boxes, scores = boxes[valid], scores[valid]
            centers, scales = boxes_xyxy_to_center_scale(boxes, self.image_size, settings.box_padding)
            mats = crop_matrices(
                centers, scales, self.image_size, self.codec.use_udp, self._frame_size(inp), inp["image"].shape[-2:]
            ) if len(boxes) else np.zeros((0, 2, 3))
            images.append((boxes, scores, centers, scales, mats))

        k = self.num_keypoints
        keypoints = [np.zeros((len(im[0]), k, 3), np.float32) for im in images]
        kept_heatmaps: List[List[torch.Tensor]] = [[] for _ in images]
        on_device: Dict[int, torch.Tensor] = {}  # each image moved to the device once, even across chunks
        for segments in self._chunks([len(im[0]) for im in images]):
            for i in {i for i, _, _ in segments} - on_device.keys():
                on_device[i] = batched_inputs[i]["image"].to(self.device, non_blocking=True)
            crops = torch.cat([self._crops(on_device[i], images[i][4][a:b]) for i, a, b in segments])
            heatmaps = self.crop_heatmaps(crops)
            offset = 0
            for i, a, b in segments:
                hm = heatmaps[offset : offset + b - a]
                offset += b - a
                keypoints[i][a:b] = decode_keypoints(hm.float().cpu().numpy(), images[i][2][a:b], images[i][3][a:b], self.codec)
                if self.return_heatmaps:
                    kept_heatmaps[i].append(hm)

        results = []
        for i, inp in enumerate(batched_inputs):
            boxes, scores, centers, scales, _ = images[i]
            poses = select_poses(keypoints[i], scales, scores, self.keypoint_info.oks_sigmas, settings)
            hm = torch.cat(kept_heatmaps[i]) if kept_heatmaps[i] else None
            results.append({"instances": self._instances(self._frame_size(inp), boxes, poses, hm)})
        return results

    def _chunks(self, counts: List[int]) -> Iterator[List[Tuple[int, int, int]]]:
        """Persons of all images in CROP_BATCH_SIZE chunks, as (image index, start, end) segments."""
        segments: List[Tuple[int, int, int]] = []
        room = self.crop_batch_size
        for i, n in enumerate(counts):
            start = 0
            while start < n:
                take = min(room, n - start)
                segments.append((i, start, start + take))
                start += take
                room -= take
                if room == 0:
                    yield segments
                    segments, room = [], self.crop_batch_size
        if segments:
            yield segments

    def _crops(self, image: torch.Tensor, mats: np.ndarray) -> torch.Tensor:
        """Normalised RGB crops (N, 3, H, W) of one image (C, H, W) on the model's device for forward
        affine matrices (N, 2, 3)."""
        mean, std = self._normalizer()
        raw = warp_affine_crops(image, mats, self.image_size, round_to_uint8=True)
        return normalize_crops(self._to_rgb(raw), mean, std)

    def instances_from_heatmaps(
        self,
        image_hw: Tuple[int, int],
        boxes: np.ndarray,
        box_scores: np.ndarray,
        centers: np.ndarray,
        scales: np.ndarray,
        heatmaps: Optional[torch.Tensor],
    ) -> Instances:
        """One image's persons as Detectron2 Instances: the (flip-combined) heatmaps of its crops
        decoded, rescored and NMS'd, keypoints in Detectron2's convention (pixel index + 0.5).

        boxes: XYXY (N, 4) in the image; centers / scales: their crops (float32 (N, 2));
        heatmaps: (N, K, h, w), or None when the image has no person box.
        """
        if heatmaps is None:
            keypoints = np.zeros((0, self.num_keypoints, 3), np.float32)
        else:
            keypoints = decode_keypoints(heatmaps.float().cpu().numpy(), centers, scales, self.codec)
        poses = select_poses(keypoints, scales, box_scores, self.keypoint_info.oks_sigmas, self.test_settings)
        return self._instances(image_hw, boxes, poses, heatmaps)

    def _instances(
        self, image_hw: Tuple[int, int], boxes: np.ndarray, poses: PoseResults, heatmaps: Optional[torch.Tensor]
    ) -> Instances:
        """Kept persons as Detectron2 Instances (keypoints: mmpose pixel index + 0.5)."""
        keypoints = poses.keypoints.copy()
        keypoints[:, :, :2] += 0.5  # mmpose pixel index -> Detectron2 (instances_to_coco_json subtracts 0.5)
        keep = poses.keep
        inst = Instances(tuple(image_hw))
        inst.pred_boxes = Boxes(torch.as_tensor(np.asarray(boxes, np.float32).reshape(-1, 4)[keep], device=self.device))
        inst.scores = torch.as_tensor(poses.scores, dtype=torch.float32, device=self.device)
        inst.pred_classes = torch.zeros((len(keep),), dtype=torch.int64, device=self.device)
        inst.pred_keypoints = torch.as_tensor(keypoints, dtype=torch.float32, device=self.device)
        if self.return_heatmaps:
            if heatmaps is None:
                hw, hh = self.codec.heatmap_size
                inst.pred_keypoint_heatmaps = torch.zeros((0, self.num_keypoints, hh, hw), device=self.device)
            else:
                inst.pred_keypoint_heatmaps = heatmaps[torch.as_tensor(keep, device=heatmaps.device)]
        return inst
