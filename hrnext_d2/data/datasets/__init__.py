"""Registered on import; see the modules in this folder."""
from . import keypoint_metadata  # noqa: F401  (names, flip maps, skeletons, sigmas)
from . import coco  # noqa: F401  (COCO-format loader; top-down metadata on Detectron2's COCO keypoints)
from . import register  # noqa: F401  (register_topdown_keypoint_dataset)
from . import crowdpose  # noqa: F401  (crowdpose_{train,val,trainval,test})
from . import ochuman  # noqa: F401  (ochuman_{val,test})
from . import detections  # noqa: F401  (load_person_detections)
from .coco import filter_topdown_train_instances, load_topdown_coco_json, sanitize_box_xywh  # noqa: F401
from .detections import load_person_detections  # noqa: F401
from .register import register_topdown_keypoint_dataset  # noqa: F401
from . import synthetic  # noqa: F401  (synthetic_crowd_train / synthetic_crowd_val)
