"""Export a `TopDownPoseEstimator` to ONNX or TorchScript: normalised crops -> heatmaps, dynamic batch.

The graph is the network only (optionally with the flip test), as mmdeploy exports top-down pose
models; box -> crop and decoding stay in the runtime (`hrnext_d2.export.onnx_pipeline` for ONNX), and
`model.json` next to the model tells the runtime how (`hrnext_d2.export.metadata`).

While tracing, the ops take their export forms (`hrnext_d2.modeling.layers.export_forms`: static
weights, batch-preserving reshapes) and the folded BatchNorm / layer-scale tensors are computed once
beforehand and enter the graph as constants.
"""
import contextlib
import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnxruntime as ort
import torch
from detectron2.data import MetadataCatalog
from torch import nn

from ..data.datasets.keypoint_metadata import COCO_PERSON_KEYPOINT_NAMES, get_coco_keypoint_metadata
from ..modeling.layers.export_forms import pinned_folded_forms
from ..modeling.meta_arch.top_down import TopDownPoseEstimator
from .metadata import FORMATS, DeployMetadata

__all__ = [
    "CropHeatmaps",
    "deploy_metadata",
    "export_model",
    "load_exported",
    "max_relative_error",
    "run_exported",
    "trace_to_onnx",
    "trace_to_torchscript",
    "verify_export",
]

logger = logging.getLogger(__name__)

MODEL_FILES = {"onnx": "model.onnx", "torchscript": "model.ts"}
INPUT_NAME = "crops"
OUTPUT_NAME = "heatmaps"
DEFAULT_OPSET = 17


class CropHeatmaps(nn.Module):
    """The exported function: normalised RGB crops (N, 3, H, W) -> heatmaps (N, K, H/4, W/4).

    With `flip_test`, the horizontally flipped crops go through the network in the same batch and
    the result is `codec.combine_flip` of the two, as `TopDownPoseEstimator.crop_heatmaps` computes.
    """

    def __init__(self, model: TopDownPoseEstimator, flip_test: bool = False):
        super().__init__()
        if not isinstance(model, TopDownPoseEstimator):
            raise TypeError(f"export needs a TopDownPoseEstimator (MODEL.META_ARCHITECTURE), got {type(model).__name__}")
        self.model = model
        self.flip_test = bool(flip_test)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        if not self.flip_test:
            return self.model.forward_crops(crops)
        both = self.model.forward_crops(torch.cat([crops, crops.flip(3)], dim=0))
        both = both.unflatten(0, (2, -1))
        return self.model.codec.combine_flip(
            both[0], both[1], self.model.keypoint_info.flip_pairs, self.model.test_settings.shift_heatmap
        )


def _keypoint_names_and_rules(cfg: Any, k: int) -> Tuple[List[str], List[List[Any]]]:
    """Names and Detectron2 connection rules for drawing: the first registered dataset of the config
    that has them, else COCO's for 17 keypoints, else none."""
    names = list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN) if cfg is not None else []
    for name in names:
        if name in MetadataCatalog.list():
            meta = MetadataCatalog.get(name)
            kn = meta.get("keypoint_names", None)
            if kn is not None and len(kn) == k:
                rules = meta.get("keypoint_connection_rules", []) or []
                return list(kn), [[a, b, list(c)] for a, b, c in rules]
    if k == len(COCO_PERSON_KEYPOINT_NAMES):
        coco = get_coco_keypoint_metadata()
        return list(coco["keypoint_names"]), [[a, b, list(c)] for a, b, c in coco["keypoint_connection_rules"]]
    return [], []


def deploy_metadata(
    model: TopDownPoseEstimator,
    fmt: str,
    flip_test: bool,
    opset: Optional[int] = None,
    cfg: Any = None,
    source: Optional[Dict[str, str]] = None,
) -> DeployMetadata:
    """model.json for `model` exported as `fmt` (`flip_test`: the flip test is in the graph)."""
    mean, std = model._normalizer()  # in the network's channel order (RGB)
    settings = model.test_settings.to_dict()
    if flip_test:
        settings["flip_test"] = True  # what the graph computes
    k = model.num_keypoints
    names, rules = _keypoint_names_and_rules(cfg, k)
    return DeployMetadata(
        format=fmt,
        model_file=MODEL_FILES[fmt],
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        image_size=list(model.codec.image_size),
        heatmap_size=list(model.codec.heatmap_size),
        num_keypoints=k,
        channel_order="RGB",
        pixel_mean=[float(v) for v in mean.flatten()],
        pixel_std=[float(v) for v in std.flatten()],
        flip_pairs=[[int(a), int(b)] for a, b in model.keypoint_info.flip_pairs],
        oks_sigmas=[float(s) for s in model.keypoint_info.oks_sigmas],
        codec=model.codec.to_dict(),
        test_settings=settings,
        flip_test_in_graph=bool(flip_test),
        crop_batch_size=int(model.crop_batch_size),
        opset=opset if fmt == "onnx" else None,
        keypoint_names=names,
        keypoint_connection_rules=rules,
        source=dict(source or {}),
    )


