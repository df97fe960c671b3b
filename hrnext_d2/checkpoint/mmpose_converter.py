"""Official mmpose HRNeXt checkpoints -> Detectron2 checkpoints of our top-down model, and of models
that hold HRNeXt elsewhere (the bottom-up part of an FPN).

An official checkpoint is a dict whose `state_dict` holds `backbone.*` (the HRNeXt backbone) and
`keypoint_head.final_layer.*` (the 1x1 heatmap conv). Our model (`TopDownPoseEstimator`) names its
parts `backbone` and `keypoint_head.final_layer` with the same sub-names, so the mapping is the identity;
what this module adds is validation: the architecture is read off the checkpoint, our backbone is built
with it, and every key and shape must match (clear errors name the keys at fault), optionally also
against a given config's model and keypoint count.

For any other model with an HRNeXt inside (Keypoint / Mask R-CNN on `build_hrnext_fpn_backbone`:
`backbone.bottom_up`), `adapt_topdown_state_dict` moves the backbone there, as strictly: every
checkpoint tensor must land on a model tensor of its shape, and of the model's HRNeXt only the fuse
layers that multi-scale output adds (branches 1-3 of the last module) may be absent. The top-down head
is left out, and a `TopDownLoadReport` lists exactly which keys of the model start fresh.
"""
import logging
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn


from ..modeling.backbone.hrnext import HRNeXt
from .atomic import atomic_torch_save

__all__ = [
    "MMPoseCheckpointError",
    "infer_hrnext_architecture",
    "convert_mmpose_state_dict",
    "convert_mmpose_checkpoint",
    "save_converted_checkpoint",
    "load_mmpose_checkpoint",
    "is_mmpose_hrnext_checkpoint",
    "hrnext_module_prefix",
    "TopDownLoadReport",
    "adapt_topdown_state_dict",
]

logger = logging.getLogger(__name__)

CONVERTER_AUTHOR = "hrnext_d2 mmpose converter"
HEAD_PREFIX = "keypoint_head.final_layer."


class MMPoseCheckpointError(ValueError):
    """An mmpose checkpoint that is not a (matching) HRNeXt top-down model."""


