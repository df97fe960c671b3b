"""PoseTracker on the synthetic crowd video (figures walking and crossing; true keypoints known in
every frame): ids stay with their person, tracks age out after MAX_AGE, One-Euro smoothing reduces
jitter; OKS and IoU against pycocotools / Detectron2."""
import contextlib
import io

import numpy as np
import pycocotools.coco
import pycocotools.cocoeval
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.structures import Boxes, pairwise_iou

from hrnext_d2.config import add_hrnext_config
from hrnext_d2.data.datasets.keypoint_metadata import COCO_KEYPOINT_OKS_SIGMAS
from hrnext_d2.data.datasets.synthetic_video import SyntheticCrowdVideoSpec, render_synthetic_crowd_video
from hrnext_d2.utils.one_euro import OneEuroFilter
from hrnext_d2.utils.tracking import PoseTracker, box_iou_matrix, keypoint_box, pose_oks_matrix

SPEC = SyntheticCrowdVideoSpec(num_frames=40, fps=25.0, seed=0, num_people=3)


@pytest.fixture(scope="module")
def video():
    """Per frame: the persons in view with their true keypoints, boxes and figure index."""
    return [persons for _, persons in render_synthetic_crowd_video(SPEC)]


def noisy_detections(persons, rng, noise_px):
    """What a good pose model would return: true keypoints + Gaussian noise, score 0.9 where visible."""
    kpts = np.stack([p["keypoints"] for p in persons]).copy()
    kpts[:, :, 2] = np.where(kpts[:, :, 2] > 0, 0.9, 0.0)
    kpts[:, :, :2] += rng.normal(0, noise_px, kpts[:, :, :2].shape)
    boxes = np.stack([p["bbox"] for p in persons]) + rng.normal(0, noise_px, (len(persons), 4))
    return kpts, boxes


def run_tracker(video, tracker, noise_px, seed=0, drop=None):
    """Feeds the video to `tracker`; returns {figure: {frame: (track id, output keypoints)}}.
    drop: {figure: frames} left out (e.g. missed by the detector)."""
    rng = np.random.default_rng(seed)
    out = {}
    for f, persons in enumerate(video):
        persons = [p for p in persons if not (drop and f in drop.get(p["track_id"], ()))]
        kpts, boxes = noisy_detections(persons, rng, noise_px) if persons else (np.zeros((0, 17, 3)), np.zeros((0, 4)))
        res = tracker.update(kpts, boxes, timestamp=f / SPEC.fps)
        for p, tid, k in zip(persons, res.track_ids, res.keypoints):
            out.setdefault(p["track_id"], {})[f] = (int(tid), k)
    return out


def id_switches(out) -> int:
    """Times a figure's id differs from its id in the previous frame it was seen in."""
    switches = 0
    for frames in out.values():
        ids = [frames[f][0] for f in sorted(frames)]
        switches += sum(a != b for a, b in zip(ids, ids[1:]))
    return switches


def jitter_and_error(video, out):
    """Mean |x(t+1) - 2 x(t) + x(t-1)| (pixels) of visible keypoints, its true value, and the mean
    distance to the true keypoints."""
    acc, true_acc, err = [], [], []
    truth = {}
    for f, persons in enumerate(video):
        for p in persons:
            truth.setdefault(p["track_id"], {})[f] = p["keypoints"]
    for fig, frames in out.items():
        fs = sorted(frames)
        for a, b, c in zip(fs, fs[1:], fs[2:]):
            if c - a != 2:
                continue
            g = [truth[fig][x] for x in (a, b, c)]
            o = [frames[x][1] for x in (a, b, c)]
            vis = (g[0][:, 2] > 0) & (g[1][:, 2] > 0) & (g[2][:, 2] > 0)
            acc.append(np.linalg.norm(o[2][vis, :2] - 2 * o[1][vis, :2] + o[0][vis, :2], axis=1))
            true_acc.append(np.linalg.norm(g[2][vis, :2] - 2 * g[1][vis, :2] + g[0][vis, :2], axis=1))
        for f in fs:
            vis = truth[fig][f][:, 2] > 0
            err.append(np.linalg.norm(frames[f][1][vis, :2] - truth[fig][f][vis, :2], axis=1))
    return float(np.concatenate(acc).mean()), float(np.concatenate(true_acc).mean()), float(np.concatenate(err).mean())


