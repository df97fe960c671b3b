"""Logs the training samples replaced because their image was unreadable
(DATALOADER.SKIP_UNREADABLE_IMAGES), summed over all processes, every period and at the end."""
import logging
from typing import List, Tuple

from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = ["UnreadableImagesHook"]

logger = logging.getLogger(__name__)


class UnreadableImagesHook(HookBase):
    """Reads ``trainer.data_loader.unreadable_counter`` (``hrnext_d2.data.unreadable_images``)."""

    def __init__(self, period: int = 20):
        self._period = int(period)
        self._logged = 0

    def _totals(self, gather: bool) -> Tuple[int, List[str]]:
        counter = getattr(self.trainer.data_loader, "unreadable_counter", None)
        mine = (counter.replaced, counter.files) if counter is not None else (0, [])
        parts = comm.all_gather(mine) if gather and comm.get_world_size() > 1 else [mine]
        files = list(dict.fromkeys(f for _, fs in parts for f in fs))
        return sum(n for n, _ in parts), files

    def _log(self, final: bool, gather: bool = True) -> None:
        replaced, files = self._totals(gather)
        self.trainer.storage.put_scalar("data/unreadable_images_skipped", replaced, smoothing_hint=False)
        if not comm.is_main_process() or (not final and replaced == self._logged):
            return
        self._logged = replaced
        what = (
            f"{replaced} training samples replaced because their image is unreadable "
            f"({len(files)} files{': ' + ', '.join(files[:5]) if files else ''}{' ...' if len(files) > 5 else ''})"
        )
        if final:
            (logger.warning if replaced else logger.info)(f"Training done: {what}")
        else:
            logger.warning(f"Iteration {self.trainer.iter + 1}: {what} so far")

    def after_step(self) -> None:
        if (self.trainer.iter + 1) % self._period == 0:
            self._log(final=False)

    def after_train(self) -> None:
        # Gather only when every process finished (a collective after a failure could hang).
        self._log(final=True, gather=self.trainer.iter >= self.trainer.max_iter)
