"""A short version of the quickstart: tools/train_net.py with the quickstart config on a tiny
synthetic split (a few iterations) trains, evaluates with OKS AP and draws a prediction."""
import importlib.util
import json
import math
import os

import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.engine import default_argument_parser

from hrnext_d2.data.datasets.synthetic import SyntheticCrowdSpec, register_synthetic_crowd

from .conftest import REPO_ROOT

# End to end (processes, training runs): deselect with -m "not slow".
pytestmark = pytest.mark.slow

QUICKSTART = REPO_ROOT / "configs" / "quickstart" / "hrnext_small_synthetic.yaml"


@pytest.fixture
def tiny_splits(tmp_path):
    root = str(tmp_path / "datasets")
    names = {"train": "synthetic_crowd_smoke_train", "val": "synthetic_crowd_smoke_val"}
    register_synthetic_crowd(names["train"], SyntheticCrowdSpec(split="train", num_images=6, seed=3, image_size=(128, 128)), root)
    register_synthetic_crowd(names["val"], SyntheticCrowdSpec(split="val", num_images=2, seed=3, image_size=(128, 128)), root)
    yield names
    for name in names.values():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _train_net():
    spec = importlib.util.spec_from_file_location("train_net", REPO_ROOT / "tools" / "train_net.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quickstart_config_trains_evaluates_and_draws(tiny_splits, tmp_path, capsys):
    out = tmp_path / "out"
    args = default_argument_parser().parse_args([
        "--config-file", str(QUICKSTART),
        "DATASETS.TRAIN", f"('{tiny_splits['train']}',)",
        "DATASETS.TEST", f"('{tiny_splits['val']}',)",
        "SOLVER.MAX_ITER", "3",
        "SOLVER.IMS_PER_BATCH", "4",
        "SOLVER.WARMUP_ITERS", "1",
        "DATALOADER.NUM_WORKERS", "0",
        "TEST.VISUALIZE_NUM", "1",
        "OUTPUT_DIR", str(out),
    ])
    results = _train_net().main(args)

    # Evaluation ran on the val split and returned COCO keypoint metrics in percent.
    metrics = results["keypoints"]
    for key in ("AP", "AP50", "AP75", "APm", "APl"):
        assert 0.0 <= metrics[key] <= 100.0 or math.isnan(metrics[key]), (key, metrics[key])
    assert os.path.isfile(out / "inference" / tiny_splits["val"] / "keypoints_results.json")

    # Training ran the configured iterations with a finite loss and saved the final model.
    events = [json.loads(line) for line in (out / "metrics.json").read_text().splitlines()]
    train_events = [e for e in events if "total_loss" in e]
    assert train_events and all(math.isfinite(e["total_loss"]) and e["total_loss"] > 0 for e in train_events)
    assert max(e["iteration"] for e in train_events) == 2  # iterations 0, 1, 2
    assert (out / "model_final.pth").is_file()

    # One prediction was drawn and its path printed.
    drawn = sorted((out / "visualization").glob("*.png"))
    assert len(drawn) == 1 and drawn[0].stat().st_size > 10_000
    assert str(drawn[0]) in capsys.readouterr().out
