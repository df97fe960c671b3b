"""The command-line tools on bad input end with a non-zero exit and a message naming what is wrong:
--eval-only without weights or with weights of another model, and tools/check_dataset.py on a dataset
with a corrupt and an EXIF-rotated image."""
import subprocess
import sys

import pytest
import torch

from tests.conftest import REPO_ROOT, tool_env
from tests.fault_injection import copy_coco_fixture, truncate, write_exif_rotated
from tests.golden_weights import manifest, official_state_dict
from tests.data.topdown_fixtures import crowdpose_reference_layout
from tests.tools.test_train_net import CONFIG

# End to end (processes): deselect with -m "not slow".
pytestmark = pytest.mark.slow


def _tool(name, args, root=None):
    env = tool_env(OMP_NUM_THREADS="2", **({"DETECTRON2_DATASETS": str(root)} if root else {}))
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / name), *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    return proc.returncode, proc.stdout + proc.stderr


def test_eval_only_without_weights_or_with_another_models_weights_fails(tmp_path):
    root = crowdpose_reference_layout(tmp_path)
    common = ["--config-file", CONFIG, "--eval-only", "MODEL.DEVICE", "cpu", "DATALOADER.NUM_WORKERS", "0",
              "OUTPUT_DIR", str(tmp_path / "eval")]
    code, out = _tool("train_net.py", common, root)
    assert code != 0 and "--eval-only with an empty MODEL.WEIGHTS would evaluate a randomly initialised model" in out

    coco = tmp_path / "hrnext_small_coco_official.pth"  # 17 keypoints; the config has 14
    torch.save({"state_dict": official_state_dict(manifest("hrnext_s_coco"), 0)}, coco)
    code, out = _tool("train_net.py", common + ["MODEL.WEIGHTS", str(coco)], root)
    assert code != 0
    assert f"{coco}: does not fit the model (TopDownPoseEstimator)" in out
    assert "keypoint_head.final_layer.weight file (17, 32, 1, 1) vs model (14, 32, 1, 1)" in out
    assert "copypaste" not in out  # no AP table


def test_check_dataset_reports_unreadable_and_mis_sized_images(tmp_path):
    files = copy_coco_fixture(tmp_path)
    truncate(files["images"] / "000000197388.jpg", 0.4)
    write_exif_rotated(files["images"] / "000000000785.jpg", files["images"] / "000000000785.jpg")
    code, out = _tool("check_dataset.py", ["--json", str(files["json"]), "--image-root", str(files["images"])])
    assert code == 1
    assert f"unreadable: Cannot read image '{files['images'] / '000000197388.jpg'}'" in out
    assert f"size: Image '{files['images'] / '000000000785.jpg'}': its EXIF orientation tag (6)" in out
    assert f"{files['json']}: 3 images checked: 1 unreadable, 1 mis-sized" in out
    clean = copy_coco_fixture(tmp_path / "clean")
    code, out = _tool("check_dataset.py", ["--json", str(clean["json"]), "--image-root", str(clean["images"])])
    assert code == 0 and "3 images checked: 0 unreadable, 0 mis-sized" in out
