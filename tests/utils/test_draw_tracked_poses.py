"""Drawing tracked persons: the id's colour on the box in every frame, the frame size kept, the
skeleton of the config's keypoints."""
import numpy as np
import torch
from detectron2.config import get_cfg
from detectron2.structures import Boxes, Instances

from hrnext_d2.config import add_hrnext_config
from hrnext_d2.utils.visualizer import draw_tracked_poses, keypoint_drawing_metadata, track_colour


def _person(box, track_id, image_size=(120, 160)):
    inst = Instances(image_size)
    inst.pred_boxes = Boxes(torch.tensor([box], dtype=torch.float32))
    inst.scores = torch.tensor([0.9])
    inst.pred_classes = torch.tensor([0])
    kp = torch.zeros(1, 17, 3)
    kp[0, :, 0] = torch.linspace(box[0] + 5, box[2] - 5, 17)
    kp[0, :, 1] = torch.linspace(box[1] + 5, box[3] - 5, 17)
    kp[0, :, 2] = 0.9
    inst.pred_keypoints = kp
    inst.track_ids = torch.tensor([track_id])
    return inst


def _box_edge_colour(drawn, box):
    """Median colour on the box's left edge (the box line is drawn there in the instance's colour)."""
    x0, y0, _, y1 = (int(v) for v in box)
    return np.median(drawn[y0 + 20 : y1 - 5, x0].reshape(-1, 3), axis=0)


def test_an_id_keeps_its_colour_and_the_frame_keeps_its_size():
    cfg = get_cfg()
    add_hrnext_config(cfg)
    meta = keypoint_drawing_metadata(cfg)
    image = np.full((120, 160, 3), 128, np.uint8)
    a = draw_tracked_poses(image, _person([20, 10, 80, 110], 3), meta)
    b = draw_tracked_poses(image, _person([70, 15, 130, 115], 3), meta)
    c = draw_tracked_poses(image, _person([20, 10, 80, 110], 4), meta)
    assert a.shape == image.shape
    expected = 0.5 * track_colour(3) * 255 + 0.5 * 128  # Visualizer draws boxes with alpha 0.5
    np.testing.assert_allclose(_box_edge_colour(a, [20, 10, 80, 110]), expected, atol=8)
    np.testing.assert_allclose(_box_edge_colour(b, [70, 15, 130, 115]), expected, atol=8)
    assert np.abs(_box_edge_colour(c, [20, 10, 80, 110]) - expected).max() > 30
    assert (np.abs(a.astype(int) - image).max(axis=2) > 40).mean() > 0.02  # skeleton and box drawn


def test_drawing_metadata_follows_the_keypoint_count():
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.DATASETS.TEST = ("crowdpose_val",)
    cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 14
    assert keypoint_drawing_metadata(cfg).keypoint_names[-1] == "neck"
    cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 17
    meta = keypoint_drawing_metadata(cfg)  # crowdpose has 14: COCO's names and skeleton instead
    assert meta.keypoint_names[0] == "nose" and len(meta.keypoint_connection_rules) > 10
    cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 5
    assert keypoint_drawing_metadata(cfg).keypoint_names == tuple(f"keypoint_{i}" for i in range(5))
