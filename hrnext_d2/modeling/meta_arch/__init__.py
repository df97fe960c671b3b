"""Registered on import; see the modules in this folder."""
from . import top_down  # noqa: F401  (registers TopDownPoseEstimator)
from .top_down import is_topdown_architecture  # noqa: F401
