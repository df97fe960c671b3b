"""HRNeXt-FPN backbones: Detectron2's FPN on HRNeXt's four branches, every MODEL.FPN key honoured."""
import pytest
import torch
from detectron2.layers import ShapeSpec
from detectron2.modeling import build_backbone
from torch import nn

from hrnext_d2.modeling.backbone import HRNeXt
from tests.rcnn_configs import d2_keypoint_rcnn_cfg, shrink


def _cfg():
    return shrink(d2_keypoint_rcnn_cfg())


def test_detectron2_keypoint_config_builds_p2_to_p6():
    cfg = _cfg()
    assert list(cfg.MODEL.FPN.IN_FEATURES) == ["res2", "res3", "res4", "res5"]
    assert cfg.MODEL.HRNEXT.MULTI_SCALE_OUTPUT is False  # the default: the builder turns it on
    backbone = build_backbone(cfg)
    assert isinstance(backbone.bottom_up, HRNeXt) and backbone.bottom_up.multi_scale_output
    shapes = backbone.output_shape()
    assert {k: v.stride for k, v in shapes.items()} == {"p2": 4, "p3": 8, "p4": 16, "p5": 32, "p6": 64}
    assert {v.channels for v in shapes.values()} == {cfg.MODEL.FPN.OUT_CHANNELS}
    x = torch.randn(2, 3, 96, 128)
    out = backbone(x)
    for name, y in out.items():
        s = shapes[name].stride
        assert tuple(y.shape) == (2, 64, 96 // s if s < 64 else 2, 128 // s if s < 64 else 2), name
    # The last module fuses into every branch: the fuse layers of branches 1-3 exist.
    last = backbone.bottom_up.stage4[-1]
    assert len(last.fuse_layers) == 4


def test_native_and_resnet_names_build_the_same_network():
    a, b = _cfg(), _cfg()
    b.MODEL.FPN.IN_FEATURES = ["stride4", "stride8", "stride16", "stride32"]
    torch.manual_seed(0)
    ma = build_backbone(a)
    torch.manual_seed(0)
    mb = build_backbone(b)
    sa, sb = ma.state_dict(), mb.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_fpn_keys_are_honoured():
    cfg = _cfg()
    cfg.MODEL.FPN.OUT_CHANNELS = 32
    cfg.MODEL.FPN.NORM = "GN"
    cfg.MODEL.FPN.FUSE_TYPE = "avg"
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    backbone = build_backbone(cfg)
    assert backbone._fuse_type == "avg"
    assert isinstance(backbone.fpn_lateral3.norm, nn.GroupNorm) and backbone.fpn_lateral3.bias is None
    assert not hasattr(backbone, "fpn_lateral2")
    assert {k: (v.channels, v.stride) for k, v in backbone.output_shape().items()} == {
        "p3": (32, 8), "p4": (32, 16), "p5": (32, 32), "p6": (32, 64)}
    assert backbone.bottom_up.output_shape().keys() == {"stride8", "stride16", "stride32"}


def test_only_stride4_keeps_the_pose_model_fusion():
    cfg = _cfg()
    cfg.MODEL.FPN.IN_FEATURES = ["res2"]
    backbone = build_backbone(cfg)
    assert not backbone.bottom_up.multi_scale_output and len(backbone.bottom_up.stage4[-1].fuse_layers) == 1


def test_retinanet_builder_p3_to_p7():
    cfg = _cfg()
    cfg.MODEL.BACKBONE.NAME = "build_retinanet_hrnext_fpn_backbone"
    cfg.MODEL.FPN.IN_FEATURES = ["res3", "res4", "res5"]
    backbone = build_backbone(cfg)
    assert {k: v.stride for k, v in backbone.output_shape().items()} == {
        "p3": 8, "p4": 16, "p5": 32, "p6": 64, "p7": 128}
    with torch.no_grad():
        out = backbone.eval()(torch.randn(1, 3, 128, 128))
    assert tuple(out["p7"].shape) == (1, 64, 1, 1)
    # p6 comes from the stride-32 branch (256 channels for HRNeXt-S), as Detectron2's from res5.
    assert backbone.top_block.p6.in_channels == 256


@pytest.mark.parametrize("names,match", [
    (["res2", "res6"], r"MODEL\.FPN\.IN_FEATURES: unknown HRNeXt feature 'res6'"),
    ([], r"MODEL\.FPN\.IN_FEATURES is empty"),
])
def test_bad_in_features_name_the_key(names, match):
    cfg = _cfg()
    cfg.MODEL.FPN.IN_FEATURES = names
    with pytest.raises(ValueError, match=match):
        build_backbone(cfg, ShapeSpec(channels=3))
