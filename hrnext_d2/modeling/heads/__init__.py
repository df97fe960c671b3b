"""Registered on import; see the modules in this folder."""
from .build import TOPDOWN_HEAD_REGISTRY, build_topdown_keypoint_head  # noqa: F401
from . import heatmap_head  # noqa: F401  (registers TopdownHeatmapSimpleHead)
