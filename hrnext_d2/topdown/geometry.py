"""Crop geometry of top-down pose estimation, reproducing mmpose 0.23 bit for bit.

One implementation serves the training mapper (box -> crop, augmentation, joint warping), the
inference crops and the heatmap decoder, so training and test use the same pixel convention:
pixel-index coordinates (integer = pixel centre), sizes written (w, h), scale in units of 200 px.

The float32 / float64 mix of every formula follows mmpose under numpy 1.x promotion rules (e.g. a
float32 numpy scalar times a Python float is float64, a float32 array times any scalar stays
float32); comments name the quirk a line reproduces (numbers refer to docs/mmpose_quirks.md).
"""
from typing import Optional, Sequence, Tuple, Union

import cv2
import numpy as np

__all__ = [
    "PIXEL_STD",
    "box_xywh_to_center_scale",
    "get_affine_transform",
    "get_affine_transforms",
    "get_udp_warp_matrix",
    "affine_transform_points",
    "transform_preds",
    "warp_image",
    "warp_joints",
    "fliplr_joints",
    "fliplr_center",
    "half_body_center_scale",
    "apply_half_body",
    "random_scale_rotation",
    "scale_areas",
]

PIXEL_STD = 200.0

ArrayLike = Union[np.ndarray, Sequence[float]]


def _size2(value: ArrayLike, name: str) -> Tuple[float, float]:
    v = np.asarray(value).reshape(-1)
    if v.shape != (2,):
        raise ValueError(f"{name} must be a (w, h) pair, got {value!r}")
    return v[0].item(), v[1].item()


def box_xywh_to_center_scale(
    boxes_xywh: ArrayLike,
    image_size: ArrayLike = (192, 256),
    padding: float = 1.25,
    jitter_rng: Optional[np.random.Generator] = None,
    jitter_prob: float = 0.0,
) -> Tuple[np.ndarray, np.ndarray]:
    """mmpose ``_xywh2cs``: boxes (N, 4) or (4,) -> centres and scales, float32 (N, 2) or (2,).

    The box is only ever enlarged to the crop aspect ratio ``image_size[0] / image_size[1]``
    (quirk 2), the centre is never clipped. The scale is rounded twice (quirk 1): the aspect-fixed
    w, h (float64) / 200 are cast to float32 and only then multiplied by ``padding`` in float32.

    With ``jitter_rng`` (training set construction), each centre moves with probability
    ``jitter_prob`` by 0.4 * (U(0,1) - 0.5) * (w, h) of the raw box, added in float64 to the float32
    centre as mmpose's in-place ``center +=``. Draws: U (N,) then U (N, 2), always both.
    """
    boxes = np.asarray(boxes_xywh, dtype=np.float64)
    single = boxes.ndim == 1
    if boxes.shape[-1:] != (4,) or boxes.ndim > 2:
        raise ValueError(f"boxes_xywh must have shape (N, 4) or (4,), got {boxes.shape}")
    boxes = boxes.reshape(-1, 4)
    iw, ih = _size2(image_size, "image_size")
    aspect_ratio = float(np.float64(iw) / np.float64(ih))
    x, y, w, h = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]

    # center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float32): float64 sum, one cast.
    centers = np.stack([x + w * 0.5, y + h * 0.5], axis=1).astype(np.float32)

    if jitter_rng is not None and jitter_prob > 0:
        u = jitter_rng.random(len(boxes))
        r = jitter_rng.random((len(boxes), 2))
        jitter = 0.4 * (r - 0.5) * np.stack([w, h], axis=1)
        sel = u < jitter_prob
        # `center += float64` on a float32 array: float64 add, cast back to float32.
        centers[sel] = (centers[sel].astype(np.float64) + jitter[sel]).astype(np.float32)

    # Aspect fix in float64 (only grows the shorter side; equality leaves both untouched).
    wide = w > aspect_ratio * h
    narrow = (~wide) & (w < aspect_ratio * h)
    w_fix = np.where(narrow, h * aspect_ratio, w)
    h_fix = np.where(wide, w * 1.0 / aspect_ratio, h)
    scales = np.stack([w_fix / PIXEL_STD, h_fix / PIXEL_STD], axis=1).astype(np.float32)
    scales = (scales * padding).astype(np.float32)  # float32 array * scalar: float32 (quirk 1)
    if single:
        return centers[0], scales[0]
    return centers, scales


