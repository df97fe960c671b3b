"""HRNeXt (High-Resolution Context Network) top-down pose estimation for Detectron2.

Importing the package registers the backbone, keypoint head, meta-architecture and datasets.
"""
from .config import add_hrnext_config
from . import modeling  # noqa: F401  (registers backbone, head, meta-arch)
from . import data  # noqa: F401  (registers datasets)
from . import evaluation  # noqa: F401

__all__ = ["add_hrnext_config"]
__version__ = "0.1.0"