def load_mmpose_checkpoint(path: Union[str, Path], allow_pickle: bool = False) -> Dict[str, Any]:
    """Read an mmpose checkpoint file. Tries `torch.load(weights_only=True)` first; files whose metadata
    needs full unpickling load only with `allow_pickle=True` (only for files you trust)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mmpose checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - report why, offer the explicit opt-in
        if not allow_pickle:
            raise MMPoseCheckpointError(
                f"{path}: cannot be read with torch.load(weights_only=True) ({type(e).__name__}: {e}). "
                "If you trust the file, pass allow_pickle=True (tool: --allow-pickle).") from e
        return torch.load(path, map_location="cpu", weights_only=False)


def _state_dict_of(checkpoint: Mapping[str, Any], source: str) -> Mapping[str, torch.Tensor]:
    if not isinstance(checkpoint, Mapping):
        raise MMPoseCheckpointError(f"{source}: expected a dict, got {type(checkpoint).__name__}")
    sd = checkpoint.get("state_dict", checkpoint)
    if not isinstance(sd, Mapping):
        raise MMPoseCheckpointError(f"{source}: 'state_dict' is a {type(sd).__name__}, not a dict")
    return sd


def is_mmpose_hrnext_checkpoint(checkpoint: Any) -> bool:
    """True for a dict with a `state_dict` holding HRNeXt `backbone.*` keys (mmpose layout)."""
    if not isinstance(checkpoint, Mapping) or not isinstance(checkpoint.get("state_dict"), Mapping):
        return False
    keys = checkpoint["state_dict"].keys()
    return "backbone.conv1.weight" in keys and "backbone.layer1.0.layer_scale_1" in keys


def _shape_error(source: str, key: str, t: torch.Tensor, expected: str) -> MMPoseCheckpointError:
    return MMPoseCheckpointError(f"{source}: backbone.{key} has shape {tuple(t.shape)}; expected {expected}")


def _width(sd: Mapping[str, torch.Tensor], key: str, source: str) -> int:
    """Leading size of a per-channel tensor (layer scale, conv weight), checked."""
    t = sd[key]
    if t.dim() < 1 or t.shape[0] == 0:
        raise _shape_error(source, key, t, "(C, ...) with C > 0")
    return int(t.shape[0])


def _mlp_ratio(sd: Mapping[str, torch.Tensor], block: str, width: int, source: str) -> int:
    key = f"{block}.mlp2.norm1.weight"
    hidden = sd.get(key)
    if hidden is None:
        return 4
    if hidden.dim() != 1 or hidden.shape[0] == 0 or hidden.shape[0] % width:
        raise _shape_error(source, key, hidden, f"(width x MLP ratio,) with width {width}")
    return int(hidden.shape[0]) // width


def _num_kernels(sd: Mapping[str, torch.Tensor], block: str, source: str = "checkpoint") -> int:
    key = f"{block}.dlp.dw3x3.conv.aggregation.weight"
    bank = sd.get(key)
    if bank is None:
        return 1
    if bank.dim() < 1 or bank.shape[0] == 0:
        raise _shape_error(source, key, bank, "(num_kernels, ...)")
    return int(bank.shape[0])


def infer_hrnext_architecture(backbone_sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> Dict:
    """Stem width and the four stage configs (as HRNeXt's `stages` argument) read off a backbone state
    dict (keys without the `backbone.` prefix). A tensor whose shape contradicts the others is an
    error naming the file and the key."""
    required = ["conv1.weight", "layer1.0.layer_scale_1", "stage2.0.branches.0.0.layer_scale_1"]
    missing = [k for k in required if k not in backbone_sd]
    if missing:
        raise MMPoseCheckpointError(
            f"{source}: not an HRNeXt checkpoint (missing {', '.join('backbone.' + k for k in missing)})")
    stem_width = _width(backbone_sd, "conv1.weight", source)
    stages = []
    # Stage 1: layer1.<b>.
    nb = 1 + max(int(m.group(1)) for k in backbone_sd for m in [re.match(r"layer1\.(\d+)\.layer_scale_1$", k)] if m)
    width = _width(backbone_sd, "layer1.0.layer_scale_1", source)
    if width != stem_width:
        raise MMPoseCheckpointError(
            f"{source}: backbone.conv1.weight {tuple(backbone_sd['conv1.weight'].shape)} gives a stem width of "
            f"{stem_width}, backbone.layer1.0.layer_scale_1 {tuple(backbone_sd['layer1.0.layer_scale_1'].shape)} "
            f"a stage-1 width of {width}; HRNeXt needs them equal")
    stages.append({"num_modules": 1, "num_branches": 1, "num_blocks": [nb], "num_channels": [width],
                   "mlp_ratios": [_mlp_ratio(backbone_sd, "layer1.0", width, source)],
                   "num_kernels": [_num_kernels(backbone_sd, "layer1.0", source)]})
    for k in (2, 3, 4):
        pat = re.compile(rf"stage{k}\.(\d+)\.branches\.(\d+)\.(\d+)\.layer_scale_1$")
        found = [tuple(int(g) for g in m.groups()) for key in backbone_sd for m in [pat.match(key)] if m]
        if not found:
            raise MMPoseCheckpointError(f"{source}: not an HRNeXt checkpoint (no backbone.stage{k} blocks)")
        num_modules = 1 + max(f[0] for f in found)
        num_branches = 1 + max(f[1] for f in found)
        blocks, channels, ratios, kernels = [], [], [], []
        for i in range(num_branches):
            in_first = [f[2] for f in found if f[0] == 0 and f[1] == i]
            if not in_first:
                raise MMPoseCheckpointError(f"{source}: no backbone.stage{k}.0.branches.{i} blocks")
            blocks.append(1 + max(in_first))
            pre = f"stage{k}.0.branches.{i}.0"
            width = _width(backbone_sd, f"{pre}.layer_scale_1", source)
            channels.append(width)
            ratios.append(_mlp_ratio(backbone_sd, pre, width, source))
            kernels.append(_num_kernels(backbone_sd, pre, source))
        stages.append({"num_modules": num_modules, "num_branches": num_branches, "num_blocks": blocks,
                       "num_channels": channels, "mlp_ratios": ratios, "num_kernels": kernels})
    # The branches the last module fuses into: branch 0 only (the pose models), or more (multi-scale).
    last = re.compile(rf"stage4\.{stages[3]['num_modules'] - 1}\.fuse_layers\.(\d+)\.")
    fused = sorted({int(m.group(1)) for k in backbone_sd for m in [last.match(k)] if m}) or [0]
    return {"stem_width": stem_width, "stages": stages, "multi_scale_output": fused != [0],
            "out_features": [f"stride{4 * 2 ** i}" for i in fused]}


def _describe(arch: Dict) -> str:
    st = arch["stages"]
    return f"widths {st[3]['num_channels']}, kernels {st[3]['num_kernels']}"


def _compare(expected: Mapping[str, torch.Size], got: Mapping[str, torch.Tensor], source: str,
             what: str) -> None:
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    shapes = [(k, tuple(got[k].shape), tuple(expected[k])) for k in expected
              if k in got and tuple(got[k].shape) != tuple(expected[k])]
    if not (missing or unexpected or shapes):
        return
    lines = [f"{source}: does not match {what}:"]

    def _few(items: Sequence, fmt) -> str:
        shown = ", ".join(fmt(x) for x in items[:8])
        return shown + (f", ... ({len(items)} in all)" if len(items) > 8 else "")

    if missing:
        lines.append(f"  missing keys: {_few(missing, str)}")
    if unexpected:
        lines.append(f"  unexpected keys: {_few(unexpected, str)}")
    if shapes:
        lines.append("  shape mismatches: " + _few(shapes, lambda s: f"{s[0]} checkpoint {s[1]} vs model {s[2]}"))
    raise MMPoseCheckpointError("\n".join(lines))


def _hrnext_expected_shapes(arch: Dict, source: str = "checkpoint") -> "OrderedDict[str, torch.Size]":
    try:
        with torch.device("meta"):
            model = HRNeXt(stages=arch["stages"], stem_width=arch["stem_width"],
                           multi_scale_output=arch["multi_scale_output"],
                           out_features=arch.get("out_features", ["stride4"]), fuse_inference=False)
    except (ValueError, AssertionError, RuntimeError, ZeroDivisionError, IndexError) as e:
        raise MMPoseCheckpointError(
            f"{source}: the HRNeXt its keys describe ({_describe(arch)}) cannot be built: {e}") from e
    return OrderedDict((k, v.shape) for k, v in model.state_dict().items())


def convert_mmpose_state_dict(
    checkpoint: Mapping[str, Any],
    num_keypoints: Optional[int] = None,
    expected: Optional[Mapping[str, Any]] = None,
    source: str = "checkpoint",
) -> "OrderedDict[str, torch.Tensor]":
    """Our model's state dict (`backbone.*`, `keypoint_head.final_layer.*`) from an official mmpose
    checkpoint dict (or its `state_dict`), validated:

    - the backbone must be exactly the HRNeXt read off its own keys (no missing/unexpected/misshaped key);
    - the head must be `keypoint_head.final_layer.{weight,bias}` from branch 0, with `num_keypoints`
      outputs when given;
    - with `expected` (a state dict or {key: shape} of the target model, e.g. `model.state_dict()`),
      every key and shape must match it too (catches a wrong variant for a config).
    """
    sd = _state_dict_of(checkpoint, source)
    sd = OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in sd.items())
    bad = [k for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise MMPoseCheckpointError(f"{source}: non-tensor entries in state_dict: {bad[:8]}")
    backbone = OrderedDict((k[len("backbone."):], v) for k, v in sd.items() if k.startswith("backbone."))
    arch = infer_hrnext_architecture(backbone, source)
    _compare(OrderedDict(("backbone." + k2, v) for k2, v in _hrnext_expected_shapes(arch, source).items()),
             OrderedDict(("backbone." + k2, v) for k2, v in backbone.items()), source,
             f"an HRNeXt backbone ({_describe(arch)})")

    head = OrderedDict((k, v) for k, v in sd.items() if k.startswith("keypoint_head."))
    others = [k for k in sd if not k.startswith(("backbone.", "keypoint_head."))]
    if others:
        raise MMPoseCheckpointError(f"{source}: unexpected keys outside backbone/keypoint_head: {others[:8]}")
    c0 = arch["stages"][3]["num_channels"][0]
    w = head.get(HEAD_PREFIX + "weight")
    if w is None:
        raise MMPoseCheckpointError(f"{source}: missing key {HEAD_PREFIX}weight (no heatmap head)")
    if w.dim() != 4 or w.shape[1] != c0:
        raise MMPoseCheckpointError(
            f"{source}: {HEAD_PREFIX}weight has shape {tuple(w.shape)}; expected (K, {c0}, k, k) on branch 0")
    k = int(w.shape[0])
    _compare({HEAD_PREFIX + "weight": w.shape, HEAD_PREFIX + "bias": torch.Size([k])}, head, source,
             "a TopdownHeatmapSimpleHead without deconv layers (final_layer only)")
    if num_keypoints is not None and k != int(num_keypoints):
        raise MMPoseCheckpointError(
            f"{source}: the head predicts {k} keypoints ({HEAD_PREFIX}weight {tuple(w.shape)}), "
            f"but {num_keypoints} were requested")

    out = OrderedDict(("backbone." + k2, v) for k2, v in backbone.items())
    out.update(head)
    if expected is not None:
        shapes = OrderedDict((k2, (v.shape if isinstance(v, torch.Tensor) else torch.Size(v)))
                             for k2, v in expected.items())
        _compare(shapes, out, source, "the target model")
    return out


def convert_mmpose_checkpoint(
    in_path: Union[str, Path],
    out_path: Optional[Union[str, Path]] = None,
    num_keypoints: Optional[int] = None,
    expected: Optional[Mapping[str, Any]] = None,
    allow_pickle: bool = False,
) -> "OrderedDict[str, torch.Tensor]":
    """Read, convert and validate an official checkpoint file; when `out_path` is given, save
    `{"model": state_dict, "__author__": ..., "matching_heuristics": False}` there, a file that
    `torch.load(weights_only=True)` and `DetectionCheckpointer(model).load()` accept."""
    ckpt = load_mmpose_checkpoint(in_path, allow_pickle=allow_pickle)
    sd = convert_mmpose_state_dict(ckpt, num_keypoints=num_keypoints, expected=expected, source=str(in_path))
    if out_path is not None:
        save_converted_checkpoint(sd, out_path)
    return sd


def save_converted_checkpoint(state_dict: Mapping[str, torch.Tensor], out_path: Union[str, Path]) -> None:
    """Write `{"model": state_dict, "__author__": ..., "matching_heuristics": False}`."""
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"model": dict(state_dict), "__author__": CONVERTER_AUTHOR, "matching_heuristics": False},
                      str(out_path))


def hrnext_module_prefix(model: nn.Module) -> Optional[str]:
    """State-dict prefix of the HRNeXt inside `model` ("backbone." for the top-down model,
    "backbone.bottom_up." under an FPN), None when there is none; several are an error."""
    names = [name for name, m in model.named_modules() if isinstance(m, HRNeXt)]
    if len(names) > 1:
        raise MMPoseCheckpointError(f"the model holds {len(names)} HRNeXt modules ({names}); "
                                    "an official checkpoint has one backbone")
    return (names[0] + ".") if names else None


@dataclass
class TopDownLoadReport:
    """What `adapt_topdown_state_dict` did: the HRNeXt backbone of a top-down checkpoint moved to
    `prefix`; `loaded` model keys come from the checkpoint, `new` ones start fresh, `dropped` are
    checkpoint keys the model has no place for (the top-down heatmap head)."""

    source: str
    prefix: str
    loaded: List[str] = field(default_factory=list)
    new: List[str] = field(default_factory=list)
    dropped: List[str] = field(default_factory=list)

    def new_groups(self) -> "OrderedDict[str, int]":
        """Fresh keys grouped by module (the fuse layer of a branch, the FPN, the RPN, a head), in
        the model's order, with their counts."""
        groups: "OrderedDict[str, int]" = OrderedDict()
        fuse = re.compile(r"^(.*\.fuse_layers\.\d+)\.")
        for key in self.new:
            m = fuse.match(key)
            # A fuse layer, else e.g. backbone.fpn_lateral2, proposal_generator.rpn_head, roi_heads.box_head.
            group = m.group(1) if m else ".".join(key.split(".")[:2])
            groups[group] = groups.get(group, 0) + 1
        return groups

    def summary(self) -> str:
        lines = [f"{self.source}: top-down HRNeXt checkpoint -> {self.prefix}*: {len(self.loaded)} keys loaded, "
                 f"{len(self.new)} new (not in the checkpoint; they start fresh), {len(self.dropped)} dropped"]
        lines += [f"  new: {group}.* ({n} keys)" for group, n in self.new_groups().items()]
        if self.dropped:
            lines.append(f"  dropped (no place in this model): {', '.join(self.dropped)}")
        return "\n".join(lines)


def _last_module_fuse_pattern(model_keys: Sequence[str], prefix: str) -> "re.Pattern":
    """Keys of the fuse layers into branches >= 1 of HRNeXt's last module (multi-scale output)."""
    stage4 = re.compile(rf"^{re.escape(prefix)}stage4\.(\d+)\.")
    modules = [int(m.group(1)) for k in model_keys for m in [stage4.match(k)] if m]
    last = max(modules) if modules else 0
    return re.compile(rf"^{re.escape(prefix)}stage4\.{last}\.fuse_layers\.[1-9]\d*\.")


def adapt_topdown_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    model_state: Mapping[str, Any],
    prefix: str,
    source: str = "checkpoint",
) -> Tuple["OrderedDict[str, torch.Tensor]", TopDownLoadReport]:
    """A top-down state dict (`backbone.*` + `keypoint_head.*`, as `convert_mmpose_state_dict`
    returns) for a model whose HRNeXt sits at `prefix` (e.g. "backbone.bottom_up.").

    `model_state`: the model's state dict (or {key: shape}). Errors name the keys at fault when a
    backbone tensor has no key or shape to go to, or when the model's HRNeXt needs a tensor the
    checkpoint lacks other than the multi-scale fuse layers of the last module (a different variant).
    """
    shapes = OrderedDict((k, tuple(v.shape) if isinstance(v, torch.Tensor) else tuple(v))
                         for k, v in model_state.items())
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    report = TopDownLoadReport(source=source, prefix=prefix)
    unexpected, mismatched = [], []
    for key, value in state_dict.items():
        if not key.startswith("backbone."):
            report.dropped.append(key)
            continue
        target = prefix + key[len("backbone."):]
        if target not in shapes:
            unexpected.append(target)
        elif tuple(value.shape) != shapes[target]:
            mismatched.append((target, tuple(value.shape), shapes[target]))
        else:
            out[target] = value
    fuse = _last_module_fuse_pattern(list(shapes), prefix)
    missing = [k for k in shapes if k.startswith(prefix) and k not in out and not fuse.match(k)]
    if unexpected or mismatched or missing:
        lines = [f"{source}: the HRNeXt backbone does not fit the model's HRNeXt at {prefix!r}:"]
        if missing:
            lines.append(f"  missing keys: {', '.join(missing[:8])}" + (f", ... ({len(missing)} in all)" if len(missing) > 8 else ""))
        if unexpected:
            lines.append(f"  unexpected keys: {', '.join(unexpected[:8])}" + (f", ... ({len(unexpected)} in all)" if len(unexpected) > 8 else ""))
        if mismatched:
            lines.append("  shape mismatches: " + ", ".join(f"{k} checkpoint {a} vs model {b}" for k, a, b in mismatched[:8])
                         + (f", ... ({len(mismatched)} in all)" if len(mismatched) > 8 else ""))
        raise MMPoseCheckpointError("\n".join(lines))
    report.loaded = list(out)
    report.new = [k for k in shapes if k not in out]
    return out, report


def _is_topdown_layout(model_keys: Sequence[str]) -> bool:
    return HEAD_PREFIX + "weight" in model_keys
