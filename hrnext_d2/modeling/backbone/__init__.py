"""Registered on import; see the modules in this folder."""
from .hrnext import HRNeXt, build_hrnext_backbone  # noqa: F401
from .hrnext_fpn import build_hrnext_fpn_backbone, build_retinanet_hrnext_fpn_backbone  # noqa: F401