def test_video_figures_cross_and_overlap(video):
    """The test video is a real tracking case: figures overlap heavily at some frames."""
    assert all(len(persons) == SPEC.num_people for persons in video)
    max_iou = max(box_iou_matrix(np.stack([p["bbox"] for p in ps]), np.stack([p["bbox"] for p in ps]))[np.triu_indices(len(ps), 1)].max() for ps in video)
    assert max_iou > 0.5
    occluded = sum(int((p["keypoints"][:, 2] == 1).sum()) for ps in video for p in ps)
    assert occluded > 50


@pytest.mark.parametrize("similarity", ["oks_iou", "oks"])
@pytest.mark.parametrize("noise_px", [2.0, 5.0])
def test_ids_stay_with_their_person(video, noise_px, similarity):
    tracker = PoseTracker(oks_sigmas=COCO_KEYPOINT_OKS_SIGMAS, similarity=similarity, fps=SPEC.fps)
    out = run_tracker(video, tracker, noise_px)
    assert id_switches(out) == 0
    # one id per figure, all different
    ids = {fig: {tid for tid, _ in frames.values()} for fig, frames in out.items()}
    assert all(len(v) == 1 for v in ids.values())
    assert len({next(iter(v)) for v in ids.values()}) == SPEC.num_people


def test_iou_alone_swaps_ids_where_people_cross(video):
    """Why TRACKING.SIMILARITY does not default to "iou": crossing people have overlapping boxes but
    different keypoints (measured: IoU 4 id switches at 1 px noise, OKS and OKS+IoU none)."""
    counts = {
        s: id_switches(run_tracker(video, PoseTracker(oks_sigmas=COCO_KEYPOINT_OKS_SIGMAS, similarity=s, fps=SPEC.fps), 1.0))
        for s in ("iou", "oks", "oks_iou")
    }
    print(f"id switches at 1 px noise: {counts}")
    assert counts["oks"] == counts["oks_iou"] == 0 and counts["iou"] > 0


def test_a_missed_person_keeps_its_id_within_max_age_and_gets_a_new_one_after(video):
    gap = range(10, 15)  # figure 2 missed for 5 frames
    kept = run_tracker(video, PoseTracker(oks_sigmas=COCO_KEYPOINT_OKS_SIGMAS, max_age=5), 2.0, drop={2: gap})
    assert id_switches(kept) == 0
    lost = run_tracker(video, PoseTracker(oks_sigmas=COCO_KEYPOINT_OKS_SIGMAS, max_age=4), 2.0, drop={2: gap})
    assert id_switches(lost) == 1
    before, after = lost[2][9][0], lost[2][15][0]
    assert after != before and after not in {tid for fig in (0, 1) for tid, _ in lost[fig].values()}  # new, never reused


def test_smoothing_reduces_jitter_without_adding_error(video):
    """Measured (2 px noise, 25 fps, TRACKING.SMOOTHING defaults): mean keypoint acceleration
    6.19 -> 2.03 px/frame^2 (true motion 0.17), mean error to the truth 2.53 -> 2.54 px."""
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.TRACKING.SMOOTHING.ENABLED = True
    raw = run_tracker(video, PoseTracker(oks_sigmas=COCO_KEYPOINT_OKS_SIGMAS, fps=SPEC.fps), 2.0)
    smooth = run_tracker(video, PoseTracker.from_config(cfg, COCO_KEYPOINT_OKS_SIGMAS, fps=SPEC.fps), 2.0)
    acc_raw, true_acc, err_raw = jitter_and_error(video, raw)
    acc_smooth, _, err_smooth = jitter_and_error(video, smooth)
    print(f"jitter {acc_raw:.2f} -> {acc_smooth:.2f} px/frame^2 (true {true_acc:.2f}); error {err_raw:.2f} -> {err_smooth:.2f} px")
    assert acc_smooth < acc_raw / 2.5
    assert err_smooth < err_raw * 1.1
    assert id_switches(smooth) == 0


def test_one_euro_still_and_moving():
    """Still: noise is cut more than 2x. Moving at constant speed: the lag after warm-up is a small fraction
    of a person height (speed raises the cutoff)."""
    rng = np.random.default_rng(0)
    f = OneEuroFilter(min_cutoff=1.0, beta=5.0)
    t = np.arange(200) / 30.0
    still = rng.normal(0, 2.0, (200, 1))
    out = np.array([f(x, ti, scale=100.0) for x, ti in zip(still, t)])
    assert out[50:].std() < still[50:].std() / 2
    f.reset()
    ramp = 300.0 * t[:, None]  # 3 person heights per second
    out = np.array([f(x, ti, scale=100.0) for x, ti in zip(ramp, t)])
    lag_fast = np.abs(out[60:] - ramp[60:]).mean()
    slow = OneEuroFilter(min_cutoff=1.0, beta=0.0)
    out_slow = np.array([slow(x, ti, scale=100.0) for x, ti in zip(ramp, t)])
    assert lag_fast < 0.3 * np.abs(out_slow[60:] - ramp[60:]).mean()
    with pytest.raises(ValueError, match="time must increase"):
        f(np.zeros(1), t[-1], scale=100.0)


