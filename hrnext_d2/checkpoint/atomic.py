"""Files written through a temporary file and a rename, so a killed job never leaves a partial file
under the final name (the file there is always the previous one or the complete new one)."""
import contextlib
import glob
import os
from typing import IO, Any, Callable

import torch

__all__ = ["atomic_torch_save", "atomic_write_text"]


def _replace_atomically(path: str, mode: str, write: Callable[[IO], None]) -> None:
    """Write through ``<path>.tmp-<pid>`` (flushed, fsynced), then ``os.replace`` it onto ``path``;
    the temporary file is removed when writing fails."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same folder and ``os.replace``: the
    file under ``path`` is always either the previous one or the complete new one."""
    _replace_atomically(path, "wb", lambda f: torch.save(obj, f))
    _fsync_folder(os.path.dirname(os.path.abspath(path)))
    # Temporary files of earlier processes killed while writing this name.
    for stale in glob.glob(glob.escape(path) + ".tmp-*"):
        with contextlib.suppress(OSError):
            os.remove(stale)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and ``os.replace``."""
    _replace_atomically(path, "w", lambda f: f.write(text))


def _fsync_folder(folder: str) -> None:
    """Make a rename durable (best effort: not every file system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
