"""Registered on import; see the modules in this folder."""
from .mmpose_converter import (  # noqa: F401
    MMPoseCheckpointError,
    TopDownLoadReport,
    adapt_topdown_state_dict,
    convert_mmpose_checkpoint,
    convert_mmpose_state_dict,
)
from .atomic import atomic_torch_save, atomic_write_text  # noqa: F401
from .checkpointer import (  # noqa: F401
    CheckpointLoadError,
    HRNeXtCheckpointer,
    build_checkpointer,
    check_weights_for_evaluation,
)
