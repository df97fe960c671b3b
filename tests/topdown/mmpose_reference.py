"""Test oracles for mmpose 0.23 behaviours the package does not need at run time: the result dict of
``TopDown.forward_test`` and ``oks_iou`` with its ``vis_thr`` bug (quirk 18 of docs/mmpose_quirks.md).
They pin golden arrays that the package's own functions feed into."""
from typing import Optional

import numpy as np

COCO_FLIP_PAIRS = [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10], [11, 12], [13, 14], [15, 16]]
COCO_OKS_SIGMAS = np.array(
    [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089]
)


def result_preds(preds: np.ndarray, maxvals: np.ndarray) -> np.ndarray:
    """mmpose result-dict ``preds``: (N, K, 3) float32 (x_img, y_img, maxval)."""
    p = np.asarray(preds)
    out = np.zeros(p.shape[:2] + (3,), dtype=np.float32)
    out[:, :, 0:2] = p[:, :, 0:2]
    out[:, :, 2:3] = np.asarray(maxvals).reshape(p.shape[0], p.shape[1], 1)
    return out


def result_boxes(centers: np.ndarray, scales: np.ndarray, box_scores: Optional[np.ndarray] = None) -> np.ndarray:
    """mmpose result-dict ``boxes``: (N, 6) float32 (c_x, c_y, s_w, s_h, area, score) (quirk 14)."""
    c = np.asarray(centers, dtype=np.float32).reshape(-1, 2)
    s = np.asarray(scales, dtype=np.float32).reshape(-1, 2)
    out = np.zeros((len(c), 6), dtype=np.float32)
    out[:, 0:2] = c
    out[:, 2:4] = s
    out[:, 4] = np.prod(s * 200.0, axis=1)
    out[:, 5] = 1.0 if box_scores is None else np.asarray(box_scores, dtype=np.float64).reshape(-1)
    return out


def oks_iou(g, d, a_g, a_d, sigmas=COCO_OKS_SIGMAS, vis_thr=None, mmpose_vis_thr_bug=True) -> np.ndarray:
    """mmpose ``oks_iou``: OKS of pose ``g`` (K, 3) against poses ``d`` (M, K, 3); (M,) float32.

    With ``vis_thr`` and ``mmpose_vis_thr_bug`` only d's keypoints with score > vis_thr count
    (``list(vg > thr) and list(vd > thr)`` returns the second list); without the bug flag both
    poses' keypoints must pass. No keypoint passing gives 0.
    """
    g = np.asarray(g)
    d = np.asarray(d).reshape(-1, g.shape[0], g.shape[-1])
    var = (np.asarray(sigmas, np.float64) * 2) ** 2
    a_d = np.asarray(a_d).reshape(-1)
    out = np.zeros(len(d), dtype=np.float32)
    for n in range(len(d)):
        dx = d[n, :, 0] - g[:, 0]
        dy = d[n, :, 1] - g[:, 1]
        e = (dx**2 + dy**2) / var / ((a_g + a_d[n]) / 2 + np.spacing(1)) / 2
        if vis_thr is not None:
            vd = d[n, :, 2] > vis_thr
            ind = vd if mmpose_vis_thr_bug else (g[:, 2] > vis_thr) & vd
            e = e[ind]
        out[n] = np.sum(np.exp(-e)) / e.shape[0] if e.shape[0] != 0 else 0.0
    return out
