"""Per-image rescoring and OKS-NMS of top-down poses, reproducing mmpose 0.23's evaluate path.

mmpose's ``TopDownCocoDataset.evaluate`` rescales every instance score by the mean of its confident
keypoint scores, then runs OKS-NMS (or soft-OKS-NMS) per image. These functions do the same on
numpy arrays with the same float32 / float64 arithmetic (quirk numbers refer to
docs/mmpose_quirks.md), computing the N x N OKS matrix once instead of one row per pick.
"""
from typing import List, Sequence, Tuple, Union

import numpy as np

__all__ = ["rescore", "oks_matrix", "oks_nms", "soft_oks_nms", "rescore_and_nms"]

ArrayLike = Union[np.ndarray, Sequence[float]]


def rescore(keypoint_scores: ArrayLike, box_scores: ArrayLike, vis_thr: float = 0.2) -> np.ndarray:
    """Instance scores: box_score * mean(keypoint scores > vis_thr), or 0 when none passes; (N,) float64.

    Quirk 16: mmpose compares numpy float32 scalars with the Python float ``vis_thr`` (in float64, so a
    score of float32(0.2) IS counted) and accumulates in float64, left to right. The box score is the
    float32 value mmpose keeps in its result dict, so it is rounded to float32 first.
    """
    kp = np.asarray(keypoint_scores)
    if kp.ndim == 3 and kp.shape[-1] == 1:
        kp = kp[..., 0]
    if kp.ndim != 2:
        raise ValueError(f"keypoint_scores must have shape (N, K) or (N, K, 1), got {np.shape(keypoint_scores)}")
    kp = kp.astype(np.float32).astype(np.float64)
    box = np.asarray(box_scores, dtype=np.float32).reshape(-1).astype(np.float64)
    if len(box) != len(kp):
        raise ValueError(f"rescore: {len(kp)} instances but {len(box)} box scores")
    valid = kp > float(vis_thr)
    acc = np.zeros(len(kp), dtype=np.float64)
    for k in range(kp.shape[1]):  # sequential float64 sum, as mmpose's Python loop (not pairwise)
        acc = acc + np.where(valid[:, k], kp[:, k], 0.0)
    count = valid.sum(axis=1)
    mean = np.divide(acc, count, out=np.zeros_like(acc), where=count > 0)
    return mean * box


def _flat_keypoints(keypoints: ArrayLike) -> np.ndarray:
    """(N, K, 3) or mmpose's flattened (N, 3K) -> (N, K, 3), keeping the dtype (float32 in mmpose)."""
    kp = np.asarray(keypoints)
    if kp.ndim == 2 and kp.shape[1] % 3 == 0:
        kp = kp.reshape(len(kp), -1, 3)
    if kp.ndim != 3 or kp.shape[2] < 3:
        raise ValueError(f"keypoints must have shape (N, K, 3), got {np.shape(keypoints)}")
    return kp


def _sigmas(sigmas: ArrayLike, k: int) -> np.ndarray:
    s = np.asarray(sigmas, dtype=np.float64).reshape(-1)
    if len(s) != k:
        raise ValueError(f"OKS sigmas have {len(s)} entries but the keypoints have {k}")
    return s


def oks_matrix(keypoints: ArrayLike, areas: ArrayLike, sigmas: ArrayLike) -> np.ndarray:
    """All pairwise OKS: M[i, j] = mmpose ``oks_iou(g=person i, d=person j)``; (N, N) float32.

    Quirk 17: area = mean of the two instances' areas + eps, e = d^2 / (2 sigma)^2 / area / 2 with
    float32 coordinate differences and float64 from the division by the variances on; OKS =
    mean(exp(-e)) over all keypoints, whatever their scores (as mmpose's evaluate calls it).
    """
    kp = _flat_keypoints(keypoints)
    n, k = kp.shape[:2]
    var = (_sigmas(sigmas, k) * 2) ** 2
    a = np.asarray(areas).reshape(-1)
    if len(a) != n:
        raise ValueError(f"oks: {n} instances but {len(a)} areas")
    x, y = kp[:, :, 0], kp[:, :, 1]
    dx = x[None, :, :] - x[:, None, :]  # [i, j] = xd(j) - xg(i), in the keypoints' dtype (float32)
    dy = y[None, :, :] - y[:, None, :]
    pair_area = (a[:, None] + a[None, :]).astype(np.float64) / 2 + np.spacing(1)  # float32 sum, then float64
    e = (dx**2 + dy**2) / var / pair_area[:, :, None] / 2
    return (np.sum(np.exp(-e), axis=-1) / k).astype(np.float32)


