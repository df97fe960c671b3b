#!/usr/bin/env python3
"""Export a top-down HRNeXt model to ONNX or TorchScript (normalised crops -> heatmaps, dynamic batch).

Examples:
    # ONNX (opset 17) of an official mmpose checkpoint, flip test inside the graph
    tools/deploy/export_model.py --config-file configs/coco/hrnext_small_coco_256x192.yaml \
        --format onnx --output out/hrnext_s_onnx --flip-test MODEL.WEIGHTS hrnext_s_coco_256x192.pth
    # TorchScript of a Detectron2 checkpoint of ours
    tools/deploy/export_model.py --config-file CFG --format torchscript --output out/ts MODEL.WEIGHTS model_final.pth

Writes OUTPUT/model.onnx (input `crops` (N, 3, H, W) float32, normalised RGB; output `heatmaps`
(N, K, H/4, W/4); N symbolic) or OUTPUT/model.ts, and OUTPUT/model.json (crop size, pixel mean / std
and channel order, flip pairs, OKS sigmas, decoding, box padding, VIS_THR, NMS settings). MODEL.WEIGHTS
may be a checkpoint of ours or an official mmpose HRNeXt checkpoint. The export runs on the CPU and is
checked against the eager model at batch sizes it was not traced with (--no-verify skips that).
Run the ONNX model with `hrnext_d2.export.OnnxPosePipeline(OUTPUT)`.
"""
import argparse
import logging
import sys

from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.logger import setup_logger

import hrnext_d2  # noqa: F401  (registers model and datasets)
from hrnext_d2.checkpoint import HRNeXtCheckpointer
from hrnext_d2.config import add_hrnext_config
from hrnext_d2.export.exporter import DEFAULT_OPSET, export_model, verify_export
from hrnext_d2.export.metadata import FORMATS

logger = logging.getLogger("hrnext_d2.export_model")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config-file", required=True, metavar="FILE", help="config file")
    p.add_argument("--format", required=True, choices=FORMATS, help="onnx or torchscript")
    p.add_argument("--output", required=True, metavar="DIR", help="output folder")
    p.add_argument("--flip-test", action="store_true",
                   help="put the flip test (flip, flip back, shift, average) into the graph")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (>= 17, default {DEFAULT_OPSET})")
    p.add_argument("--example-batch", type=int, default=2, help="batch size of the example crops traced (default 2)")
    p.add_argument("--no-verify", action="store_true", help="skip the parity check against the eager model")
    p.add_argument("opts", nargs=argparse.REMAINDER, default=[], help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS w.pth")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logger(name="hrnext_d2")
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"
    cfg.freeze()
    model = build_model(cfg).eval()
    if cfg.MODEL.WEIGHTS:
        HRNeXtCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    else:
        logger.warning("MODEL.WEIGHTS is empty: exporting randomly initialised weights")
    source = {"config_file": args.config_file, "weights": cfg.MODEL.WEIGHTS}
    paths = export_model(model, args.output, args.format, flip_test=args.flip_test, opset=args.opset,
                         example_batch=args.example_batch, cfg=cfg, source=source)
    print(f"wrote {paths['model']} and {paths['metadata']}")
    if not args.no_verify:
        sizes = sorted({1, args.example_batch + 1})
        errors = verify_export(model, args.output, sizes)
        for b, err in errors.items():
            print(f"batch {b}: max relative error vs the eager model {err:.2e}")
        if max(errors.values()) > 1e-4:
            print("error: the exported model differs from the eager model by more than 1e-4", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
