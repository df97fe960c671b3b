#!/usr/bin/env python3
"""Convert an official mmpose HRNeXt checkpoint into a Detectron2 checkpoint of our top-down model.

    python tools/convert_mmpose_checkpoint.py hrnext_small_coco_256x192.pth out/hrnext_s_coco.pth \
        [--num-keypoints 17] [--config-file configs/coco/hrnext_small_coco_256x192.yaml]

The output loads with `DetectionCheckpointer(model).load(OUT)` (MODEL.WEIGHTS OUT) with no missing or
unexpected keys. With --config-file, the checkpoint is also checked key by key against the model that
config builds (a wrong variant is reported with the keys at fault).
"""
import argparse
import sys

# Before Detectron2: importing the package ignores the dependencies' known import-time warnings
# (hrnext_d2/utils/dependency_warnings.py); the call under __main__ silences the runtime ones.
from hrnext_d2.utils.dependency_warnings import silence_known_dependency_warnings  # noqa: I001
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from hrnext_d2 import add_hrnext_config
from hrnext_d2.checkpoint.mmpose_converter import MMPoseCheckpointError, convert_mmpose_checkpoint


def _expected_from_config(config_file: str, opts):
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.MODEL.DEVICE = "cpu"
    return build_model(cfg).state_dict(), cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", help="official mmpose checkpoint (.pth with 'state_dict')")
    p.add_argument("output", help="converted Detectron2 checkpoint (.pth)")
    p.add_argument("--num-keypoints", type=int, default=None, help="expected keypoint count of the head")
    p.add_argument("--config-file", default=None, help="also validate against the model of this config")
    p.add_argument("--allow-pickle", action="store_true",
                   help="read files that need full unpickling (only for files you trust)")
    p.add_argument("--opts", nargs=argparse.REMAINDER, default=[], help="config overrides KEY VALUE ... (last)")
    args = p.parse_args(argv)
    expected, k = None, args.num_keypoints
    if args.config_file:
        expected, cfg_k = _expected_from_config(args.config_file, args.opts)
        k = cfg_k if k is None else k
    try:
        sd = convert_mmpose_checkpoint(args.input, args.output, num_keypoints=k, expected=expected,
                                       allow_pickle=args.allow_pickle)
    except (MMPoseCheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = sum(v.numel() for key, v in sd.items() if not key.endswith("num_batches_tracked"))
    print(f"wrote {args.output}: {len(sd)} tensors, {n:,} values "
          f"({sd['keypoint_head.final_layer.weight'].shape[0]} keypoints)")
    return 0


if __name__ == "__main__":
    silence_known_dependency_warnings()
    sys.exit(main())
