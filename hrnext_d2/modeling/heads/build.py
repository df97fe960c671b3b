"""The registry of crop-level top-down keypoint heads (PointRend's POINT_HEAD_REGISTRY is the model).

A head here maps the backbone feature of whole person crops (B, C, h, w) to heatmaps and computes
its loss from heatmap targets; it has nothing to do with Detectron2's ROI_KEYPOINT_HEAD_REGISTRY,
whose heads take (features, instances) inside ROI heads.
"""
from typing import Dict, Union

from detectron2.layers import ShapeSpec
from detectron2.utils.registry import Registry
from torch import nn

__all__ = ["TOPDOWN_HEAD_REGISTRY", "build_topdown_keypoint_head"]

TOPDOWN_HEAD_REGISTRY = Registry("TOPDOWN_HEAD")
TOPDOWN_HEAD_REGISTRY.__doc__ = """
Crop-level top-down keypoint heads: ``head(feature) -> heatmaps`` and ``head.losses(heatmaps,
target, target_weight) -> dict``. Built with ``head_cls(cfg, input_shape)`` (``from_config``).
"""


def build_topdown_keypoint_head(cfg, input_shape: Union[ShapeSpec, Dict[str, ShapeSpec]]) -> nn.Module:
    """Build the head named by MODEL.TOPDOWN.HEAD.NAME from TOPDOWN_HEAD_REGISTRY."""
    name = cfg.MODEL.TOPDOWN.HEAD.NAME
    try:
        head_cls = TOPDOWN_HEAD_REGISTRY.get(name)
    except KeyError as e:
        raise KeyError(
            f"MODEL.TOPDOWN.HEAD.NAME={name!r} is not registered in TOPDOWN_HEAD_REGISTRY "
            f"(registered: {sorted(k for k, _ in TOPDOWN_HEAD_REGISTRY)})"
        ) from e
    return head_cls(cfg, input_shape)