def test_one_euro_passes_unscored_keypoints_and_restarts_them():
    f = OneEuroFilter()
    f(np.array([[0.0, 0.0], [0.0, 0.0]]), 0.0)
    out = f(np.array([[10.0, 10.0], [50.0, 50.0]]), 0.04, valid=np.array([True, False]))
    assert 0 < out[0, 0] < 10 and out[1].tolist() == [50.0, 50.0]
    out = f(np.array([[10.0, 10.0], [50.0, 50.0]]), 0.08, valid=np.array([True, True]))
    assert out[1].tolist() == [50.0, 50.0]  # restarted at 50, not blended with the old 0


def test_oks_matrix_equals_pycocotools():
    rng = np.random.default_rng(1)
    gt_kpts = rng.uniform(20, 180, (3, 17, 3))
    gt_kpts[:, :, 2] = 2
    areas = np.array([900.0, 2500.0, 4000.0])
    dt_kpts = gt_kpts[[1, 0, 2, 2]] + np.concatenate([rng.normal(0, 4, (4, 17, 2)), np.zeros((4, 17, 1))], axis=2)
    dt_kpts[:, :, 2] = 1.0
    dataset = {
        "images": [{"id": 1, "width": 200, "height": 200}],
        "categories": [{"id": 1, "name": "person"}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0, "area": float(a), "bbox": [0, 0, 100, 100],
             "num_keypoints": 17, "keypoints": gt_kpts[i].reshape(-1).tolist()}
            for i, a in enumerate(areas)
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        gt = pycocotools.coco.COCO()
        gt.dataset = dataset
        gt.createIndex()
        dt = gt.loadRes([{"image_id": 1, "category_id": 1, "score": 1.0 - 0.1 * i, "keypoints": k.reshape(-1).tolist()} for i, k in enumerate(dt_kpts)])
        ev = pycocotools.cocoeval.COCOeval(gt, dt, "keypoints")
        ev.params.kpt_oks_sigmas = np.array(COCO_KEYPOINT_OKS_SIGMAS)
        ev.params.imgIds = [1]
        ev._prepare()
        reference = ev.computeOks(1, 1)  # (detections by score, ground truths)
    ours = pose_oks_matrix(dt_kpts, gt_kpts, areas, COCO_KEYPOINT_OKS_SIGMAS, keypoint_thresh=0.5)
    np.testing.assert_allclose(ours, reference, rtol=1e-10)
    assert ours[0, 1] > 0.5 and ours[0, 0] < 0.1  # detection 0 is ground truth 1, moved by noise


def test_iou_matrix_equals_detectron2():
    rng = np.random.default_rng(2)
    a = rng.uniform(0, 100, (5, 4))
    b = rng.uniform(0, 100, (3, 4))
    a[:, 2:] += a[:, :2]
    b[:, 2:] += b[:, :2]
    reference = pairwise_iou(Boxes(torch.as_tensor(a)), Boxes(torch.as_tensor(b))).numpy()
    np.testing.assert_allclose(box_iou_matrix(a, b), reference, rtol=1e-6)


def test_keypoint_box():
    kp = np.array([[10.0, 20.0, 0.9], [30.0, 60.0, 0.9], [500.0, 500.0, 0.1]])
    np.testing.assert_allclose(keypoint_box(kp, 0.3, 1.5), [5.0, 10.0, 35.0, 70.0])
    assert keypoint_box(kp, 0.95, 1.0) is None


def test_bad_settings_are_errors():
    with pytest.raises(ValueError, match="TRACKING.SIMILARITY"):
        PoseTracker(similarity="centroid")
    with pytest.raises(ValueError, match="OKS sigmas"):
        PoseTracker(similarity="oks_iou")
    with pytest.raises(ValueError, match="MAX_AGE"):
        PoseTracker(similarity="iou", max_age=-1)
    with pytest.raises(ValueError, match="min_cutoff"):
        PoseTracker(similarity="iou", smoothing=(0.0, 1.0, 1.0))
