"""tools/summary_network.py and its library: exact parameter counts and fvcore FLOPs of the pose
models against the reference figures (golden/hrnext/README.md)."""
import importlib.util

import pytest
from detectron2.config import get_cfg

from hrnext_d2 import add_hrnext_config
from hrnext_d2.modeling.complexity import summarize_config
from tests.conftest import REPO_ROOT


def _cfg(rel_path: str):
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(str(REPO_ROOT / rel_path))
    return cfg


def test_small_coco_tool_output(capsys):
    spec = importlib.util.spec_from_file_location("summary_tool", REPO_ROOT / "tools" / "summary_network.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main(["--config-file", str(REPO_ROOT / "configs/coco/hrnext_small_coco_256x192.yaml")]) == 0
    out = capsys.readouterr().out
    assert "9,479,249" in out and "2.73 GFLOPs" in out and "256x192" in out
    assert "not counted" in out and "aten::gelu" in out and "2^30" in out


def test_base_coco_384x288_figures():
    report = summarize_config(_cfg("configs/coco/hrnext_base_coco_384x288.yaml"))
    assert report.image_hw == (384, 288)
    assert report.parameters == 31_726_913
    assert report.flops == pytest.approx(11.713e9, rel=0.005)


def test_small_fast_formulation_counts_dynamic_convs_too():
    """The fast path's batched matmuls and spatial means are counted: its total is within 0.1% of the
    reference's (it skips the scale-1 bilinear resizes, no-ops, and adds small matmuls for the pooled
    means by linearity), and a CrowdPose head (K=14) has 99 fewer parameters."""
    cfg = _cfg("configs/crowdpose/hrnext_small_crowdpose_256x192.yaml")
    report = summarize_config(cfg, formulation="fast")
    # the reference formulation of this config, counted the same way (measured)
    reference = {"flops": 2_731_914_624, "adaptive_avg_pool2d": 27_525_120, "upsample_bilinear2d": 15_138_816}
    assert report.parameters == 9_479_249 - 99
    assert report.by_operator.get("bmm", 0) > 0.9e9
    assert report.by_operator["mean"] == reference["adaptive_avg_pool2d"]
    skipped = reference["upsample_bilinear2d"] - report.by_operator["upsample_bilinear2d"]
    assert 0 < skipped < 0.01 * reference["flops"]
    assert report.flops == pytest.approx(reference["flops"], rel=0.001)
