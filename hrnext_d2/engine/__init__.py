"""Registered on import; see the modules in this folder."""
from .trainer import Trainer  # noqa: F401
from .predictor import TopDownPredictor  # noqa: F401
from .pose_backends import POSE_BACKENDS, PoseBackend, build_pose_backend  # noqa: F401
from .person_boxes import FrameKey, PersonBoxSource, build_person_box_source  # noqa: F401
from .video_predictor import VideoPosePredictor  # noqa: F401