def _affine_points(
    center: np.ndarray, scale: np.ndarray, rot: np.ndarray, output_size: np.ndarray, shift: np.ndarray
) -> Tuple[np.ndarray, np.ndarray]:
    """The three float32 point pairs of mmpose ``get_affine_transform`` for N boxes (quirk 4)."""
    n = center.shape[0]
    scale_tmp = scale * PIXEL_STD  # float32 array
    src_w = scale_tmp[:, 0].astype(np.float64)  # `src_w * -0.5` on a float32 scalar is float64
    dst_w = output_size[:, 0].astype(np.float64)
    dst_h = output_size[:, 1].astype(np.float64)

    rot_rad = np.pi * rot / 180
    sn, cs = np.sin(rot_rad), np.cos(rot_rad)
    px, py = np.zeros(n), src_w * -0.5
    src_dir = np.stack([px * cs - py * sn, px * sn + py * cs], axis=1)  # rotate_point, float64
    shift_px = scale_tmp.astype(np.float64) * shift  # float32 * float64 array -> float64

    src = np.zeros((n, 3, 2), dtype=np.float32)
    src[:, 0] = center.astype(np.float64) + shift_px
    src[:, 1] = (center.astype(np.float64) + src_dir) + shift_px
    d = src[:, 0] - src[:, 1]  # _get_3rd_point, all float32
    src[:, 2] = src[:, 1] + np.stack([-d[:, 1], d[:, 0]], axis=1)

    dst = np.zeros((n, 3, 2), dtype=np.float32)
    dst[:, 0] = np.stack([dst_w * 0.5, dst_h * 0.5], axis=1)
    dst[:, 1] = np.stack([dst_w * 0.5, dst_h * 0.5 + dst_w * -0.5], axis=1)
    d = dst[:, 0] - dst[:, 1]
    dst[:, 2] = dst[:, 1] + np.stack([-d[:, 1], d[:, 0]], axis=1)
    return src, dst


def get_affine_transforms(
    centers: ArrayLike,
    scales: ArrayLike,
    rots_deg: Union[float, ArrayLike],
    output_size: ArrayLike,
    shift: ArrayLike = (0.0, 0.0),
    inv: bool = False,
) -> np.ndarray:
    """Batched mmpose ``get_affine_transform``: N boxes -> (N, 2, 3) float64 matrices.

    Only scale[0] and the output width set the (uniform) zoom; scale[1] is ignored (quirk 3).
    The matrix is solved by ``cv2.getAffineTransform`` from float32-rounded point pairs (quirk 4);
    the inverse is solved from the swapped pairs, not by inverting. Positive rotation turns the crop
    content counter-clockwise on screen (quirk 5). ``output_size`` may be (w, h) or (N, 2).
    """
    c = np.asarray(centers, dtype=np.float32).reshape(-1, 2)
    s = np.asarray(scales, dtype=np.float32).reshape(-1, 2)
    n = max(len(c), len(s))
    c = np.broadcast_to(c, (n, 2))
    s = np.broadcast_to(s, (n, 2))
    r = np.broadcast_to(np.asarray(rots_deg, dtype=np.float64).reshape(-1), (n,))
    out = np.broadcast_to(np.asarray(output_size).reshape(-1, 2), (n, 2))
    sh = np.asarray(shift, dtype=np.float64).reshape(-1, 2)
    sh = np.broadcast_to(sh, (n, 2))
    src, dst = _affine_points(c, s, r, out, sh)
    trans = np.empty((n, 2, 3), dtype=np.float64)
    for i in range(n):
        if inv:
            trans[i] = cv2.getAffineTransform(dst[i], src[i])
        else:
            trans[i] = cv2.getAffineTransform(src[i], dst[i])
    return trans


def get_affine_transform(
    center: ArrayLike,
    scale: ArrayLike,
    rot_deg: float,
    output_size: ArrayLike,
    shift: ArrayLike = (0.0, 0.0),
    inv: bool = False,
) -> np.ndarray:
    """mmpose ``get_affine_transform`` for one box: (2, 3) float64, image -> crop (crop -> image if inv)."""
    return get_affine_transforms(center, scale, rot_deg, output_size, shift, inv)[0]


