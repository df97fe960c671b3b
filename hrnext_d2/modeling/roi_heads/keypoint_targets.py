"""Keypoint R-CNN targets, losses and decoding for heatmaps of any (height, width).

Detectron2's `keypoint_rcnn_loss` (through `Keypoints.to_heatmap`) assumes square heatmaps: it takes
the side length from `logits.shape[2]` and flattens with it. These functions keep its conventions
(Heckbert's continuous coordinates, a keypoint counts when labelled and inside its box, the same
normalizer) for (H, W) heatmaps, and add Gaussian targets for an MSE loss. Decoding is Detectron2's
`heatmaps_to_keypoints`, which already handles non-square maps.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from detectron2.layers import cat
from detectron2.structures import Instances, heatmaps_to_keypoints

__all__ = [
    "pad_boxes_to_aspect",
    "keypoints_to_heatmap_labels",
    "keypoints_to_gaussian_heatmaps",
    "keypoint_cross_entropy_loss",
    "keypoint_gaussian_mse_loss",
    "keypoint_inference",
]


def pad_boxes_to_aspect(boxes: torch.Tensor, aspect_wh: float, padding: float) -> torch.Tensor:
    """XYXY boxes grown about their centres to width / height == `aspect_wh`, then scaled by
    `padding` (the top-down crop rule: mmpose's box -> centre/scale with its 1.25 enlargement)."""
    if aspect_wh <= 0 or padding <= 0:
        raise ValueError(f"pad_boxes_to_aspect: aspect {aspect_wh} and padding {padding} must be > 0")
    cx = (boxes[:, 0] + boxes[:, 2]) * 0.5
    cy = (boxes[:, 1] + boxes[:, 3]) * 0.5
    w = (boxes[:, 2] - boxes[:, 0]).clamp(min=0)
    h = (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    w, h = torch.maximum(w, h * aspect_wh), torch.maximum(h, w / aspect_wh)
    w, h = w * (0.5 * padding), h * (0.5 * padding)
    return torch.stack([cx - w, cy - h, cx + w, cy + h], dim=1)


def _heatmap_coordinates(keypoints: torch.Tensor, rois: torch.Tensor, size: Sequence[int]):
    """Keypoints in continuous heatmap coordinates (x * W / box width from the box corner) and
    whether each is labelled."""
    h, w = int(size[0]), int(size[1])
    scale_x = w / (rois[:, 2] - rois[:, 0])
    scale_y = h / (rois[:, 3] - rois[:, 1])
    x = (keypoints[..., 0] - rois[:, 0, None]) * scale_x[:, None]
    y = (keypoints[..., 1] - rois[:, 1, None]) * scale_y[:, None]
    return x, y, keypoints[..., 2] > 0


def keypoints_to_heatmap_labels(
    keypoints: torch.Tensor, rois: torch.Tensor, size: Sequence[int]
) -> Tuple[torch.Tensor, torch.Tensor]:
    """`Keypoints.to_heatmap` for an (H, W) heatmap: (labels (N, K) long in [0, H*W), valid (N, K)
    bool). A keypoint on the box's right / bottom edge goes to the last column / row, as there."""
    h, w = int(size[0]), int(size[1])
    if rois.numel() == 0:
        empty = rois.new_zeros((0, keypoints.shape[1]), dtype=torch.long)
        return empty, empty.bool()
    x, y, labelled = _heatmap_coordinates(keypoints, rois, (h, w))
    xi = x.floor().long()
    yi = y.floor().long()
    xi[keypoints[..., 0] == rois[:, 2, None]] = w - 1
    yi[keypoints[..., 1] == rois[:, 3, None]] = h - 1
    valid = (xi >= 0) & (yi >= 0) & (xi < w) & (yi < h) & labelled
    labels = (yi * w + xi) * valid
    return labels, valid


def keypoints_to_gaussian_heatmaps(
    keypoints: torch.Tensor, rois: torch.Tensor, size: Sequence[int], sigma: float
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gaussian targets (N, K, H, W), peak 1 at the keypoint (pixel i's centre is at i + 0.5, as in
    the labels above), and valid (N, K) exactly as `keypoints_to_heatmap_labels`."""
    h, w = int(size[0]), int(size[1])
    _, valid = keypoints_to_heatmap_labels(keypoints, rois, (h, w))
    if rois.numel() == 0:
        return rois.new_zeros((0, keypoints.shape[1], h, w)), valid
    x, y, _ = _heatmap_coordinates(keypoints, rois, (h, w))
    xs = torch.arange(w, dtype=x.dtype, device=x.device) + 0.5
    ys = torch.arange(h, dtype=y.dtype, device=y.device) + 0.5
    gx = torch.exp(-((xs - x[..., None]) ** 2) / (2 * sigma**2))  # (N, K, W)
    gy = torch.exp(-((ys - y[..., None]) ** 2) / (2 * sigma**2))  # (N, K, H)
    target = gy[..., :, None] * gx[..., None, :]
    return target * valid[..., None, None], valid


def _gt_keypoints_and_boxes(instances: List[Instances], boxes: List[torch.Tensor]):
    kpts = [inst.gt_keypoints.tensor for inst in instances if len(inst)]
    rois = [b for inst, b in zip(instances, boxes) if len(inst)]
    return kpts, rois


def _normalize(loss: torch.Tensor, valid: torch.Tensor, normalizer: Optional[float]) -> torch.Tensor:
    return loss / (valid.sum().clamp(min=1) if normalizer is None else normalizer)


def keypoint_cross_entropy_loss(
    logits: torch.Tensor, instances: List[Instances], boxes: List[torch.Tensor], normalizer: Optional[float]
) -> torch.Tensor:
    """Detectron2's `keypoint_rcnn_loss` for (N, K, H, W) logits pooled from `boxes` (per image,
    XYXY): softmax cross-entropy over the H*W positions of each valid keypoint, summed, divided by
    `normalizer` (None: by the number of valid keypoints)."""
    n, k, h, w = logits.shape
    kpts, rois = _gt_keypoints_and_boxes(instances, boxes)
    if not kpts:
        return logits.sum() * 0
    labels, valid = keypoints_to_heatmap_labels(cat(kpts, 0), cat(rois, 0), (h, w))
    if not valid.any():
        return logits.sum() * 0
    loss = F.cross_entropy(logits.reshape(n * k, h * w)[valid.reshape(-1)], labels[valid], reduction="sum")
    return _normalize(loss, valid, normalizer)


def keypoint_gaussian_mse_loss(
    heatmaps: torch.Tensor, instances: List[Instances], boxes: List[torch.Tensor], normalizer: Optional[float],
    sigma: float,
) -> torch.Tensor:
    """Squared error against Gaussian targets, summed over the heatmap of each valid keypoint (so
    the loss does not shrink with the heatmap size), then normalised as the cross-entropy loss."""
    n, k, h, w = heatmaps.shape
    kpts, rois = _gt_keypoints_and_boxes(instances, boxes)
    if not kpts:
        return heatmaps.sum() * 0
    target, valid = keypoints_to_gaussian_heatmaps(cat(kpts, 0), cat(rois, 0), (h, w), sigma)
    if not valid.any():
        return heatmaps.sum() * 0
    loss = ((heatmaps[valid] - target[valid]) ** 2).sum()
    return _normalize(loss, valid, normalizer)


def keypoint_inference(
    heatmaps: torch.Tensor, instances: List[Instances], boxes: List[torch.Tensor], score: str = "softmax"
) -> None:
    """Detectron2's `keypoint_rcnn_inference` for heatmaps pooled from `boxes`: sets
    `pred_keypoints` (R, K, 3) = (x, y, score) in image coordinates (continuous, as Detectron2) and
    `pred_keypoint_heatmaps`. score "softmax": Detectron2's spatial-softmax score (logit heatmaps);
    "peak": the heatmap value at the maximum (Gaussian heatmaps)."""
    columns = {"softmax": [0, 1, 3], "peak": [0, 1, 2]}[score]
    heatmaps = heatmaps.detach()
    rois = cat([b.detach() for b in boxes], 0) if boxes else heatmaps.new_zeros((0, 4))
    results = heatmaps_to_keypoints(heatmaps, rois)[:, :, columns]
    counts = [len(inst) for inst in instances]
    for inst, kpts, maps in zip(instances, results.split(counts), heatmaps.split(counts)):
        inst.pred_keypoints = kpts
        inst.pred_keypoint_heatmaps = maps
