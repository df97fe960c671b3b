"""The synthetic crowd video: determinism, motion, the written file and its ground truth."""
import json

import cv2
import numpy as np
import pytest

from hrnext_d2.data.datasets.synthetic_video import (
    SyntheticCrowdVideoSpec,
    render_synthetic_crowd_video,
    write_synthetic_crowd_video,
)
from hrnext_d2.utils.video_io import video_fourcc

SPEC = SyntheticCrowdVideoSpec(num_frames=6, fps=10.0, seed=3, image_size=(160, 120), num_people=2)


def test_same_spec_same_frames_and_figures_move():
    a = list(render_synthetic_crowd_video(SPEC))
    b = list(render_synthetic_crowd_video(SPEC))
    assert all(np.array_equal(x[0], y[0]) for x, y in zip(a, b))
    first, last = a[0][1], a[-1][1]
    assert [p["track_id"] for p in first] == [0, 1]
    for p0, p1 in zip(first, last):
        shift = p1["keypoints"][:, :2] - p0["keypoints"][:, :2]
        seen = (p0["keypoints"][:, 2] > 0) & (p1["keypoints"][:, 2] > 0)
        assert np.abs(shift[seen, 0]).mean() > 5  # walking
        assert np.abs(shift[seen] - shift[seen][0]).max() < 1e-6  # the whole figure moves together
    other = list(render_synthetic_crowd_video(SyntheticCrowdVideoSpec(num_frames=1, seed=4, image_size=(160, 120))))
    assert not np.array_equal(other[0][0], a[0][0])


def test_visible_keypoints_lie_on_their_figure_colour():
    """Visibility 2 = drawn on top: the pixel differs from the plain background there."""
    (frame, persons), = render_synthetic_crowd_video(SyntheticCrowdVideoSpec(num_frames=1, seed=5, num_people=1))
    empty, _ = next(iter(render_synthetic_crowd_video(SyntheticCrowdVideoSpec(num_frames=1, seed=5, num_people=1, min_person_height=0.01, max_person_height=0.01))))
    kp = persons[0]["keypoints"]
    xs, ys = np.round(kp[kp[:, 2] == 2, :2]).astype(int).T
    assert len(xs) >= 10
    assert (np.abs(frame[ys, xs].astype(int) - empty[ys, xs].astype(int)).max(axis=1) > 30).mean() > 0.8


def test_written_video_and_annotations(tmp_path):
    path, ann = str(tmp_path / "v.mp4"), str(tmp_path / "v.json")
    persons = write_synthetic_crowd_video(SPEC, path, ann)
    cap = cv2.VideoCapture(path)
    assert cap.get(cv2.CAP_PROP_FPS) == pytest.approx(SPEC.fps)
    assert (cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)) == (160, 120)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    assert len(frames) == SPEC.num_frames
    rendered = [f for f, _ in render_synthetic_crowd_video(SPEC)]
    assert np.abs(frames[2].astype(int) - rendered[2][:, :, ::-1].astype(int)).mean() < 12  # mp4v keeps the picture
    data = json.load(open(ann))
    assert [im["frame"] for im in data["images"]] == list(range(SPEC.num_frames))
    by_frame = {}
    for a in data["annotations"]:
        by_frame.setdefault(a["image_id"], []).append(a)
    for f, ps in enumerate(persons):
        assert [a["track_id"] for a in by_frame[f]] == [p["track_id"] for p in ps]
        np.testing.assert_allclose(np.array(by_frame[f][0]["keypoints"]).reshape(17, 3), ps[0]["keypoints"], atol=0.01)


def test_codecs_by_extension():
    assert video_fourcc("a.mp4") == "mp4v" and video_fourcc("b.AVI") == "MJPG"
    with pytest.raises(ValueError, match="a.mov"):
        video_fourcc("a.mov")
