"""TopDownKeypointEvaluator against the official tools, on the real fixtures and the CrowdPose golden."""
import contextlib
import io
import json
import math

import numpy as np
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from hrnext_d2.data.datasets import register_topdown_keypoint_dataset
from hrnext_d2.data.datasets.keypoint_metadata import get_crowdpose_keypoint_metadata
from hrnext_d2.evaluation import TopDownKeypointEvaluator
from tests.conftest import SHARED, shared_path
from tests.data.test_datasets import register_fixture

GOLDEN = SHARED / "golden" / "crowdpose_eval"


def _instances(keypoints, scores, boxes_xywh=None, image_size=(480, 640)) -> Instances:
    """What the model returns: Detectron2-convention keypoints (N, K, 3), scores, boxes, classes 0."""
    keypoints = torch.as_tensor(np.asarray(keypoints, dtype=np.float32))
    n = len(keypoints)
    inst = Instances(image_size)
    inst.pred_keypoints = keypoints if keypoints.dim() == 3 else keypoints.reshape(n, -1, 3)
    inst.scores = torch.as_tensor(np.asarray(scores, dtype=np.float32)).reshape(n)
    if boxes_xywh is None:
        boxes_xywh = np.zeros((n, 4), dtype=np.float32)
    xyxy = BoxMode.convert(np.asarray(boxes_xywh, dtype=np.float32).reshape(n, 4), BoxMode.XYWH_ABS, BoxMode.XYXY_ABS)
    inst.pred_boxes = Boxes(torch.as_tensor(xyxy))
    inst.pred_classes = torch.zeros(n, dtype=torch.int64)
    return inst


def _run(evaluator, per_image):
    evaluator.reset()
    for image_id, inst in per_image.items():
        evaluator.process([{"image_id": image_id}], [{"instances": inst}])
    return evaluator.evaluate()["keypoints"]


