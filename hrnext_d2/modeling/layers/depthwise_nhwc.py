"""Depthwise convolution on channels-last CPU tensors with shared or per-sample kernels, and the
loader of the compiled CPU kernels (csrc/: depthwise conv, fused GELU, NHWC BatchNorm backward).

Why: on the CPU, oneDNN runs HRNeXt's dynamic (per-sample) depthwise convs only as one grouped conv
with the batch folded into B*C groups, has no fast path for the dilated 7x7 depthwise conv, and its
depthwise backward is slow; together they are the largest part of HRNeXt's CPU time. The C kernels
in `csrc/depthwise_nhwc.c` compute the same sums with the channels innermost (vectorised by the
compiler). They are compiled on first use with the system C compiler (a few seconds) into a cache
folder (`$HRNEXT_D2_CACHE`, default `~/.cache/hrnext_d2`); without a compiler, or with
HRNEXT_D2_CPU_KERNELS=0, every call falls back to PyTorch's own convolution (same function).
"""
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

__all__ = ["depthwise_conv2d", "pointwise_depthwise_gelu", "pointwise_residual_", "cpu_kernels_available", "cpu_kernels_usable"]

logger = logging.getLogger(__name__)

_CSRC = Path(__file__).with_name("csrc")
_SOURCES = (_CSRC / "depthwise_nhwc.c",)
_CFLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-std=c99", "-ffp-contract=fast"]
_lock = threading.Lock()
_lib: Optional[ctypes.CDLL] = None
_tried = False

IntPair = Union[int, Tuple[int, int]]


def _cpu_signature() -> str:
    """CPU model and features (the library is built for this CPU with -march=native)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
        lines = [ln for ln in info.splitlines() if ln.startswith(("model name", "flags"))][:2]
        return "\n".join(lines)
    except OSError:
        return platform.processor() or platform.machine()


def _compile(cc: str, out: Path) -> None:
    """Build the library into a temporary file, then move it into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=str(out.parent)) as tmp:
        lib = os.path.join(tmp, "lib.so")
        subprocess.run([cc, *_CFLAGS, "-shared", *map(str, _SOURCES), "-o", lib, "-lm"],
                       check=True, capture_output=True, text=True)
        os.replace(lib, out)  # atomic: concurrent processes never load a half-written file


