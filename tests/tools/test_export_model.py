"""tools/deploy/export_model.py as a new user runs it: an official-format HRNeXt-S checkpoint whose fill
seed is not in the golden data, exported to ONNX with the flip test in the graph, reproduces the
reference formulation's (float64) flip-test heatmaps."""
import subprocess
import sys

import pytest
import torch
from detectron2.modeling import build_model

from hrnext_d2.checkpoint import HRNeXtCheckpointer
from hrnext_d2.export import DeployMetadata
from hrnext_d2.export.exporter import max_relative_error, run_exported
from tests.conftest import REPO_ROOT, tool_env
from tests.golden_weights import manifest, official_state_dict
from tests.modeling.test_top_down import topdown_cfg

pytestmark = pytest.mark.slow

CONFIG = "configs/coco/hrnext_small_coco_256x192.yaml"
HIDDEN_SEED = 11  # golden files use seeds 0, 1, 2


def test_export_tool_hidden_seed_onnx_flip_test(tmp_path):
    official = tmp_path / "hrnext_s_coco_official.pth"
    torch.save({"meta": {"epoch": 300}, "state_dict": official_state_dict(manifest("hrnext_s_coco"), HIDDEN_SEED)}, official)
    out = tmp_path / "onnx"
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "deploy" / "export_model.py"), "--config-file", str(REPO_ROOT / CONFIG),
         "--format", "onnx", "--output", str(out), "--flip-test", "MODEL.WEIGHTS", str(official)],
        cwd=REPO_ROOT, env=tool_env(OMP_NUM_THREADS="2"), capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "batch 1: max relative error" in proc.stdout and "batch 3: max relative error" in proc.stdout
    meta = DeployMetadata.load(out / "model.json")
    assert meta.flip_test_in_graph and meta.source["weights"] == str(official)

    # The reference formulation (no fast ops, no folding) in float64, with the flip test.
    cfg = topdown_cfg(CONFIG, small=False)
    cfg.MODEL.HRNEXT.FAST_OPS = False
    cfg.MODEL.HRNEXT.FUSE_INFERENCE = False
    reference = build_model(cfg).eval()
    HRNeXtCheckpointer(reference).load(str(official))
    x = torch.randn(2, 3, 256, 192, generator=torch.Generator().manual_seed(HIDDEN_SEED))
    with torch.no_grad():
        ref = reference.double().crop_heatmaps(x.double()).numpy()
    assert abs(ref).max() > 1e-2
    assert max_relative_error(run_exported(out, x.numpy(), num_threads=2), ref) <= 1e-4
