"""The inference steps shared by the PyTorch model and the exported (onnxruntime) runtime.

boxes (XYXY, image pixels) -> centre / scale -> crop matrices -> [network] -> heatmaps ->
flip-test combination -> decode to image coordinates -> rescoring + OKS-NMS. Each step is a function
of arrays here, so both runtimes run the same code and the tests check that code once (quirk numbers
refer to docs/mmpose_quirks.md).
"""
from dataclasses import asdict, dataclass
from typing import Any, Dict, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import geometry
from .codec import HeatmapCodec
from .nms import rescore_and_nms

__all__ = [
    "TopDownTestSettings",
    "PoseResults",
    "valid_box_mask",
    "boxes_xyxy_to_center_scale",
    "crop_matrices",
    "decode_keypoints",
    "select_poses",
    "heatmaps_to_poses",
]


@dataclass(frozen=True)
class TopDownTestSettings:
    """Test-time behaviour of a top-down model (MODEL.TOPDOWN.*): box padding, flip test, rescoring
    and NMS. Written into an exported model's json so the runtime behaves the same."""

    box_padding: float = 1.25
    flip_test: bool = True
    shift_heatmap: bool = True
    vis_thr: float = 0.2
    use_nms: bool = True
    soft_nms: bool = False
    oks_thr: float = 0.9
    max_dets: int = 20

    def __post_init__(self):
        if not self.box_padding > 0:
            raise ValueError(f"MODEL.TOPDOWN.BOX_PADDING must be > 0, got {self.box_padding}")
        if self.max_dets < 1:
            raise ValueError(f"MODEL.TOPDOWN.MAX_DETS must be >= 1, got {self.max_dets}")

    @classmethod
    def from_config(cls, cfg: Any) -> "TopDownTestSettings":
        t = cfg.MODEL.TOPDOWN
        return cls(
            box_padding=float(t.BOX_PADDING),
            flip_test=bool(t.FLIP_TEST),
            shift_heatmap=bool(t.SHIFT_HEATMAP),
            vis_thr=float(t.VIS_THR),
            use_nms=bool(t.USE_NMS),
            soft_nms=bool(t.SOFT_NMS),
            oks_thr=float(t.OKS_THR),
            max_dets=int(t.MAX_DETS),
        )

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TopDownTestSettings":
        return cls(**d)


class PoseResults(NamedTuple):
    """One image's poses after NMS, in pick order.

    keypoints: (M, K, 3) float32 (x, y, score) in mmpose pixel-index coordinates (integer = pixel
    centre; Detectron2's convention adds 0.5). scores: (M,) float64 rescored instance scores.
    keep: (M,) int64 indices into the image's input boxes.
    """

    keypoints: np.ndarray
    scores: np.ndarray
    keep: np.ndarray


def valid_box_mask(boxes_xyxy: np.ndarray) -> np.ndarray:
    """Boxes that have a crop: finite coordinates and a positive width and height (a box without area
    gives a singular affine, for which mmpose would return NaN keypoints)."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    return np.isfinite(b).all(axis=1) & (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])


def boxes_xyxy_to_center_scale(
    boxes_xyxy: np.ndarray, image_size: Sequence[int], padding: float
) -> Tuple[np.ndarray, np.ndarray]:
    """XYXY boxes (N, 4) -> float32 centres (N, 2) and scales (N, 2), via mmpose's ``_xywh2cs``."""
    b = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    centers, scales = geometry.box_xywh_to_center_scale(xywh, image_size=image_size, padding=padding)
    return np.asarray(centers, np.float32).reshape(-1, 2), np.asarray(scales, np.float32).reshape(-1, 2)


def crop_matrices(
    centers: np.ndarray,
    scales: np.ndarray,
    image_size: Sequence[int],
    use_udp: bool = False,
    frame_hw: Optional[Tuple[int, int]] = None,
    pixels_hw: Optional[Tuple[int, int]] = None,
) -> np.ndarray:
    """Forward affines (N, 2, 3) float64 from image pixels to crop pixels (what cv2.warpAffine takes).

    Centres and scales live in the frame of size ``frame_hw`` (the original image). When the pixels
    actually cropped were resized to ``pixels_hw``, the matrices are composed with the pixel ->
    frame map x = (x' + 0.5) / s - 0.5 (pixel centres), so the crop is the same.
    """
    if use_udp:
        mats = np.stack([geometry.get_udp_warp_matrix(0.0, c, s, image_size) for c, s in zip(centers, scales)])
    else:
        mats = geometry.get_affine_transforms(centers, scales, 0.0, image_size)
    mats = np.asarray(mats, dtype=np.float64).reshape(-1, 2, 3)
    if frame_hw is not None and pixels_hw is not None and tuple(frame_hw) != tuple(pixels_hw):
        (h, w), (th, tw) = frame_hw, pixels_hw
        sx, sy = tw / w, th / h
        to_frame = np.array([[1.0 / sx, 0.0, 0.5 / sx - 0.5], [0.0, 1.0 / sy, 0.5 / sy - 0.5]])
        lin = mats[:, :, :2]
        mats = np.concatenate([lin @ to_frame[:, :2], lin @ to_frame[:, 2:] + mats[:, :, 2:]], axis=2)
    return mats


def decode_keypoints(heatmaps: Any, centers: np.ndarray, scales: np.ndarray, codec: HeatmapCodec) -> np.ndarray:
    """(flip-combined) heatmaps (N, K, h, w) -> keypoints (N, K, 3) float32 (x, y in the image, mmpose
    pixel-index coordinates; score = heatmap maximum). Each person independently of the others, so
    crops can be decoded chunk by chunk (quirks 10-13)."""
    preds, maxvals = codec.decode(heatmaps, centers, scales)
    n = len(preds)
    return np.concatenate([np.asarray(preds, np.float32), np.asarray(maxvals, np.float32).reshape(n, -1, 1)], axis=2)


def select_poses(
    keypoints: np.ndarray,
    scales: np.ndarray,
    box_scores: np.ndarray,
    oks_sigmas: Sequence[float],
    settings: TopDownTestSettings,
) -> PoseResults:
    """One image's decoded persons -> rescored and OKS-NMS'd poses, exactly as mmpose 0.23's evaluate
    (quirks 14, 16-20)."""
    keep, scores = rescore_and_nms(
        keypoints,
        box_scores,
        geometry.scale_areas(scales),
        oks_sigmas,
        vis_thr=settings.vis_thr,
        oks_thr=settings.oks_thr,
        use_nms=settings.use_nms,
        soft_nms=settings.soft_nms,
        max_dets=settings.max_dets,
    )
    return PoseResults(np.asarray(keypoints)[keep], np.asarray(scores)[keep], keep)


def heatmaps_to_poses(
    heatmaps: Any,
    centers: np.ndarray,
    scales: np.ndarray,
    box_scores: np.ndarray,
    codec: HeatmapCodec,
    oks_sigmas: Sequence[float],
    settings: TopDownTestSettings,
) -> PoseResults:
    """One image: (flip-combined) heatmaps (N, K, h, w) -> decoded keypoints in the image, rescored
    and OKS-NMS'd (`decode_keypoints` then `select_poses`)."""
    return select_poses(decode_keypoints(heatmaps, centers, scales, codec), scales, box_scores, oks_sigmas, settings)