def export_model(
    model: TopDownPoseEstimator,
    output_dir: Union[str, Path],
    fmt: str,
    flip_test: bool = False,
    opset: int = DEFAULT_OPSET,
    example_batch: int = 2,
    cfg: Any = None,
    source: Optional[Dict[str, str]] = None,
) -> Dict[str, Path]:
    """Write output_dir/model.onnx (or model.ts) and output_dir/model.json; returns their paths.

    The model is exported in eval mode on its device with float32 example crops of batch
    `example_batch`; the batch axis stays symbolic (ONNX input `crops`, output `heatmaps`).
    """
    if fmt not in FORMATS:
        raise ValueError(f"export format must be one of {FORMATS}, got {fmt!r}")
    if fmt == "onnx" and opset < 17:
        raise ValueError(f"ONNX opset must be >= 17 (LayerNormalization), got {opset}")
    if example_batch < 1:
        raise ValueError(f"example batch must be >= 1, got {example_batch}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    module = CropHeatmaps(model, flip_test)
    w, h = model.image_size
    example = torch.randn(example_batch, 3, h, w, generator=torch.Generator().manual_seed(0)).to(model.device)
    path = output_dir / MODEL_FILES[fmt]
    was_training = model.training
    try:
        logger.info(f"exporting {fmt} (flip test in graph: {flip_test}) to {path}")
        if fmt == "onnx":
            trace_to_onnx(module, example, path, opset)
        else:
            trace_to_torchscript(module, example, path)
    finally:
        model.train(was_training)
    meta = deploy_metadata(model, fmt, flip_test, opset if fmt == "onnx" else None, cfg, source)
    json_path = meta.save(output_dir / "model.json")
    return {"model": path, "metadata": json_path}


@contextlib.contextmanager
def _tracing(module: nn.Module) -> Iterator[None]:
    """Eval mode, no grad, the folded forms pinned as constants, the tracer's size warnings muted (the
    crop size is fixed; the batch size is recorded symbolically)."""
    module.eval()
    with torch.no_grad(), pinned_folded_forms(module), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def trace_to_onnx(module: nn.Module, example: torch.Tensor, path: Union[str, Path], opset: int = DEFAULT_OPSET) -> Path:
    """ONNX file of `module` (crops -> heatmaps; input `crops`, output `heatmaps`, batch axis symbolic),
    traced with the TorchScript-based exporter on `example`. Leaves `module` in eval mode."""
    with _tracing(module):
        torch.onnx.export(
            module, (example,), str(path), dynamo=False, opset_version=opset,
            input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    return Path(path)


def trace_to_torchscript(module: nn.Module, example: torch.Tensor, path: Union[str, Path]) -> Path:
    """Frozen TorchScript trace of `module` (any batch size). Freezing turns the parameters into
    constants and drops the unused ones (the unfolded weights): about half the file."""
    with _tracing(module):
        traced = torch.jit.freeze(torch.jit.trace(module, example, check_trace=False))
    torch.jit.save(traced, str(path))
    return Path(path)


def load_exported(model_dir: Union[str, Path], num_threads: Optional[int] = None) -> Callable[[np.ndarray], np.ndarray]:
    """The exported network of model_dir (ONNX on onnxruntime's CPU provider, TorchScript on torch) as a
    function of float32 crops (N, 3, H, W) -> heatmaps; load once, call for any batch size."""
    meta = DeployMetadata.load(Path(model_dir) / "model.json")
    path = Path(model_dir) / meta.model_file
    if meta.format == "onnx":
        options = ort.SessionOptions()
        if num_threads:
            options.intra_op_num_threads = num_threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

        def run_onnx(crops: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(crops, dtype=np.float32)
            return session.run([meta.output_name], {meta.input_name: x})[0]

        return run_onnx
    module = torch.jit.load(str(path), map_location="cpu")

    def run_torchscript(crops: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(crops, dtype=np.float32))).numpy()

    return run_torchscript


def run_exported(model_dir: Union[str, Path], crops: np.ndarray, num_threads: Optional[int] = None) -> np.ndarray:
    """`load_exported(model_dir)(crops)` for a single call."""
    return load_exported(model_dir, num_threads)(crops)


def max_relative_error(y: Any, ref: Any) -> float:
    """max |y - ref| / max |ref| (the parity measure of the export checks)."""
    y = np.asarray(y, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if y.shape != ref.shape:
        raise ValueError(f"shapes differ: {y.shape} vs {ref.shape}")
    return float(np.abs(y - ref).max() / np.abs(ref).max())


def verify_export(
    model: TopDownPoseEstimator, model_dir: Union[str, Path], batch_sizes: Sequence[int] = (1, 3), seed: int = 0
) -> Dict[int, float]:
    """Max relative error of the exported network against the eager model (same flip setting) on random
    crops, for batch sizes other than the traced one."""
    meta = DeployMetadata.load(Path(model_dir) / "model.json")
    module = CropHeatmaps(model, meta.flip_test_in_graph).eval()
    w, h = model.image_size
    g = torch.Generator().manual_seed(seed)
    run = load_exported(model_dir)
    errors = {}
    for b in batch_sizes:
        x = torch.randn(b, 3, h, w, generator=g)
        with torch.no_grad():
            ref = module(x.to(model.device)).cpu().numpy()
        errors[int(b)] = max_relative_error(run(x.numpy()), ref)
    return errors
