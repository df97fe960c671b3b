"""Registered on import; see the modules in this folder."""
from .predictor import TopDownPredictor  # noqa: F401
