"""HRNeXtKeypointHead and its targets: Detectron2's conventions for any heatmap shape, and every ROI head
this project registers in a Detectron2 registry trained and run inside GeneralizedRCNN."""
import pytest
import torch
from detectron2.layers import ROIAlign
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import (
    ROI_BOX_HEAD_REGISTRY,
    ROI_HEADS_REGISTRY,
    ROI_KEYPOINT_HEAD_REGISTRY,
    ROI_MASK_HEAD_REGISTRY,
)
from detectron2.modeling.roi_heads.keypoint_head import keypoint_rcnn_loss
from detectron2.structures import Boxes, Instances, Keypoints, heatmaps_to_keypoints
from detectron2.structures.keypoints import _keypoints_to_heatmap
from detectron2.utils.events import EventStorage

from hrnext_d2.modeling.roi_heads import HRNeXtKeypointHead, RectangularROIPooler
from hrnext_d2.modeling.roi_heads.keypoint_targets import (
    keypoint_cross_entropy_loss,
    keypoints_to_gaussian_heatmaps,
    keypoints_to_heatmap_labels,
    pad_boxes_to_aspect,
)
from tests.rcnn_configs import d2_keypoint_rcnn_cfg, shrink


def _random_keypoints(n=6, k=17, seed=0):
    g = torch.Generator().manual_seed(seed)
    rois = torch.rand(n, 2, generator=g) * 50
    rois = torch.cat([rois, rois + 20 + torch.rand(n, 2, generator=g) * 80], 1)
    w, h = rois[:, 2] - rois[:, 0], rois[:, 3] - rois[:, 1]
    kp = torch.rand(n, k, 3, generator=g)
    kp[..., 0] = rois[:, None, 0] + (kp[..., 0] * 1.4 - 0.2) * w[:, None]  # some outside the box
    kp[..., 1] = rois[:, None, 1] + (kp[..., 1] * 1.4 - 0.2) * h[:, None]
    kp[..., 2] = (kp[..., 2] > 0.2).float() * 2
    kp[0, 0, 0], kp[0, 1, 1] = rois[0, 2], rois[0, 3]  # on the right / bottom edge
    return kp, rois


def test_labels_equal_detectron2_for_square_heatmaps():
    kp, rois = _random_keypoints()
    labels, valid = keypoints_to_heatmap_labels(kp, rois, (56, 56))
    ref_labels, ref_valid = _keypoints_to_heatmap(kp, rois, 56)
    assert torch.equal(valid, ref_valid.bool()) and torch.equal(labels, ref_labels)
    assert 20 < valid.sum() < valid.numel()


def test_rectangular_labels_and_gaussians():
    rois = torch.tensor([[10.0, 20.0, 34.0, 52.0]])  # 24 x 32 pixels -> heatmap 48 x 64 (W x H)
    kp = torch.tensor([[[22.0, 36.0, 2.0], [10.25, 20.25, 1.0], [50.0, 30.0, 2.0], [22.0, 36.0, 0.0]]])
    labels, valid = keypoints_to_heatmap_labels(kp, rois, (64, 48))
    assert valid.tolist() == [[True, True, False, False]]
    # (22 - 10) * 2 = 24, (36 - 20) * 2 = 32 -> row 32, column 24; the corner -> 0.
    assert labels[0, 0].item() == 32 * 48 + 24 and labels[0, 1].item() == 0
    target, gvalid = keypoints_to_gaussian_heatmaps(kp, rois, (64, 48), sigma=2.0)
    assert torch.equal(gvalid, valid) and tuple(target.shape) == (1, 4, 64, 48)
    assert target[0, 2:].abs().max() == 0  # invalid keypoints have empty targets
    # The peak sits between pixels 23 and 24 (continuous 24.0 = the border of pixel 23 and 24).
    row = target[0, 0, 31]
    assert torch.isclose(row[23], row[24]) and row.argmax() in (23, 24)


def test_gaussian_targets_decode_back_to_the_keypoints():
    """Detectron2's heatmaps_to_keypoints on our (non-square) Gaussian targets recovers the keypoints
    to about a pixel: targets and decoding use the same coordinates."""
    kp, rois = _random_keypoints(n=4, k=5, seed=3)
    boxes = pad_boxes_to_aspect(rois, 12 / 16, 1.25)  # keypoints inside the padded boxes
    target, valid = keypoints_to_gaussian_heatmaps(kp, boxes, (64, 48), sigma=2.0)
    decoded = heatmaps_to_keypoints(target, boxes)
    err = (decoded[..., :2] - kp[..., :2]).norm(dim=-1)[valid]
    assert valid.sum() >= 10 and err.max() < 1.5