def get_udp_warp_matrix(
    rot_deg: float, center: ArrayLike, scale: ArrayLike, image_size: ArrayLike
) -> np.ndarray:
    """mmpose UDP crop matrix ``get_warp_matrix(r, c * 2.0, image_size - 1.0, s * 200.0)``, float32 (2, 3).

    Note that its rotation sign is opposite to ``get_affine_transform`` (mmpose behaviour; harmless
    for symmetric random rotation).
    """
    c = np.asarray(center, dtype=np.float32).reshape(2)
    s = np.asarray(scale, dtype=np.float32).reshape(2)
    size_input = c * 2.0
    size_dst = np.asarray(image_size, dtype=np.float64).reshape(2) - 1.0
    size_target = s * PIXEL_STD
    theta = np.deg2rad(rot_deg)
    cos, sin = float(np.cos(theta)), float(np.sin(theta))
    scale_x = size_dst[0] / size_target[0]
    scale_y = size_dst[1] / size_target[1]
    m = np.zeros((2, 3), dtype=np.float32)
    m[0, 0] = cos * scale_x
    m[0, 1] = -sin * scale_x
    m[0, 2] = scale_x * (-0.5 * size_input[0] * cos + 0.5 * size_input[1] * sin + 0.5 * size_target[0])
    m[1, 0] = sin * scale_y
    m[1, 1] = cos * scale_y
    m[1, 2] = scale_y * (-0.5 * size_input[0] * sin - 0.5 * size_input[1] * cos + 0.5 * size_target[1])
    return m


def affine_transform_points(points: ArrayLike, trans: ArrayLike) -> np.ndarray:
    """Apply (2, 3) matrices to (x, y) points in float64, as mmpose ``affine_transform`` (t @ [x, y, 1]).

    ``trans`` is (2, 3) for points (..., 2), or (N, 2, 3) for points (N, ..., 2) (one matrix per box).
    """
    p = np.asarray(points, dtype=np.float64)
    t = np.asarray(trans, dtype=np.float64)
    if p.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2), got {p.shape}")
    if t.shape == (2, 3):
        t = t.reshape((1,) * (p.ndim - 1) + (2, 3))
    elif t.ndim == 3 and t.shape[1:] == (2, 3) and p.ndim >= 2 and p.shape[0] == t.shape[0]:
        t = t.reshape((t.shape[0],) + (1,) * (p.ndim - 2) + (2, 3))
    else:
        raise ValueError(f"trans must be (2, 3) or (N, 2, 3) matching points (N, ..., 2); got {t.shape}, {p.shape}")
    x, y = p[..., 0], p[..., 1]
    out = np.empty(np.broadcast_shapes(p.shape, t.shape[:-2] + (2,)), dtype=np.float64)
    out[..., 0] = t[..., 0, 0] * x + t[..., 0, 1] * y + t[..., 0, 2]
    out[..., 1] = t[..., 1, 0] * x + t[..., 1, 1] * y + t[..., 1, 2]
    return out


def transform_preds(
    coords: ArrayLike,
    centers: ArrayLike,
    scales: ArrayLike,
    heatmap_size: ArrayLike,
    use_udp: bool = False,
) -> np.ndarray:
    """Heatmap coordinates -> image pixels (mmpose 0.23 ``transform_preds``), float32.

    ``coords`` (N, K, 2+) or (K, 2+) with centres / scales (N, 2) or (2,). Quirk 13, float32 in this
    order: s2 = float32(s * 200); sx = float32(float64(s2_w) / W) (the division runs on numpy scalars,
    hence in float64); x = (x_hm * sx + c_x) - s2_w * 0.5. Heatmap index 0 maps to the box edge.
    UDP divides by (W - 1) instead of W.
    """
    xy = np.asarray(coords)[..., :2].astype(np.float32)
    single = xy.ndim == 2
    if single:
        xy = xy[None]
    if xy.ndim != 3:
        raise ValueError(f"coords must have shape (N, K, 2) or (K, 2), got {np.shape(coords)}")
    c = np.asarray(centers, dtype=np.float32).reshape(-1, 2)
    s2 = np.asarray(scales, dtype=np.float32).reshape(-1, 2) * np.float32(PIXEL_STD)
    hw, hh = _size2(heatmap_size, "heatmap_size")
    den_w, den_h = (hw - 1.0, hh - 1.0) if use_udp else (float(hw), float(hh))
    sx = (s2[:, 0].astype(np.float64) / den_w).astype(np.float32)
    sy = (s2[:, 1].astype(np.float64) / den_h).astype(np.float32)
    out = np.empty(np.broadcast_shapes(xy.shape, (len(c), 1, 2)), dtype=np.float32)
    out[..., 0] = (xy[..., 0] * sx[:, None] + c[:, None, 0]) - s2[:, None, 0] * np.float32(0.5)
    out[..., 1] = (xy[..., 1] * sy[:, None] + c[:, None, 1]) - s2[:, None, 1] * np.float32(0.5)
    return out[0] if single else out


