"""tools/train_net.py with Keypoint R-CNN: Detectron2's own config with this project's backbone and head
names and official HRNeXt weights (CrowdPose layout: box AP and the CrowdPose keypoint numbers), and
the synthetic-data config of configs/keypoint_rcnn (box and keypoint AP, drawn predictions)."""
import os
import subprocess
import sys

import pytest
import torch
from detectron2 import model_zoo

from tests.conftest import REPO_ROOT, tool_env
from tests.golden_weights import manifest, official_state_dict
from tests.rcnn_configs import D2_KEYPOINT_RCNN
from tests.data.topdown_fixtures import crowdpose_reference_layout

# End to end (processes, training runs): deselect with -m "not slow".
pytestmark = pytest.mark.slow

SMALL = ["INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "128", "INPUT.MIN_SIZE_TEST", "96",
         "INPUT.MAX_SIZE_TEST", "128", "MODEL.RPN.POST_NMS_TOPK_TRAIN", "100", "MODEL.RPN.POST_NMS_TOPK_TEST", "50",
         "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", "32", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
         "SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu", "SEED", "1"]


def _run(args, root):
    env = tool_env(DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="2")
    proc = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "train_net.py"), *args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def _copypaste_tasks(out):
    """{task: {metric: value}} from Detectron2's copypaste lines."""
    lines = [line.split("copypaste: ", 1)[1] for line in out.splitlines() if "copypaste: " in line]
    tasks = {}
    for i, line in enumerate(lines):
        if line.startswith("Task: "):
            names, values = lines[i + 1].split(","), [float(v) for v in lines[i + 2].split(",")]
            tasks[line[len("Task: "):]] = dict(zip(names, values))
    return tasks


def test_detectron2_keypoint_config_with_our_names_and_official_weights(tmp_path):
    root = crowdpose_reference_layout(tmp_path)
    official = tmp_path / "hrnext_s_crowdpose.pth"
    torch.save({"state_dict": official_state_dict(manifest("hrnext_s_crowdpose"), seed=1)}, official)
    out = _run(["--config-file", model_zoo.get_config_file(D2_KEYPOINT_RCNN),
                "MODEL.BACKBONE.NAME", "build_hrnext_fpn_backbone", "MODEL.ROI_KEYPOINT_HEAD.NAME", "HRNeXtKeypointHead",
                "MODEL.WEIGHTS", str(official), "MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS", "14",
                "DATASETS.TRAIN", "('crowdpose_trainval',)", "DATASETS.TEST", "('crowdpose_test',)",
                *SMALL, "OUTPUT_DIR", str(tmp_path / "out")], root)
    # The official pose weights went into the FPN's bottom-up part; what starts fresh is listed.
    assert "top-down HRNeXt checkpoint -> backbone.bottom_up.*: 5010 keys loaded" in out
    assert "new: backbone.bottom_up.stage4.1.fuse_layers.1.* (24 keys)" in out
    assert "dropped (no place in this model): keypoint_head.final_layer.weight" in out
    assert "Model GeneralizedRCNN" in out
    tasks = _copypaste_tasks(out)
    assert set(tasks) == {"bbox", "keypoints"}
    assert {"AP", "AP50", "AP75"} <= set(tasks["bbox"])
    assert {"AP", "AR", "AP(easy)", "AP(medium)", "AP(hard)"} <= set(tasks["keypoints"])  # CrowdPose's numbers
    assert os.path.isfile(tmp_path / "out" / "model_final.pth")


def test_synthetic_keypoint_rcnn_config_trains_evaluates_and_draws(tmp_path):
    shrink = []
    for stage, branches in (("STAGE1", 1), ("STAGE2", 2), ("STAGE3", 3), ("STAGE4", 4)):
        shrink += [f"MODEL.HRNEXT.{stage}.NUM_MODULES", "1", f"MODEL.HRNEXT.{stage}.NUM_BLOCKS", str([1] * branches)]
    out = _run(["--config-file", "configs/keypoint_rcnn/keypoint_rcnn_hrnext_s_fpn_synthetic.yaml", *shrink,
                "DATASETS.TRAIN", "('synthetic_crowd_val',)", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.MAX_ITER", "2",
                "SOLVER.WARMUP_ITERS", "1", "DATALOADER.NUM_WORKERS", "0", "TEST.VISUALIZE_NUM", "1",
                "OUTPUT_DIR", str(tmp_path / "out")], tmp_path / "data")
    tasks = _copypaste_tasks(out)
    assert set(tasks) == {"bbox", "keypoints"}
    assert {"AP", "AP50", "AP75", "APm", "APl"} <= set(tasks["keypoints"])
    drawn = [line.split(": ", 1)[1] for line in out.splitlines() if line.startswith("Visualised predictions: ")]
    assert len(drawn) == 1 and os.path.isfile(drawn[0])