def _prepare(keypoints, scores, areas, sigmas) -> Tuple[np.ndarray, np.ndarray]:
    kp = _flat_keypoints(keypoints)
    sc = np.asarray(scores).reshape(-1)
    if len(sc) != len(kp):
        raise ValueError(f"OKS-NMS: {len(kp)} instances but {len(sc)} scores")
    return oks_matrix(kp, areas, sigmas), sc


def oks_nms(keypoints: ArrayLike, scores: ArrayLike, areas: ArrayLike, thr: float, sigmas: ArrayLike) -> List[int]:
    """mmpose ``oks_nms``: greedy by descending score (``argsort()[::-1]``, so ties follow numpy),
    dropping every remaining instance whose float32 OKS with the pick is > thr (equal is kept).
    Returns the kept indices in pick order."""
    if len(np.asarray(scores).reshape(-1)) == 0:
        return []
    oks, sc = _prepare(keypoints, scores, areas, sigmas)
    thr32 = np.float32(thr)  # float32 OKS array vs a Python float compares in float32
    order = sc.argsort()[::-1]
    keep = []
    while len(order) > 0:
        i = order[0]
        keep.append(int(i))
        ovr = oks[i, order[1:]]
        order = order[np.where(ovr <= thr32)[0] + 1]
    return keep


def soft_oks_nms(
    keypoints: ArrayLike, scores: ArrayLike, areas: ArrayLike, thr: float, sigmas: ArrayLike, max_dets: int = 20
) -> List[int]:
    """mmpose ``soft_oks_nms`` (quirk 19): after each pick the remaining scores are multiplied by
    exp(-oks^2 / thr) (float32 exponent) and re-sorted; nothing is dropped except by ``max_dets``.
    Returns indices only (mmpose writes the undecayed scores of the kept instances)."""
    if len(np.asarray(scores).reshape(-1)) == 0:
        return []
    oks, sc = _prepare(keypoints, scores, areas, sigmas)
    thr32 = np.float32(thr)
    order = sc.argsort()[::-1]
    sc = sc[order]
    keep = []
    while len(order) > 0 and len(keep) < max_dets:
        i = order[0]
        ovr = oks[i, order[1:]]
        order = order[1:]
        sc = sc[1:] * np.exp(-(ovr**2) / thr32)
        tmp = sc.argsort()[::-1]
        order = order[tmp]
        sc = sc[tmp]
        keep.append(int(i))
    return keep


def rescore_and_nms(
    keypoints: ArrayLike,
    box_scores: ArrayLike,
    areas: ArrayLike,
    sigmas: ArrayLike,
    vis_thr: float = 0.2,
    oks_thr: float = 0.9,
    use_nms: bool = True,
    soft_nms: bool = False,
    max_dets: int = 20,
) -> Tuple[np.ndarray, np.ndarray]:
    """One image of mmpose's evaluate (quirk 20): rescore with ``vis_thr``, then OKS-NMS or
    soft-OKS-NMS with ``oks_thr`` (all keypoints, no vis_thr). Returns (kept indices int64 in pick
    order, the rescored float64 scores of all instances)."""
    kp = _flat_keypoints(keypoints)
    scores = rescore(kp[:, :, 2], box_scores, vis_thr)
    if not use_nms:
        return np.arange(len(kp), dtype=np.int64), scores
    if soft_nms:
        keep = soft_oks_nms(kp, scores, areas, oks_thr, sigmas, max_dets=max_dets)
    else:
        keep = oks_nms(kp, scores, areas, oks_thr, sigmas)
    return np.asarray(keep, dtype=np.int64), scores
