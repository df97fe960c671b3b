"""Registered on import; see the modules in this folder."""
from .hrnext import HRNeXt, build_hrnext_backbone  # noqa: F401
