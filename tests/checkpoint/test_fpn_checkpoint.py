"""Official top-down HRNeXt checkpoints into Keypoint R-CNN's FPN bottom-up part: strict, with a report
of exactly which keys are new, and the same function as the reference on the stride-4 branch."""
import importlib.util
import re

import pytest
import torch
import torch.nn.functional as F
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling import build_model

from hrnext_d2.checkpoint import HRNeXtCheckpointer, MMPoseCheckpointError, convert_mmpose_checkpoint
from tests.conftest import REPO_ROOT
from tests.golden_weights import golden, manifest, official_state_dict
from tests.rcnn_configs import project_cfg

KEYPOINT_RCNN = "configs/keypoint_rcnn/keypoint_rcnn_hrnext_s_fpn_coco_1x.yaml"
FUSE_1_TO_3 = re.compile(r"^backbone\.bottom_up\.stage4\.1\.fuse_layers\.[123]\.")


@pytest.fixture(scope="module")
def official_s(tmp_path_factory):
    sd = official_state_dict(manifest("hrnext_s_coco"), 0)
    path = tmp_path_factory.mktemp("official") / "hrnext_s_coco.pth"
    torch.save({"meta": {"epoch": 300}, "state_dict": sd}, path)
    return path, sd


def _model():
    return build_model(project_cfg(KEYPOINT_RCNN))


def test_official_checkpoint_loads_into_the_fpn_bottom_up(official_s):
    path, sd = official_s
    model = _model()
    checkpointer = HRNeXtCheckpointer(model)
    checkpointer.load(str(path))
    report = checkpointer.last_load_report
    state = model.state_dict()

    assert report.prefix == "backbone.bottom_up."
    assert report.dropped == ["keypoint_head.final_layer.weight", "keypoint_head.final_layer.bias"]
    backbone_keys = [k for k in sd if k.startswith("backbone.")]
    assert report.loaded == ["backbone.bottom_up." + k[len("backbone."):] for k in backbone_keys]
    for key in backbone_keys:
        assert torch.equal(state["backbone.bottom_up." + key[len("backbone."):]], sd[key]), key
    # New keys: exactly the rest of the model, and of the backbone only the fuse layers 1-3 of the
    # last module (multi-scale output), which the pose model does not have.
    assert set(report.new) == set(state) - set(report.loaded)
    assert [k for k in report.new if k.startswith("backbone.bottom_up.")] == [
        k for k in state if FUSE_1_TO_3.match(k)]
    assert len([k for k in state if FUSE_1_TO_3.match(k)]) == 138
    assert list(report.new_groups()) == [
        "backbone.fpn_lateral2", "backbone.fpn_output2", "backbone.fpn_lateral3", "backbone.fpn_output3",
        "backbone.fpn_lateral4", "backbone.fpn_output4", "backbone.fpn_lateral5", "backbone.fpn_output5",
        "backbone.bottom_up.stage4.1.fuse_layers.1", "backbone.bottom_up.stage4.1.fuse_layers.2",
        "backbone.bottom_up.stage4.1.fuse_layers.3", "proposal_generator.rpn_head", "roi_heads.box_head",
        "roi_heads.box_predictor", "roi_heads.keypoint_head"]
    summary = report.summary()
    assert "5010 keys loaded" in summary and "new: backbone.bottom_up.stage4.1.fuse_layers.3.* (72 keys)" in summary


def test_stride4_branch_reproduces_the_reference(official_s):
    """The FPN's bottom-up stride-4 output + the official head's 1x1 conv = the golden heatmaps."""
    path, sd = official_s
    model = _model().eval()
    HRNeXtCheckpointer(model).load(str(path))
    g = golden("golden_hrnext_s_coco_seed0")
    with torch.no_grad():
        feat = model.backbone.bottom_up(g["input"])["stride4"]
        y = F.conv2d(feat, sd["keypoint_head.final_layer.weight"], sd["keypoint_head.final_layer.bias"])
    ref = g["heatmaps_fp64"]
    assert ((y.double() - ref).abs().max() / ref.abs().max()).item() <= 1e-4


def test_converted_file_loads_the_same_and_the_tool_writes_the_fpn_layout(tmp_path, official_s, capsys):
    path, sd = official_s
    converted = tmp_path / "converted.pth"
    convert_mmpose_checkpoint(path, converted, num_keypoints=17)
    model = _model()
    checkpointer = HRNeXtCheckpointer(model)
    checkpointer.load(str(converted))
    assert len(checkpointer.last_load_report.loaded) == 5010
    assert torch.equal(model.state_dict()["backbone.bottom_up.conv1.weight"], sd["backbone.conv1.weight"])

    spec = importlib.util.spec_from_file_location("convert_tool", REPO_ROOT / "tools" / "convert_mmpose_checkpoint.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "rcnn.pth"
    assert tool.main([str(path), str(out), "--config-file", str(REPO_ROOT / KEYPOINT_RCNN)]) == 0
    printed = capsys.readouterr().out
    assert "new: roi_heads.keypoint_head.*" in printed and "HRNeXt backbone at backbone.bottom_up.*" in printed
    written = torch.load(out, weights_only=True)["model"]
    assert len(written) == 5010 and all(k.startswith("backbone.bottom_up.") for k in written)
    # Detectron2's own checkpointer loads it (what it lacks starts fresh), and so does ours.
    fresh = _model()
    DetectionCheckpointer(fresh).load(str(out))
    assert torch.equal(fresh.state_dict()["backbone.bottom_up.conv1.weight"], sd["backbone.conv1.weight"])
    again = _model()
    HRNeXtCheckpointer(again).load(str(out))
    assert torch.equal(again.state_dict()["backbone.bottom_up.layer1.0.layer_scale_1"],
                       sd["backbone.layer1.0.layer_scale_1"])


def test_wrong_variant_is_an_error_naming_keys(tmp_path):
    b = tmp_path / "hrnext_b.pth"
    torch.save({"state_dict": official_state_dict(manifest("hrnext_b_coco"), 2)}, b)
    with pytest.raises(MMPoseCheckpointError, match=r"(?s)backbone\.bottom_up.*shape mismatches: backbone\.bottom_up\."):
        HRNeXtCheckpointer(_model()).load(str(b))
