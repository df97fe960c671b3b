"""Registered on import; see the modules in this folder."""
from .keypoint_evaluator import TopDownKeypointEvaluator  # noqa: F401
