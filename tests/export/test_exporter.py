"""ONNX and TorchScript export of reduced models: parity with the eager model at batch sizes other than
the traced one, the graph's interface (symbolic batch, static weights, no folding arithmetic left),
the flip test in the graph, and model.json."""
import json

import numpy as np
import onnx
import pytest
import torch

from hrnext_d2.export import DeployMetadata, MetadataError
from hrnext_d2.export.exporter import CropHeatmaps, export_model, load_exported, max_relative_error
from hrnext_d2.topdown.pipeline import TopDownTestSettings
from tests.topdown.mmpose_reference import COCO_FLIP_PAIRS

BATCH_SIZES = (1, 3)  # traced with 2; batch 17 in test_export_golden.py (full models)


def _crops(b, seed=0):
    return torch.randn(b, 3, 128, 96, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("fixture", ["coco_onnx", "coco_torchscript", "crowdpose_onnx_flip"])
def test_exported_equals_eager_at_other_batch_sizes(fixture, request):
    exp = request.getfixturevalue(fixture)
    model = exp.predictor.model
    module = CropHeatmaps(model, exp.flip_test).eval()
    run = load_exported(exp.model_dir, num_threads=2)
    for b in BATCH_SIZES:
        x = _crops(b, seed=b)
        with torch.no_grad():
            ref = module(x)
            if exp.flip_test and b == 3:  # the graph's flip test is the model's own (two calls, combine_flip)
                assert max_relative_error(ref, model.crop_heatmaps(x)) <= 1e-5
        y = run(x.numpy())
        assert y.shape == (b, model.num_keypoints, 32, 24)
        assert max_relative_error(y, ref) <= 1e-4, (fixture, b)


def test_onnx_graph_interface(coco_onnx):
    m = onnx.load(str(coco_onnx.model_dir / "model.onnx"))
    onnx.checker.check_model(m)
    assert max(o.version for o in m.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = m.graph.input, m.graph.output
    assert inp.name == "crops" and out.name == "heatmaps"
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims == ["batch", 3, 128, 96]
    assert out.type.tensor_type.shape.dim[0].dim_param == "batch"
    ops = {n.op_type for n in m.graph.node}
    # BatchNorm and layer scales are folded before export: no norm op, no rsqrt of running_var
    assert not ops & {"BatchNormalization", "Sqrt", "Reciprocal"}, ops
    # every convolution has a constant weight (the dynamic convs are static grouped convs + matmuls)
    constants = {i.name for i in m.graph.initializer} | {o for n in m.graph.node if n.op_type == "Constant" for o in n.output}
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    assert convs and all(n.input[1] in constants for n in convs)


def test_metadata_holds_what_the_runtime_needs(coco_onnx, crowdpose_onnx_flip):
    meta = DeployMetadata.load(coco_onnx.model_dir / "model.json")
    model = coco_onnx.predictor.model
    assert (meta.format, meta.model_file, meta.input_name, meta.output_name) == ("onnx", "model.onnx", "crops", "heatmaps")
    assert meta.image_size == [96, 128] and meta.heatmap_size == [24, 32] and meta.num_keypoints == 17
    assert meta.channel_order == "RGB" and meta.opset == 17
    np.testing.assert_allclose(meta.pixel_mean, [123.675, 116.28, 103.53])
    np.testing.assert_allclose(meta.pixel_std, [58.395, 57.12, 57.375])
    assert [tuple(p) for p in meta.flip_pairs] == [tuple(p) for p in COCO_FLIP_PAIRS]
    np.testing.assert_allclose(meta.oks_sigmas, model.keypoint_info.oks_sigmas)
    assert meta.codec == model.codec.to_dict() and meta.codec["post_process"] == "default"
    assert TopDownTestSettings.from_dict(meta.test_settings) == model.test_settings
    assert meta.flip_test_in_graph is False and meta.test_settings["flip_test"] is True
    assert len(meta.keypoint_names) == 17 and meta.keypoint_names[0] == "nose" and meta.keypoint_connection_rules
    crowd = DeployMetadata.load(crowdpose_onnx_flip.model_dir / "model.json")
    assert crowd.num_keypoints == 14 and crowd.flip_test_in_graph and len(crowd.oks_sigmas) == 14
    assert crowd.keypoint_names[-1] == "neck"


def test_metadata_errors_name_file_and_key(coco_onnx, tmp_path):
    d = json.loads((coco_onnx.model_dir / "model.json").read_text())
    path = tmp_path / "model.json"
    with pytest.raises(MetadataError, match="model.json: not found"):
        DeployMetadata.load(path)
    path.write_text(json.dumps({**d, "oks_sigmas": [0.1]}))
    with pytest.raises(MetadataError, match=r"model\.json: oks_sigmas has 1 values for 17 keypoints"):
        DeployMetadata.load(path)
    path.write_text(json.dumps({k: v for k, v in d.items() if k != "codec"}))
    with pytest.raises(MetadataError, match=r"missing keys \['codec'\]"):
        DeployMetadata.load(path)
    path.write_text(json.dumps({**d, "version": 99}))
    with pytest.raises(MetadataError, match="version 99 is not supported"):
        DeployMetadata.load(path)


def test_export_argument_errors(coco_onnx, tmp_path):
    model = coco_onnx.predictor.model
    with pytest.raises(ValueError, match="format must be one of"):
        export_model(model, tmp_path, "tflite")
    with pytest.raises(ValueError, match="opset must be >= 17"):
        export_model(model, tmp_path, "onnx", opset=11)
    with pytest.raises(TypeError, match="needs a TopDownPoseEstimator"):
        CropHeatmaps(model.backbone)
