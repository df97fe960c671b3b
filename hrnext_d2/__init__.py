"""HRNeXt (High-Resolution Context Network) top-down pose estimation for Detectron2.

Importing the package registers the backbone, keypoint head, meta-architecture and datasets. The
dependencies' known import-time warnings (hrnext_d2/utils/dependency_warnings.py) are ignored while
they are imported here, and only then.
"""
import os as _os

from ._install_check import warn_if_shadowed as _warn_if_shadowed

# First, so that the warning is shown even when importing this copy fails further down.
_warn_if_shadowed(_os.path.dirname(_os.path.abspath(__file__)))

from .utils.dependency_warnings import ignoring_known_dependency_warnings  # noqa: E402

with ignoring_known_dependency_warnings():
    from .config import add_hrnext_config
    from . import modeling  # noqa: F401  (registers backbone, head, meta-arch)
    from . import data  # noqa: F401  (registers datasets)
    from . import evaluation  # noqa: F401

__all__ = ["add_hrnext_config"]
__version__ = "0.1.0"
