"""``HRNeXtCheckpointer``: Detectron2's checkpointer made safe to load from and to resume with.

What differs from ``DetectionCheckpointer`` and why:
- official mmpose HRNeXt checkpoints are read directly (converted and validated on the fly);
- loading is strict: a missing, unexpected or differently shaped tensor is an error naming the file
  and the keys (Detectron2 loads what fits, warns, and carries on with a partly random model).
  Key prefixes listed in MODEL.WEIGHTS_PARTIAL_LOAD may differ (e.g. a head trained on another
  dataset); they keep their initialisation, with a warning;
- files that need full unpickling (``.pkl`` / ``.pickle``, or a ``.pth`` holding Python objects) run
  any code inside them when read: they are refused unless MODEL.WEIGHTS_ALLOW_PICKLE;
- an empty, truncated or corrupt file is an error naming it (not a torch / zip internal error);
- saving writes a temporary file in the same folder and renames it, so a killed job never leaves a
  partial file under a checkpoint's name; ``last_checkpoint`` is replaced the same way;
- ``--resume`` skips an unreadable last checkpoint with a warning and resumes from the newest intact
  training checkpoint of the folder (``model_best.pth`` is never one: saved after training, it records
  the counter one past the last iteration);
- saves can leave ``last_checkpoint`` alone (``keeping_last_checkpoint``), for the best checkpoint.
"""
import contextlib
import logging
import os
import pickle
import re
from collections.abc import Mapping
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple
from urllib.parse import urlparse

import torch
from detectron2.checkpoint import DetectionCheckpointer
from fvcore.common.checkpoint import _filter_reused_missing_keys

from .atomic import atomic_torch_save, atomic_write_text
from .mmpose_converter import (
    CONVERTER_AUTHOR,
    HEAD_PREFIX,
    TopDownLoadReport,
    adapt_topdown_state_dict,
    convert_mmpose_state_dict,
    hrnext_module_prefix,
    is_mmpose_hrnext_checkpoint,
)

__all__ = [
    "CheckpointLoadError",
    "HRNeXtCheckpointer",
    "build_checkpointer",
    "check_weights_for_evaluation",
]

logger = logging.getLogger(__name__)

PICKLE_SUFFIXES = (".pkl", ".pickle")
# Training checkpoints a resume may fall back to: what Detectron2's PeriodicCheckpointer writes.
_RESUME_POINT = re.compile(r"^model_(\d{7}|final)\.pth$")
_SHOWN_KEYS = 8


class CheckpointLoadError(ValueError):
    """A checkpoint file that cannot be read, is refused, or does not fit the model."""


def _few(items: Sequence[Any], fmt=str) -> str:
    shown = ", ".join(fmt(x) for x in items[:_SHOWN_KEYS])
    return shown + (f", ... ({len(items)} in all)" if len(items) > _SHOWN_KEYS else "")


def _first_line(e: BaseException) -> str:
    """The first sentence of an exception's message (torch's read errors run to several lines)."""
    text = str(e).strip().splitlines()
    return text[0].split(". ")[0][:200] if text else ""


def _is_local(path: str) -> bool:
    return "://" not in path


