#!/usr/bin/env python3
"""Pose demo on images, folders, videos and webcams, with person ids that persist across frames.

Examples:
    # images (files, globs or folders) -> annotated images in a folder + COCO-results json
    python3 tools/demo.py --config-file configs/quickstart/hrnext_small_synthetic.yaml \
        --input images/ --output out/ --json out/poses.json \
        --opts MODEL.WEIGHTS output/quickstart/hrnext_small_synthetic/model_final.pth
    # a video -> an annotated video with the same fps and size (.mp4 / .mkv: mp4v, .avi: MJPG)
    python3 tools/demo.py --config-file CFG --video-input walk.mp4 --output walk_poses.mp4 \
        --json walk_poses.json --opts MODEL.WEIGHTS W.pth
    # person detection every 5th frame, boxes propagated from the keypoints in between; smoothing
    python3 tools/demo.py ... --opts TRACKING.DETECT_EVERY 5 TRACKING.SMOOTHING.ENABLED True
    # webcam: shown in a window (an OpenCV build with GUI), or recorded with --output cam.mp4
    python3 tools/demo.py --config-file CFG --webcam --opts MODEL.WEIGHTS W.pth
    # Keypoint R-CNN (any Detectron2 keypoint model, run by DefaultPredictor; model-zoo names work)
    python3 tools/demo.py --config-file COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x.yaml --input a.jpg \
        --output out/ --opts MODEL.WEIGHTS detectron2://COCO-Keypoints/keypoint_rcnn_R_50_FPN_3x/137849621/model_final_a6e10b.pkl
    # the exported onnxruntime pipeline (the config still gives keypoint names, skeleton, tracking)
    python3 tools/demo.py --config-file CFG --backend onnxruntime --model exported/ --video-input v.mp4 --output o.mp4

Person boxes (--boxes, top-down models): "detector" = MODEL.TOPDOWN.PERSON_DETECTOR.* (the whole
image when none is configured), "whole-image", or a json: COCO results (a detector's output, or this
demo's --json) or a COCO annotation file. Records name their frame by "frame" or "image", else by
"image_id" (= frame index of a video, or the number in an image's file name).
--json writes one record per person per frame: image_id, category_id 1, bbox (XYWH), score,
keypoints (COCO pixel convention), "frame" (videos) or "image" (images), and track_id when tracking.
Tracking (videos, webcams) is set by the TRACKING.* config keys (hrnext_d2/config.py).
"""
import argparse
import glob
import json
import os
import sys
import time
from typing import Dict, Iterator, List, Optional, Tuple

import cv2
import numpy as np
import torch
import tqdm

# Before Detectron2: importing the package ignores the dependencies' known import-time warnings
# (hrnext_d2/utils/dependency_warnings.py); main() silences the runtime ones.
from hrnext_d2.utils.dependency_warnings import silence_known_dependency_warnings  # noqa: I001
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from detectron2.data.detection_utils import read_image
from detectron2.structures import Instances
from detectron2.utils.logger import setup_logger

from hrnext_d2.config import add_hrnext_config
from hrnext_d2.engine import POSE_BACKENDS, FrameKey, VideoPosePredictor, build_person_box_source, build_pose_backend
from hrnext_d2.utils.video_io import VIDEO_CODECS, video_fourcc
from hrnext_d2.utils.visualizer import draw_tracked_poses, keypoint_drawing_metadata

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
WINDOW_NAME = "hrnext_d2 pose demo"

