#!/usr/bin/env python3
"""CPU throughput of HRNeXt-S (+ 1x1 heatmap head): our implementation vs the reference formulation.

    python tools/benchmark.py                       # ~1-3 minutes on 2 cores
    python tools/benchmark.py --repeats 15 --train-repeats 7

In one process, the two variants (same weights) alternate run by run; the medians give images/s for
inference (eval, no_grad) and for a training step (forward + MSE + backward), and their ratios.
"ours" = FAST_OPS + FUSE_INFERENCE (fusion only applies at inference); "reference" = both off.
Run-to-run noise on a shared machine is large: compare only numbers from the same run.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

# Before Detectron2: importing the package ignores the dependencies' known import-time warnings
# (hrnext_d2/utils/dependency_warnings.py); the call under __main__ silences the runtime ones.
from hrnext_d2.utils.dependency_warnings import silence_known_dependency_warnings  # noqa: I001
from detectron2.config import get_cfg
from detectron2.modeling import build_backbone
from torch import nn

from hrnext_d2 import add_hrnext_config
from hrnext_d2.checkpoint.synthetic_weights import fill_like_official

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
    t = _alternate({"ours": lambda: _infer(ours, x), "reference": lambda: _infer(reference, x)}, args.repeats)
    _report("inference", t, args.batch, args.repeats)

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
    silence_known_dependency_warnings()
    sys.exit(main())
