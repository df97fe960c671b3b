"""Official-format checkpoints (built from the golden manifests) convert, load with zero missing /
unexpected keys, and reproduce the reference's golden heatmaps; bad checkpoints fail clearly."""
import importlib.util
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.config import get_cfg
from detectron2.layers import ShapeSpec
from torch import nn

from hrnext_d2 import add_hrnext_config
from hrnext_d2.checkpoint import HRNeXtCheckpointer, MMPoseCheckpointError, convert_mmpose_checkpoint
from hrnext_d2.modeling.backbone.hrnext import build_hrnext_backbone
from tests.conftest import REPO_ROOT
from tests.golden_weights import golden, manifest, official_state_dict

S_CFG = REPO_ROOT / "configs" / "Base-HRNeXt-S.yaml"
B_CFG = REPO_ROOT / "configs" / "Base-HRNeXt-B.yaml"


class _Head(nn.Module):
    def __init__(self, channels: int, k: int):
        super().__init__()
        self.final_layer = nn.Conv2d(channels, k, 1)


class PoseModel(nn.Module):
    """Backbone + the official head's names (`keypoint_head.final_layer`), enough to load checkpoints."""

    def __init__(self, config_file: Path, k: int):
        super().__init__()
        cfg = get_cfg()
        add_hrnext_config(cfg)
        cfg.merge_from_file(str(config_file))
        self.backbone = build_hrnext_backbone(cfg, ShapeSpec(channels=3))
        self.keypoint_head = _Head(self.backbone.output_shape()["stride4"].channels, k)

    def forward(self, x):
        return self.keypoint_head.final_layer(self.backbone(x)["stride4"])


def _write_official(path: Path, state_dict) -> Path:
    torch.save({"meta": {"epoch": 300, "mmcv_version": "1.4.8"}, "state_dict": state_dict}, path)
    return path


def _rel(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.double() - ref).abs().max() / ref.abs().max()).item()


def _run(model: PoseModel, x: torch.Tensor, dtype, fast: bool) -> torch.Tensor:
    model.to(dtype).eval()
    model.backbone.set_formulation(fast_ops=fast, fuse_inference=fast)
    with torch.no_grad():
        return model(x.to(dtype))


GOLDEN = [
    ("hrnext_s_coco", "golden_hrnext_s_coco_seed0", S_CFG, 17),
    ("hrnext_s_crowdpose", "golden_hrnext_s_crowdpose_seed1", S_CFG, 14),
    ("hrnext_b_coco", "golden_hrnext_b_coco_seed2", B_CFG, 17),
]


@pytest.mark.parametrize("name,gname,cfg_file,k", GOLDEN, ids=[g[0] for g in GOLDEN])
def test_converted_official_checkpoint_matches_golden(tmp_path, name, gname, cfg_file, k):
    g = golden(gname)
    seed = int(g["seed"])
    official = _write_official(tmp_path / "official.pth", official_state_dict(manifest(name), seed))
    model = PoseModel(cfg_file, k)
    out = tmp_path / "converted.pth"
    convert_mmpose_checkpoint(official, out, num_keypoints=k, expected=model.state_dict())

    saved = torch.load(out, weights_only=True)
    assert saved["matching_heuristics"] is False
    # Strict loading: zero missing / unexpected keys, every shape right.
    model.load_state_dict(saved["model"], strict=True)
    fresh = PoseModel(cfg_file, k)
    DetectionCheckpointer(fresh).load(str(out))
    for key, v in fresh.state_dict().items():
        assert torch.equal(v, saved["model"][key]), key

    ref = g["heatmaps_fp64"]
    assert _rel(_run(fresh, g["input"], torch.float32, fast=True), ref) <= 1e-4
    assert _rel(_run(fresh, g["input"], torch.float32, fast=False), ref) <= 1e-4
    if name == "hrnext_s_crowdpose":  # float64 is slow on the CPU: one golden file is enough
        assert _rel(_run(fresh, g["input"], torch.float64, fast=True), ref) <= 1e-12


def test_other_seed_converts_and_matches_reference_formulation(tmp_path):
    """Weights outside the golden files: our fast + folded path equals our reference formulation."""
    official = _write_official(tmp_path / "o.pth", official_state_dict(manifest("hrnext_s_coco"), 7))
    out = tmp_path / "c.pth"
    convert_mmpose_checkpoint(official, out, num_keypoints=17)
    model = PoseModel(S_CFG, 17)
    DetectionCheckpointer(model).load(str(out))
    x = torch.randn(2, 3, 96, 72, generator=torch.Generator().manual_seed(8))
    ref = _run(model, x, torch.float64, fast=False)
    assert ref.abs().max() > 1e-3
    assert _rel(_run(model, x, torch.float64, fast=True), ref) <= 1e-10
    assert _rel(_run(model, x, torch.float32, fast=True), ref) <= 1e-5
    # The checkpoint really changed the function: a differently seeded model disagrees.
    other = PoseModel(S_CFG, 17)
    assert _rel(_run(other, x, torch.float32, fast=True), ref) > 1e-2


@pytest.fixture(scope="module")
def s_coco_state_dict():
    return official_state_dict(manifest("hrnext_s_coco"), 0)


