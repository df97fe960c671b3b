"""Optimizers for HRNeXt training (AdamW with the paper's weight-decay exclusions, or SGD)."""
from .build import build_optimizer, get_optimizer_params

__all__ = ["build_optimizer", "get_optimizer_params"]
