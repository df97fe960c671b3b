#!/usr/bin/env python3
"""Throughput of HRNeXt (+ 1x1 heatmap head) against the reference formulation and timm's HRNet-W32.

    python tools/benchmark.py                                  # HRNeXt-S, CPU, ~3-5 minutes on 2 cores
    python tools/benchmark.py --repeats 9 --train-repeats 5 --json out.json
    python tools/benchmark.py --device cuda --amp bf16 --config-file configs/coco/hrnext_base_coco_384x288.yaml
    python tools/benchmark.py --onnx --train-repeats 0              # + the ONNX export on onnxruntime

In one process, every variant runs the same input, alternating run by run; the medians give images/s
for inference (eval, no_grad) and for a training step (forward + MSE + backward), and the ratios of
ours to each baseline. Variants:
- ours: MODEL.HRNEXT.FAST_OPS + FUSE_INFERENCE (folding applies at inference only), in the memory
  format the model is tuned for;
- reference: both off (the official code's formulation, same weights);
- timm hrnet_w32 (+ a 1x1 conv to K heatmaps on its stride-4 branch), NCHW and channels_last
  (needs `pip install timm`; skipped with a message otherwise);
- with --onnx: ours exported to ONNX (the exporter of tools/deploy/export_model.py) on onnxruntime's
  CPU provider with --threads intra-op threads (inference only).
Run-to-run noise on a shared machine is large: compare only numbers from the same run; the spread
printed beside each median is (max - min) / median over the timed runs.
"""
import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

# Before Detectron2: importing the package ignores the dependencies' known import-time warnings
# (hrnext_d2/utils/dependency_warnings.py); the call under __main__ silences the runtime ones.
from hrnext_d2.utils.dependency_warnings import silence_known_dependency_warnings  # noqa: I001
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from torch import nn

from hrnext_d2 import add_hrnext_config
from hrnext_d2.checkpoint.synthetic_weights import fill_like_official
from hrnext_d2.export.exporter import max_relative_error, trace_to_onnx

REPO = Path(__file__).resolve().parents[1]


class PoseNet(nn.Module):
    """Backbone feature -> 1x1 conv to K heatmaps (the top-down model's network part)."""

    def __init__(self, backbone: nn.Module, channels: int, k: int, feature: Optional[str] = "stride4"):
        super().__init__()
        self.backbone = backbone
        self.feature = feature
        self.keypoint_head = nn.Module()
        self.keypoint_head.final_layer = nn.Conv2d(channels, k, 1)

    def forward(self, x):
        f = self.backbone(x)
        f = f[self.feature] if isinstance(f, dict) else f[0]
        return self.keypoint_head.final_layer(f)


def build_hrnext(config_file: str, fast: bool, fuse: bool) -> PoseNet:
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.MODEL.HRNEXT.FAST_OPS = fast
    cfg.MODEL.HRNEXT.FUSE_INFERENCE = fuse
    backbone = build_backbone(cfg)
    return PoseNet(backbone, backbone.output_shape()["stride4"].channels, cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS)


def build_timm_hrnet_w32(k: int) -> Optional[PoseNet]:
    try:
        import timm  # benchmark-only extra
    except ImportError:
        print("timm is not installed (pip install timm \"numpy<2\"): HRNet-W32 baselines skipped", flush=True)
        return None
    backbone = timm.create_model("hrnet_w32", features_only=True, feature_location="", out_indices=(1,))
    return PoseNet(backbone, backbone.feature_info.channels()[0], k, feature=None)


def onnxruntime_inference(model: nn.Module, x: torch.Tensor, threads: int, folder: str):
    """`model` exported to ONNX in `folder`, as a callable on `x` run by onnxruntime (CPU provider,
    `threads` intra-op threads), and its max relative difference from the eager model on `x`."""
    import onnxruntime as ort  # the export extra; only needed with --onnx

    path = trace_to_onnx(model, x[:2], Path(folder) / "model.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    crops = x.numpy()
    with torch.no_grad():
        err = max_relative_error(session.run(None, {"crops": crops})[0], model(x).numpy())
    return (lambda: session.run(None, {"crops": crops})), err


def _autocast(device: str, amp: Optional[str]):
    if not amp:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, dtype={"fp16": torch.float16, "bf16": torch.bfloat16}[amp])


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def alternate(fns: Dict[str, Callable[[], None]], repeats: int, device: str) -> Dict[str, List[float]]:
    """Run every fn once (warm-up), then `repeats` rounds of all fns in turn; seconds per run."""
    for fn in fns.values():
        fn()
        _sync(device)
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - t)
    return times


def summarize(times: Dict[str, List[float]], batch: int) -> Dict[str, Dict[str, float]]:
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"img_per_s": batch / med, "median_s": med, "spread": (max(ts) - min(ts)) / med, "runs": len(ts)}
    return out