def _ground_truth_as_predictions(dataset_name):
    """Every person with labelled keypoints, sent through the model-output path unchanged."""
    per_image = {}
    for d in DatasetCatalog.get(dataset_name):
        anns = [a for a in d["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]]
        per_image[d["image_id"]] = _instances(
            [a["keypoints"] for a in anns], [1.0] * len(anns), [a["bbox"] for a in anns], (d["height"], d["width"])
        )
    return per_image


@pytest.mark.parametrize("kind", ["coco", "crowdpose", "ochuman"])
def test_ground_truth_as_predictions_scores_100(kind, tmp_path):
    name = register_fixture(kind)
    evaluator = TopDownKeypointEvaluator(name, output_dir=str(tmp_path), distributed=False)
    results = _run(evaluator, _ground_truth_as_predictions(name))
    assert results["AP"] == pytest.approx(100.0) and results["AR"] == pytest.approx(100.0)
    for metric, value in results.items():
        assert math.isnan(value) or value == pytest.approx(100.0), (metric, value)
    if kind == "crowdpose":
        # Both fixture images have crowd index in [0.2, 0.8): medium only.
        assert results["AP(medium)"] == pytest.approx(100.0)
        assert math.isnan(results["AP(easy)"]) and math.isnan(results["AP(hard)"])
    else:
        assert set(results) == {"AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"}
    written = json.loads((tmp_path / "keypoints_results.json").read_text())
    assert {r["category_id"] for r in written} == {1}
    assert set(written[0]) == {"image_id", "category_id", "keypoints", "score"}


def test_results_json_restores_raw_coordinates_and_leaves_outputs_untouched(tmp_path):
    name = register_fixture("coco")
    per_image = _ground_truth_as_predictions(name)
    before = {k: v.pred_keypoints.clone() for k, v in per_image.items()}
    evaluator = TopDownKeypointEvaluator(name, output_dir=str(tmp_path), distributed=False)
    _run(evaluator, per_image)
    for k, v in per_image.items():
        assert torch.equal(v.pred_keypoints, before[k])
    raw = json.loads(shared_path("fixtures", "coco", "annotations", "test_coco.json").read_text())
    first = next(a for a in raw["annotations"] if a["id"] == 442619)
    written = json.loads((tmp_path / "keypoints_results.json").read_text())
    mine = [r for r in written if r["image_id"] == 785]
    assert len(mine) == 1
    np.testing.assert_allclose(mine[0]["keypoints"], first["keypoints"], atol=1e-4)


def _golden_sets():
    if not GOLDEN.exists():
        return [pytest.param(None, None, marks=pytest.mark.skip(reason=f"golden data not found: {GOLDEN}"))]
    sets = []
    for preds in sorted(GOLDEN.glob("preds*.json")):
        stats = GOLDEN / preds.name.replace("preds", "official_stats")
        if stats.exists():
            sets.append(pytest.param(preds, stats, id=preds.stem))
    return sets


@pytest.mark.parametrize("preds_file,stats_file", _golden_sets())
def test_crowdpose_official_numbers_through_the_model_path(preds_file, stats_file):
    gt = shared_path("fixtures", "crowdpose", "annotations", "crowdpose_val_official.json")
    name = "test_kp_crowdpose_official_val"
    if name not in DatasetCatalog.list():
        meta = get_crowdpose_keypoint_metadata()
        register_topdown_keypoint_dataset(
            name, str(gt), str(gt.parent), protocol="crowdpose",
            **{k: meta[k] for k in ("keypoint_names", "keypoint_flip_map", "keypoint_connection_rules",
                                    "keypoint_oks_sigmas")},
        )
    preds = json.loads(preds_file.read_text())
    official = json.loads(stats_file.read_text())
    per_image_preds = {}
    for p in preds:
        per_image_preds.setdefault(p["image_id"], []).append(p)
    per_image = {}
    for image_id, ps in per_image_preds.items():
        kpts = np.asarray([p["keypoints"] for p in ps], dtype=np.float64).reshape(len(ps), -1, 3)
        kpts[..., :2] += 0.5  # raw COCO pixel coordinates -> Detectron2 convention, as the model writes them
        per_image[image_id] = _instances(kpts, [p["score"] for p in ps])
    results = _run(TopDownKeypointEvaluator(name, distributed=False), per_image)
    for mine, theirs in [("AP", "AP"), ("AP50", "AP50"), ("AP75", "AP75"), ("AR", "AR"), ("AR50", "AR50"),
                         ("AR75", "AR75")]:
        assert abs(results[mine] / 100 - official[theirs]) < 1e-6, (mine, results[mine], official[theirs])
    for mine, theirs in [("AP(easy)", "AP_easy"), ("AP(medium)", "AP_medium"), ("AP(hard)", "AP_hard")]:
        assert abs(results[mine] / 100 - official[theirs]) < 1e-4, (mine, results[mine], official[theirs])


def _perturbed_predictions(name):
    """Noisy keypoints, random scores, one person missed and one false positive per image."""
    rng = np.random.default_rng(0)
    per_image = {}
    for d in DatasetCatalog.get(name):
        anns = [a for a in d["annotations"] if a["num_keypoints"] > 0]
        if d["image_id"] == 197388:
            anns = anns[1:]  # one person missed
        kpts = np.asarray([a["keypoints"] for a in anns], dtype=np.float32).reshape(len(anns), -1, 3)
        kpts[..., :2] += rng.normal(0, 6, size=kpts[..., :2].shape)
        kpts[..., 2] = rng.uniform(0.1, 1, size=kpts[..., 2].shape)
        false_positive = kpts[:1].copy()
        false_positive[..., :2] += 80
        kpts = np.concatenate([kpts, false_positive])
        per_image[d["image_id"]] = _instances(kpts, rng.uniform(0.2, 1, size=len(kpts)))
    return per_image


def test_perturbed_predictions_equal_pycocotools_on_the_written_json(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    name = register_fixture("coco")
    evaluator = TopDownKeypointEvaluator(name, output_dir=str(tmp_path), distributed=False)
    results = _run(evaluator, _perturbed_predictions(name))

    gt_file = MetadataCatalog.get(name).json_file
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_file)
        coco_dt = coco_gt.loadRes(str(tmp_path / "keypoints_results.json"))
        ref = COCOeval(coco_gt, coco_dt, "keypoints")
        ref.params.kpt_oks_sigmas = np.asarray(MetadataCatalog.get(name).keypoint_oks_sigmas)
        ref.evaluate()
        ref.accumulate()
        ref.summarize()
    names = ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"]
    for i, metric in enumerate(names):
        expected = ref.stats[i] * 100 if ref.stats[i] >= 0 else float("nan")
        assert results[metric] == expected or (math.isnan(expected) and math.isnan(results[metric])), metric
    assert 0 < results["AP"] < 100


@pytest.mark.parametrize("kind", ["coco", "crowdpose"])
def test_zero_predictions_give_zero(kind, tmp_path):
    name = register_fixture(kind)
    evaluator = TopDownKeypointEvaluator(name, output_dir=str(tmp_path), distributed=False)
    empty = {d["image_id"]: _instances(np.zeros((0, 17 if kind == "coco" else 14, 3)), []) for d in DatasetCatalog.get(name)}
    results = _run(evaluator, empty)
    assert results["AP"] == 0.0 and all(v == 0.0 for v in results.values())
    assert json.loads((tmp_path / "keypoints_results.json").read_text()) == []


def test_wrong_predictions_are_named():
    name = register_fixture("crowdpose")
    evaluator = TopDownKeypointEvaluator(name, distributed=False)
    with pytest.raises(ValueError, match="has 17 keypoints; dataset .* has 14"):
        _run(evaluator, {106848: _instances(np.ones((1, 17, 3)), [1.0])})
    with pytest.raises(ValueError, match=r"image ids not in .*test_crowdpose.json.*\[12345\]"):
        _run(evaluator, {12345: _instances(np.ones((1, 14, 3)), [1.0])})


def _evaluate_in_worker(out_file):
    """One of two processes: evaluates its share of the images; rank 0 writes the gathered result."""
    from detectron2.utils import comm

    name = register_fixture("coco")
    per_image = _perturbed_predictions(name)
    mine = {k: v for i, (k, v) in enumerate(sorted(per_image.items())) if i % comm.get_world_size() == comm.get_rank()}
    evaluator = TopDownKeypointEvaluator(name, distributed=True)
    evaluator.reset()
    for image_id, inst in mine.items():
        evaluator.process([{"image_id": image_id}], [{"instances": inst}])
    results = evaluator.evaluate()
    if comm.is_main_process():
        with open(out_file, "w") as f:
            json.dump(results["keypoints"], f)
    else:
        assert results == {}


def test_two_processes_gather_to_the_single_process_result(tmp_path):
    from detectron2.engine import launch

    name = register_fixture("coco")
    single = _run(TopDownKeypointEvaluator(name, distributed=False), _perturbed_predictions(name))
    out_file = str(tmp_path / "gathered.json")
    launch(_evaluate_in_worker, 2, dist_url="auto", args=(out_file,))
    gathered = json.loads(open(out_file).read())
    assert gathered.keys() == single.keys()
    for k in single:
        assert gathered[k] == single[k] or (math.isnan(single[k]) and math.isnan(gathered[k])), k
