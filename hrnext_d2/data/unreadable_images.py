"""Opt-in skipping of unreadable training images (DATALOADER.SKIP_UNREADABLE_IMAGES), counted.

By default one corrupt image stops training when it is first drawn, with the file named. With the
option, the dataset replaces such a sample by the next readable instance of the training set (a
function of the sample's position only, so a resumed run sees the same data), marks the replacement
on the sample, and ``CountingLoader`` adds the marks up in the main process, where a trainer hook
logs them (every 20 iterations and at the end).
"""
from collections import OrderedDict
from typing import Any, Iterable, Iterator, List

__all__ = ["SKIPPED_IMAGES_KEY", "UnreadableImageCounter", "CountingLoader"]

# Field of a mapped training sample: the unreadable files skipped to produce it.
SKIPPED_IMAGES_KEY = "skipped_unreadable_images"


class UnreadableImageCounter:
    """Samples replaced because their image was unreadable, and the distinct files, in this process."""

    def __init__(self) -> None:
        self.replaced = 0
        self._files: "OrderedDict[str, None]" = OrderedDict()

    def add(self, files: Iterable[str]) -> None:
        for f in files:
            self.replaced += 1
            self._files[f] = None

    @property
    def files(self) -> List[str]:
        return list(self._files)


class CountingLoader:
    """Iterates a training loader's batches, moving each sample's skip marks into ``counter``.

    Other attributes (``topdown_sampler``, ``dataset``, ...) are the wrapped loader's.
    """

    def __init__(self, loader: Iterable[List[dict]], counter: UnreadableImageCounter):
        self._loader = loader
        self.unreadable_counter = counter

    def __iter__(self) -> Iterator[List[dict]]:
        for batch in self._loader:
            for sample in batch:
                files = sample.pop(SKIPPED_IMAGES_KEY, None)
                if files:
                    self.unreadable_counter.add(files)
            yield batch

    def __len__(self) -> int:
        return len(self._loader)  # type: ignore[arg-type]

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name == "_loader":
            raise AttributeError(name)
        return getattr(self._loader, name)
