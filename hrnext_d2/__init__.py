"""HRNeXt (High-Resolution Context Network) top-down pose estimation for Detectron2.

Importing the package registers the backbone, keypoint head, meta-architecture and datasets.
"""
import os as _os

from ._install_check import warn_if_shadowed as _warn_if_shadowed

# First, so that the warning is shown even when importing this copy fails further down.
_warn_if_shadowed(_os.path.dirname(_os.path.abspath(__file__)))

from .config import add_hrnext_config  # noqa: E402
from . import modeling  # noqa: F401,E402 (registers backbone, head, meta-arch)
from . import data  # noqa: F401,E402 (registers datasets)
from . import evaluation  # noqa: F401,E402

__all__ = ["add_hrnext_config"]
__version__ = "0.1.0"
