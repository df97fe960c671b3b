"""tools/train_net.py end to end on a dataset root laid out like the reference (CrowdPose fixtures):
a short training run that evaluates, and --eval-only with converted official-format weights."""
import json
import math
import os
import subprocess
import sys

import pytest
import torch

from hrnext_d2.checkpoint import convert_mmpose_checkpoint
from tests.conftest import REPO_ROOT, tool_env
from tests.golden_weights import manifest, official_state_dict
from tests.data.topdown_fixtures import crowdpose_reference_layout

# End to end (processes, training runs): deselect with -m "not slow".
pytestmark = pytest.mark.slow

CONFIG = "configs/crowdpose/hrnext_small_crowdpose_256x192.yaml"
TABLE_HEADER = "AP(easy)"


def _run(args, root, timeout=600):
    env = tool_env(DETECTRON2_DATASETS=str(root), OMP_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "tools" / "train_net.py"), *args],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    return out


def _copypaste_values(out):
    lines = [line.split("copypaste: ", 1)[1] for line in out.splitlines() if "copypaste: " in line]
    names, values = lines[-2].split(","), [float(v) for v in lines[-1].split(",")]
    return dict(zip(names, values))


def test_train_then_evaluate_crowdpose_layout(tmp_path):
    root = crowdpose_reference_layout(tmp_path)
    tiny = []
    for stage, branches in (("STAGE1", 1), ("STAGE2", 2), ("STAGE3", 3), ("STAGE4", 4)):
        tiny += [f"MODEL.HRNEXT.{stage}.NUM_MODULES", "1", f"MODEL.HRNEXT.{stage}.NUM_BLOCKS", str([1] * branches)]
    out_dir = tmp_path / "out"
    out = _run(
        ["--config-file", CONFIG, "--num-gpus", "1", *tiny,
         "INPUT.TOPDOWN.IMAGE_SIZE", "[48, 64]", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.EPOCHS", "0",
         "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.CHECKPOINT_PERIOD_EPOCHS", "0",
         "TEST.EVAL_PERIOD_EPOCHS", "0", "TEST.EVAL_PERIOD", "2", "DATALOADER.NUM_WORKERS", "0",
         "MODEL.DEVICE", "cpu", "SEED", "1", "OUTPUT_DIR", str(out_dir)],
        root,
    )
    assert "Top-down training instances from crowdpose_trainval: 4 persons" in out
    assert TABLE_HEADER in out
    metrics = _copypaste_values(out)
    assert set(metrics) >= {"AP", "AP50", "AP75", "AP(easy)", "AP(medium)", "AP(hard)"}
    assert os.path.isfile(out_dir / "model_final.pth")
    # evaluation at iteration 2 kept as the best checkpoint
    assert os.path.isfile(out_dir / "model_best.pth")
    lines = [json.loads(x) for x in open(out_dir / "metrics.json")]
    assert [d["iteration"] for d in lines if "total_loss" in d] == [1]


def test_eval_only_with_converted_official_weights(tmp_path):
    root = crowdpose_reference_layout(tmp_path)
    official = tmp_path / "hrnext_small_crowdpose_official.pth"
    torch.save({"state_dict": official_state_dict(manifest("hrnext_s_crowdpose"), seed=1)}, official)
    converted = tmp_path / "hrnext_small_crowdpose_d2.pth"
    convert_mmpose_checkpoint(official, converted, num_keypoints=14)
    out_dir = tmp_path / "eval"
    out = _run(
        ["--config-file", CONFIG, "--eval-only", "MODEL.WEIGHTS", str(converted), "MODEL.DEVICE", "cpu",
         "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out_dir)],
        root,
    )
    # every weight loaded: no missing or unexpected keys reported by the checkpointer
    assert "not found in the checkpoint" not in out and "not used by the model" not in out
    assert "Test boxes for crowdpose_test: 6 person detections on 2 images" in out
    assert TABLE_HEADER in out
    metrics = _copypaste_values(out)
    assert set(metrics) >= {"AP", "AP(easy)", "AP(medium)", "AP(hard)"}
    # both fixture images have a medium crowd index (0.33, 0.39): no easy / hard images -> NaN
    assert math.isnan(metrics["AP(easy)"]) and math.isnan(metrics["AP(hard)"])
    assert all(0.0 <= metrics[k] <= 100.0 for k in ("AP", "AP50", "AP75", "AR", "AP(medium)"))
    results = json.load(open(out_dir / "inference" / "crowdpose_test" / "keypoints_results.json"))
    assert 1 <= len(results) <= 6
    assert all(len(r["keypoints"]) == 14 * 3 and r["image_id"] in (103319, 106848) for r in results)


def _paper_configs():
    return sorted(str(p.relative_to(REPO_ROOT)) for d in ("coco", "crowdpose", "ochuman") for p in (REPO_ROOT / "configs" / d).glob("*.yaml"))


def test_twelve_paper_configs_load_with_the_paper_schedule():
    from detectron2.config import get_cfg

    from hrnext_d2.config import add_hrnext_config
    from hrnext_d2.engine.trainer import Trainer, apply_epoch_schedule

    configs = _paper_configs()
    assert len(configs) == 12
    for path in configs:
        cfg = get_cfg()
        add_hrnext_config(cfg)
        cfg.merge_from_file(str(REPO_ROOT / path))
        crowdpose = "crowdpose" in path
        size = [192, 256] if "256x192" in path else [288, 384]
        assert list(cfg.INPUT.TOPDOWN.IMAGE_SIZE) == size, path
        assert cfg.MODEL.TOPDOWN.SIGMA == (2.0 if size[0] == 192 else 3.0), path
        assert cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS == (14 if crowdpose else 17), path
        assert cfg.INPUT.TOPDOWN.HALF_BODY_MIN_KEYPOINTS == (6 if crowdpose else 8), path
        assert cfg.SOLVER.IMS_PER_BATCH == 8 * (64 if crowdpose else 32), path
        assert (cfg.SOLVER.OPTIMIZER, cfg.SOLVER.BASE_LR, cfg.SOLVER.WEIGHT_DECAY) == ("AdamW", 0.004, 0.01)
        assert cfg.SOLVER.BASE_LR_END / cfg.SOLVER.BASE_LR == pytest.approx(0.01)
        assert (cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR, cfg.SOLVER.EPOCHS) == (500, 0.001, 300)
        assert cfg.DATASETS.TEST_BOXES == ("gt" if "ochuman" in path else ""), path
        # 300 epochs of COCO train2017's 149813 persons at batch 256 -> 175563 iterations;
        # evaluation and checkpoints every 10 epochs.
        n = 149813
        sched = apply_epoch_schedule(cfg, n)
        bs = cfg.SOLVER.IMS_PER_BATCH
        assert sched.SOLVER.MAX_ITER == math.ceil(300 * n / bs)
        assert sched.TEST.EVAL_PERIOD == sched.SOLVER.CHECKPOINT_PERIOD == math.ceil(10 * n / bs)
        # Opt-in linear scaling to one GPU keeps the per-GPU batch.
        cfg.SOLVER.REFERENCE_WORLD_SIZE = 8
        one = Trainer.auto_scale_workers(cfg, 1)
        assert one.SOLVER.IMS_PER_BATCH == bs // 8 and one.SOLVER.BASE_LR == pytest.approx(0.0005)
