"""Registered on import; see the modules in this folder."""
from .trainer import Trainer  # noqa: F401
from .predictor import TopDownPredictor  # noqa: F401
