"""projects/custom_keypoints: a dataset with its own 13 keypoints, flip map, skeleton and sigmas,
registered with register_topdown_keypoint_dataset; the model, the data and the evaluator use its
facts, and it trains and evaluates through tools/train_net.py."""
import contextlib
import importlib
import io
import json
import math
import subprocess
import sys

import numpy as np
import pycocotools.coco
import pycocotools.cocoeval
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model

from hrnext_d2.config import add_hrnext_config
from hrnext_d2.data.datasets import resolve_keypoint_metadata
from hrnext_d2.data.datasets.synthetic import SyntheticCrowdSpec, ensure_synthetic_crowd_split
from hrnext_d2.evaluation import TopDownKeypointEvaluator
from tests.conftest import REPO_ROOT, tool_env
from tests.evaluation.test_keypoint_evaluator import _instances, _run

PROJECT = REPO_ROOT / "projects" / "custom_keypoints"
CONFIG = PROJECT / "configs" / "hrnext_small_body13.yaml"
BODY13_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12))


@pytest.fixture(scope="module")
def project():
    """body13.py and prepare_body13.py imported as the scripts import them (their folder on the path)."""
    sys.path.insert(0, str(PROJECT))
    try:
        yield importlib.import_module("body13"), importlib.import_module("prepare_body13")
    finally:
        sys.path.remove(str(PROJECT))


@pytest.fixture(scope="module")
def tiny_body13(project, tmp_path_factory):
    """body13 train / val splits made from tiny synthetic splits, registered under test names."""
    body13, prepare = project
    root = tmp_path_factory.mktemp("datasets")
    names = {}
    for split, num in (("train", 4), ("val", 3)):
        src, images = ensure_synthetic_crowd_split(SyntheticCrowdSpec(split=split, num_images=num, seed=5), str(root / "synthetic"))
        dst = str(root / "body13" / f"{split}.json")
        prepare.keypoint_subset_json(src, dst, body13.BODY13_FROM_COCO, body13.BODY13_KEYPOINT_NAMES, "images")
        names[split] = f"body13_test_{split}"
        body13.register_body13_dataset(names[split], dst, str(images.rsplit("/images", 1)[0]))
    yield names
    for name in names.values():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _cfg(names):
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(str(CONFIG))
    cfg.DATASETS.TRAIN = (names["train"],)
    cfg.DATASETS.TEST = (names["val"],)
    return cfg


def test_model_data_and_evaluator_use_the_datasets_keypoint_facts(project, tiny_body13):
    body13, _ = project
    cfg = _cfg(tiny_body13)
    info = resolve_keypoint_metadata(cfg)
    assert info.num_keypoints == 13
    assert info.flip_pairs == BODY13_PAIRS
    assert info.oks_sigmas == body13.BODY13_OKS_SIGMAS and info.oks_sigmas[0] == 0.05
    assert f"dataset '{tiny_body13['train']}'" in info.source
    model = build_model(cfg).eval()
    assert model.keypoint_info == info
    with torch.no_grad():
        assert model.forward_crops(torch.zeros(1, 3, 128, 96)).shape == (1, 13, 32, 24)
    dicts = DatasetCatalog.get(tiny_body13["val"])
    assert all(len(a["keypoints"]) == 39 for d in dicts for a in d["annotations"])
    evaluator = TopDownKeypointEvaluator(tiny_body13["val"], distributed=False)
    np.testing.assert_array_equal(evaluator._sigmas, body13.BODY13_OKS_SIGMAS)


def _pycocotools_ap(json_file, results, sigmas):
    with contextlib.redirect_stdout(io.StringIO()):
        gt = pycocotools.coco.COCO(json_file)
        ev = pycocotools.cocoeval.COCOeval(gt, gt.loadRes(results), "keypoints")
        ev.params.kpt_oks_sigmas = np.asarray(sigmas)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats[0] * 100


def test_evaluation_scores_with_the_custom_sigmas(project, tiny_body13):
    """Ground truth moved by 2-4 px as predictions: the evaluator's AP is pycocotools' with body13's
    sigmas, and not what the default sigmas (0.025 each) give."""
    body13, _ = project
    name = tiny_body13["val"]
    rng = np.random.default_rng(0)
    per_image, results = {}, []
    for d in DatasetCatalog.get(name):
        anns = [a for a in d["annotations"] if a["num_keypoints"] > 0]
        kpts = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), 13, 3)
        kpts[:, :, :2] += rng.uniform(2, 4, kpts[:, :, :2].shape) * rng.choice([-1, 1], kpts[:, :, :2].shape)
        kpts[:, :, 2] = 1.0
        per_image[d["image_id"]] = _instances(kpts, np.ones(len(anns)), [a["bbox"] for a in anns], (d["height"], d["width"]))
        for k in kpts:
            coco = k.copy()
            coco[:, :2] -= 0.5  # Detectron2 -> COCO pixel convention, as the evaluator writes
            results.append({"image_id": d["image_id"], "category_id": 1, "score": 1.0, "keypoints": coco.reshape(-1).tolist()})
    ap = _run(TopDownKeypointEvaluator(name, distributed=False), per_image)["AP"]
    json_file = MetadataCatalog.get(name).json_file
    assert ap == pytest.approx(_pycocotools_ap(json_file, results, body13.BODY13_OKS_SIGMAS), abs=1e-6)
    assert abs(ap - _pycocotools_ap(json_file, results, [0.025] * 13)) > 5


@pytest.mark.slow
def test_prepare_train_and_evaluate_through_train_net(tmp_path):
    """As the README runs it: prepare the dataset, then the project's train_net.py (which registers
    body13 and runs tools/train_net.py's main) trains 3 iterations and evaluates 13 keypoints."""
    env = tool_env(DETECTRON2_DATASETS=str(tmp_path / "datasets"), OMP_NUM_THREADS="2")

    def run(*args):
        proc = subprocess.run([sys.executable, *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
        assert "Warning" not in proc.stderr, proc.stderr[-3000:]
        return proc.stdout + proc.stderr

    run(str(PROJECT / "prepare_body13.py"), "--train-images", "6", "--val-images", "2")
    out_dir = tmp_path / "out"
    log = run(
        str(PROJECT / "train_net.py"), "--config-file", str(CONFIG),
        "SOLVER.MAX_ITER", "3", "SOLVER.IMS_PER_BATCH", "4", "SOLVER.WARMUP_ITERS", "1",
        "DATALOADER.NUM_WORKERS", "0", "TEST.VISUALIZE_NUM", "1", "OUTPUT_DIR", str(out_dir),
    )  # fmt: skip
    assert "coco protocol, body13_val" in log
    events = [json.loads(line) for line in (out_dir / "metrics.json").read_text().splitlines()]
    losses = [e["total_loss"] for e in events if "total_loss" in e]
    assert losses and all(math.isfinite(v) and v > 0 for v in losses)
    assert max(e["iteration"] for e in events if "total_loss" in e) == 2
    results = json.load(open(out_dir / "inference" / "body13_val" / "keypoints_results.json"))
    assert results and all(len(r["keypoints"]) == 39 for r in results)
    assert (out_dir / "model_final.pth").is_file()
    assert list((out_dir / "visualization").glob("body13_val_*.png"))
