"""On-device batched affine crops: the tensor counterpart of mmpose's ``cv2.warpAffine`` crops.

Inference crops every person box of an image in one ``grid_sample`` call on the model's device
instead of one ``cv2.warpAffine`` per person on the CPU. With ``align_corners=True`` and the
sampling grid expressed in pixel indices (integer = pixel centre), ``grid_sample``'s bilinear
interpolation with zero padding computes what OpenCV's INTER_LINEAR with a constant-0 border
computes; snapping to OpenCV's 1/32-pixel grid and its 8-bit rounding makes uint8 crops identical
to cv2's, so the model and a cv2-based runtime (the exported onnxruntime pipeline) see the same
pixels.
"""
from typing import Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["invert_affine", "warp_affine_crops", "normalize_crops"]


def invert_affine(matrices: np.ndarray) -> np.ndarray:
    """Invert (N, 2, 3) affine matrices in float64, as ``cv2.warpAffine`` does internally."""
    m = np.asarray(matrices, dtype=np.float64).reshape(-1, 2, 3)
    a, b, c = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    d, e, f = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    det = a * e - b * d
    if np.any(det == 0):
        raise ValueError("invert_affine: singular affine matrix (zero-size box?)")
    inv_det = 1.0 / det
    out = np.empty_like(m)
    out[:, 0, 0] = e * inv_det
    out[:, 0, 1] = -b * inv_det
    out[:, 1, 0] = -d * inv_det
    out[:, 1, 1] = a * inv_det
    out[:, 0, 2] = -(out[:, 0, 0] * c + out[:, 0, 1] * f)
    out[:, 1, 2] = -(out[:, 1, 0] * c + out[:, 1, 1] * f)
    return out


