"""HRNeXt (High-Resolution Context Network) top-down pose estimation for Detectron2.

Importing the package registers the backbone, keypoint head, meta-architecture and datasets. The
dependencies' known import-time warnings (hrnext_d2/utils/dependency_warnings.py) are ignored while
they are imported here, and only then.

Where torch / Detectron2 are not installed (a deployment with onnxruntime only), importing it
registers nothing and only the torch-free parts are usable: `hrnext_d2.topdown` (numerics) and
`hrnext_d2.export` (the onnxruntime pose pipeline). Any other import error is raised as usual.
"""
import os as _os

from ._install_check import warn_if_shadowed as _warn_if_shadowed

# First, so that the warning is shown even when importing this copy fails further down.
_warn_if_shadowed(_os.path.dirname(_os.path.abspath(__file__)))

from .utils.dependency_warnings import ignoring_known_dependency_warnings  # noqa: E402

with ignoring_known_dependency_warnings():
    try:
        import torch  # noqa: F401
        import detectron2  # noqa: F401
    except ModuleNotFoundError as _missing:
        if _missing.name not in ("torch", "detectron2"):
            raise
        _WITHOUT = _missing.name
    else:
        _WITHOUT = None
        from .config import add_hrnext_config
        from . import modeling  # noqa: F401  (registers backbone, head, meta-arch)
        from . import data  # noqa: F401  (registers datasets)
        from . import evaluation  # noqa: F401

if _WITHOUT is not None:

    def __getattr__(name: str):
        raise AttributeError(
            f"hrnext_d2.{name} needs torch and Detectron2 ({_WITHOUT} is not installed); without them "
            "only hrnext_d2.topdown and hrnext_d2.export (the onnxruntime pipeline) can be used"
        )

    __all__ = []
else:
    __all__ = ["add_hrnext_config"]
__version__ = "0.1.0"