def test_missing_key_is_named(tmp_path, s_coco_state_dict):
    sd = OrderedDict(s_coco_state_dict)
    key = "backbone.stage3.2.branches.1.1.mlp2.dw.conv.aggregation.weight"
    del sd[key]
    with pytest.raises(MMPoseCheckpointError, match=r"missing keys: .*stage3\.2\.branches\.1\.1\.mlp2\.dw"):
        convert_mmpose_checkpoint(_write_official(tmp_path / "o.pth", sd), tmp_path / "c.pth")
    assert not (tmp_path / "c.pth").exists()


def test_wrong_shape_is_named(tmp_path, s_coco_state_dict):
    sd = OrderedDict(s_coco_state_dict)
    key = "backbone.stage2.1.fuse_layers.0.1.1.weight"
    sd[key] = torch.ones(31)
    with pytest.raises(MMPoseCheckpointError, match=r"backbone\.stage2\.1\.fuse_layers\.0\.1\.1\.weight checkpoint \(31,\)"):
        convert_mmpose_checkpoint(_write_official(tmp_path / "o.pth", sd), tmp_path / "c.pth")


def test_unexpected_key_is_named(tmp_path, s_coco_state_dict):
    sd = OrderedDict(s_coco_state_dict)
    sd["keypoint_head.deconv_layers.0.weight"] = torch.ones(3)
    with pytest.raises(MMPoseCheckpointError, match=r"unexpected keys: keypoint_head\.deconv_layers\.0\.weight"):
        convert_mmpose_checkpoint(_write_official(tmp_path / "o.pth", sd), tmp_path / "c.pth")


def test_wrong_variant_and_keypoint_count(tmp_path, s_coco_state_dict):
    official = _write_official(tmp_path / "o.pth", s_coco_state_dict)
    with pytest.raises(MMPoseCheckpointError, match="predicts 17 keypoints.*14 were requested"):
        convert_mmpose_checkpoint(official, tmp_path / "c.pth", num_keypoints=14)
    with torch.device("meta"):
        b_model = PoseModel(B_CFG, 17)
    with pytest.raises(MMPoseCheckpointError, match=r"(?s)target model:.*shape mismatches: backbone\."):
        convert_mmpose_checkpoint(official, tmp_path / "c.pth", expected=b_model.state_dict())


def test_non_hrnext_checkpoint(tmp_path):
    resnet_like = {"state_dict": {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7),
                                  "backbone.layer1.0.conv1.weight": torch.zeros(64, 64, 1, 1)}}
    torch.save(resnet_like, tmp_path / "r.pth")
    with pytest.raises(MMPoseCheckpointError, match="not an HRNeXt checkpoint"):
        convert_mmpose_checkpoint(tmp_path / "r.pth", tmp_path / "c.pth")
    with pytest.raises(FileNotFoundError):
        convert_mmpose_checkpoint(tmp_path / "absent.pth")


def test_checkpointer_reads_official_file_directly(tmp_path, s_coco_state_dict):
    official = _write_official(tmp_path / "official.pth", s_coco_state_dict)
    model = PoseModel(S_CFG, 17)
    HRNeXtCheckpointer(model).load(str(official))
    for key, v in model.state_dict().items():
        assert torch.equal(v, s_coco_state_dict[key]), key


def test_tool_command_line(tmp_path, s_coco_state_dict, capsys):
    spec = importlib.util.spec_from_file_location("convert_tool", REPO_ROOT / "tools" / "convert_mmpose_checkpoint.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    official = _write_official(tmp_path / "o.pth", s_coco_state_dict)
    assert tool.main([str(official), str(tmp_path / "c.pth"), "--num-keypoints", "17"]) == 0
    assert "17 keypoints" in capsys.readouterr().out
    assert set(torch.load(tmp_path / "c.pth", weights_only=True)["model"]) == set(s_coco_state_dict)
    assert tool.main([str(official), str(tmp_path / "d.pth"), "--num-keypoints", "14"]) == 1
    assert "14 were requested" in capsys.readouterr().err


def test_converted_checkpoint_loads_into_full_pose_model(tmp_path):
    """The registered TopDownPoseEstimator (built from a config) takes the converted file with zero
    missing / unexpected keys and reproduces the golden heatmaps through `forward_crops`."""
    from detectron2.modeling import build_model

    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(str(REPO_ROOT / "configs" / "crowdpose" / "hrnext_small_crowdpose_256x192.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    try:
        model = build_model(cfg).eval()
    except KeyError as e:
        pytest.skip(f"meta-architecture not available: {e}")
    g = golden("golden_hrnext_s_crowdpose_seed1")
    official = _write_official(tmp_path / "o.pth", official_state_dict(manifest("hrnext_s_crowdpose"), 1))
    out = tmp_path / "c.pth"
    convert_mmpose_checkpoint(official, out, num_keypoints=14, expected=model.state_dict())
    incompatible = model.load_state_dict(torch.load(out, weights_only=True)["model"], strict=True)
    assert not incompatible.missing_keys and not incompatible.unexpected_keys
    DetectionCheckpointer(model).load(str(out))
    with torch.no_grad():
        y = model.forward_crops(g["input"])
    assert _rel(y, g["heatmaps_fp64"]) <= 1e-4
