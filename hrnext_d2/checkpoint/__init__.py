"""Registered on import; see the modules in this folder."""
from .mmpose_converter import (  # noqa: F401
    HRNeXtCheckpointer,
    MMPoseCheckpointError,
    TopDownLoadReport,
    adapt_topdown_state_dict,
    convert_mmpose_checkpoint,
    convert_mmpose_state_dict,
)