def _load() -> Optional[ctypes.CDLL]:
    """The compiled kernels, building them on first use; None when they cannot be had."""
    global _lib, _tried
    if _tried:
        return _lib
    with _lock:
        if _tried:
            return _lib
        _tried = True
        if os.environ.get("HRNEXT_D2_CPU_KERNELS", "1") == "0":
            return None
        cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
        if cc is None:
            logger.warning("No C compiler found: HRNeXt depthwise convs use PyTorch's slower CPU path")
            return None
        key = hashlib.sha1(
            "\n".join([*(p.read_text() for p in _SOURCES), cc, " ".join(_CFLAGS), _cpu_signature()]).encode()
        ).hexdigest()[:16]
        cache = Path(os.environ.get("HRNEXT_D2_CACHE", Path.home() / ".cache" / "hrnext_d2"))
        path = cache / f"depthwise_nhwc_{key}.so"
        try:
            if not path.exists():
                logger.info(f"Compiling HRNeXt CPU depthwise kernels into {path}")
                _compile(cc, path)
            lib = ctypes.CDLL(str(path))
        except (OSError, subprocess.CalledProcessError) as e:
            detail = getattr(e, "stderr", "") or str(e)
            logger.warning(f"HRNeXt CPU depthwise kernels unavailable ({detail.strip()[:300]}); using PyTorch's path")
            return None
        p, i64p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64)
        lib.hrnext_dw_forward.argtypes = [p, p, p, p, p, i64p, ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.hrnext_pw_dw_gelu.argtypes = [p] * 7 + [ctypes.c_int64] * 6 + [ctypes.c_int]
        lib.hrnext_pw_dw_gelu.restype = None
        lib.hrnext_pw_residual.argtypes = [p] * 5 + [ctypes.c_int64] * 5
        lib.hrnext_pw_residual.restype = None
        lib.hrnext_dw_backward_weight.argtypes = [p, p, p, i64p, ctypes.c_int64]
        lib.hrnext_bn_backward_nhwc.argtypes = [p, p, p, p, p, p, p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64]
        for fn in (lib.hrnext_dw_forward, lib.hrnext_dw_backward_weight, lib.hrnext_bn_backward_nhwc):
            fn.restype = None
        _lib = lib
        return _lib


def cpu_kernels_available() -> bool:
    """True when the compiled CPU kernels are in use (built on first call)."""
    return _load() is not None


def _pair(v: IntPair) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _ptr(t: Optional[torch.Tensor]) -> Optional[int]:
    return None if t is None else t.data_ptr()


class _DepthwiseNHWC(torch.autograd.Function):
    """Autograd of the C kernels (stride 1). weight: (C, 1, kh, kw) shared or (B, C, kh, kw) per
    sample; bias: None, (C,) or (B, C)."""

    @staticmethod
    def forward(ctx, x, weight, bias, per_sample, padding, dilation, gelu=False, input_bias=None):
        y, xc, w_taps, dims = _run_forward(x, weight, bias, per_sample, padding, dilation, gelu, input_bias)
        ctx.save_for_backward(xc, w_taps)
        ctx.meta = (per_sample, bias is not None and bias.dim() == 2, bias is not None, tuple(weight.shape), dims)
        return y

    @staticmethod
    def backward(ctx, gy):
        lib = _load()
        xc, w_taps = ctx.saved_tensors
        per_sample, bias_per_sample, has_bias, w_shape, dims = ctx.meta
        B, H, W, C, kh, kw, ph, pw, dh, dw, Ho, Wo = dims
        gy = gy.contiguous(memory_format=torch.channels_last)
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            # stride 1: the input gradient is the conv of gy with the flipped kernel
            flipped = w_taps.flip(-2).contiguous()
            qh, qw = dh * (kh - 1) - ph, dw * (kw - 1) - pw
            gx = torch.empty((B, C, H, W), dtype=gy.dtype, memory_format=torch.channels_last)
            lib.hrnext_dw_forward(gy.data_ptr(), flipped.data_ptr(), None, None, gx.data_ptr(),
                                  _shape(B, Ho, Wo, C, kh, kw, qh, qw, dh, dw, H, W), int(per_sample), 0, 0)
        if ctx.needs_input_grad[1]:
            chunks = max(1, min(Ho, (torch.get_num_threads() + B - 1) // B))
            part = torch.empty((B, chunks, kh * kw, C), dtype=gy.dtype)
            lib.hrnext_dw_backward_weight(gy.data_ptr(), xc.data_ptr(), part.data_ptr(), _shape(*dims), chunks)
            g = part.sum(1)  # (B, taps, C)
            gw = g.transpose(1, 2).reshape(w_shape) if per_sample else g.sum(0).t().reshape(w_shape)
        if has_bias and ctx.needs_input_grad[2]:
            gb = gy.sum((2, 3)) if bias_per_sample else gy.sum((0, 2, 3))
        return gx, gw, gb, None, None, None, None, None


def _run_forward(x, weight, bias, per_sample, padding, dilation, gelu, input_bias):
    """The forward C kernel: (y, x as read, the taps-last weights, the shape tuple)."""
    lib = _load()
    B, C, H, W = x.shape
    kh, kw = weight.shape[-2:]
    (ph, pw), (dh, dw) = padding, dilation
    Ho, Wo = H + 2 * ph - dh * (kh - 1), W + 2 * pw - dw * (kw - 1)
    xc = x.contiguous(memory_format=torch.channels_last)
    w_taps = _taps_last(weight, B, C, per_sample)
    b = None if bias is None else bias.contiguous()
    ib = None if input_bias is None else input_bias.contiguous()
    y = torch.empty((B, C, Ho, Wo), dtype=x.dtype, memory_format=torch.channels_last)
    dims = (B, H, W, C, kh, kw, ph, pw, dh, dw, Ho, Wo)
    lib.hrnext_dw_forward(xc.data_ptr(), w_taps.data_ptr(), _ptr(b), _ptr(ib), y.data_ptr(), _shape(*dims),
                          int(per_sample), int(b is not None and b.dim() == 2), int(gelu))
    return y, xc, w_taps, dims


def _taps_last(weight: torch.Tensor, B: int, C: int, per_sample: bool) -> torch.Tensor:
    """(C, 1, kh, kw) -> (taps, C); (B, C, kh, kw) -> (B, taps, C), contiguous."""
    taps = weight.shape[-2] * weight.shape[-1]
    if per_sample:
        return weight.reshape(B, C, taps).transpose(1, 2).contiguous()
    return weight.reshape(C, taps).t().contiguous()


def _shape(*dims: int):
    return (ctypes.c_int64 * 12)(*dims)


def cpu_kernels_usable(x: torch.Tensor) -> bool:
    """Will `depthwise_conv2d` run the compiled kernels for this input (float32 CPU tensor, eager
    mode, no tracing / export / compilation / autocast; stride-1 convs)?"""
    return _use_kernels(x, x)


def _use_kernels(x: torch.Tensor, weight: torch.Tensor) -> bool:
    if x.device.type != "cpu" or x.dtype != torch.float32 or weight.dtype != torch.float32:
        return False
    if x.numel() == 0:  # an empty batch (e.g. no ROI): PyTorch's ops handle it
        return False
    if torch.jit.is_tracing() or torch.jit.is_scripting() or torch.onnx.is_in_onnx_export():
        return False
    if torch.compiler.is_compiling():
        return False
    if torch.is_autocast_enabled("cpu"):
        return False
    return _load() is not None


def depthwise_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    stride: IntPair = 1,
    padding: IntPair = 0,
    dilation: IntPair = 1,
    gelu: bool = False,
    input_bias: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Depthwise conv of x (B, C, H, W). weight (C, 1, kh, kw) is shared by the batch, weight
    (B, C, kh, kw) gives each sample its own kernel; bias (C,) or (B, C). Equal to
    ``F.conv2d(x, weight, bias, stride, padding, dilation, groups=C)`` (per sample: of each sample
    with its kernel), followed by the exact GELU when `gelu` (fused into the kernel when no gradient
    is needed). `input_bias` (B, C), inference only: the conv of ``x + input_bias`` (zero padding of
    the sum), read by the kernel without being added to x in memory. On float32 CPU tensors the
    result is channels-last."""
    B, C = x.shape[:2]
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    # (C, 1, kh, kw) is shared; (B, C, kh, kw) per sample (ambiguous only when B == C == 1: equal then)
    per_sample = (C != 1 and weight.shape[1] == C) or (C == 1 and weight.shape[0] == B and B != 1)
    expected = (B, C) if per_sample else (C, 1)
    if weight.dim() != 4 or tuple(weight.shape[:2]) != expected:
        raise ValueError(f"depthwise_conv2d: weight {tuple(weight.shape)} is neither ({C}, 1, kh, kw) nor ({B}, {C}, kh, kw)")
    grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias, input_bias))
    kernels = stride == (1, 1) and _use_kernels(x, weight)
    if input_bias is not None and (grad or not kernels):
        x, input_bias = x + input_bias.view(B, C, 1, 1), None
    if kernels and not grad:
        return _run_forward(x, weight, bias, per_sample, padding, dilation, gelu, input_bias)[0]
    if kernels:
        y = _DepthwiseNHWC.apply(x, weight, bias, per_sample, padding, dilation, False, None)
    elif not per_sample:
        y = F.conv2d(x, weight, bias, stride, padding, dilation, C)
    else:
        kh, kw = weight.shape[-2:]
        b = None if bias is None else bias.expand(B, C).reshape(-1)
        y = F.conv2d(x.reshape(1, B * C, *x.shape[2:]), weight.reshape(B * C, 1, kh, kw), b, stride, padding, dilation, B * C)
        y = y.view(B, C, y.shape[-2], y.shape[-1])
    return F.gelu(y) if gelu else y


def pointwise_depthwise_gelu(x: torch.Tensor, pw_kernels: torch.Tensor, pw_bias: torch.Tensor,
                             dw_kernels: torch.Tensor, dw_bias: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """GELU(3x3 depthwise conv (pad 1) of (1x1 conv of x)), inference on the CPU kernels
    (`cpu_kernels_usable(x)`), and the spatial mean of the result (B, out).

    x (B, C, H, W); the 1x1 conv: pw_kernels (B, out, C) per sample or (out, C) shared, pw_bias (B, out)
    or (out,); the depthwise conv: dw_kernels (B, out, 3, 3) or (out, 3, 3) (per sample when the 1x1
    kernels are), dw_bias (B, out) or (out,); out a multiple of 32. The 1x1 conv's output is never
    written: each task of the kernel keeps its three rows under the 3x3 window in cache. Equal to
    ``F.gelu(depthwise_conv2d(pointwise(x) + pw_bias, dw_kernels, dw_bias, 1, 1))`` up to float rounding.
    """
    lib = _load()
    B, C, H, W = x.shape
    out = pw_kernels.shape[-2]
    shared = pw_kernels.dim() == 2
    want_pw, want_dw = ((out, C), (out, 3, 3)) if shared else ((B, out, C), (B, out, 3, 3))
    if out % 32 or tuple(pw_kernels.shape) != want_pw or tuple(dw_kernels.shape) != want_dw:
        raise ValueError(f"pointwise_depthwise_gelu: kernels {tuple(pw_kernels.shape)}, {tuple(dw_kernels.shape)} "
                         f"for input {tuple(x.shape)}: expected {want_pw}, {want_dw} (out channels a multiple of 32)")
    xc = x.contiguous(memory_format=torch.channels_last)
    k1t = pw_kernels.transpose(-1, -2).contiguous()
    w2 = dw_kernels.reshape(-1, out, 9).transpose(1, 2).contiguous()
    b1 = pw_bias.expand(B, out).contiguous()
    b2 = dw_bias.expand(B, out).contiguous()
    groups = max(1, min(H, -(-2 * torch.get_num_threads() // B)))  # whole samples per task when B allows
    h = torch.empty((B, out, H, W), dtype=x.dtype, memory_format=torch.channels_last)
    sums = torch.empty((B, groups, out), dtype=x.dtype)
    lib.hrnext_pw_dw_gelu(xc.data_ptr(), k1t.data_ptr(), b1.data_ptr(), w2.data_ptr(), b2.data_ptr(),
                          h.data_ptr(), sums.data_ptr(), B, H, W, C, out, groups, int(shared))
    return h, sums.sum(1).div_(H * W)


def pointwise_residual_(x: torch.Tensor, h: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x += (1x1 conv of h with per-sample kernels (B, out, in)) + bias (B, out), in place, inference
    on the CPU kernels (`cpu_kernels_usable(h)`, x and h channels-last, out a multiple of 32): the
    conv and the residual add in one pass. Returns x."""
    lib = _load()
    B, C, H, W = h.shape
    out = kernels.shape[1]
    if out % 32 or tuple(kernels.shape) != (B, out, C) or tuple(x.shape) != (B, out, H, W) \
            or not (x.is_contiguous(memory_format=torch.channels_last) and h.is_contiguous(memory_format=torch.channels_last)):
        raise ValueError(f"pointwise_residual_: kernels {tuple(kernels.shape)}, input {tuple(h.shape)}, "
                         f"residual {tuple(x.shape)} (channels-last, out channels a multiple of 32)")
    kt = kernels.transpose(1, 2).contiguous()
    b = bias.expand(B, out).contiguous()
    chunks = max(1, -(-4 * torch.get_num_threads() // B))
    lib.hrnext_pw_residual(h.data_ptr(), kt.data_ptr(), b.data_ptr(), x.data_ptr(), x.data_ptr(), B, H * W, C, out, chunks)
    return x