def test_pad_boxes_to_aspect():
    boxes = torch.tensor([[0.0, 0.0, 30.0, 100.0], [0.0, 0.0, 100.0, 40.0]])
    out = pad_boxes_to_aspect(boxes, 0.75, 1.25)
    w, h = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    assert torch.allclose(w / h, torch.tensor([0.75, 0.75]))
    assert torch.allclose(h, torch.tensor([125.0, 100 / 0.75 * 1.25]))
    assert torch.allclose((out[:, :2] + out[:, 2:]) / 2, (boxes[:, :2] + boxes[:, 2:]) / 2)


def test_cross_entropy_equals_detectron2_for_square_heatmaps():
    kp, rois = _random_keypoints()
    inst = Instances((200, 200))
    inst.proposal_boxes = Boxes(rois)
    inst.gt_keypoints = Keypoints(kp)
    logits = torch.randn(len(rois), 17, 56, 56, generator=torch.Generator().manual_seed(1))
    for normalizer in (None, 40.0):
        ours = keypoint_cross_entropy_loss(logits, [inst], [rois], normalizer)
        with EventStorage(0):
            ref = keypoint_rcnn_loss(logits, [inst], normalizer)
        assert torch.allclose(ours, ref, rtol=1e-6), normalizer


def test_rectangular_pooler_on_several_levels_equals_roialign_per_level():
    g = torch.Generator().manual_seed(0)
    feats = [torch.randn(1, 8, 64 // s, 48 // s, generator=g) for s in (1, 2, 4, 8)]
    scales = (1 / 4, 1 / 8, 1 / 16, 1 / 32)
    boxes = Boxes(torch.tensor([[0.0, 0.0, 30.0, 40.0], [10.0, 10.0, 180.0, 250.0], [5.0, 5.0, 90.0, 120.0]]))
    pooler = RectangularROIPooler((16, 12), scales, sampling_ratio=0, pooler_type="ROIAlignV2")
    out = pooler(feats, [boxes])
    assert tuple(out.shape) == (3, 8, 16, 12)
    from detectron2.modeling.poolers import assign_boxes_to_levels

    levels = assign_boxes_to_levels([boxes], 2, 5, 224, 4)
    assert len(set(levels.tolist())) >= 2  # the boxes really are spread over levels
    for i, level in enumerate(levels.tolist()):
        align = ROIAlign((16, 12), scales[level], 0, aligned=True)
        ref = align(feats[level], torch.cat([torch.zeros(1, 1), boxes.tensor[i:i + 1]], 1))
        assert torch.allclose(out[i], ref[0])


def _ours(registry):
    return sorted(name for name, obj in registry if getattr(obj, "__module__", "").startswith("hrnext_d2"))


def test_registered_roi_heads_are_the_ones_tested():
    """Every head this project puts in Detectron2's ROI registries is exercised below."""
    assert _ours(ROI_KEYPOINT_HEAD_REGISTRY) == ["HRNeXtKeypointHead"]
    assert _ours(ROI_HEADS_REGISTRY) == _ours(ROI_BOX_HEAD_REGISTRY) == _ours(ROI_MASK_HEAD_REGISTRY) == []


def _person(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    inst = Instances((h, w))
    boxes = torch.tensor([[8.0, 6.0, 50.0, 90.0], [60.0, 10.0, 110.0, 92.0]])
    inst.gt_boxes = Boxes(boxes)
    inst.gt_classes = torch.zeros(2, dtype=torch.int64)
    kp = torch.rand(2, 17, 3, generator=g)
    kp[..., 0] = boxes[:, None, 0] + kp[..., 0] * (boxes[:, None, 2] - boxes[:, None, 0])
    kp[..., 1] = boxes[:, None, 1] + kp[..., 1] * (boxes[:, None, 3] - boxes[:, None, 1])
    kp[..., 2] = 2
    inst.gt_keypoints = Keypoints(kp)
    image = torch.randint(0, 255, (3, h, w), generator=g).float()
    return {"image": image, "instances": inst, "height": h, "width": w}


@pytest.mark.parametrize("pooling,loss", [("head", "cross_entropy"), ("head", "gaussian_mse"),
                                          ("detectron2", "cross_entropy")])
def test_keypoint_rcnn_trains_and_predicts_with_our_head(pooling, loss):
    cfg = shrink(d2_keypoint_rcnn_cfg())
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = 0.0
    cfg.MODEL.ROI_KEYPOINT_HEAD.HRNEXT.LOSS = loss
    if pooling == "head":
        cfg.MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE = ""  # this head pools 16x12 itself
    torch.manual_seed(0)
    model = build_model(cfg)
    head = model.roi_heads.keypoint_head
    assert isinstance(head, HRNeXtKeypointHead)
    expected = (64, 48) if pooling == "head" else (56, 56)  # 16x12 or Detectron2's 14x14, x4
    assert head.heatmap_size == expected and (head.pooler is not None) == (pooling == "head")

    inputs = [_person(96, 128, 0), _person(96, 128, 1)]
    model.train()
    with EventStorage(0):
        losses = model(inputs)
        assert set(losses) >= {"loss_keypoint", "loss_cls", "loss_box_reg", "loss_rpn_cls"}
        assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_keypoint"] > 0
        sum(losses.values()).backward()
    grads = [p.grad for p in head.parameters() if p.requires_grad]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)

    model.eval()
    with torch.no_grad():
        out = model([{k: v for k, v in inputs[0].items() if k != "instances"}])[0]["instances"]
    n = len(out)
    assert 0 < n <= cfg.TEST.DETECTIONS_PER_IMAGE
    assert tuple(out.pred_keypoints.shape) == (n, 17, 3)
    assert tuple(out.pred_keypoint_heatmaps.shape) == (n, 17) + expected
    # Detectron2's decoding: keypoints inside the (padded) pooled box, scores > 0.
    boxes = out.pred_boxes.tensor
    if pooling == "head":
        boxes = pad_boxes_to_aspect(boxes, 12 / 16, cfg.MODEL.ROI_KEYPOINT_HEAD.HRNEXT.BOX_PADDING)
    xy = out.pred_keypoints[..., :2]
    assert (xy >= boxes[:, None, :2] - 1e-3).all() and (xy <= boxes[:, None, 2:] + 1e-3).all()
    if loss == "cross_entropy":
        assert (out.pred_keypoints[..., 2] > 0).all()


def test_head_with_no_rois_trains_and_predicts():
    cfg = shrink(d2_keypoint_rcnn_cfg())
    cfg.MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE = ""
    model = build_model(cfg)
    head = model.roi_heads.keypoint_head
    feats = {f"p{i}": torch.randn(1, 64, 96 // 2 ** i, 128 // 2 ** i) for i in (2, 3, 4, 5)}
    empty = Instances((96, 128))
    empty.proposal_boxes = Boxes(torch.zeros(0, 4))
    empty.gt_keypoints = Keypoints(torch.zeros(0, 17, 3))
    loss = head(feats, [empty])["loss_keypoint"]
    assert loss.item() == 0
    loss.backward()
    head.eval()
    pred = Instances((96, 128))
    pred.pred_boxes = Boxes(torch.zeros(0, 4))
    out = head(feats, [pred])[0]
    assert tuple(out.pred_keypoints.shape) == (0, 17, 3)


def test_bad_head_settings_name_the_key():
    cfg = shrink(d2_keypoint_rcnn_cfg())
    cfg.MODEL.ROI_KEYPOINT_HEAD.HRNEXT.LOSS = "l1"
    with pytest.raises(ValueError, match=r"MODEL\.ROI_KEYPOINT_HEAD\.HRNEXT\.LOSS.*'l1'"):
        build_model(cfg)
    cfg = shrink(d2_keypoint_rcnn_cfg())
    cfg.MODEL.ROI_KEYPOINT_HEAD.POOLER_TYPE = ""
    cfg.MODEL.ROI_KEYPOINT_HEAD.HRNEXT.POOLER_RESOLUTION = [16]
    with pytest.raises(ValueError, match=r"POOLER_RESOLUTION must be \(height, width\)"):
        build_model(cfg)
