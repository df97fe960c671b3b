"""Registered on import; see the modules in this folder."""
from .hrnext_keypoint_head import HRNeXtKeypointHead  # noqa: F401  (in ROI_KEYPOINT_HEAD_REGISTRY)
from .rectangular_pooler import RectangularROIPooler  # noqa: F401
