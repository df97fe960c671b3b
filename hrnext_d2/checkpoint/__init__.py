"""Registered on import; see the modules in this folder."""
from .mmpose_converter import (  # noqa: F401
    HRNeXtCheckpointer,
    MMPoseCheckpointError,
    convert_mmpose_checkpoint,
    convert_mmpose_state_dict,
)