def warp_affine_crops(
    image: torch.Tensor,
    matrices: Union[np.ndarray, torch.Tensor],
    output_size: Sequence[int],
    round_to_uint8: bool = False,
    cv2_subpixel: bool = True,
) -> torch.Tensor:
    """Crop N affine windows out of one image in one batched bilinear warp.

    Args:
        image: (C, H, W) tensor, uint8 or floating point, on any device.
        matrices: (N, 2, 3) forward affine matrices mapping image pixel coordinates to crop pixel
            coordinates (what ``cv2.warpAffine`` takes), e.g. from ``geometry.get_affine_transform``.
        output_size: crop size (w, h).
        round_to_uint8: round and clamp the result to 0..255 like OpenCV's 8-bit output (mmpose warps
            uint8 images). With ``cv2_subpixel`` too, the crops of an integer-valued image equal
            cv2.warpAffine's (INTER_LINEAR, constant-0 border) exactly.
        cv2_subpixel: snap source coordinates to OpenCV's 1/32-pixel fixed-point grid (what
            cv2.warpAffine samples); on real photos this brings the mean difference to cv2 from
            ~0.1 to ~0.01 grey levels before rounding, to 0 with ``round_to_uint8``.

    Returns:
        (N, C, h, w) float32 crops (float64 if the image is float64), unnormalised; pixels whose
        source lies outside the image are 0 (constant border), partially outside ones blend with 0.
    """
    if image.dim() != 3:
        raise ValueError(f"warp_affine_crops: image must be (C, H, W), got shape {tuple(image.shape)}")
    out_w, out_h = int(output_size[0]), int(output_size[1])
    c, in_h, in_w = image.shape
    mats = matrices.detach().cpu().numpy() if isinstance(matrices, torch.Tensor) else np.asarray(matrices)
    mats = mats.reshape(-1, 2, 3)
    n = mats.shape[0]
    dtype = image.dtype if image.is_floating_point() else torch.float32
    if n == 0:
        return image.new_zeros((0, c, out_h, out_w), dtype=dtype)

    # Source pixel of every crop pixel: the inverse matrix applied to the crop's pixel grid in
    # float64, optionally snapped to OpenCV's 1/32-pixel grid exactly as cv2.warpAffine rounds it,
    # then turned into grid_sample's [-1, 1] coordinates (align_corners=True: -1 and +1 are the
    # centres of the first and last pixels).
    inv_t = torch.from_numpy(invert_affine(mats)).to(device=image.device)
    xs = torch.arange(out_w, dtype=torch.float64, device=image.device)
    ys = torch.arange(out_h, dtype=torch.float64, device=image.device)
    if cv2_subpixel:
        src_x = _cv2_fixed_point(inv_t[:, 0], xs, ys)
        src_y = _cv2_fixed_point(inv_t[:, 1], xs, ys)
    else:
        src_x = inv_t[:, 0, 0, None, None] * xs + inv_t[:, 0, 1, None, None] * ys[:, None] + inv_t[:, 0, 2, None, None]
        src_y = inv_t[:, 1, 0, None, None] * xs + inv_t[:, 1, 1, None, None] * ys[:, None] + inv_t[:, 1, 2, None, None]
    grid = torch.stack(
        [src_x * (2.0 / max(in_w - 1, 1)) - 1.0, src_y * (2.0 / max(in_h - 1, 1)) - 1.0], dim=-1
    )  # (N, h, w, 2)
    # Stack the N grids vertically and sample the single image once: no N-fold copy of the image.
    # cv2's 8-bit result is computed in float64 (see below), everything else in the image's dtype.
    exact_8bit = round_to_uint8 and cv2_subpixel
    sample_dtype = torch.float64 if exact_8bit else dtype
    grid = grid.reshape(1, n * out_h, out_w, 2).to(sample_dtype)

    src = image.to(sample_dtype).unsqueeze(0)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    out = out.reshape(c, n, out_h, out_w).permute(1, 0, 2, 3).contiguous()
    if exact_8bit:
        # cv2's 8-bit bilinear warp: on its 1/32-pixel grid the four weights are integers in units
        # of 1/1024 (k * l / 1024, summing to exactly 1), the weighted sum is an integer number of
        # 1/1024 grey levels, rounded half up. float64 sampling lands within 1e-7 of that multiple
        # of 1/1024 on integer-valued images: snap to it, then round half up (torch.round would
        # round ties to even, the 1-level differences on ~0.5% of pixels).
        out = torch.floor(torch.round(out * 1024.0) / 1024.0 + 0.5).clamp_(0, 255)
    elif round_to_uint8:
        out = out.round_().clamp_(0, 255)
    return out.to(dtype)


def _cv2_fixed_point(row: torch.Tensor, xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    """One coordinate of cv2.warpAffine's source points, (N, h, w) float64 in pixels.

    OpenCV computes ``(round(m0*x*1024) + round((m1*y + m2)*1024) + 16) >> 5`` in integers
    (AB_BITS 10, INTER_BITS 5) and samples at that multiple of 1/32 pixel.
    """
    a = torch.round(row[:, 0, None] * xs * 1024.0).to(torch.int64)  # (N, w)
    b = torch.round((row[:, 1, None] * ys + row[:, 2, None]) * 1024.0).to(torch.int64) + 16  # (N, h)
    fixed = torch.div(b[:, :, None] + a[:, None, :], 32, rounding_mode="floor")  # arithmetic >> 5
    return fixed.to(torch.float64) / 32.0


def normalize_crops(crops: torch.Tensor, pixel_mean: torch.Tensor, pixel_std: torch.Tensor) -> torch.Tensor:
    """(crops - mean) / std with (C,) or (C, 1, 1) mean and std on the 0-255 scale."""
    return (crops - pixel_mean.view(1, -1, 1, 1)) / pixel_std.view(1, -1, 1, 1)


def crop_output_size(image_size: Sequence[int]) -> Tuple[int, int]:
    """(w, h) as ints, with a clear error for a malformed INPUT.TOPDOWN.IMAGE_SIZE."""
    if len(image_size) != 2 or min(image_size) <= 0:
        raise ValueError(f"INPUT.TOPDOWN.IMAGE_SIZE must be [width, height] > 0, got {list(image_size)}")
    return int(image_size[0]), int(image_size[1])
