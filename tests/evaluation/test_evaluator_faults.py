"""Non-finite predictions are an error naming the image (pycocotools would score NaN keypoints as
perfect), and the results file is strict json."""
import json

import numpy as np
import pytest

from hrnext_d2.evaluation import TopDownKeypointEvaluator
from tests.data.test_datasets import register_fixture
from tests.evaluation.test_keypoint_evaluator import _ground_truth_as_predictions, _instances, _run


@pytest.mark.parametrize("field", ["keypoints", "scores"])
def test_non_finite_predictions_are_an_error_naming_the_image(tmp_path, field):
    name = register_fixture("coco")
    per_image = _ground_truth_as_predictions(name)
    inst = per_image[785]
    kpts, scores = inst.pred_keypoints.numpy().copy(), inst.scores.numpy().copy()
    if field == "keypoints":
        kpts[0, 3, 0] = np.nan  # one coordinate of one person
    else:
        scores[0] = np.inf
    per_image[785] = _instances(kpts, scores, image_size=inst.image_size)
    evaluator = TopDownKeypointEvaluator(name, output_dir=str(tmp_path), distributed=False)
    with pytest.raises(ValueError, match=r"image id 785: 1 of 1 predicted persons have non-finite keypoints or scores"):
        _run(evaluator, per_image)
    assert not (tmp_path / "keypoints_results.json").exists()


def test_results_file_is_strict_json(tmp_path):
    name = register_fixture("coco")
    evaluator = TopDownKeypointEvaluator(name, output_dir=str(tmp_path), distributed=False)
    _run(evaluator, _ground_truth_as_predictions(name))

    def refuse(token):
        raise AssertionError(f"non-standard json token {token}")

    results = json.loads((tmp_path / "keypoints_results.json").read_text(), parse_constant=refuse)
    assert len(results) == 8
