"""Top-down pose numerics, exactly as mmpose 0.23 computes them, as pure functions of arrays.

- ``geometry``: box <-> centre/scale, affine crop matrices, joint and point transforms, training
  augmentation draws (numpy + cv2);
- ``codec``: heatmap targets and default / DARK / UDP decoding, flip-test combination (numpy + cv2;
  torch tensors accepted where noted);
- ``nms``: instance rescoring, OKS-NMS and soft-OKS-NMS (numpy);
- ``crops``: the batched on-device affine crops of inference (torch);
- ``pipeline``: the inference steps shared by the model and the exported runtime (boxes -> crop
  matrices, heatmaps -> poses in the image -> rescoring + NMS), and their settings.

This package imports nothing else of hrnext_d2, and only ``crops`` needs torch, so the onnxruntime
pipeline can run it without torch. The mmpose behaviours it reproduces ("quirk N" in the code) are
listed in docs/mmpose_quirks.md.
"""
