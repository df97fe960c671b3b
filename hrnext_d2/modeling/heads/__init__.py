"""Registered on import; see the modules in this folder."""
from . import heatmap_head  # noqa: F401  (registers TopdownHeatmapSimpleHead)
