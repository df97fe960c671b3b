"""Which codec a video file is written with: what opencv-python-headless can encode.

Checked with opencv-python-headless 4.10: "mp4v" (MPEG-4 part 2) writes .mp4 and .mkv, "MJPG" .avi;
H.264 ("avc1", "H264", "X264") has no encoder in those wheels. Every file written this way reads
back with cv2.VideoCapture with its frame count, size and fps.
"""
import os

__all__ = ["VIDEO_CODECS", "video_fourcc"]

VIDEO_CODECS = {".mp4": "mp4v", ".mkv": "mp4v", ".avi": "MJPG"}


def video_fourcc(path: str) -> str:
    """The four-character codec for a video file, by its extension (an error names the others)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_CODECS:
        raise ValueError(f"video file {path!r}: the extension must be one of {sorted(VIDEO_CODECS)}")
    return VIDEO_CODECS[ext]
