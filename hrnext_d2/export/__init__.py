"""Deployment: export to ONNX / TorchScript and a pose pipeline on onnxruntime.

- `exporter` (torch + Detectron2): `export_model(model, dir, "onnx" | "torchscript")` writes
  dir/model.onnx or dir/model.ts and dir/model.json; used by tools/deploy/export_model.py.
- `onnx_pipeline` (numpy, cv2, onnxruntime only): `OnnxPosePipeline(dir)(image_bgr, boxes_xyxy)`.
- `metadata`: the model.json schema both sides share.

Importing this package imports neither torch nor Detectron2 (the exporter is imported on its own),
so the pipeline runs where only onnxruntime is installed.
"""
from .metadata import DeployMetadata, MetadataError
from .onnx_pipeline import OnnxPosePipeline

__all__ = ["DeployMetadata", "MetadataError", "OnnxPosePipeline"]
