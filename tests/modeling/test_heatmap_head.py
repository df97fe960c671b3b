"""TopdownHeatmapSimpleHead: structure and state-dict names of mmpose, init, and JointsMSELoss numbers."""
import pytest
import torch

from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from detectron2.modeling.roi_heads.keypoint_head import ROI_KEYPOINT_HEAD_REGISTRY

from hrnext_d2.config import add_hrnext_config
from hrnext_d2.modeling.heads import TOPDOWN_HEAD_REGISTRY, build_topdown_keypoint_head
from hrnext_d2.modeling.heads.heatmap_head import TopdownHeatmapSimpleHead, joints_mse_loss


def _cfg(**head):
    cfg = get_cfg()
    add_hrnext_config(cfg)
    for k, v in head.items():
        setattr(cfg.MODEL.TOPDOWN.HEAD, k, v)
    return cfg


def _mmpose_joints_mse_reference(output, target, target_weight, use_target_weight=True, loss_weight=1.0):
    """mmpose 0.23 JointsMSELoss.forward, written out joint by joint as mmpose does."""
    b, k = output.shape[:2]
    pred = output.reshape((b, k, -1)).split(1, 1)
    gt = target.reshape((b, k, -1)).split(1, 1)
    crit = torch.nn.MSELoss()
    loss = 0.0
    for idx in range(k):
        p, g = pred[idx].squeeze(1), gt[idx].squeeze(1)
        if use_target_weight:
            loss += crit(p * target_weight[:, idx], g * target_weight[:, idx])
        else:
            loss += crit(p, g)
    return loss / k * loss_weight


def test_registered_and_built_from_config_with_official_names():
    assert TOPDOWN_HEAD_REGISTRY.get("TopdownHeatmapSimpleHead") is TopdownHeatmapSimpleHead
    # A crop-level head does not take (features, instances): it is not in Detectron2's ROI registry.
    assert "TopdownHeatmapSimpleHead" not in dict(ROI_KEYPOINT_HEAD_REGISTRY)
    cfg = _cfg()
    cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS = 14
    head = build_topdown_keypoint_head(cfg, {"stride4": ShapeSpec(channels=32, stride=4)})
    sd = head.state_dict()
    assert sorted(sd) == ["final_layer.bias", "final_layer.weight"]
    assert tuple(sd["final_layer.weight"].shape) == (14, 32, 1, 1)
    # mmpose init: normal(std 0.001) weights, zero bias
    assert torch.all(sd["final_layer.bias"] == 0)
    assert 0.0005 < sd["final_layer.weight"].std().item() < 0.0015
    out = head(torch.randn(2, 32, 16, 12))
    assert out.shape == (2, 14, 16, 12)


def test_missing_in_feature_is_a_clear_error():
    cfg = _cfg()
    with pytest.raises(ValueError, match="MODEL.TOPDOWN.IN_FEATURE"):
        build_topdown_keypoint_head(cfg, {"stride8": ShapeSpec(channels=32, stride=8)})


def test_deconv_layers_double_resolution_with_mmpose_names():
    cfg = _cfg(NUM_DECONV_LAYERS=2, NUM_DECONV_FILTERS=[16, 8], NUM_DECONV_KERNELS=[4, 3], FINAL_CONV_KERNEL=3)
    head = build_topdown_keypoint_head(cfg, ShapeSpec(channels=32, stride=32))
    keys = set(head.state_dict())
    assert {"deconv_layers.0.weight", "deconv_layers.1.weight", "deconv_layers.1.running_mean",
            "deconv_layers.3.weight", "deconv_layers.4.bias", "final_layer.weight", "final_layer.bias"} <= keys
    assert "deconv_layers.0.bias" not in keys  # ConvTranspose2d without bias
    assert tuple(head.state_dict()["final_layer.weight"].shape) == (17, 8, 3, 3)
    out = head(torch.randn(2, 32, 8, 6))
    assert out.shape == (2, 17, 32, 24)


def test_joints_mse_loss_matches_mmpose_definition():
    g = torch.Generator().manual_seed(0)
    pred = torch.randn(3, 5, 8, 6, generator=g)
    target = torch.rand(3, 5, 8, 6, generator=g)
    weight = (torch.rand(3, 5, 1, generator=g) > 0.3).float()
    ours = joints_mse_loss(pred, target, weight, True, 1.0)
    ref = _mmpose_joints_mse_reference(pred, target, weight)
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=0)
    torch.testing.assert_close(joints_mse_loss(pred, target, weight, True, 2.5), ref * 2.5, rtol=1e-6, atol=0)
    torch.testing.assert_close(
        joints_mse_loss(pred, target, weight, False), _mmpose_joints_mse_reference(pred, target, weight, False),
        rtol=1e-6, atol=0,
    )


def test_joints_mse_loss_hand_computed_value():
    # K=2, B=1, 2x2 maps: joint 0 off by 1 everywhere (weight 1), joint 1 off by 3 (weight 0).
    pred = torch.zeros(1, 2, 2, 2)
    target = torch.stack([torch.ones(2, 2), 3 * torch.ones(2, 2)])[None]
    weight = torch.tensor([[[1.0], [0.0]]])
    # per joint MSE: 1 and 0, mean over joints 0.5 (no extra 0.5 factor in mmpose 0.23)
    assert joints_mse_loss(pred, target, weight).item() == pytest.approx(0.5)


def test_head_losses_backpropagate():
    cfg = _cfg(LOSS_WEIGHT=2.0)
    head = build_topdown_keypoint_head(cfg, ShapeSpec(channels=8))
    feat = torch.randn(2, 8, 8, 6)
    pred = head(feat)
    losses = head.losses(pred, torch.rand_like(pred), torch.ones(2, 17, 1))
    assert set(losses) == {"loss_keypoint"}
    losses["loss_keypoint"].backward()
    assert head.final_layer.weight.grad is not None and head.final_layer.weight.grad.abs().sum() > 0
