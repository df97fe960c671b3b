"""Registered on import; see the modules in this folder."""
from .keypoint_evaluator import TopDownKeypointEvaluator  # noqa: F401
from .rcnn_evaluation import BoxAreaCOCOEvaluator, build_rcnn_evaluator  # noqa: F401
