"""Top-down pose estimation with an exported ONNX model on onnxruntime: no torch, no Detectron2.

image + person boxes -> centre / scale -> `cv2.warpAffine` crops (mmpose's) -> normalisation ->
onnxruntime -> flip-test combination (unless the graph does it) -> decoding into the image ->
rescoring + OKS-NMS. Every numeric step is the one `TopDownPoseEstimator` runs
(`hrnext_d2.topdown.pipeline`, `.codec`, `.geometry`, `.nms`); the only difference is the crop, which
the model takes on its device with `grid_sample` emulating cv2's fixed-point bilinear warp.

This module imports only numpy, cv2, onnxruntime and `hrnext_d2.topdown` (checked by a test that
runs it with torch made unimportable).
"""
import logging
from pathlib import Path
from typing import Dict, Optional, Sequence, Union

import numpy as np
import onnxruntime as ort

from ..topdown import geometry
from ..topdown.codec import HeatmapCodec
from ..topdown.pipeline import (
    TopDownTestSettings,
    boxes_xyxy_to_center_scale,
    crop_matrices,
    heatmaps_to_poses,
    valid_box_mask,
)
from .metadata import DeployMetadata

__all__ = ["OnnxPosePipeline"]

logger = logging.getLogger(__name__)


class OnnxPosePipeline:
    """`pipeline(image_bgr, boxes_xyxy, box_scores=None)` -> dict of numpy arrays.

    model_dir holds model.onnx and model.json (`tools/deploy/export_model.py --format onnx`).
    providers: onnxruntime execution providers (default CPU); num_threads: intra-op threads (None:
    onnxruntime's default).

    Output (persons kept by OKS-NMS, in pick order):
      "boxes" (M, 4) float32 XYXY, the input boxes; "scores" (M,) float32 rescored instance scores;
      "keypoints" (M, K, 3) float32 (x, y, score) in image pixels, Detectron2's convention (pixel
      index + 0.5), as `TopDownPredictor(...)["instances"].pred_keypoints`;
      "box_indices" (M,) int64 rows of `boxes_xyxy` they come from.
    """

    def __init__(self, model_dir: Union[str, Path], providers: Optional[Sequence[str]] = None,
                 num_threads: Optional[int] = None):
        model_dir = Path(model_dir)
        self.metadata = meta = DeployMetadata.load(model_dir / "model.json")
        if meta.format != "onnx":
            raise ValueError(f"{model_dir / 'model.json'}: format is {meta.format!r}; OnnxPosePipeline runs 'onnx' exports")
        model_path = model_dir / meta.model_file
        if not model_path.is_file():
            raise FileNotFoundError(f"{model_path}: the ONNX model named by {model_dir / 'model.json'} is missing")
        options = ort.SessionOptions()
        if num_threads is not None:
            if int(num_threads) <= 0:
                raise ValueError(f"num_threads must be > 0, got {num_threads}")
            options.intra_op_num_threads = int(num_threads)
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(model_path), options, providers=list(providers) if providers else ["CPUExecutionProvider"]
        )
        self.codec = HeatmapCodec.from_dict(meta.codec)
        self.settings = TopDownTestSettings.from_dict(meta.test_settings)
        self.image_size = tuple(int(v) for v in meta.image_size)  # (w, h)
        self.flip_pairs = meta.flip_pairs_tuples()
        self.oks_sigmas = np.asarray(meta.oks_sigmas, dtype=np.float64)
        self._mean = np.asarray(meta.pixel_mean, np.float32).reshape(1, 3, 1, 1)
        self._std = np.asarray(meta.pixel_std, np.float32).reshape(1, 3, 1, 1)

    @property
    def num_keypoints(self) -> int:
        return self.metadata.num_keypoints

    # ------------------------------------------------------------------ steps
    def crops(self, image_bgr: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        """(N, 3, h, w) float32 normalised crops of a BGR uint8 image for (N, 2, 3) affine matrices."""
        image = image_bgr[:, :, ::-1] if self.metadata.channel_order == "RGB" else image_bgr
        image = np.ascontiguousarray(image)  # once, not per crop
        raw = np.stack([geometry.warp_image(image, m, self.image_size) for m in matrices])  # (N, h, w, 3) uint8
        x = raw.transpose(0, 3, 1, 2).astype(np.float32)
        return (x - self._mean) / self._std

    def heatmaps(self, crops: np.ndarray) -> np.ndarray:
        """Normalised crops -> the heatmaps decoding reads: with flip test the flip-averaged, shifted
        heatmaps (by the graph when it was exported with the flip, else here), in chunks of the
        model's crop batch size."""
        flip_here = self.settings.flip_test and not self.metadata.flip_test_in_graph
        step = int(self.metadata.crop_batch_size)
        out = []
        for start in range(0, len(crops), step):
            chunk = np.ascontiguousarray(crops[start : start + step], dtype=np.float32)
            hm = self._run(chunk)
            if flip_here:
                flipped = self._run(np.ascontiguousarray(chunk[..., ::-1]))
                hm = self.codec.combine_flip(hm, flipped, self.flip_pairs, self.settings.shift_heatmap)
            out.append(hm)
        return np.concatenate(out, axis=0)

    def _run(self, crops: np.ndarray) -> np.ndarray:
        return self.session.run([self.metadata.output_name], {self.metadata.input_name: crops})[0]

    # ------------------------------------------------------------------ full pipeline
    def __call__(self, image_bgr: np.ndarray, boxes_xyxy: np.ndarray,
                 box_scores: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
        image_bgr = np.asarray(image_bgr)
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3 or image_bgr.dtype != np.uint8:
            raise ValueError(f"image_bgr must be an (H, W, 3) uint8 array, got {image_bgr.dtype} {image_bgr.shape}")
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        if box_scores is None:
            scores = np.ones(len(boxes), dtype=np.float64)
        else:
            scores = np.asarray(box_scores, dtype=np.float64).reshape(-1)
            if len(scores) != len(boxes):
                raise ValueError(f"{len(boxes)} boxes but {len(scores)} box_scores")
        # The model's boxes pass through float32 Boxes before centre / scale: the same rounding here.
        boxes = boxes.astype(np.float32).astype(np.float64)
        scores = scores.astype(np.float32).astype(np.float64)
        index = np.flatnonzero(valid_box_mask(boxes))
        k = self.num_keypoints
        if len(index) == 0:
            return _result(np.zeros((0, 4)), np.zeros(0), np.zeros((0, k, 3)), np.zeros(0, np.int64))
        boxes, scores = boxes[index], scores[index]
        centers, scales = boxes_xyxy_to_center_scale(boxes, self.image_size, self.settings.box_padding)
        mats = crop_matrices(centers, scales, self.image_size, self.codec.use_udp)
        heatmaps = self.heatmaps(self.crops(image_bgr, mats))
        poses = heatmaps_to_poses(heatmaps, centers, scales, scores, self.codec, self.oks_sigmas, self.settings)
        keypoints = poses.keypoints.copy()
        keypoints[:, :, :2] += 0.5  # mmpose pixel index -> Detectron2's convention
        return _result(boxes[poses.keep], poses.scores, keypoints, index[poses.keep])


def _result(boxes: np.ndarray, scores: np.ndarray, keypoints: np.ndarray, indices: np.ndarray) -> Dict[str, np.ndarray]:
    return {
        "boxes": np.asarray(boxes, np.float32).reshape(-1, 4),
        "scores": np.asarray(scores, np.float32).reshape(-1),
        "keypoints": np.asarray(keypoints, np.float32),
        "box_indices": np.asarray(indices, np.int64).reshape(-1),
    }