def warp_image(image: np.ndarray, trans: ArrayLike, output_size: ArrayLike) -> np.ndarray:
    """The crop: ``cv2.warpAffine`` INTER_LINEAR, constant-0 border, exactly mmpose ``TopDownAffine`` (quirk 6)."""
    w, h = _size2(output_size, "output_size")
    return cv2.warpAffine(
        np.ascontiguousarray(image),
        np.asarray(trans, dtype=np.float64),
        (int(w), int(h)),
        flags=cv2.INTER_LINEAR,
    )


def _visibility_column(joints_visible: ArrayLike, k: int) -> np.ndarray:
    v = np.asarray(joints_visible)
    if v.ndim == 2:
        v = v[:, 0]
    if v.shape != (k,):
        raise ValueError(f"joints_visible must be (K,) or (K, C) with K={k}, got {np.shape(joints_visible)}")
    return v


def warp_joints(
    joints: ArrayLike, joints_visible: ArrayLike, trans: ArrayLike, use_udp: bool = False
) -> np.ndarray:
    """Joints (K, 2+) -> crop coordinates, as mmpose ``TopDownAffine``; returns a float32 copy.

    Without UDP only joints with visibility > 0 move (quirk 7): invisible ones keep their image
    coordinates (harmless, their target weight is 0). UDP (``warp_affine_joints``) moves all.
    The float64 product is stored back into the float32 joints, as mmpose's in-place assignment.
    """
    j = np.array(joints, dtype=np.float32, copy=True)
    if j.ndim != 2 or j.shape[1] < 2:
        raise ValueError(f"joints must have shape (K, 2) or (K, 3), got {j.shape}")
    moved = affine_transform_points(j[:, :2], trans)
    if use_udp:
        j[:, :2] = moved
    else:
        vis = _visibility_column(joints_visible, len(j)) > 0.0
        j[vis, :2] = moved[vis]
    return j


def fliplr_joints(
    joints: ArrayLike, joints_visible: ArrayLike, img_width: int, flip_pairs: Sequence[Sequence[int]]
) -> Tuple[np.ndarray, np.ndarray]:
    """mmpose ``fliplr_joints``: swap left/right pairs, x -> img_width - 1 - x, then joints *= visibility.

    ``joints`` (K, 2 or 3), ``joints_visible`` (K,), (K, 1) or (K, 3); both are returned flipped with
    their input shapes. The final multiplication zeroes invisible joints (mmpose behaviour).
    """
    j = np.asarray(joints)
    v = np.asarray(joints_visible)
    if j.ndim != 2 or len(v) != len(j):
        raise ValueError(f"fliplr_joints: joints (K, C) and joints_visible (K, ...) needed, got {j.shape}, {v.shape}")
    if img_width <= 0:
        raise ValueError(f"fliplr_joints: img_width must be > 0, got {img_width}")
    jf = j.copy()
    vf = v.copy()
    for left, right in flip_pairs:
        jf[left], jf[right] = j[right], j[left]
        vf[left], vf[right] = v[right], v[left]
    jf[:, 0] = img_width - 1 - jf[:, 0]
    vb = vf if vf.ndim == 2 else vf[:, None]
    jf = jf * vb
    return jf, vf


def fliplr_center(center: ArrayLike, img_width: int) -> np.ndarray:
    """Box centre under a horizontal image flip, as mmpose ``TopDownRandomFlip``: x -> width - x - 1."""
    c = np.array(center, copy=True)
    c[..., 0] = img_width - c[..., 0] - 1
    return c


