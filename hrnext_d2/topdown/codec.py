"""Heatmap codec of top-down pose estimation: MSRA / UDP targets and argmax / DARK / UDP decoding.

Reproduces mmpose 0.23 (``TopDownGenerateTarget``, ``keypoints_from_heatmaps``, ``flip_back`` and the
head's flip shift) bit for bit under numpy 1.x promotion rules. Quirk numbers refer to
docs/mmpose_quirks.md. Decoding is vectorised over persons and joints; only the DARK blur loops
(one ``cv2.GaussianBlur`` per channel, which exact equality needs).
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np

from .geometry import transform_preds

__all__ = [
    "HeatmapCodec",
    "get_max_preds",
    "refine_default",
    "refine_dark",
    "refine_dark_udp",
    "gaussian_blur",
    "udp_blur",
    "flip_back",
    "combine_flip",
]

POST_PROCESS_CHOICES = ("default", "unbiased", "udp", "none")


def _to_numpy_f32(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float32)


def get_max_preds(heatmaps: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """mmpose ``_get_max_preds``: integer argmax (x, y) float32 (N, K, 2) and raw max (N, K, 1).

    First maximum in row-major order; (-1, -1) where the maximum is <= 0; the max is returned
    unchanged (may be 0 or negative; quirk 10).
    """
    hm = np.asarray(heatmaps)
    n, k, _, w = hm.shape
    flat = hm.reshape(n, k, -1)
    idx = np.argmax(flat, axis=2).reshape(n, k, 1)
    maxvals = np.amax(flat, axis=2).reshape(n, k, 1)
    preds = np.tile(idx, (1, 1, 2)).astype(np.float32)
    preds[:, :, 0] = preds[:, :, 0] % w
    preds[:, :, 1] = preds[:, :, 1] // w
    preds = np.where(np.tile(maxvals, (1, 1, 2)) > 0.0, preds, -1).astype(np.float32)
    return preds, maxvals


def _gather(hm: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """hm[n, k, ys[n, k], xs[n, k]] with indices clipped into the map (callers mask the result)."""
    n, k, h, w = hm.shape
    ys = np.clip(ys, 0, h - 1)
    xs = np.clip(xs, 0, w - 1)
    return hm[np.arange(n)[:, None], np.arange(k)[None, :], ys, xs]


def refine_default(heatmaps: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """The quarter-offset rule (quirk 11): +-0.25 toward the higher neighbour, per axis, where
    1 < px < W-1 and 1 < py < H-1 (column 1 excluded, column W-2 included); sign(0) = 0."""
    hm = np.asarray(heatmaps, dtype=np.float32)
    _, _, h, w = hm.shape
    out = np.array(preds, dtype=np.float32, copy=True)
    px = out[..., 0].astype(np.int64)  # int() truncation of integer-valued floats
    py = out[..., 1].astype(np.int64)
    ok = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1)
    dx = _gather(hm, py, px + 1) - _gather(hm, py, px - 1)  # float32 differences
    dy = _gather(hm, py + 1, px) - _gather(hm, py - 1, px)
    shift = np.sign(np.stack([dx, dy], axis=-1)) * np.float32(0.25)
    out[ok] += shift[ok]
    return out


_BLUR_TILES_PER_CALL = 1024


def _blur_tiles(tiles: np.ndarray, kernel: int) -> np.ndarray:
    """cv2.GaussianBlur of each (h, w) tile of ``tiles`` (M, h, w) float32, with tiles stacked
    vertically into one image per call. Callers pad every tile vertically by (kernel-1)/2 so no
    output row reads another tile; as the row layout is unchanged, each output pixel is the same
    float32 sum as a per-tile call (checked bit for bit against the per-channel loop)."""
    m, h, w = tiles.shape
    out = np.empty_like(tiles)
    for start in range(0, m, _BLUR_TILES_PER_CALL):
        chunk = np.ascontiguousarray(tiles[start : start + _BLUR_TILES_PER_CALL])
        blurred = cv2.GaussianBlur(chunk.reshape(-1, w), (kernel, kernel), 0)
        out[start : start + len(chunk)] = blurred.reshape(chunk.shape)
    return out


def _check_kernel(kernel: int) -> None:
    if int(kernel) != kernel or kernel <= 0 or kernel % 2 != 1:
        raise ValueError(f"DARK kernel must be a positive odd integer, got {kernel}")


def gaussian_blur(heatmaps: np.ndarray, kernel: int = 11) -> np.ndarray:
    """mmpose ``_gaussian_blur``: cv2.GaussianBlur on each channel zero-padded by (kernel-1)/2, then
    rescaled so its max equals the original max (NaN for an all-zero channel; quirk 12). float32."""
    _check_kernel(kernel)
    hm = np.asarray(heatmaps, dtype=np.float32)
    n, k, h, w = hm.shape
    b = (kernel - 1) // 2
    if b == 0:
        return hm.copy()
    padded = np.zeros((n * k, h + 2 * b, w + 2 * b), dtype=np.float32)
    padded[:, b:-b, b:-b] = hm.reshape(n * k, h, w)
    out = _blur_tiles(padded, kernel)[:, b:-b, b:-b].reshape(n, k, h, w)
    origin_max = hm.reshape(n, k, -1).max(axis=-1)
    blurred_max = out.reshape(n, k, -1).max(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        out *= (origin_max / blurred_max)[..., None, None]  # float32 ratio, as mmpose's in-place *=
    return out


def refine_dark(heatmaps: np.ndarray, preds: np.ndarray, kernel: int = 11) -> np.ndarray:
    """DARK (mmpose ``_gaussian_blur`` + ``_taylor``, quirk 12), vectorised over persons and joints.

    Start from the raw argmax; blur, log(max(., 1e-10)); where 1 < px < W-2 and 1 < py < H-2 take a
    Newton step -H^-1 g (unclamped; skipped only if det == 0). Neighbour differences of the float32
    log-map are float32 (incl. the 4-term dxy sum), everything after them float64, and the result is
    stored back as float32(coord + offset), as mmpose's scalar arithmetic does under numpy 1.x.
    """
    hm = gaussian_blur(heatmaps, kernel)
    with np.errstate(invalid="ignore"):
        logm = np.log(np.maximum(hm, 1e-10))
    _, _, h, w = logm.shape
    out = np.array(preds, dtype=np.float32, copy=True)
    px = out[..., 0].astype(np.int64)
    py = out[..., 1].astype(np.int64)
    ok = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    if not ok.any():
        return out

    def at(dy: int, dx: int) -> np.ndarray:
        return _gather(logm, py + dy, px + dx)[ok]

    c = at(0, 0).astype(np.float64)
    dx = 0.5 * (at(0, 1) - at(0, -1)).astype(np.float64)
    dy = 0.5 * (at(1, 0) - at(-1, 0)).astype(np.float64)
    dxx = 0.25 * ((at(0, 2).astype(np.float64) - 2 * c) + at(0, -2).astype(np.float64))
    dxy = 0.25 * (((at(1, 1) - at(-1, 1)) - at(1, -1)) + at(-1, -1)).astype(np.float64)
    dyy = 0.25 * ((at(2, 0).astype(np.float64) - 2 * c) + at(-2, 0).astype(np.float64))
    det_ok = dxx * dyy - dxy**2 != 0
    m = len(c)
    hessian = np.empty((m, 2, 2))
    hessian[:, 0, 0], hessian[:, 0, 1], hessian[:, 1, 0], hessian[:, 1, 1] = dxx, dxy, dxy, dyy
    offset = np.zeros((m, 2))
    if det_ok.any():
        inv = np.linalg.inv(hessian[det_ok])
        g = np.stack([dx, dy], axis=1)[det_ok]
        neg = -inv
        # (-H^-1) @ g, written out per row as matmul of a (2, 2) by a (2, 1) does.
        offset[det_ok, 0] = neg[:, 0, 0] * g[:, 0] + neg[:, 0, 1] * g[:, 1]
        offset[det_ok, 1] = neg[:, 1, 0] * g[:, 0] + neg[:, 1, 1] * g[:, 1]
    sel = out[ok]
    out[ok] = (sel.astype(np.float64) + offset).astype(np.float32)
    return out


def udp_blur(heatmaps: np.ndarray, kernel: int = 11) -> np.ndarray:
    """The blur of mmpose ``post_dark_udp``: cv2.GaussianBlur of each raw channel with cv2's default
    reflect-101 border (no zero padding, no rescaling); float32 (N, K, H, W)."""
    _check_kernel(kernel)
    hm = np.array(heatmaps, dtype=np.float32, copy=True)
    n, k, h, w = hm.shape
    b = (kernel - 1) // 2
    if 0 < b < h:
        # Reflect-101 rows (cv2's default border) added by hand so the tiles can be stacked.
        padded = np.pad(hm.reshape(n * k, h, w), ((0, 0), (b, b), (0, 0)), mode="reflect")
        return _blur_tiles(padded, kernel)[:, b:-b].reshape(n, k, h, w)
    for i in range(n):
        for j in range(k):
            cv2.GaussianBlur(hm[i, j], (kernel, kernel), 0, hm[i, j])
    return hm


def refine_dark_udp(heatmaps: np.ndarray, preds: np.ndarray, kernel: int = 11) -> np.ndarray:
    """mmpose ``post_dark_udp`` (UDP decoding): in-place cv2.GaussianBlur (reflect-101 border), clip to
    [0.001, 50], log, edge-pad by 1, one Newton step with Hessian + eps(float32) * I. float32 out."""
    hm = udp_blur(heatmaps, kernel)
    n, k, h, w = hm.shape
    np.clip(hm, 0.001, 50, hm)
    np.log(hm, hm)
    pad = np.pad(hm, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge").reshape(-1)
    coords = np.array(preds, dtype=np.float32, copy=True)
    # mmpose sums this flat index in float32; integer arithmetic gives the same index while it is
    # below 2**24 (about 5000 channels at 64x48) and stays right beyond.
    px = coords[..., 0].astype(np.int64)
    py = coords[..., 1].astype(np.int64)
    index = px + 1 + (py + 1) * (w + 2) + (w + 2) * (h + 2) * np.arange(0, n * k).reshape(-1, k)
    index = index.reshape(-1, 1)
    i_ = pad[index]
    ix1 = pad[index + 1]
    iy1 = pad[index + w + 2]
    ix1y1 = pad[index + w + 3]
    ix1_y1_ = pad[index - w - 3]
    ix1_ = pad[index - 1]
    iy1_ = pad[index - 2 - w]
    dx = 0.5 * (ix1 - ix1_)
    dy = 0.5 * (iy1 - iy1_)
    derivative = np.concatenate([dx, dy], axis=1).reshape(n, k, 2, 1)
    dxx = ix1 - 2 * i_ + ix1_
    dyy = iy1 - 2 * i_ + iy1_
    dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
    hessian = np.concatenate([dxx, dxy, dxy, dyy], axis=1).reshape(n, k, 2, 2)
    hessian = np.linalg.inv(hessian + np.finfo(np.float32).eps * np.eye(2))
    coords -= np.einsum("ijmn,ijnk->ijmk", hessian, derivative).reshape(n, k, 2)
    return coords


def flip_back(heatmaps_flipped: Any, flip_pairs: Sequence[Sequence[int]], shift: bool = True) -> Any:
    """Heatmaps of the horizontally flipped crop -> original orientation (numpy or torch, (N, K, H, W)).

    mmpose ``flip_back`` (swap paired channels, then column j takes column W-1-j), and with ``shift``
    the head's ``shift_heatmap``: column j takes column j-1 for j >= 1, column 0 keeps its own value
    and the last column is lost (quirk 15; a net +1 column for the flipped prediction).
    """
    if heatmaps_flipped.ndim != 4:
        raise ValueError(f"flip_back expects (N, K, H, W) heatmaps, got shape {tuple(heatmaps_flipped.shape)}")
    k = heatmaps_flipped.shape[1]
    perm = list(range(k))
    for left, right in flip_pairs:
        if not (0 <= left < k and 0 <= right < k):
            raise ValueError(f"flip pair ({left}, {right}) out of range for {k} keypoints")
        perm[left], perm[right] = right, left
    if isinstance(heatmaps_flipped, np.ndarray):
        out = heatmaps_flipped[:, perm][..., ::-1]
        if shift:
            out = np.concatenate([out[..., :1], out[..., :-1]], axis=-1)
        return np.ascontiguousarray(out)
    import torch  # lazy: the onnxruntime pipeline uses this module without torch installed

    index = torch.as_tensor(perm, device=heatmaps_flipped.device)
    out = heatmaps_flipped.index_select(1, index).flip(-1)
    if shift:
        out = torch.cat([out[..., :1], out[..., :-1]], dim=-1)
    return out


def combine_flip(orig: Any, flipped: Any, flip_pairs: Sequence[Sequence[int]], shift: bool = True) -> Any:
    """Flip-test average (orig + flip_back(flipped)) * 0.5, in the input dtype (float32 in mmpose)."""
    return (orig + flip_back(flipped, flip_pairs, shift)) * 0.5


def _paste_clipped(channel: np.ndarray, patch: np.ndarray, ul: List[int], br: List[int]) -> None:
    """Write ``patch`` (placed with its corners at ``ul``/``br``) into ``channel``, clipped to it."""
    h, w = channel.shape
    g_x = max(0, -ul[0]), min(br[0], w) - ul[0]
    g_y = max(0, -ul[1]), min(br[1], h) - ul[1]
    img_x = max(0, ul[0]), min(br[0], w)
    img_y = max(0, ul[1]), min(br[1], h)
    channel[img_y[0] : img_y[1], img_x[0] : img_x[1]] = patch[g_y[0] : g_y[1], g_x[0] : g_x[1]]


class HeatmapCodec:
    """Keypoints <-> heatmaps for one crop size: mmpose 0.23's MSRA (or UDP) targets and decoding.

    ``post_process``: "default" (argmax + quarter offset), "unbiased" (DARK with ``dark_kernel``),
    "udp" (UDP decoding, same as ``use_udp=True``), or "none" (plain argmax). ``use_udp`` switches
    both the targets and the decoding to mmpose's UDP variants (the crops must then use
    ``geometry.get_udp_warp_matrix``).
    """

    def __init__(
        self,
        image_size: Sequence[int] = (192, 256),
        heatmap_size: Optional[Sequence[int]] = None,
        sigma: float = 2.0,
        post_process: Optional[str] = "default",
        dark_kernel: int = 11,
        use_udp: bool = False,
    ):
        iw, ih = (int(v) for v in image_size)
        if heatmap_size is None:
            if iw % 4 or ih % 4:
                raise ValueError(f"image_size {tuple(image_size)} must be divisible by 4 (heatmap stride 4)")
            heatmap_size = (iw // 4, ih // 4)
        self.image_size = (iw, ih)
        self.heatmap_size = tuple(int(v) for v in heatmap_size)
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.sigma = sigma
        pp = "none" if post_process in (None, False) else str(post_process).lower()
        if pp not in POST_PROCESS_CHOICES:
            raise ValueError(f"post_process must be one of {POST_PROCESS_CHOICES}, got {post_process!r}")
        if int(dark_kernel) != dark_kernel or dark_kernel <= 0 or dark_kernel % 2 != 1:
            raise ValueError(f"dark_kernel must be a positive odd integer, got {dark_kernel}")
        self.post_process = pp
        self.dark_kernel = int(dark_kernel)
        self.use_udp = bool(use_udp) or pp == "udp"

    @classmethod
    def from_config(cls, cfg: Any) -> "HeatmapCodec":
        """Build from INPUT.TOPDOWN.IMAGE_SIZE and MODEL.TOPDOWN.{SIGMA, POST_PROCESS, DARK_KERNEL, USE_UDP}."""
        size = list(cfg.INPUT.TOPDOWN.IMAGE_SIZE)
        if len(size) != 2 or size[0] % 4 or size[1] % 4:
            raise ValueError(f"INPUT.TOPDOWN.IMAGE_SIZE must be [w, h] divisible by 4, got {size}")
        t = cfg.MODEL.TOPDOWN
        for key, ok in (
            ("SIGMA", t.SIGMA > 0),
            ("POST_PROCESS", str(t.POST_PROCESS).lower() in POST_PROCESS_CHOICES),
            ("DARK_KERNEL", int(t.DARK_KERNEL) > 0 and int(t.DARK_KERNEL) % 2 == 1),
        ):
            if not ok:
                raise ValueError(f"MODEL.TOPDOWN.{key} has an invalid value: {getattr(t, key)!r}")
        return cls(
            image_size=size,
            sigma=float(t.SIGMA),
            post_process=t.POST_PROCESS,
            dark_kernel=int(t.DARK_KERNEL),
            use_udp=bool(t.USE_UDP),
        )

    def to_dict(self) -> Dict[str, Any]:
        """The constructor arguments as plain json values (written into an exported model's json)."""
        return {
            "image_size": list(self.image_size),
            "heatmap_size": list(self.heatmap_size),
            "sigma": float(self.sigma),
            "post_process": self.post_process,
            "dark_kernel": self.dark_kernel,
            "use_udp": self.use_udp,
        }

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "HeatmapCodec":
        return cls(**d)

    def __repr__(self) -> str:
        return (
            f"HeatmapCodec(image_size={self.image_size}, heatmap_size={self.heatmap_size}, sigma={self.sigma}, "
            f"post_process={self.post_process!r}, dark_kernel={self.dark_kernel}, use_udp={self.use_udp})"
        )

    # ----------------------------------------------------------------------------------- encode
    def encode(self, joints_crop: np.ndarray, joints_visible: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Crop joints (K, 2 or 3) and visibility (K,) or (K, C) -> target (K, H, W), weight (K, 1), float32.

        MSRA (quirks 8-9): centre cell int(x / stride + 0.5) (truncation toward zero), an unnormalised
        float32 Gaussian (peak 1) on a (6 sigma + 1)^2 patch clipped to the map; the weight is the
        visibility, zeroed only when the patch lies fully outside (ul >= W or br < 0), and the blob is
        drawn only when the weight is > 0.5. UDP: stride (image - 1) / (heatmap - 1), sub-pixel centre.
        """
        joints = np.asarray(joints_crop)
        vis = np.asarray(joints_visible)
        if joints.ndim != 2 or joints.shape[1] < 2:
            raise ValueError(f"joints_crop must have shape (K, 2) or (K, 3), got {joints.shape}")
        vis = vis[:, 0] if vis.ndim == 2 else vis
        if vis.shape != (len(joints),):
            raise ValueError(f"joints_visible must be (K,) or (K, C) with K={len(joints)}, got {np.shape(joints_visible)}")
        if self.use_udp:
            return self._encode_udp(joints, vis)
        return self._encode_msra(joints, vis)

    def _gaussian_patch(self, x0: float, y0: float) -> Tuple[np.ndarray, Any]:
        sigma = self.sigma
        size = 2 * sigma * 3 + 1
        x = np.arange(0, size, 1, np.float32)
        y = x[:, None]
        return np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma**2)), size

    def _encode_msra(self, joints: np.ndarray, vis: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        w, h = self.heatmap_size
        k = len(joints)
        target_weight = np.zeros((k, 1), dtype=np.float32)
        target = np.zeros((k, h, w), dtype=np.float32)
        tmp_size = self.sigma * 3
        stride_x = self.image_size[0] / w
        stride_y = self.image_size[1] / h
        size = 2 * tmp_size + 1
        half = size // 2
        g, _ = self._gaussian_patch(half, half)
        for j in range(k):
            target_weight[j] = vis[j]
            if target_weight[j] == 0:  # skipped joints end with weight 0 and no blob, as in mmpose
                continue
            mu_x = int(float(joints[j, 0]) / stride_x + 0.5)
            mu_y = int(float(joints[j, 1]) / stride_y + 0.5)
            ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
            br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
            if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
                target_weight[j] = 0
            if target_weight[j] > 0.5:
                _paste_clipped(target[j], g, ul, br)
        return target, target_weight

    def _encode_udp(self, joints: np.ndarray, vis: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        w, h = self.heatmap_size
        k = len(joints)
        target_weight = np.ones((k, 1), dtype=np.float32)
        target_weight[:, 0] = vis
        target = np.zeros((k, h, w), dtype=np.float32)
        tmp_size = self.sigma * 3
        stride_x = (self.image_size[0] - 1.0) / (w - 1.0)
        stride_y = (self.image_size[1] - 1.0) / (h - 1.0)
        for j in range(k):
            if target_weight[j] == 0:
                continue
            mu_x_ac = float(joints[j, 0]) / stride_x
            mu_y_ac = float(joints[j, 1]) / stride_y
            mu_x = int(mu_x_ac + 0.5)
            mu_y = int(mu_y_ac + 0.5)
            ul = [int(mu_x - tmp_size), int(mu_y - tmp_size)]
            br = [int(mu_x + tmp_size + 1), int(mu_y + tmp_size + 1)]
            if ul[0] >= w or ul[1] >= h or br[0] < 0 or br[1] < 0:
                target_weight[j] = 0
                continue
            size = 2 * tmp_size + 1
            x0 = size // 2 + (mu_x_ac - mu_x)
            y0 = size // 2 + (mu_y_ac - mu_y)
            g, _ = self._gaussian_patch(np.float64(x0), np.float64(y0))
            if target_weight[j] > 0.5:
                _paste_clipped(target[j], g, ul, br)
        return target, target_weight

    # ----------------------------------------------------------------------------------- decode
    def decode_heatmap_coords(self, heatmaps: Any) -> Tuple[np.ndarray, np.ndarray]:
        """(N, K, H, W) heatmaps -> refined heatmap coordinates float32 (N, K, 2) and maxvals (N, K, 1)."""
        hm = _to_numpy_f32(heatmaps)
        if hm.ndim != 4:
            raise ValueError(f"heatmaps must have shape (N, K, H, W), got {hm.shape}")
        preds, maxvals = get_max_preds(hm)
        if self.use_udp:
            preds = refine_dark_udp(hm, preds, self.dark_kernel)
        elif self.post_process == "unbiased":
            preds = refine_dark(hm, preds, self.dark_kernel)
        elif self.post_process == "default":
            preds = refine_default(hm, preds)
        return preds, maxvals

    def decode(self, heatmaps: Any, centers: np.ndarray, scales: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """mmpose ``keypoints_from_heatmaps``: (N, K, H, W) -> image coordinates float32 (N, K, 2)
        (mmpose pixel-index convention) and maxvals float32 (N, K, 1)."""
        hm = _to_numpy_f32(heatmaps)
        coords, maxvals = self.decode_heatmap_coords(hm)
        n, _, h, w = hm.shape
        c = np.asarray(centers, dtype=np.float32).reshape(-1, 2)
        s = np.asarray(scales, dtype=np.float32).reshape(-1, 2)
        if len(c) != n or len(s) != n:
            raise ValueError(f"decode: {n} heatmaps but {len(c)} centers and {len(s)} scales")
        preds = transform_preds(coords, c, s, (w, h), use_udp=self.use_udp)
        return preds, maxvals

    # Flip-test helpers as methods too, so a model holding a codec needs nothing else.
    flip_back = staticmethod(flip_back)
    combine_flip = staticmethod(combine_flip)
