"""Registered on import; see the modules in this folder."""
from . import keypoint_metadata  # noqa: F401  (names, flip maps, skeletons, sigmas, the resolver)
from . import coco  # noqa: F401  (COCO-format loader)
from . import register  # noqa: F401  (register_topdown_keypoint_dataset)
from . import coco_builtin  # noqa: F401  (top-down keys on Detectron2's keypoints_coco_2017_*)
from . import crowdpose  # noqa: F401  (crowdpose_{train,val,trainval,test})
from . import ochuman  # noqa: F401  (ochuman_{val,test})
from . import detections  # noqa: F401  (load_person_detections)
from . import synthetic  # noqa: F401  (synthetic_crowd_train / synthetic_crowd_val)
from .coco import load_topdown_coco_json, sanitize_box_xywh  # noqa: F401
from .detections import load_person_detections  # noqa: F401
from .keypoint_metadata import KeypointInfo, resolve_keypoint_metadata  # noqa: F401
from .register import register_topdown_keypoint_dataset  # noqa: F401