class HRNeXtCheckpointer(DetectionCheckpointer):
    """DetectionCheckpointer with strict, pickle-free loading, atomic saving and a resume that falls
    back to the newest intact checkpoint (see the module docstring). Official mmpose HRNeXt files
    (and the converter's) load into the top-down model or into any model with an HRNeXt elsewhere,
    e.g. an FPN's `backbone.bottom_up`; `last_load_report` then says which keys were new."""

    last_load_report: Optional[TopDownLoadReport] = None

    def __init__(
        self,
        model: torch.nn.Module,
        save_dir: str = "",
        *,
        allow_pickle: bool = False,
        partial_load_prefixes: Sequence[str] = (),
        save_to_disk: Optional[bool] = None,
        **checkpointables: Any,
    ):
        """
        Args:
            model, save_dir, save_to_disk, checkpointables: as ``DetectionCheckpointer``.
            allow_pickle: read files that need full unpickling (MODEL.WEIGHTS_ALLOW_PICKLE).
            partial_load_prefixes: key prefixes allowed to be missing from, unexpected in or shaped
                differently in a loaded file (MODEL.WEIGHTS_PARTIAL_LOAD); "" allows every key.
        """
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.allow_pickle = bool(allow_pickle)
        self.partial_load_prefixes = tuple(str(p) for p in partial_load_prefixes)
        self._tag_last = True
        self._loading: Optional[str] = None
        self._verified: Dict[str, Any] = {}

    # ---- loading --------------------------------------------------------------------------------
    def load(self, path: str, *args, **kwargs) -> Dict[str, Any]:
        if path and _is_local(path):
            local = urlparse(path)._replace(query="").geturl()
            if not os.path.isfile(local):
                raise FileNotFoundError(f"checkpoint not found: {local!r} (MODEL.WEIGHTS, or the file last_checkpoint names)")
        self._loading = path
        try:
            return super().load(path, *args, **kwargs)
        finally:
            self._loading = None

    def _load_file(self, filename: str) -> Dict[str, Any]:
        if filename.endswith(PICKLE_SUFFIXES) and not self.allow_pickle:
            raise CheckpointLoadError(
                f"{filename}: a pickle file; reading it runs whatever code it contains. Refused: set "
                "MODEL.WEIGHTS_ALLOW_PICKLE True only for files you trust (e.g. Detectron2 model-zoo .pkl)."
            )
        if _is_local(filename) and os.path.isfile(filename) and os.path.getsize(filename) == 0:
            raise CheckpointLoadError(f"{filename}: empty file (0 bytes), e.g. left by a job killed while writing it")
        try:
            loaded = super()._load_file(filename)
        except CheckpointLoadError:
            raise
        except Exception as e:  # noqa: BLE001 - torch / zip / pickle errors do not name the file
            raise CheckpointLoadError(
                f"{filename}: cannot be read as a checkpoint ({type(e).__name__}: {_first_line(e)}); the file is "
                f"truncated, corrupt or not a PyTorch checkpoint ({os.path.getsize(filename)} bytes)"
            ) from e
        if not isinstance(loaded, Mapping):
            raise CheckpointLoadError(f"{filename}: holds a {type(loaded).__name__}, not a checkpoint dict")
        self.last_load_report = None
        model = loaded.get("model")
        if isinstance(model, Mapping) and is_mmpose_hrnext_checkpoint(model):
            # DetectionCheckpointer wrapped a raw mmpose dict as {"model": {...,"state_dict": ...}}.
            sd = convert_mmpose_state_dict(model, source=filename)
            return {"model": self._into_model(sd, filename), "__author__": CONVERTER_AUTHOR,
                    "matching_heuristics": False}
        if isinstance(model, Mapping) and loaded.get("__author__") == CONVERTER_AUTHOR:
            loaded = dict(loaded, model=self._into_model(model, filename))
        if isinstance(model, Mapping) and isinstance(model.get("state_dict"), Mapping):
            # Another framework's {"state_dict": ..., "meta"/"optimizer": ...} layout: compare its
            # tensors (the strict check then names what does not fit).
            loaded = dict(loaded, model=model["state_dict"])
        if not isinstance(loaded.get("model"), Mapping):
            raise CheckpointLoadError(f"{filename}: 'model' is a {type(loaded.get('model')).__name__}, not a state dict")
        return loaded

    def _into_model(self, sd: Mapping[str, torch.Tensor], filename: str) -> Mapping[str, torch.Tensor]:
        """A top-down state dict (official or converted) as is for the top-down model, else moved to
        the model's HRNeXt (e.g. the FPN's `backbone.bottom_up.*`) with a `TopDownLoadReport` of the
        new keys; files the converter already wrote for such a model are checked the same way."""
        prefix = hrnext_module_prefix(self.model)
        model_state = self.model.state_dict()
        if prefix is None or (prefix == "backbone." and HEAD_PREFIX + "weight" in model_state):
            return sd
        if any(k.startswith(prefix) for k in sd):  # written by the converter for this layout: same checks
            sd = {("backbone." + k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sd.items()}
        out, report = adapt_topdown_state_dict(sd, model_state, prefix, source=filename)
        self.last_load_report = report
        self.logger.info(report.summary())
        return out

    def _torch_load(self, f: str) -> Any:
        if f in self._verified:
            return self._verified.pop(f)
        try:
            return torch.load(f, map_location=torch.device("cpu"), weights_only=True)
        except pickle.UnpicklingError as e:
            if "Weights only load failed" not in str(e):
                raise
            if not self.allow_pickle:
                raise CheckpointLoadError(
                    f"{f}: holds Python objects besides tensors; loading it would unpickle them and run any code "
                    "they carry. Refused: set MODEL.WEIGHTS_ALLOW_PICKLE True only for files you trust."
                ) from e
            logger.warning(f"{f}: unpickling Python objects (MODEL.WEIGHTS_ALLOW_PICKLE is set)")
            return torch.load(f, map_location=torch.device("cpu"), weights_only=False)

    def _load_model(self, checkpoint: Dict[str, Any]):
        num_in_file = len(checkpoint["model"])
        incompatible = super()._load_model(checkpoint)
        missing = _filter_reused_missing_keys(self.model, incompatible.missing_keys)
        unexpected = list(incompatible.unexpected_keys)
        shapes = list(incompatible.incorrect_shapes)

        # A top-down HRNeXt file loaded into a larger model (e.g. an FPN): the keys its report lists
        # as new are expected to be missing (they start fresh; the report was logged).
        expected_new = set(self.last_load_report.new) if self.last_load_report is not None else set()

        def refused(key: str) -> bool:
            return key not in expected_new and not any(key.startswith(p) for p in self.partial_load_prefixes)

        bad_missing = [k for k in missing if refused(k)]
        bad_unexpected = [k for k in unexpected if refused(k)]
        bad_shapes = [s for s in shapes if refused(s[0])]
        source = self._loading or "checkpoint"
        total = len(self.model.state_dict())
        if bad_missing or bad_unexpected or bad_shapes:
            lines = [
                f"{source}: does not fit the model ({type(self.model).__name__}); "
                f"{total - len(missing) - len(shapes)} of its {total} tensors would load:"
            ]
            if bad_missing:
                lines.append(f"  missing from the file ({len(bad_missing)}): {_few(sorted(bad_missing))}")
            if bad_unexpected:
                lines.append(f"  not in the model ({len(bad_unexpected)}): {_few(sorted(bad_unexpected))}")
            if bad_shapes:
                lines.append(
                    f"  other shape ({len(bad_shapes)}): "
                    + _few(bad_shapes, lambda s: f"{s[0]} file {tuple(s[1])} vs model {tuple(s[2])}")
                )
            lines.append(
                "Check MODEL.WEIGHTS against the config (variant, NUM_KEYPOINTS). To load only the tensors that "
                "fit (e.g. fine-tuning from another dataset's head), list the key prefixes allowed to differ in "
                "MODEL.WEIGHTS_PARTIAL_LOAD, e.g. ['keypoint_head.']."
            )
            raise CheckpointLoadError("\n".join(lines))
        if (set(missing) - expected_new) or unexpected or shapes:
            logger.warning(
                f"{source}: partial load (MODEL.WEIGHTS_PARTIAL_LOAD {list(self.partial_load_prefixes)}): "
                f"{len(missing)} model tensors missing from the file, {len(unexpected)} file tensors not in the "
                f"model, {len(shapes)} of another shape keep their initialisation"
            )
        logger.info(f"Loaded {total - len(missing) - len(shapes)} of {total} model tensors ({num_in_file} in the file)")
        return incompatible

    def is_intact(self, path: str) -> bool:
        """Whether ``path`` exists and reads as a checkpoint (fully read; used before resuming)."""
        try:
            self._verified[path] = self._read_whole(path)
            return True
        except Exception:  # noqa: BLE001 - any failure means "not intact"
            self._verified.pop(path, None)
            return False

    def _read_whole(self, path: str) -> Any:
        if not os.path.isfile(path):
            raise FileNotFoundError("missing")
        if os.path.getsize(path) == 0:
            raise CheckpointLoadError("empty file (0 bytes)")
        return torch.load(path, map_location=torch.device("cpu"), weights_only=True)

    # ---- resuming -------------------------------------------------------------------------------
    def resume_or_load(self, path: str, *, resume: bool = True) -> Dict[str, Any]:
        """As Detectron2's; resuming starts from the newest intact checkpoint (a warning names the
        unreadable ones skipped)."""
        if resume and self.has_checkpoint():
            return self.load(self.newest_intact_checkpoint())
        return self.load(path, checkpointables=[])

    def _resume_candidates(self) -> List[str]:
        last = self.get_checkpoint_file()
        out = [last] if last and os.path.basename(last) else []
        others = [
            f for f in self.get_all_checkpoint_files() if _RESUME_POINT.match(os.path.basename(f)) and f != last
        ]
        others.sort(key=lambda f: (os.path.getmtime(f), os.path.basename(f)), reverse=True)
        return out + others

    def newest_intact_checkpoint(self) -> str:
        """The file ``last_checkpoint`` names when it reads; else the newest training checkpoint
        (``model_NNNNNNN.pth`` / ``model_final.pth``, by modification time) that reads and records
        its iteration. Read once: the following ``load`` reuses what was read."""
        skipped: List[Tuple[str, str]] = []
        for i, path in enumerate(self._resume_candidates()):
            try:
                data = self._read_whole(path)
                if i > 0 or skipped:
                    if not (isinstance(data, Mapping) and "iteration" in data):
                        raise CheckpointLoadError("records no training iteration")
            except Exception as e:  # noqa: BLE001
                skipped.append((path, f"{type(e).__name__}: {_first_line(e)}"))
                continue
            self._verified[path] = data
            if skipped:
                logger.warning(
                    f"Resuming from {path}: skipped unreadable checkpoint(s) "
                    + "; ".join(f"{p} ({why})" for p, why in skipped)
                )
            return path
        raise CheckpointLoadError(
            f"--resume: no intact checkpoint in {self.save_dir}: "
            + ("; ".join(f"{p} ({why})" for p, why in skipped) or "none found")
            + ". Remove last_checkpoint to start from MODEL.WEIGHTS instead."
        )

    def restore_final_checkpoint(self, iteration: int, name: str = "model_final") -> bool:
        """After resuming a finished run: rewrite ``<name>.pth`` from the loaded state when it is
        missing or unreadable (a job killed while writing it). Returns whether it was written."""
        if not self.save_dir or not self.save_to_disk:
            return False
        path = os.path.join(self.save_dir, f"{name}.pth")
        if self.is_intact(path):
            self._verified.pop(path, None)
            return False
        logger.warning(f"{path} is missing or unreadable: writing it from the resumed state")
        self.save(name, iteration=int(iteration))
        return True

    # ---- saving ---------------------------------------------------------------------------------
    def save(self, name: str, **kwargs: Any) -> None:
        """Detectron2's save, written atomically (``atomic_torch_save``)."""
        if not self.save_dir or not self.save_to_disk:
            return
        if not _is_local(self.save_dir):
            super().save(name, **kwargs)
            return
        data: Dict[str, Any] = {"model": self.model.state_dict()}
        for key, obj in self.checkpointables.items():
            data[key] = obj.state_dict()
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_torch_save(data, save_file)
        if self._tag_last:
            self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename: str) -> None:
        save_file = os.path.join(self.save_dir, "last_checkpoint")
        if not _is_local(save_file):
            super().tag_last_checkpoint(last_filename_basename)
            return
        atomic_write_text(save_file, last_filename_basename)

    @contextlib.contextmanager
    def keeping_last_checkpoint(self) -> Iterator[None]:
        """Saves inside this block leave ``last_checkpoint`` as it is (for files that are not resume
        points, such as the best checkpoint)."""
        previous, self._tag_last = self._tag_last, False
        try:
            yield
        finally:
            self._tag_last = previous


