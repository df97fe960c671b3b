"""Lazily computed, non-persistent inference forms (eval-mode BatchNorm and layer scales folded into
convolutions).

The state dict always holds the training form. A module with this mixin computes its folded tensors on
the first eval forward and reuses them while none of its parameters or buffers changed: the cache key
holds every source tensor's storage pointer, in-place version counter and dtype, so optimizer steps,
`load_state_dict`, `.to()` / `.double()` all invalidate it; `train()` and state-dict loading also drop
it explicitly. The folded form is never used in training mode or when gradients are needed.
The folds are computed with autocast disabled, in the parameters' dtype, whether or not the first eval
forward runs under autocast: one cache serves float32 and autocast inference alike (autocast casts
the folded weights where it casts weights).
"""
import contextlib
from typing import Any, Iterable, Sequence, Tuple

import torch
from torch import nn


class FusedInferenceMixin:
    """Mixin for nn.Modules: `self.fused_params()` returns `self._compute_fused()` cached (see above)."""

    fuse_inference: bool = False

    def _fold_source_modules(self) -> Sequence[nn.Module]:
        """Modules whose parameters and buffers the folded form depends on (default: itself)."""
        return (self,)  # type: ignore[return-value]

    def _fold_sources(self) -> Iterable[torch.Tensor]:
        for m in self._fold_source_modules():
            yield from m.parameters()
            yield from m.buffers()

    def _compute_fused(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def _source_dicts(self) -> list:
        """The `_parameters` / `_buffers` dicts of every source module and their submodules, listed
        once and listed anew when a submodule is added, removed or replaced: walking the module tree
        on every forward cost about 3% of HRNeXt-S's inference time."""
        sources = tuple(self._fold_source_modules())
        cached = self.__dict__.get("_fold_source_dicts")
        if cached is None or cached[1] != sources or any(tuple(d.values()) != v for d, v in cached[2]):
            modules = [s for m in sources for s in m.modules()]
            tensor_dicts = [d for s in modules for d in (s._parameters, s._buffers)]
            cached = (tensor_dicts, sources, [(s._modules, tuple(s._modules.values())) for s in modules])
            self.__dict__["_fold_source_dicts"] = cached
        return cached[0]

    def _fused_key(self) -> Tuple:
        """Storage pointer, in-place version and dtype of every source tensor (read from the modules'
        own dicts, so a reassigned parameter or buffer is seen). A move to another device or dtype
        allocates new storage while the old one is alive, so the pointer changes with it."""
        return tuple((t.data_ptr(), t._version, t.dtype)
                     for d in self._source_dicts() for t in d.values() if t is not None)

    def fused_active(self) -> bool:
        """Use the folded form now? Eval mode, enabled, and no gradient needed for the parameters."""
        if not self.fuse_inference or self.training:  # type: ignore[attr-defined]
            return False
        if torch.is_grad_enabled():
            for m in self._fold_source_modules():
                for p in m.parameters():
                    if p.requires_grad:
                        return False
        return True

    def _autocast_off(self) -> contextlib.AbstractContextManager:
        device_type = next(iter(self._fold_sources())).device.type
        if not torch.amp.is_autocast_available(device_type):
            return contextlib.nullcontext()
        return torch.autocast(device_type, enabled=False)

    def fused_params(self) -> Any:
        key = self._fused_key()
        cache = self.__dict__.get("_fused_cache")
        if cache is None or cache[0] != key:
            with torch.no_grad(), self._autocast_off():
                value = self._compute_fused()
            self.__dict__["_fused_cache"] = (key, value)
            return value
        return cache[1]

    def clear_fused_cache(self) -> None:
        self.__dict__.pop("_fused_cache", None)
        self.__dict__.pop("_fold_source_dicts", None)

    def train(self, mode: bool = True):
        self.clear_fused_cache()
        return super().train(mode)  # type: ignore[misc]

    def _load_from_state_dict(self, *args, **kwargs):
        self.clear_fused_cache()
        return super()._load_from_state_dict(*args, **kwargs)  # type: ignore[misc]


def clear_all_fused_caches(module: nn.Module) -> None:
    """Drop the folded forms of `module` and all its submodules."""
    for m in module.modules():
        if isinstance(m, FusedInferenceMixin):
            m.clear_fused_cache()