Frame = Tuple[FrameKey, np.ndarray, Optional[float]]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="config file, or a Detectron2 model-zoo config name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", nargs="+", metavar="PATH", help="image files, globs ('dir/*.jpg') or folders")
    src.add_argument("--video-input", metavar="FILE", help="a video file")
    src.add_argument("--webcam", action="store_true", help="read the camera --camera")
    p.add_argument("--camera", type=int, default=0, help="camera index for --webcam (default 0)")
    p.add_argument(
        "--output",
        help="images: a folder (or one file for one image); video / webcam: a video file (.mp4, .mkv, .avi) "
        "or a folder. Without it, frames are shown in a window.",
    )
    p.add_argument("--json", metavar="FILE", help="write every person of every frame here (COCO results format)")
    p.add_argument(
        "--boxes",
        default="detector",
        help="top-down person boxes: 'detector' (default), 'whole-image', or a boxes json (see above)",
    )
    p.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.5,
        help="minimum person (box) score: detector, boxes json and Keypoint R-CNN detections (default 0.5)",
    )
    p.add_argument("--keypoint-threshold", type=float, default=0.05, help="draw keypoints scoring above this")
    p.add_argument("--backend", default="auto", choices=POSE_BACKENDS, help="auto: topdown for TopDownPoseEstimator configs, else predictor")
    p.add_argument("--model", metavar="DIR", help="--backend onnxruntime: the exported model's folder")
    p.add_argument("--opts", default=[], nargs=argparse.REMAINDER, help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS w.pth")
    return p


def _config_file(name: str) -> str:
    if os.path.isfile(name):
        return name
    try:
        return model_zoo.get_config_file(name)
    except RuntimeError:
        raise FileNotFoundError(f"--config-file {name!r}: neither a file nor a Detectron2 model-zoo config name") from None


def setup_cfg(args: argparse.Namespace) -> CfgNode:
    """Config file + the confidence threshold on every person score key + --opts; CPU without CUDA."""
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(_config_file(args.config_file))
    thr = float(args.confidence_threshold)
    cfg.MODEL.TOPDOWN.PERSON_DETECTOR.SCORE_THRESH = thr
    cfg.DATASETS.DET_SCORE_THRESH = thr
    cfg.MODEL.ROI_HEADS.SCORE_THRESH_TEST = thr
    cfg.MODEL.RETINANET.SCORE_THRESH_TEST = thr
    cfg.merge_from_list(list(args.opts))
    if cfg.MODEL.DEVICE.startswith("cuda") and not torch.cuda.is_available():
        cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    return cfg


# ------------------------------------------------------------------------------------------ inputs
def expand_inputs(inputs: List[str]) -> List[str]:
    """Image paths from files, globs and folders (folders: their images, sorted by name)."""
    paths = []
    for item in inputs:
        item = os.path.expanduser(item)
        if os.path.isdir(item):
            found = sorted(os.path.join(item, f) for f in os.listdir(item) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not found:
                raise FileNotFoundError(f"--input {item!r}: a folder with no image ({', '.join(IMAGE_EXTENSIONS)})")
        elif os.path.isfile(item):
            found = [item]
        else:
            found = sorted(glob.glob(item))
            if not found:
                raise FileNotFoundError(f"--input {item!r}: no such file, folder or glob match")
        paths += found
    return paths


def image_frames(paths: List[str]) -> Iterator[Frame]:
    for path in paths:
        try:
            image = read_image(path, format="BGR")
        except Exception as e:  # PIL's errors vary by format
            raise OSError(f"--input {path!r}: cannot read the image ({e})") from e
        yield FrameKey(image=path), np.ascontiguousarray(image), None


def capture_frames(capture: cv2.VideoCapture, fps: float, live: bool) -> Iterator[Frame]:
    """Frames of a video file (timestamps = index / fps) or a camera (wall-clock timestamps): one
    loop for both, so the webcam path is the one the tests run on files."""
    index = 0
    start = time.monotonic()
    while True:
        ok, frame = capture.read()
        if not ok:
            return
        timestamp = time.monotonic() - start if live else index / fps
        yield FrameKey(frame=index), frame, timestamp
        index += 1


# ----------------------------------------------------------------------------------------- outputs
class ImageWriter:
    """Annotated images: into a folder (same base names), or one file for a single image."""

    def __init__(self, output: str, num_images: int):
        is_file = os.path.splitext(output)[1].lower() in IMAGE_EXTENSIONS and not os.path.isdir(output)
        if is_file and num_images != 1:
            raise ValueError(f"--output {output!r} is one image file but there are {num_images} images: give a folder")
        self.output, self.is_file = output, is_file
        os.makedirs(os.path.dirname(os.path.abspath(output)) if is_file else output, exist_ok=True)
        self.paths: List[str] = []

    def write(self, key: FrameKey, drawn_bgr: np.ndarray) -> None:
        path = self.output if self.is_file else os.path.join(self.output, os.path.basename(key.image))
        if not cv2.imwrite(path, drawn_bgr):
            raise OSError(f"cannot write {path!r}")
        self.paths.append(path)

    def close(self) -> None:
        pass


class VideoWriter:
    """An annotated video with the input's fps and frame size."""

    def __init__(self, path: str, fps: float, size: Tuple[int, int]):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.fourcc = video_fourcc(path)
        self.writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*self.fourcc), float(fps), size)
        if not self.writer.isOpened():
            raise OSError(f"--output {path!r}: OpenCV cannot write this video (codec {self.fourcc!r})")
        self.size = size
        self.paths = [path]

    def write(self, key: FrameKey, drawn_bgr: np.ndarray) -> None:
        if (drawn_bgr.shape[1], drawn_bgr.shape[0]) != self.size:
            raise ValueError(f"frame {key.frame} is {drawn_bgr.shape[1]}x{drawn_bgr.shape[0]}, the video {self.size}")
        self.writer.write(drawn_bgr)

    def close(self) -> None:
        self.writer.release()


