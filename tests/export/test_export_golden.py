"""Full HRNeXt-S and HRNeXt-B exported from official-format checkpoints (golden weights): the exported
files reproduce the reference heatmaps and equal the eager model at batch sizes 1, 3 and 17 from one
file; the onnxruntime pipeline reproduces the pinned keypoints of TopDownPredictor. Slow: each export
of a full model takes tens of seconds on two cores."""
import cv2
import numpy as np
import pytest
import torch

from hrnext_d2.engine import TopDownPredictor
from hrnext_d2.export import OnnxPosePipeline
from hrnext_d2.export.exporter import export_model, load_exported, max_relative_error
from tests.conftest import shared_path
from tests.golden_weights import golden, manifest, official_state_dict
from tests.modeling.test_top_down import IMAGE_785_BOX, PINNED_785, topdown_cfg

pytestmark = pytest.mark.slow

VARIANTS = {
    # name: (config, manifest, golden file, crop h, w)
    "S": ("configs/coco/hrnext_small_coco_256x192.yaml", "hrnext_s_coco", "golden_hrnext_s_coco_seed0", 256, 192),
    "B": ("configs/coco/hrnext_base_coco_384x288.yaml", "hrnext_b_coco", "golden_hrnext_b_coco_seed2", 384, 288),
}


class _Golden:
    """A TopDownPredictor loading an official-format checkpoint (golden fill), the golden data, and the
    eager heatmaps of 17 random crops."""

    def __init__(self, variant: str, folder):
        config, name, gname, h, w = VARIANTS[variant]
        self.golden = golden(gname)
        official = folder / "official.pth"
        torch.save({"state_dict": official_state_dict(manifest(name), int(self.golden["seed"]))}, official)
        self.cfg = topdown_cfg(config, small=False)
        self.cfg.MODEL.WEIGHTS = str(official)
        self.predictor = TopDownPredictor(self.cfg)  # HRNeXtCheckpointer converts the mmpose file
        self.model = self.predictor.model
        self.crops = torch.randn(17, 3, h, w, generator=torch.Generator().manual_seed(17))
        with torch.no_grad():
            self.heatmaps = self.model.forward_crops(self.crops).numpy()
        self.folder = folder


@pytest.fixture(scope="module")
def golden_s(tmp_path_factory):
    return _Golden("S", tmp_path_factory.mktemp("golden_s"))


@pytest.fixture(scope="module")
def golden_b(tmp_path_factory):
    return _Golden("B", tmp_path_factory.mktemp("golden_b"))


def _check_export(g: _Golden, fmt: str, batch_sizes):
    out = g.folder / fmt
    export_model(g.model, out, fmt, cfg=g.cfg)
    run = load_exported(out, num_threads=2)
    # the reference's own heatmaps (float64) for the golden input
    assert max_relative_error(run(g.golden["input"].numpy()), g.golden["heatmaps_fp64"].numpy()) <= 1e-4
    for b in batch_sizes:  # one file, any batch size (traced with 2)
        assert max_relative_error(run(g.crops[:b].numpy()), g.heatmaps[:b]) <= 1e-4, (fmt, b)
    return out


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_hrnext_s_export_reproduces_reference(golden_s, fmt):
    out = _check_export(golden_s, fmt, (1, 3, 17))
    if fmt == "onnx":
        # the onnxruntime pipeline (flip test in the runtime) gives TopDownPredictor's pinned keypoints
        image = cv2.imread(str(shared_path("fixtures", "coco", "images", "000000000785.jpg")))
        x, y, w, h = IMAGE_785_BOX
        result = OnnxPosePipeline(out, num_threads=2)(image, np.array([[x, y, x + w, y + h]]))
        np.testing.assert_allclose(result["keypoints"][0, :, :2], PINNED_785[:, :2], atol=1e-3)
        np.testing.assert_allclose(result["keypoints"][0, :, 2], PINNED_785[:, 2], atol=1e-4)


# HRNeXt-B at 384x288: ONNX at batch 1 and 3, TorchScript on the golden input only (the S test covers
# batch 17 with the same code; B through TorchScript at 1, 3 and 17 measured 1.2e-6 but takes minutes on
# two cores).
@pytest.mark.parametrize("fmt,batch_sizes", [("onnx", (1, 3)), ("torchscript", ())])
def test_hrnext_b_export_reproduces_reference(golden_b, fmt, batch_sizes):
    _check_export(golden_b, fmt, batch_sizes)
