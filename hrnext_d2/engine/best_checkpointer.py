"""Detectron2's ``BestCheckpointer`` whose saves are not resume points.

Detectron2's hook saves ``model_best.pth`` through the trainer's checkpointer, which names it in
``last_checkpoint``; after a finished run ``--resume`` then loaded the best file, saved after training
with the trainer's counter one past the last iteration, and started one iteration late. Here the
best checkpoint leaves ``last_checkpoint`` to the periodic checkpoints, which are the resume points.
"""
import contextlib

from detectron2.engine import hooks

__all__ = ["BestCheckpointer"]


class BestCheckpointer(hooks.BestCheckpointer):
    """``hooks.BestCheckpointer`` that never changes ``last_checkpoint``."""

    def _best_checking(self) -> None:
        keep = getattr(self._checkpointer, "keeping_last_checkpoint", None)
        with keep() if keep is not None else contextlib.nullcontext():
            super()._best_checking()