class WindowShow:
    """Frames in a window (ESC stops); needs an OpenCV build with GUI (not opencv-python-headless)."""

    def __init__(self, wait_ms: int):
        self.wait_ms = wait_ms
        self.paths: List[str] = []
        self.stopped = False

    def write(self, key: FrameKey, drawn_bgr: np.ndarray) -> None:
        try:
            cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
            cv2.imshow(WINDOW_NAME, drawn_bgr)
            self.stopped = cv2.waitKey(self.wait_ms) == 27
        except cv2.error as e:
            raise RuntimeError(
                "this OpenCV build cannot show windows (opencv-python-headless?): pass --output to write the "
                f"results to files ({e.msg.strip() if hasattr(e, 'msg') else e})"
            ) from None

    def close(self) -> None:
        try:
            cv2.destroyAllWindows()
        except cv2.error:
            pass


def video_output_path(output: str, source_name: str) -> str:
    if os.path.splitext(output)[1].lower() in VIDEO_CODECS:
        return output
    return os.path.join(output, os.path.splitext(os.path.basename(source_name))[0] + ".mp4")


def person_records(instances: Instances, key: FrameKey, image_id: int) -> List[Dict]:
    """COCO results records of one frame (keypoints in COCO's pixel convention: Detectron2's - 0.5)."""
    records = []
    if len(instances) == 0:
        return records
    kpts = instances.pred_keypoints.numpy().astype(np.float64).copy()
    kpts[:, :, :2] -= 0.5
    boxes = instances.pred_boxes.tensor.numpy().astype(np.float64)
    scores = instances.scores.numpy().astype(np.float64)
    ids = instances.track_ids.tolist() if instances.has("track_ids") else None
    for i in range(len(instances)):
        x0, y0, x1, y1 = boxes[i].tolist()
        rec = {
            "image_id": image_id,
            "category_id": 1,
            "bbox": [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
            "score": round(float(scores[i]), 5),
            "keypoints": [round(float(v), 2) for v in kpts[i].reshape(-1)],
        }
        if key.frame is not None:
            rec["frame"] = int(key.frame)
        else:
            rec["image"] = key.image
        if ids is not None:
            rec["track_id"] = int(ids[i])
        records.append(rec)
    return records


def _image_id(key: FrameKey, index: int) -> int:
    if key.frame is not None:
        return int(key.frame)
    stem = os.path.splitext(os.path.basename(key.image))[0]
    return int(stem) if stem.isdigit() else index


# -------------------------------------------------------------------------------------------- loop
def run_frames(
    frames: Iterator[Frame],
    predictor: VideoPosePredictor,
    metadata,
    sink,
    keypoint_threshold: float,
    total: Optional[int],
    desc: str,
) -> Dict:
    """The one frame loop (images, videos, webcams): predict, draw, write; returns the records and timings."""
    records: List[Dict] = []
    model_s = 0.0
    start = time.perf_counter()
    n = 0
    with tqdm.tqdm(total=total, desc=desc, unit="frame", file=sys.stderr, dynamic_ncols=True) as bar:
        try:
            for key, frame, timestamp in frames:
                t0 = time.perf_counter()
                instances = predictor(frame, key, timestamp)
                model_s += time.perf_counter() - t0
                records += person_records(instances, key, _image_id(key, n))
                if sink is not None:
                    drawn = draw_tracked_poses(frame[:, :, ::-1], instances, metadata, keypoint_threshold)
                    sink.write(key, np.ascontiguousarray(drawn[:, :, ::-1]))
                n += 1
                bar.update(1)
                if getattr(sink, "stopped", False):
                    break
        except KeyboardInterrupt:  # Ctrl-C ends a webcam run: what was seen is still written
            pass
    seconds = time.perf_counter() - start
    return {"records": records, "frames": n, "seconds": seconds, "model_seconds": model_s}


def main(argv: Optional[List[str]] = None) -> Dict:
    silence_known_dependency_warnings()
    args = get_parser().parse_args(argv)
    setup_logger(name="fvcore")
    setup_logger()
    setup_logger(name="hrnext_d2")
    logger = setup_logger(name="demo")
    if args.model and args.backend != "onnxruntime":
        raise SystemExit("--model is the exported model's folder of --backend onnxruntime")
    cfg = setup_cfg(args)
    if not cfg.MODEL.WEIGHTS and args.backend != "onnxruntime":
        logger.warning("MODEL.WEIGHTS is empty: the keypoints are those of an untrained model")

    backend = build_pose_backend(cfg, args.backend, args.model)
    box_source = None
    if backend.accepts_boxes:
        box_source = build_person_box_source(args.boxes, cfg, detector=backend.person_detector)
    elif args.boxes != "detector":
        raise SystemExit(f"--boxes {args.boxes!r}: backend {backend.name!r} finds its own persons and takes no boxes")
    metadata = keypoint_drawing_metadata(cfg)

    capture = None
    sink = None
    try:
        if args.input:
            paths = expand_inputs(args.input)
            predictor = VideoPosePredictor.from_config(cfg, backend, box_source, track=False)
            frames, total, desc = image_frames(paths), len(paths), "images"
            sink = ImageWriter(args.output, len(paths)) if args.output else (None if args.json else WindowShow(0))
        else:
            source = args.video_input if args.video_input else args.camera
            if args.video_input and not os.path.isfile(args.video_input):
                raise FileNotFoundError(f"--video-input {args.video_input!r}: no such file")
            capture = cv2.VideoCapture(source)
            if not capture.isOpened():
                raise OSError(f"cannot open {'--video-input ' + repr(source) if args.video_input else f'camera {source}'}")
            fps = capture.get(cv2.CAP_PROP_FPS)
            if not fps or not np.isfinite(fps) or fps <= 0:
                logger.warning(f"the source reports no frame rate ({fps}); using 30 fps")
                fps = 30.0
            size = (int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)))
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if args.video_input else 0
            predictor = VideoPosePredictor.from_config(cfg, backend, box_source, track=True, fps=fps)
            frames = capture_frames(capture, fps, live=bool(args.webcam))
            total, desc = (count if count > 0 else None), ("video" if args.video_input else "webcam")
            if args.output:
                sink = VideoWriter(video_output_path(args.output, args.video_input or "webcam"), fps, size)
            elif not args.json or args.webcam:
                sink = WindowShow(1)
        result = run_frames(frames, predictor, metadata, sink, args.keypoint_threshold, total, desc)
    finally:
        if capture is not None:
            capture.release()
        if sink is not None:
            sink.close()

    if args.json:
        os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(result["records"], f)
    n, seconds = result["frames"], result["seconds"]
    tracks = len({r["track_id"] for r in result["records"] if "track_id" in r})
    logger.info(
        f"{n} frame(s), {len(result['records'])} person(s)"
        + (f", {tracks} track(s)" if tracks else "")
        + f" in {seconds:.1f} s: {n / max(seconds, 1e-9):.2f} frames/s in all, "
        f"{n / max(result['model_seconds'], 1e-9):.2f} frames/s for the poses (backend {backend.name}, "
        f"{predictor.num_detection_frames} detection frame(s))"
    )
    for path in getattr(sink, "paths", []):
        print(f"Wrote {path}")
    if args.json:
        print(f"Wrote {args.json}")
    result.update(outputs=list(getattr(sink, "paths", [])), json=args.json, backend=backend.name)
    return result


if __name__ == "__main__":
    main()
