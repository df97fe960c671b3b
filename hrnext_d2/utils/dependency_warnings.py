"""Warnings of dependencies that a user of hrnext_d2 cannot act on, silenced one by one.

Why: every command used to start with lines such as ``FutureWarning: `torch.jit.script` is
deprecated`` (fvcore and Detectron2 script functions when they are imported) and ``UserWarning:
pkg_resources is deprecated`` (detectron2.model_zoo imports it). Nothing in a user's hands fixes
them, and they bury the lines that matter.

Each known warning is matched on its message, its category and the module it is attributed to, so
any other warning, and every error, still shows. Two scopes:

- ``import hrnext_d2`` ignores them only while the package imports its dependencies
  (``ignoring_known_dependency_warnings``); the filters of a user's program are untouched after it.
- The command-line tools are programs of their own: they call ``silence_known_dependency_warnings``
  once, which also covers warnings raised later while running (Detectron2's anchor generator calls
  ``torch.meshgrid`` without ``indexing``; torch.fx logs a note about ``is_fx_tracing``).
"""
import contextlib
import logging
import warnings
from typing import Iterator, NamedTuple, Tuple, Type

__all__ = [
    "KnownWarning",
    "KNOWN_IMPORT_WARNINGS",
    "KNOWN_RUNTIME_WARNINGS",
    "KNOWN_LOG_MESSAGES",
    "ignoring_known_dependency_warnings",
    "silence_known_dependency_warnings",
]


class KnownWarning(NamedTuple):
    """A warnings filter: ``message`` and ``module`` are regular expressions matched at the start."""

    message: str
    category: Type[Warning]
    module: str


# Raised while importing Detectron2 / fvcore.
KNOWN_IMPORT_WARNINGS: Tuple[KnownWarning, ...] = (
    # Recent torch deprecates torch.jit.script; fvcore.nn and detectron2.modeling script functions at import.
    KnownWarning(r"`torch\.jit\.script` is deprecated", FutureWarning, r"torch\.jit\._script"),
    # Recent setuptools deprecates pkg_resources, which detectron2.model_zoo imports.
    KnownWarning(r"pkg_resources is deprecated as an API", UserWarning, r"detectron2\.model_zoo"),
)

# Raised while running Detectron2 models (Keypoint R-CNN, person detectors).
KNOWN_RUNTIME_WARNINGS: Tuple[KnownWarning, ...] = (
    # Detectron2's anchor generator calls torch.meshgrid without `indexing` (its result is 'ij', as meant).
    KnownWarning(r"torch\.meshgrid: in an upcoming release", UserWarning, r"torch\.functional"),
)

# (logger name, message start) of log records that are warnings in all but name.
KNOWN_LOG_MESSAGES: Tuple[Tuple[str, str], ...] = (
    # Detectron2's tracing guards call torch.fx's is_fx_tracing, which logs this once per process.
    ("torch.fx._symbolic_trace", "is_fx_tracing will return true for both"),
    # Detectron2's environment report (tools/train_net.py) asks torch for CUDA_HOME on CPU-only machines.
    ("torch.utils.cpp_extension", "No CUDA runtime is found"),
)


def _add_filters(known: Tuple[KnownWarning, ...]) -> None:
    for w in known:
        warnings.filterwarnings("ignore", message=w.message, category=w.category, module=w.module)


@contextlib.contextmanager
def ignoring_known_dependency_warnings() -> Iterator[None]:
    """Within the block, the known import-time warnings are ignored; the filters are restored after."""
    with warnings.catch_warnings():
        _add_filters(KNOWN_IMPORT_WARNINGS)
        yield


class _DropKnownMessages(logging.Filter):
    def __init__(self, starts: Tuple[str, ...]):
        super().__init__()
        self.starts = starts

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.starts)


_silenced = False


def silence_known_dependency_warnings() -> None:
    """For programs (our tools): ignore every known dependency warning and log message from now on.

    Idempotent. Library code must not call this: it changes the process-wide warning filters.
    """
    global _silenced
    if _silenced:
        return
    _silenced = True
    _add_filters(KNOWN_IMPORT_WARNINGS + KNOWN_RUNTIME_WARNINGS)
    by_logger = {}
    for name, start in KNOWN_LOG_MESSAGES:
        by_logger.setdefault(name, []).append(start)
    for name, starts in by_logger.items():
        logging.getLogger(name).addFilter(_DropKnownMessages(tuple(starts)))