def report(what: str, stats: Dict[str, Dict[str, float]]) -> None:
    print(f"{what}:", flush=True)
    for name, s in stats.items():
        print(f"  {name:<22} {s['img_per_s']:7.2f} img/s  (spread {100 * s['spread']:.0f}%, {s['runs']} runs)", flush=True)
    if "ours" in stats:
        for name, s in stats.items():
            if name != "ours":
                print(f"  ours / {name:<15} {stats['ours']['img_per_s'] / s['img_per_s']:.2f}x", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=str(REPO / "configs" / "coco" / "hrnext_small_coco_256x192.yaml"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--shape", nargs=2, type=int, default=None, metavar=("H", "W"),
                   help="crop size (default: INPUT.TOPDOWN.IMAGE_SIZE of the config)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--amp", default=None, choices=("fp16", "bf16"), help="autocast dtype (default float32)")
    p.add_argument("--repeats", type=int, default=7, help="timed inference runs per variant")
    p.add_argument("--train-repeats", type=int, default=5, help="timed training steps per variant (0: skip)")
    p.add_argument("--no-timm", action="store_true", help="skip the HRNet-W32 baselines")
    p.add_argument("--onnx", action="store_true", help="also time ours exported to ONNX on onnxruntime (CPU)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the figures to FILE")
    args = p.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(args.config_file)
    h, w = args.shape or (cfg.INPUT.TOPDOWN.IMAGE_SIZE[1], cfg.INPUT.TOPDOWN.IMAGE_SIZE[0])
    k = cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS

    ours = build_hrnext(args.config_file, fast=True, fuse=True)
    fill_like_official(ours, seed=0)  # trained-like magnitudes: no denormals, real BatchNorm folding
    reference = build_hrnext(args.config_file, fast=False, fuse=False)
    reference.load_state_dict(ours.state_dict())
    models = {"ours": ours, "reference": reference}
    if not args.no_timm:
        timm_net = build_timm_hrnet_w32(k)
        if timm_net is not None:
            models["timm_hrnet_w32"] = timm_net
            cl = build_timm_hrnet_w32(k)
            cl.load_state_dict(timm_net.state_dict())
            models["timm_hrnet_w32_cl"] = cl.to(memory_format=torch.channels_last)
    for m in models.values():
        m.to(args.device)
    x = torch.randn(args.batch, 3, h, w, generator=torch.Generator().manual_seed(1)).to(args.device)
    inputs = {n: (x.contiguous(memory_format=torch.channels_last) if n.endswith("_cl") else x) for n in models}
    amp = _autocast(args.device, args.amp)
    print(f"{Path(args.config_file).name}: batch {args.batch}, {h}x{w}, device {args.device}, "
          f"{args.threads} threads, {args.amp or 'float32'}, torch {torch.__version__}", flush=True)

    results = {"config": Path(args.config_file).name, "batch": args.batch, "shape": [h, w], "device": args.device,
               "amp": args.amp, "threads": args.threads, "torch": torch.__version__}
    for m in models.values():
        m.eval()
    with torch.no_grad(), amp:
        y_ref = reference(x).float()
        err = ((ours(x).float() - y_ref).abs().max() / y_ref.abs().max()).item()
    print(f"inference outputs: max rel difference ours vs reference {err:.2e}", flush=True)
    results["ours_vs_reference_max_rel_err"] = err

    def infer(name):
        def run():
            with torch.no_grad(), _autocast(args.device, args.amp):
                models[name](inputs[name])
        return run

    fns = {n: infer(n) for n in models}
    with tempfile.TemporaryDirectory() as folder:
        if args.onnx:
            if args.device != "cpu" or args.amp:
                print("error: --onnx times onnxruntime's CPU provider in float32 (no --device cuda / --amp)", file=sys.stderr)
                return 2
            fns["onnxruntime"], err = onnxruntime_inference(ours, x, args.threads, folder)
            print(f"onnxruntime: max rel difference from ours {err:.2e}", flush=True)
            results["onnxruntime_vs_ours_max_rel_err"] = err
        t = alternate(fns, args.repeats, args.device)
    results["inference"] = summarize(t, args.batch)
    report("inference", results["inference"])

    if args.train_repeats > 0:
        for m in models.values():
            m.train()
        target = torch.rand(args.batch, k, h // 4, w // 4, generator=torch.Generator().manual_seed(2)).to(args.device)

        def step(name):
            def run():
                model = models[name]
                model.zero_grad(set_to_none=True)
                with _autocast(args.device, args.amp):
                    loss = nn.functional.mse_loss(model(inputs[name]).float(), target)
                loss.backward()
            return run

        t = alternate({n: step(n) for n in models}, args.train_repeats, args.device)
        results["train_step"] = summarize(t, args.batch)
        report("training step (forward + MSE + backward)", results["train_step"])

    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
        print(f"wrote {args.json}", flush=True)
    return 0


if __name__ == "__main__":
    silence_known_dependency_warnings()
    sys.exit(main())
