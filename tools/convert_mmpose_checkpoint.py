#!/usr/bin/env python3
"""Convert an official mmpose HRNeXt checkpoint into a Detectron2 checkpoint of our top-down model.

    python tools/convert_mmpose_checkpoint.py hrnext_small_coco_256x192.pth out/hrnext_s_coco.pth \
        [--num-keypoints 17] [--config-file configs/coco/hrnext_small_coco_256x192.yaml]

The output loads with `DetectionCheckpointer(model).load(OUT)` (MODEL.WEIGHTS OUT) with no missing or
unexpected keys. With --config-file, the checkpoint is also checked key by key against the model that
config builds (a wrong variant is reported with the keys at fault). For a config whose model holds
HRNeXt elsewhere (Keypoint / Mask R-CNN on build_hrnext_fpn_backbone), the backbone is written where
that model has it (backbone.bottom_up.*), the top-down head is left out, and the keys that start
fresh are listed.
"""
import argparse
import sys

# Before Detectron2: importing the package ignores the dependencies' known import-time warnings
# (hrnext_d2/utils/dependency_warnings.py); the call under __main__ silences the runtime ones.
from hrnext_d2.utils.dependency_warnings import silence_known_dependency_warnings  # noqa: I001
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from hrnext_d2 import add_hrnext_config
from hrnext_d2.checkpoint.mmpose_converter import (
    HEAD_PREFIX,
    MMPoseCheckpointError,
    adapt_topdown_state_dict,
    convert_mmpose_checkpoint,
    hrnext_module_prefix,
    save_converted_checkpoint,
)


def _model_from_config(config_file: str, opts):
    """(state dict, HRNeXt prefix, whether it is the top-down layout, keypoint count) of the model."""
    cfg = get_cfg()
    add_hrnext_config(cfg)
    cfg.merge_from_file(config_file)
    cfg.merge_from_list(opts)
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    state = model.state_dict()
    prefix = hrnext_module_prefix(model)
    top_down = prefix == "backbone." and HEAD_PREFIX + "weight" in state
    return state, prefix, top_down, cfg.MODEL.ROI_KEYPOINT_HEAD.NUM_KEYPOINTS


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
    expected, k, target = None, args.num_keypoints, None
    if args.config_file:
        state, prefix, top_down, cfg_k = _model_from_config(args.config_file, args.opts)
        if top_down:
            expected, k = state, (cfg_k if k is None else k)
        elif prefix is None:
            print(f"error: the model of {args.config_file} has no HRNeXt backbone", file=sys.stderr)
            return 1
        else:
            target = (state, prefix)
    try:
        sd = convert_mmpose_checkpoint(args.input, None if target else args.output, num_keypoints=k,
                                       expected=expected, allow_pickle=args.allow_pickle)
        what = f"{sd[HEAD_PREFIX + 'weight'].shape[0]} keypoints"
        if target:
            sd, report = adapt_topdown_state_dict(sd, target[0], target[1], source=args.input)
            save_converted_checkpoint(sd, args.output)
            print(report.summary())
            what = f"HRNeXt backbone at {target[1]}*"
    except (MMPoseCheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    n = sum(v.numel() for key, v in sd.items() if not key.endswith("num_batches_tracked"))
    print(f"wrote {args.output}: {len(sd)} tensors, {n:,} values ({what})")
    return 0


if __name__ == "__main__":
    silence_known_dependency_warnings()
    sys.exit(main())
