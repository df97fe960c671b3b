"""One switch between the two formulations of every HRNeXt op (timm's `use_fused_attn` idea).

Each op that has a reference form (as the official code computes it) and a faster one of the same
function inherits `FormulationMixin` and reads `self.fast_ops`; modules with a folded inference form
inherit `FusedInferenceMixin` and read `self.fuse_inference`. `set_formulation` switches a whole
model at once, `formulation(...)` does it for a `with` block and restores what was there.
"""
import contextlib
from typing import Iterator, Optional

from torch import nn

from .fused import FusedInferenceMixin, clear_all_fused_caches

__all__ = ["FormulationMixin", "set_formulation", "formulation"]


class FormulationMixin:
    """Marks an nn.Module with a reference and a fast formulation of the same function."""

    fast_ops: bool = True


def set_formulation(module: nn.Module, fast_ops: Optional[bool] = None, fuse_inference: Optional[bool] = None) -> None:
    """Set `fast_ops` / `fuse_inference` (None = leave as is) on every submodule that has it."""
    for m in module.modules():
        if fast_ops is not None and isinstance(m, FormulationMixin):
            m.fast_ops = bool(fast_ops)
        if fuse_inference is not None and isinstance(m, FusedInferenceMixin):
            m.fuse_inference = bool(fuse_inference)
    clear_all_fused_caches(module)


@contextlib.contextmanager
def formulation(
    module: nn.Module, fast_ops: Optional[bool] = None, fuse_inference: Optional[bool] = None
) -> Iterator[nn.Module]:
    """`set_formulation` for the duration of a `with` block; each submodule's own setting is restored."""
    saved = [
        (m, m.fast_ops if isinstance(m, FormulationMixin) else None,
         m.fuse_inference if isinstance(m, FusedInferenceMixin) else None)
        for m in module.modules()
    ]
    set_formulation(module, fast_ops, fuse_inference)
    try:
        yield module
    finally:
        for m, fast, fuse in saved:
            if fast is not None:
                m.fast_ops = fast
            if fuse is not None:
                m.fuse_inference = fuse
        clear_all_fused_caches(module)
