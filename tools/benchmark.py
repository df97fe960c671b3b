#!/usr/bin/env python3
"""CPU throughput of HRNeXt-S (+ 1x1 heatmap head): our implementation vs the reference formulation.

    python tools/benchmark.py                       # ~1-3 minutes on 2 cores
    python tools/benchmark.py --repeats 15 --train-repeats 7
    python tools/benchmark.py --onnx --train-repeats 0   # + the ONNX export of "ours" on onnxruntime

In one process, the two variants (same weights) alternate run by run; the medians give images/s for
inference (eval, no_grad) and for a training step (forward + MSE + backward), and their ratios.
"ours" = FAST_OPS + FUSE_INFERENCE (fusion only applies at inference); "reference" = both off.
With --onnx, "ours" is also exported to ONNX (tools/deploy/export_model.py's exporter) and timed on
onnxruntime's CPU provider with --threads intra-op threads, alternating with the other two.
Run-to-run noise on a shared machine is large: compare only numbers from the same run.
"""
import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import onnxruntime as ort
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from torch import nn

from hrnext_d2 import add_hrnext_config
from hrnext_d2.checkpoint.synthetic_weights import fill_like_official
from hrnext_d2.export.exporter import max_relative_error, trace_to_onnx

REPO = Path(__file__).resolve().parents[1]


class PoseNet(nn.Module):
    def __init__(self, backbone: nn.Module, k: int):
        super().__init__()
        self.backbone = backbone
        self.keypoint_head = nn.Module()
        self.keypoint_head.final_layer = nn.Conv2d(backbone.output_shape()["stride4"].channels, k, 1)

    def forward(self, x):
        return self.keypoint_head.final_layer(self.backbone(x)["stride4"])


def build(config_file: str, fast: bool, fuse: bool) -> PoseNet:
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.MODEL.HRNEXT.FAST_OPS = fast
    cfg.MODEL.HRNEXT.FUSE_INFERENCE = fuse
    return PoseNet(build_backbone(cfg), cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS)


def _infer(model, x):
    with torch.no_grad():
        model(x)


def _train_step(model, x, target):
    model.zero_grad(set_to_none=True)
    loss = nn.functional.mse_loss(model(x), target)
    loss.backward()


def onnxruntime_inference(model: nn.Module, x: torch.Tensor, threads: int, folder: str):
    """`model` exported to ONNX in `folder`, as a callable on `x` run by onnxruntime (CPU provider,
    `threads` intra-op threads), and its max relative difference from the eager model on `x`."""
    path = trace_to_onnx(model, x[:2], Path(folder) / "model.onnx")
    run = load_exported_onnx(path, threads)
    crops = x.numpy()
    with torch.no_grad():
        err = max_relative_error(run(crops), model(x).numpy())
    return (lambda: run(crops)), err


def load_exported_onnx(path: Path, threads: int):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda crops: session.run(None, {"crops": crops})[0]


def _alternate(fns, repeats: int):
    for fn in fns.values():  # warm-up (and the folded forms get computed)
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", default=str(REPO / "configs" / "coco" / "hrnext_small_coco_256x192.yaml"))
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--shape", nargs=2, type=int, default=(256, 192), metavar=("H", "W"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5, help="timed inference runs per variant")
    p.add_argument("--train-repeats", type=int, default=3, help="timed training steps per variant (0: skip)")
    p.add_argument("--onnx", action="store_true", help="also time ours exported to ONNX on onnxruntime (CPU)")
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours = build(args.config_file, fast=True, fuse=True)
    fill_like_official(ours, seed=0)  # trained-like magnitudes: no denormals, real BN folding
    reference = build(args.config_file, fast=False, fuse=False)
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(args.batch, 3, *args.shape, generator=torch.Generator().manual_seed(1))
    print(f"HRNeXt-S + head, batch {args.batch}, {args.shape[0]}x{args.shape[1]}, {args.threads} threads, "
          f"torch {torch.__version__}", flush=True)

    for m in (ours, reference):
        m.eval()
    with torch.no_grad():
        err = ((ours(x) - reference(x)).abs().max() / reference(x).abs().max()).item()
    print(f"inference outputs: max rel difference ours vs reference {err:.2e}", flush=True)
    fns = {"ours": lambda: _infer(ours, x), "reference": lambda: _infer(reference, x)}
    with tempfile.TemporaryDirectory() as folder:
        if args.onnx:
            fns["onnxruntime"], err = onnxruntime_inference(ours, x, args.threads, folder)
            print(f"onnxruntime {ort.__version__}: max rel difference from ours {err:.2e}", flush=True)
        t = _alternate(fns, args.repeats)
    _report("inference", t, args.batch, args.repeats)
    if args.onnx:
        ips = {k: args.batch / v for k, v in t.items()}
        print(f"inference on onnxruntime ({args.threads} threads): {ips['onnxruntime']:.2f} img/s, "
              f"{ips['onnxruntime'] / ips['ours']:.2f}x ours, {ips['onnxruntime'] / ips['reference']:.2f}x reference "
              f"(medians of {args.repeats} alternating runs)", flush=True)

    if args.train_repeats > 0:
        for m in (ours, reference):
            m.train()
        with torch.no_grad():
            target = torch.rand_like(ours(x))
        t = _alternate({"ours": lambda: _train_step(ours, x, target),
                        "reference": lambda: _train_step(reference, x, target)}, args.train_repeats)
        _report("training step (forward + MSE + backward)", t, args.batch, args.train_repeats)
    return 0


def _report(what: str, t, batch: int, repeats: int) -> None:
    ips = {k: batch / v for k, v in t.items()}
    print(f"{what}: ours {ips['ours']:.2f} img/s, reference {ips['reference']:.2f} img/s, "
          f"ratio {ips['ours'] / ips['reference']:.2f}x (medians of {repeats} alternating runs)", flush=True)


if __name__ == "__main__":
    sys.exit(main())