def half_body_center_scale(
    joints: ArrayLike,
    joints_visible: ArrayLike,
    upper_body_ids: Sequence[int],
    image_size: ArrayLike,
    rng: np.random.Generator,
) -> Tuple[Optional[np.ndarray], Optional[np.ndarray]]:
    """mmpose 0.23 ``TopDownHalfBodyTransform.half_body_transform``: centre / scale of one body half.

    Visible joints (visibility > 0) are split into upper (``upper_body_ids``) and lower (the rest).
    The upper half is taken when ``rng.standard_normal() < 0.5`` (mmpose draws ``randn``, so this is
    P ~= 0.69, not 0.5) and it has more than 2 joints, else the lower half if it has more than 2,
    else the upper half; fewer than 2 selected joints -> (None, None). The joints' box is enlarged to
    the crop aspect ratio, scale = float32(w / 200, h / 200) * 1.5.
    """
    j = np.asarray(joints, dtype=np.float32)
    vis = _visibility_column(joints_visible, len(j)) > 0
    upper_set = set(int(i) for i in upper_body_ids)
    upper = [i for i in range(len(j)) if vis[i] and i in upper_set]
    lower = [i for i in range(len(j)) if vis[i] and i not in upper_set]
    if rng.standard_normal() < 0.5 and len(upper) > 2:
        selected = upper
    elif len(lower) > 2:
        selected = lower
    else:
        selected = upper
    if len(selected) < 2:
        return None, None
    sel = j[selected]
    center = sel.mean(axis=0)[:2]
    left_top = np.amin(sel, axis=0)
    right_bottom = np.amax(sel, axis=0)
    w = right_bottom[0] - left_top[0]
    h = right_bottom[1] - left_top[1]
    iw, ih = _size2(image_size, "image_size")
    aspect_ratio = iw / ih
    if w > aspect_ratio * h:
        h = w * 1.0 / aspect_ratio
    elif w < aspect_ratio * h:
        w = h * aspect_ratio
    scale = np.array([w / PIXEL_STD, h / PIXEL_STD], dtype=np.float32)
    scale = scale * 1.5
    return center, scale


def apply_half_body(
    joints: ArrayLike,
    joints_visible: ArrayLike,
    center: np.ndarray,
    scale: np.ndarray,
    upper_body_ids: Sequence[int],
    image_size: ArrayLike,
    rng: np.random.Generator,
    prob: float = 0.3,
    min_joints: int = 8,
) -> Tuple[np.ndarray, np.ndarray]:
    """mmpose ``TopDownHalfBodyTransform.__call__``: with more than ``min_joints`` visible joints and
    probability ``prob``, replace (center, scale) by ``half_body_center_scale``; else return them."""
    v = _visibility_column(joints_visible, len(np.asarray(joints)))
    if np.sum(v) > min_joints and rng.random() < prob:
        c, s = half_body_center_scale(joints, joints_visible, upper_body_ids, image_size, rng)
        if c is not None and s is not None:
            return c, s
    return center, scale


def random_scale_rotation(
    scale: ArrayLike,
    rng: np.random.Generator,
    scale_factor: float = 0.5,
    rot_factor: float = 40.0,
    rot_prob: float = 0.6,
) -> Tuple[np.ndarray, float]:
    """mmpose ``TopDownGetRandomScaleRotation``: scale * clip(1 + sf * N, 1 - sf, 1 + sf) (always), and
    rotation clip(rf * N, -2 rf, 2 rf) degrees when U <= rot_prob, else 0. Draws: N, N, U."""
    s = np.asarray(scale, dtype=np.float32)
    sf, rf = scale_factor, rot_factor
    s_factor = np.clip(rng.standard_normal() * sf + 1, 1 - sf, 1 + sf)
    s = (s * s_factor).astype(np.float32)  # float32 array * scalar stays float32
    r_factor = float(np.clip(rng.standard_normal() * rf, -rf * 2, rf * 2))
    r = r_factor if rng.random() <= rot_prob else 0.0
    return s, r


def scale_areas(scales: ArrayLike) -> np.ndarray:
    """Person areas as mmpose's result dict computes them (quirk 14): float32(s_w * 200) *
    float32(s_h * 200) in float32, for scales (N, 2) -> (N,). OKS-NMS uses these areas."""
    s200 = (np.asarray(scales, dtype=np.float32).reshape(-1, 2) * np.float32(PIXEL_STD)).astype(np.float32)
    return s200[:, 0] * s200[:, 1]