def build_checkpointer(cfg, model: torch.nn.Module, save_dir: str = "", **checkpointables: Any) -> HRNeXtCheckpointer:
    """``HRNeXtCheckpointer`` with the config's loading options (MODEL.WEIGHTS_ALLOW_PICKLE,
    MODEL.WEIGHTS_PARTIAL_LOAD)."""
    return HRNeXtCheckpointer(
        model,
        save_dir,
        allow_pickle=cfg.MODEL.WEIGHTS_ALLOW_PICKLE,
        partial_load_prefixes=tuple(cfg.MODEL.WEIGHTS_PARTIAL_LOAD),
        **checkpointables,
    )


def check_weights_for_evaluation(cfg, resume: bool = False) -> None:
    """Evaluation (``--eval-only``) needs weights: MODEL.WEIGHTS, or with ``resume`` a
    ``last_checkpoint`` in OUTPUT_DIR. An empty MODEL.WEIGHTS would evaluate a random model."""
    if cfg.MODEL.WEIGHTS:
        return
    if resume and cfg.OUTPUT_DIR and os.path.isfile(os.path.join(cfg.OUTPUT_DIR, "last_checkpoint")):
        return
    raise ValueError(
        "--eval-only with an empty MODEL.WEIGHTS would evaluate a randomly initialised model: pass "
        "MODEL.WEIGHTS path/to/model.pth (or --resume with a last_checkpoint in OUTPUT_DIR "
        f"{cfg.OUTPUT_DIR!r})"
    )
